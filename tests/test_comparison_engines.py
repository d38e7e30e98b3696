"""Every statistic of the streaming comparator against a plain float64 oracle, for both engines.

numpy inputs, Torch CPU tensors (contiguous and channels-first views), whole-tap, per-sample
and sub-row chunks; maxima and counts must match exactly (sums to rounding), the breakdown
to the tap's precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from parity.metrics import Criteria, StreamingComparator, compare
from tests.metrics_oracle import oracle

SHAPES = {"BHWC": (5, 12, 10, 3), "HW": (12, 10), "B12C": (4, 1, 2, 3), "M2": (6, 2), "B": (7,), "scalar": ()}
EXACT = ("max_abs_error", "reference_peak", "max_rel_to_peak", "worst_index", "n_compared",
         "magnitude_max_abs_error", "phase_max_abs_error", "n_out_of_tolerance")
SUMS = ("mean_abs_error", "rms_error")


def _pair(rng, shape, dtype, noise=1e-3):
    complex_ = np.dtype(dtype).kind == "c"
    a = rng.normal(size=shape) + (1j * rng.normal(size=shape) if complex_ else 0)
    b = a + noise * (rng.normal(size=shape) + (1j * rng.normal(size=shape) if complex_ else 0))
    return np.asarray(a).astype(dtype), np.asarray(b).astype(dtype)


def _close(got, want, rel):
    if isinstance(want, dict):
        assert set(got) == set(want), (sorted(got), sorted(want))
        for key in want:
            _close(got[key], want[key], rel)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _close(g, w, rel)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rel, abs=0.0) or (math.isinf(want) and got == want), (got, want)
    else:
        assert got == want


def _check(metrics, expected, dtype, breakdown_rel=None):
    rel = 1e-6 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    for key in EXACT:
        if key in expected:
            # magnitude and phase maxima may come from Torch's float64 abs/angle: equal to numpy's within ulps
            # of |a| (||b| - |a|| cancels, so relative to itself the difference can be larger)
            loose = key in ("magnitude_max_abs_error", "phase_max_abs_error")
            assert getattr(metrics, key) == pytest.approx(expected[key], rel=1e-12 if loose else 1e-15,
                                                          abs=1e-14 * expected["reference_peak"] if loose else 0), key
    for key in SUMS:
        assert getattr(metrics, key) == pytest.approx(expected[key], rel=rel, abs=1e-300), key
    assert metrics.cosine_similarity == pytest.approx(expected["cosine_similarity"], rel=0, abs=1e-9)
    assert metrics.max_rel_to_sample_peak == pytest.approx(expected["max_rel_to_sample_peak"], rel=rel)
    got = dict(metrics.breakdown)
    got.pop("worst")
    want = dict(expected["breakdown"])
    for key, index in (("by_sample", "sample"), ("by_channel", "channel")):
        _close_ranking(got.pop(key), want.pop(key), index, breakdown_rel or rel)
    _close(got, want, breakdown_rel or rel)


def _close_ranking(got: list, want: list, index: str, rel: float) -> None:
    """The top entries, ranked by max_rel: entries whose max_rel ties to the tap's precision may swap places
    (the engines compute in the tap's own precision, the oracle in float64)."""
    assert len(got) == len(want)
    _close([entry["max_rel"] for entry in got], [entry["max_rel"] for entry in want], rel)
    oracle_by_index = {entry[index]: entry for entry in want}
    for entry in got:
        if entry[index] in oracle_by_index:
            _close(entry, oracle_by_index[entry[index]], rel)
        else:  # fell off the oracle's top list by a tie with its last entry
            assert entry["max_rel"] == pytest.approx(want[-1]["max_rel"], rel=rel), (entry, want[-1])


def _feed(a, b, layout, chunks, crit, to_candidate=lambda x: x, engine="auto", regions=None):
    comp = StreamingComparator("t", a.shape, a.dtype, b.shape, b.dtype, crit, layout=layout, engine=engine)
    rows = a.shape[0] if a.ndim else 1
    step = max(1, rows // chunks)
    row = a[0].size if a.ndim else 1
    if a.ndim == 0:
        comp.update(a, to_candidate(b), 0, regions)
    else:
        for start in range(0, rows, step):
            sl = slice(start, start + step)
            comp.update(a[sl], to_candidate(b[sl]), start * row,
                        None if regions is None else {k: v[sl] for k, v in regions.items()})
    return comp.result()


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("layout", list(SHAPES))
def test_numpy_engine_matches_oracle(layout, dtype):
    rng = np.random.default_rng(abs(hash((layout, dtype))) % 2**32)
    a, b = _pair(rng, SHAPES[layout], dtype)
    crit = Criteria(atol=1e-3, rtol=1e-3, max_fraction_out=1.0, phase_floor=0.3)
    expected = oracle(a, b, layout=layout, atol=1e-3, rtol=1e-3, phase_floor=0.3)
    for chunks in (1, 2, 100):
        m = _feed(a, b, layout, chunks, crit)
        _check(m, expected, dtype)
        assert m.passed and m.allclose is (expected["n_out_of_tolerance"] == 0)


@pytest.mark.parametrize("dtype", ["float32", "complex64", "complex128"])
@pytest.mark.parametrize("layout", ["BHWC", "HW", "B", "scalar"])
def test_torch_engine_matches_oracle(layout, dtype):
    rng = np.random.default_rng(7)
    a, b = _pair(rng, SHAPES[layout], dtype)
    crit = Criteria(atol=1e-3, rtol=1e-3, max_fraction_out=1.0, phase_floor=0.3)
    expected = oracle(a, b, layout=layout, atol=1e-3, rtol=1e-3, phase_floor=0.3)
    for chunks in (1, 3):
        _check(_feed(a, b, layout, chunks, crit, torch.from_numpy, engine="torch"), expected, dtype)
        _check(_feed(a, b, layout, chunks, crit, engine="torch"), expected, dtype)  # numpy in, Torch engine
        _check(_feed(a, b, layout, chunks, crit, torch.from_numpy), expected, dtype)  # auto: a CPU tensor, numpy


@pytest.mark.parametrize("engine", ["auto", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_torch_channels_first_view(dtype, engine):
    """The candidate as the Torch backend holds it: BCHW memory seen through a BHWC permutation."""
    rng = np.random.default_rng(3)
    a, b = _pair(rng, (6, 16, 12, 4), dtype)
    internal = torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2)))
    view = internal.permute(0, 2, 3, 1)
    assert not view.is_contiguous()
    crit = Criteria(max_rel_to_peak=1.0)
    expected = oracle(a, b, layout="BHWC")
    comp = StreamingComparator("t", a.shape, a.dtype, tuple(view.shape), dtype, crit, layout="BHWC", engine=engine)
    for start in range(0, 6, 2):  # chunks of the view are views too
        comp.update(a[start:start + 2], view[start:start + 2], start * a[0].size)
    _check(comp.result(), expected, dtype)


def test_sub_row_chunks_and_h5py_like_reads_are_exact():
    rng = np.random.default_rng(4)
    a, b = _pair(rng, (3, 8, 8, 2), "float32")
    expected = oracle(a, b, layout="BHWC")
    for chunk_bytes in (8, 40, 200, 1 << 20):  # 1 element, part rows, whole rows
        m = compare("t", a, b, Criteria(), chunk_bytes=chunk_bytes, layout="BHWC")
        _check(m, expected, "float32")
    a, b = _pair(rng, (3, 8, 8, 2), "complex64")
    expected = oracle(a, b, layout="BHWC")
    for chunk_bytes in (16, 48, 1 << 20):
        _check(compare("t", a, b, chunk_bytes=chunk_bytes, layout="BHWC"), expected, "complex64")


def test_chunked_and_whole_give_identical_maxima_and_breakdown():
    rng = np.random.default_rng(5)
    for dtype in ("float32", "complex64"):
        a, b = _pair(rng, (8, 16, 16, 2), dtype)
        whole = _feed(a, b, "BHWC", 1, Criteria()).to_dict()
        for chunks in (2, 4, 8):
            parts = _feed(a, b, "BHWC", chunks, Criteria()).to_dict()
            for key in EXACT + ("breakdown", "max_rel_to_sample_peak", "worst_reference", "worst_candidate"):
                assert parts[key] == whole[key], (dtype, chunks, key)


def test_screening_falls_back_where_the_bound_is_useless():
    """A conjugation bug: pure phase errors, magnitudes equal; a scale bug: pure magnitude errors."""
    rng = np.random.default_rng(6)
    a, _ = _pair(rng, (4, 16, 16, 1), "complex64")
    for b in (np.conj(a), (a * 1.5).astype(np.complex64), (a * np.exp(0.3j)).astype(np.complex64)):
        expected = oracle(a, b, layout="BHWC")
        for engine in ("numpy", "torch"):
            _check(_feed(a, b, "BHWC", 1, Criteria(), torch.from_numpy, engine), expected, "complex64")


def test_phase_screening_with_a_worst_element_of_pure_magnitude_error():
    rng = np.random.default_rng(8)
    a, b = _pair(rng, (2, 32, 32, 1), "complex64", noise=1e-5)
    b[0, 3, 3, 0] = a[0, 3, 3, 0] * 1.01                     # the worst |d|: no phase error at all
    b[1, 7, 9, 0] = a[1, 7, 9, 0] * np.exp(0.002j)          # the worst phase, a small |d|
    expected = oracle(a, b, layout="BHWC")
    m = compare("t", a, b, layout="BHWC")
    _check(m, expected, "complex64")
    assert m.worst_index == (0, 3, 3, 0) and m.phase_max_abs_error == pytest.approx(0.002, rel=1e-4)


@pytest.mark.parametrize("peak_later", [1.0, 30.0, 5000.0])
def test_phase_frontier_when_the_peak_rises_in_a_later_chunk(peak_later):
    rng = np.random.default_rng(9)
    a, b = _pair(rng, (6, 8, 8, 1), "complex64", noise=1e-4)
    a[5, 0, 0, 0] = b[5, 0, 0, 0] = peak_later                      # raises the floor after 5 chunks
    b[0] = a[0] * np.exp(1j * rng.uniform(0, 0.05, size=a[0].shape))  # large phase errors, early
    crit = Criteria(phase_floor=0.05)
    expected = oracle(a, b, layout="BHWC", phase_floor=0.05)
    for engine in ("numpy", "torch"):
        m = _feed(a, b, "BHWC", 6, crit, torch.from_numpy, engine)
        assert m.phase_max_abs_error == pytest.approx(expected["phase_max_abs_error"], rel=1e-12)


def test_nonfinite_through_the_torch_engine():
    a = np.array([[1.0, np.nan, 3.0], [np.inf, 2.0, 1.0]], np.float32)
    b = np.array([[1.0, np.nan, 3.5], [np.inf, 2.0, -np.inf]], np.float32)
    for crit in (Criteria(max_abs=1.0), Criteria(max_abs=1.0, allow_nonfinite=True)):
        want = compare("x", a, b, crit).to_dict()
        got = compare("x", a, b, crit, engine="torch").to_dict()
        assert got == want
        assert got["n_nonfinite_mismatch"] == 1 and got["max_abs_error"] == 0.5 and not got["passed"]
        for engine in ("auto", "torch"):
            comp = StreamingComparator("x", a.shape, a.dtype, b.shape, b.dtype, crit, engine=engine)
            comp.update(a, torch.from_numpy(b), 0)
            assert comp.result().to_dict() == want


def test_torch_is_imported_only_when_a_tensor_arrives():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from parity.metrics import Criteria, compare\n"
            "m = compare('x', np.ones((2, 3), np.complex64), np.zeros((2, 3), np.complex64), Criteria(max_abs=0.5),\n"
            "            layout='M2')\n"
            "assert not m.passed\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'tensorflow')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_torch_engine_as_it_runs_on_cuda(monkeypatch):
    """No GPU here: the CUDA settings (no screening, Torch's own |z|, float64 for every element) on CPU tensors."""
    import parity.engines as engines
    from parity.engines.torch_engine import TorchOps

    def cuda_like(device):
        ops = TorchOps(device)
        ops.screen = ops.squares = False
        return ops

    monkeypatch.setattr(engines, "_torch_ops", cuda_like)
    rng = np.random.default_rng(10)
    for dtype in ("float32", "complex64"):
        a, b = _pair(rng, (4, 12, 12, 2), dtype)
        expected = oracle(a, b, layout="BHWC", phase_floor=0.2)
        for chunks in (1, 4):
            m = _feed(a, b, "BHWC", chunks, Criteria(phase_floor=0.2), torch.from_numpy, "torch")
            _check(m, expected, dtype)


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_reference_side_is_shared_between_the_two_modes(engine):
    from parity.metrics import ReferenceCache

    rng = np.random.default_rng(12)
    a, b = _pair(rng, (4, 16, 16, 2), "complex64")
    c = (a * 1.001).astype(np.complex64)
    covered = np.zeros(a.shape, bool)
    covered[:, 4:12, 4:12] = True
    regions = {"covered": covered, "uncovered": ~covered}
    cache = ReferenceCache()
    results = []
    for candidate in (b, c):  # "propagated" and "isolated" candidates of the same reference chunk
        comp = StreamingComparator("t", a.shape, a.dtype, a.shape, a.dtype, Criteria(), layout="BHWC",
                                   engine=engine, reference_cache=cache)
        comp.update(a, torch.from_numpy(candidate), 0, regions)
        results.append(comp.result().to_dict())
    assert (cache.hits, cache.misses) == (1, 1)
    for candidate, got in zip((b, c), results):
        alone = StreamingComparator("t", a.shape, a.dtype, a.shape, a.dtype, Criteria(), layout="BHWC", engine=engine)
        alone.update(a, torch.from_numpy(candidate), 0, regions)
        assert got == alone.result().to_dict()
    cache.clear()
    comp = StreamingComparator("t", a.shape, a.dtype, a.shape, a.dtype, Criteria(), layout="BHWC",
                               engine=engine, reference_cache=cache)
    comp.update(a.copy(), b, 0, regions)  # another array object: never a stale hit
    assert cache.misses == 2


@pytest.mark.parametrize("engine", ["auto", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
@pytest.mark.parametrize("near_share", [0.01, 0.5])
def test_out_of_tolerance_count_on_the_line(dtype, near_share, engine):
    """Some elements a hair inside or outside atol + rtol|a|, a few well outside, the rest well inside:
    the count is the float64 one, whether the screen leaves few candidates (each decided in float64)
    or more than its limit (the full path)."""
    rng = np.random.default_rng(11)
    shape, atol, rtol = (8, 32, 32, 4), 1e-4, 1e-3
    a = rng.standard_normal(shape)
    if dtype == "complex64":
        a = a + 1j * rng.standard_normal(shape)
    line = atol + rtol * np.abs(a)
    near = rng.random(shape) < near_share
    nudge = rng.choice([-1.0, 1.0], size=shape) * 1e-7 * line  # within the screen's margin of the line
    magnitude = np.where(near, line + nudge, 0.1 * line)
    magnitude[0, 0, 0, :2] = 2 * line[0, 0, 0, :2]
    b = (a + magnitude * np.exp(1j * rng.uniform(0, 2 * np.pi, shape)) if dtype == "complex64"
         else a + magnitude * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)
    a = a.astype(dtype)
    want = int(np.count_nonzero(np.abs(b.astype(np.complex128) - a.astype(np.complex128))
                                > np.abs(a.astype(np.complex128)) * rtol + atol))
    assert 2 < want < near.sum()
    crit = Criteria(atol=atol, rtol=rtol, max_fraction_out=1.0)
    for chunks in (1, 4):
        got = _feed(a, b, "BHWC", chunks, crit, engine=engine)
        assert got.n_out_of_tolerance == want, (chunks, got.n_out_of_tolerance, want)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_exact_phase_error_equals_the_complex128_definition_bitwise(dtype):
    """The whole-chunk phase error (what the screen falls back to) evaluates arctangents for a few elements
    only; it must still be exactly max |angle(b conj a)| over |a| >= threshold, signed zeros included."""
    from parity.engines.numpy_engine import NumpyOps

    def definition(a, b, threshold):
        a64, b64 = a.astype(np.complex128), b.astype(np.complex128)
        keep = np.abs(a64) >= threshold
        return float(np.abs(np.angle(b64[keep] * np.conj(a64[keep]))).max()) if keep.any() else 0.0

    rng = np.random.default_rng(11)
    for trial in range(600):
        n = int(rng.integers(1, 400))
        a = (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(dtype)
        kind = trial % 6
        if kind == 0:  # relative noise: every element a candidate of the screen
            b = (a * (1 + 1e-7 * rng.normal(size=n))).astype(dtype)
        elif kind == 1:
            b = (a * np.exp(1j * rng.normal(size=n))).astype(dtype)
        elif kind == 2:
            b = -a
        elif kind == 3:  # zeros in the candidate: atan2(+-0, -0) is pi
            b = a.copy()
            b[rng.integers(0, n, size=3)] = 0
        elif kind == 4:  # zeros in the reference
            b = (a + 1e-3 * rng.normal(size=n)).astype(dtype)
            a[rng.integers(0, n, size=5)] = 0
        else:  # right angles and ties
            b = (1j * a).astype(dtype)
            b[::2] = a[::2] * np.complex64(1 + 1e-3j)
        threshold = float(rng.choice([0.0, 0.5, 1.0, 10.0]))
        assert NumpyOps.exact_phase_error(a, b, threshold) == definition(a, b, threshold), (trial, kind)
