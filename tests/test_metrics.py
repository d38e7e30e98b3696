"""Tests for parity.metrics: hand-computed metrics on tiny arrays, chunking, HDF5 inputs, JSON."""

from __future__ import annotations

import dataclasses
import json
import math

import h5py
import numpy as np
import pytest

from parity.metrics import Criteria, StreamingComparator, TapMetrics, chunk_plan, compare

CHUNK_SIZES = [1, 8, 16, 24, 40, 48, 100, 240, 1000, 64 << 20]


# ----------------------------------------------------------------------------- hand-computed metrics

def test_real_metrics_hand_computed():
    a = np.array([1.0, -2.0, 4.0, 0.0])
    b = np.array([1.0, -2.5, 3.0, 0.0])
    m = compare("x", a, b, Criteria(atol=0.1, rtol=0.1, max_fraction_out=0.5))
    # |a-b| = [0, 0.5, 1, 0]
    assert m.max_abs_error == 1.0
    assert m.worst_index == (2,) and m.worst_reference == 4.0 and m.worst_candidate == 3.0
    assert m.reference_peak == 4.0
    assert m.max_rel_to_peak == 0.25                          # 1 / 4
    assert m.mean_abs_error == pytest.approx(0.375)           # 1.5 / 4
    assert m.rms_error == pytest.approx(math.sqrt(0.3125))    # sqrt((0.25 + 1) / 4)
    # a.b = 1 + 5 + 12 + 0 = 18 ; |a|^2 = 21 ; |b|^2 = 1 + 6.25 + 9 = 16.25
    assert m.cosine_similarity == pytest.approx(18 / math.sqrt(21 * 16.25))
    # thresholds 0.1 + 0.1|a| = [0.2, 0.3, 0.5, 0.1]: elements 1 and 2 are out
    assert m.n_out_of_tolerance == 2 and m.fraction_out_of_tolerance == 0.5
    assert not m.allclose
    assert m.passed and m.failures == []
    assert m.size == 4 and m.n_compared == 4 and not m.complex
    assert m.magnitude_max_abs_error is None and m.phase_max_abs_error is None


def test_rtol_only_and_atol_only():
    a = np.array([10.0, 1.0])
    b = np.array([10.5, 1.2])          # |a-b| = [0.5, 0.2]
    # rtol=0.05 alone: thresholds [0.5, 0.05] -> element 1 out (0.5 <= 0.5 is inside)
    assert compare("x", a, b, Criteria(rtol=0.05)).n_out_of_tolerance == 1
    # atol=0.3 alone: element 0 out
    assert compare("x", a, b, Criteria(atol=0.3)).n_out_of_tolerance == 1
    m = compare("x", a, b, Criteria(atol=0.6))
    assert m.n_out_of_tolerance == 0 and m.allclose and m.passed


def test_a_failure_just_over_its_limit_prints_digits_that_differ():
    a = np.array([1.0, 2.0])
    m = compare("x", a, a + np.array([0.0, 2.08e-6]), Criteria(max_rel_to_peak=1e-6))
    assert not m.passed and "max |a-b| / max |a| = 1.04e-06 exceeds 1.00e-06" in m.failures[0]


def test_integer_dtype():
    m = compare("i", np.array([1, 2], np.int32), np.array([1, 5], np.int32), Criteria(max_abs=2))
    assert m.max_abs_error == 3.0 and m.worst_reference == 2 and m.worst_candidate == 5
    assert not m.passed and "max |a-b| = 3.0e+00 exceeds 2.0e+00" in m.failures[0]


def test_complex_magnitude_and_phase():
    a = np.array([3 + 4j], np.complex128)
    b = np.array([6j], np.complex128)
    m = compare("z", a, b)
    assert m.complex
    assert m.max_abs_error == pytest.approx(math.sqrt(13))         # |-3 + 2j|
    assert m.reference_peak == 5.0
    assert m.magnitude_max_abs_error == 1.0                          # |6 - 5|
    assert m.magnitude_max_rel_to_peak == pytest.approx(0.2)         # 1 / 5
    # b conj(a) = 6j (3 - 4j) = 24 + 18j -> angle atan(18 / 24)
    assert m.phase_max_abs_error == pytest.approx(math.atan(0.75))
    # Re(conj(a) b) = 24 ; |a| = 5 ; |b| = 6
    assert m.cosine_similarity == pytest.approx(24 / 30)


def test_complex_phase_wrap_is_small():
    a = np.array([-1 + 0.01j], np.complex64)   # angle  pi - atan(0.01)
    b = np.array([-1 - 0.01j], np.complex64)   # angle -pi + atan(0.01)
    m = compare("z", a, b, Criteria(max_phase_error=0.03))
    # raw difference is -2pi + 2 atan(0.01); wrapped: 2 atan(0.01) ~ 0.02, not ~2pi
    assert m.phase_max_abs_error == pytest.approx(2 * math.atan(0.01), rel=1e-5)
    assert m.passed


def test_phase_floor_excludes_small_magnitudes():
    a = np.array([2 + 0j, 0.001 + 0j])
    b = np.array([2 + 0j, -0.001 + 0j])        # element 1 flips sign: phase error pi
    # floor 1e-3 * peak 2 = 0.002 > 0.001: element 1 excluded
    m = compare("z", a, b, Criteria(max_phase_error=0.1))
    assert m.phase_max_abs_error == 0.0 and m.passed
    m = compare("z", a, b, Criteria(max_phase_error=0.1, phase_floor=1e-4))   # floor 2e-4
    assert m.phase_max_abs_error == pytest.approx(math.pi)
    assert not m.passed and "max phase error = 3.1e+00 rad exceeds 1.0e-01 rad" in m.failures[0]


def test_all_zero_reference():
    z = np.zeros(3)
    m = compare("z", z, z.copy(), Criteria(max_rel_to_peak=1e-6, min_cosine=0.99))
    assert m.max_rel_to_peak == 0.0 and m.cosine_similarity == 1.0 and m.passed
    m = compare("z", z, np.array([0.0, 1e-9, 0.0]), Criteria(max_rel_to_peak=1e-6))
    assert m.reference_peak == 0.0 and m.max_rel_to_peak == math.inf
    assert m.cosine_similarity == 0.0                               # exactly one side all zero
    assert not m.passed and "max |a-b| / max |a| = inf exceeds 1.0e-06" in m.failures[0]


def test_failure_message_format():
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    b = np.array([1.0, 2.0, 3.0, 4.1], np.float32)
    m = compare("object.canvas", a, b, Criteria(max_rel_to_peak=1e-2))
    assert m.failures == [
        "object.canvas: max |a-b| / max |a| = 2.5e-02 exceeds 1.0e-02 "
        "(worst at (3,): reference 4.0, candidate 4.1)"]
    m = compare("object.canvas", a, b, Criteria(atol=1e-7, rtol=1e-6))
    assert m.failures == ["object.canvas: 1 of 4 elements (25.00%) outside atol=1e-07, rtol=1e-06 (allowed 0.00%)"]


# ----------------------------------------------------------------------------- shape / dtype / non-finite

def test_shape_mismatch():
    a = np.zeros((2, 3), np.float32)
    b = np.zeros((3, 2), np.float32)
    b[1, 1] = np.nan
    b[2, 0] = -np.inf
    m = compare("t", a, b, Criteria(max_abs=1.0), chunk_bytes=8)
    assert not m.passed and not m.shape_match and m.dtype_match
    assert m.failures == ["t: shape differs: reference (2, 3), candidate (3, 2)"]
    assert math.isnan(m.max_abs_error) and math.isnan(m.cosine_similarity)
    assert m.worst_index is None and m.n_out_of_tolerance is None and m.phase_max_abs_error is None
    assert (m.nan_reference, m.nan_candidate, m.inf_reference, m.inf_candidate) == (0, 1, 0, 1)
    json.dumps(m.to_dict(), allow_nan=False)


def test_dtype_mismatch_fails_but_reports_metrics():
    a = np.array([1.0, 2.0], np.float32)
    m = compare("farfield", a, a.astype(np.float64), Criteria(max_abs=1.0))
    assert m.max_abs_error == 0.0 and m.shape_match and not m.dtype_match
    assert not m.passed
    assert m.failures == ["farfield: dtype differs: reference float32, candidate float64"]
    assert compare("farfield", a, a.astype(">f4")).passed          # byte order is not a dtype difference
    c = np.array([1 + 1j], np.complex64)
    m = compare("farfield", c, c.astype(np.complex128))
    assert m.failures == ["farfield: dtype differs: reference complex64, candidate complex128"]


def test_nan_same_positions_fails_unless_allowed():
    a = np.array([1.0, np.nan, 3.0])
    b = np.array([1.0, np.nan, 3.5])
    strict = compare("x", a, b, Criteria(max_abs=1.0, atol=1.0))
    assert not strict.passed and strict.nonfinite_positions_agree  # a NaN both sides share is still a NaN
    assert strict.failures == ["x: 1 NaN and 0 Inf in the reference, at the same positions in the candidate; "
                               "non-finite values fail unless the tolerance sets allow_nonfinite = true"]
    m = compare("x", a, b, Criteria(max_abs=1.0, atol=1.0, allow_nonfinite=True))
    assert m.passed and m.nonfinite_positions_agree and m.allclose
    assert (m.nan_reference, m.nan_candidate) == (1, 1)
    assert m.n_compared == 2
    assert m.max_abs_error == 0.5 and m.worst_index == (2,)
    assert m.mean_abs_error == 0.25                 # (0 + 0.5) / 2 finite pairs


def test_nan_different_positions_fails():
    a = np.array([1.0, np.nan, 3.0])
    b = np.array([1.0, 2.0, np.nan])
    m = compare("x", a, b)
    assert not m.passed and m.nonfinite_positions_agree is False and m.n_nonfinite_mismatch == 2
    assert m.n_compared == 1 and m.max_abs_error == 0.0
    assert m.failures[0].startswith("x: NaN/Inf positions differ: reference 1 NaN, 0 Inf, candidate 1 NaN, 0 Inf")
    assert "first at (1,): reference nan, candidate 2.0" in m.failures[0]
    m = compare("x", np.zeros(4), np.array([0, np.nan, np.nan, np.nan]))
    assert "reference 0 NaN, 0 Inf, candidate 3 NaN, 0 Inf" in m.failures[0]


def test_inf_sign():
    allow = Criteria(allow_nonfinite=True)
    a = np.array([np.inf, 1.0, -np.inf])
    assert compare("x", a, a.copy(), allow).passed
    assert not compare("x", a, a.copy()).passed  # matching Infs still fail by default
    m = compare("x", a, np.array([-np.inf, 1.0, -np.inf]), allow)
    assert not m.passed and m.n_nonfinite_mismatch == 1
    assert (m.inf_reference, m.inf_candidate) == (2, 2)
    c = np.array([complex(np.inf, 0.0), 1j])
    assert compare("z", c, c.copy(), allow).passed
    assert not compare("z", c, np.array([complex(-np.inf, 0.0), 1j]), allow).passed
    assert not compare("z", c, np.array([complex(0.0, np.inf), 1j]), allow).passed  # Inf moved to the imaginary part
    assert not compare("z", c, np.array([complex(np.nan, 0.0), 1j]), allow).passed
    # the finite companion of an infinite part is not compared
    assert compare("z", c, np.array([complex(np.inf, 1.0), 1j]), allow).passed


# ----------------------------------------------------------------------------- criteria

def test_allclose_fraction_with_max_fraction_out():
    a = np.arange(10, dtype=np.float64)
    b = a.copy()
    b[[2, 7]] += 1.0                         # 2 of 10 elements off by 1
    crit = Criteria(atol=0.5)
    assert compare("x", a, b, dataclasses.replace(crit, max_fraction_out=0.2)).passed     # 20% <= 20%
    m = compare("x", a, b, dataclasses.replace(crit, max_fraction_out=0.19))
    assert not m.passed and m.fraction_out_of_tolerance == 0.2 and m.n_out_of_tolerance == 2
    assert "2 of 10 elements (20.00%) outside atol=0.5, rtol=0 (allowed 19.00%)" in m.failures[0]


def test_several_criteria_each_fails_alone():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 2.0, 3.0, 4.1])
    # |a-b| max 0.1 ; rel 0.1/4 = 0.025 ; 1 of 4 out of atol 0.05 ;
    # cos = 30.4 / sqrt(30 * 30.81) = 0.99992...
    loose = Criteria(max_rel_to_peak=0.03, max_abs=0.11, atol=0.05, max_fraction_out=0.25, min_cosine=0.999)
    assert compare("x", a, b, loose).passed
    tight = {
        "max_rel_to_peak": (0.02, "max |a-b| / max |a|"),
        "max_abs": (0.09, "max |a-b| = "),
        "max_fraction_out": (0.2, "outside atol"),
        "min_cosine": (0.99999, "cosine similarity"),
    }
    for key, (value, text) in tight.items():
        m = compare("x", a, b, dataclasses.replace(loose, **{key: value}))
        assert not m.passed and len(m.failures) == 1 and text in m.failures[0], key
    z = (a * np.exp(0.5j)).astype(np.complex128)
    w = z * np.exp(np.array([0, 0, 0.2, 0]) * 1j)                  # phase error 0.2 on element 2
    m = compare("z", z, w, Criteria(max_phase_error=0.25, max_abs=1.0))
    assert m.passed and m.phase_max_abs_error == pytest.approx(0.2)
    m = compare("z", z, w, Criteria(max_phase_error=0.15, max_abs=1.0))
    assert len(m.failures) == 1 and "phase" in m.failures[0]


def test_criteria_dict_round_trip_and_errors():
    c = Criteria(max_rel_to_peak=1e-6, atol=1e-7, max_fraction_out=0.01)
    assert Criteria.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="bogus"):
        Criteria.from_dict({"atol": 1e-6, "bogus": 1})
    with pytest.raises(ValueError, match="atol"):
        Criteria.from_dict({"atol": -1.0})
    with pytest.raises(ValueError, match="max_fraction_out"):
        Criteria(max_fraction_out=1.5)
    with pytest.raises(ValueError, match="min_cosine"):
        Criteria(min_cosine=1.5)
    with pytest.raises(ValueError, match="max_abs"):
        Criteria(max_abs=math.inf)
    assert Criteria(min_cosine=-0.5, atol=1).atol == 1.0
    with pytest.raises(TypeError, match="rtol"):
        Criteria(rtol="1e-6")
    with pytest.raises(TypeError):
        Criteria.from_dict([("atol", 1.0)])


# ----------------------------------------------------------------------------- chunking

@pytest.mark.parametrize("shape", [(), (5,), (4, 3), (3, 1, 5), (2, 0, 3), (2, 3, 4, 2)])
@pytest.mark.parametrize("budget", [1, 2, 5, 7, 12, 1000])
def test_chunk_plan_covers_in_order(shape, budget):
    flat = np.arange(math.prod(shape)).reshape(shape)
    pieces = []
    for index, start, count in chunk_plan(shape, budget):
        block = np.asarray(flat[index]).ravel()
        assert block.size == count <= budget and (block.size == 0 or block[0] == start)
        pieces.append(block)
    got = np.concatenate(pieces) if pieces else np.empty(0, int)
    assert np.array_equal(got, np.arange(math.prod(shape)))


def _random_pair(rng, shape, dtype):
    a = rng.normal(size=shape) + (1j * rng.normal(size=shape) if np.dtype(dtype).kind == "c" else 0)
    b = a + 1e-3 * rng.normal(size=shape)
    a, b = a.astype(dtype), b.astype(dtype)
    a.flat[[3, 50]] = np.nan
    b.flat[[3, 50]] = np.nan
    return a, b


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_chunk_size_invariance(dtype):
    rng = np.random.default_rng(0)
    a, b = _random_pair(rng, (7, 5, 6), dtype)
    crit = Criteria(atol=1e-3, rtol=1e-3, max_fraction_out=0.5, phase_floor=0.05)
    ref = compare("x", a, b, crit).to_dict()
    for chunk in CHUNK_SIZES:
        m = compare("x", a, b, crit, chunk_bytes=chunk).to_dict()
        for key, value in ref.items():
            if key in ("mean_abs_error", "rms_error"):  # float32 blocks summed in float64
                assert m[key] == pytest.approx(value, rel=1e-6), (chunk, key)
            elif key == "cosine_similarity":
                assert m[key] == pytest.approx(value, rel=0, abs=1e-12), (chunk, key)
            elif key == "breakdown":  # maxima in the tap's precision, on either path
                assert json.dumps(m[key]) == json.dumps(value) or _approx_tree(m[key], value), chunk
            else:
                assert m[key] == value, (chunk, key)


def _approx_tree(got, want, rel=1e-6) -> bool:
    if isinstance(want, dict):
        return set(got) == set(want) and all(_approx_tree(got[k], want[k], rel) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_approx_tree(g, w, rel) for g, w in zip(got, want))
    if isinstance(want, float):
        return got == pytest.approx(want, rel=rel)
    return got == want


def test_ties_worst_index_first_occurrence_any_chunk():
    a = np.zeros((4, 3))
    b = np.zeros((4, 3))
    b[3, 0] = 0.5
    b[1, 2] = 0.5
    b[2, 1] = -0.5
    for chunk in CHUNK_SIZES:
        m = compare("x", a, b, chunk_bytes=chunk)
        assert m.worst_index == (1, 2) and m.max_abs_error == 0.5, chunk
    m = compare("x", np.ones(5), np.ones(5), chunk_bytes=8)      # all equal: the first element
    assert m.worst_index == (0,)


def test_streaming_phase_without_peak_hint_matches_compare():
    rng = np.random.default_rng(1)
    a, b = _random_pair(rng, (6, 10), "complex128")
    a[0, :5] *= 1e-3                          # small magnitudes with large relative phase errors
    b[0, :5] = a[0, :5] * np.exp(1j * np.linspace(0.5, 2.5, 5))
    for floor in (1e-5, 1e-3, 0.3):
        crit = Criteria(phase_floor=floor)
        expected = compare("z", a, b, crit)
        for rows in (1, 2, 6):
            comp = StreamingComparator("z", a.shape, a.dtype, b.shape, b.dtype, crit)
            for r in range(0, 6, rows):
                comp.update(a[r:r + rows], b[r:r + rows], r * 10)
            assert comp.result().phase_max_abs_error == expected.phase_max_abs_error


def test_streaming_contract_errors():
    a = np.zeros((4, 2))
    comp = StreamingComparator("x", a.shape, a.dtype, a.shape, a.dtype, Criteria())
    with pytest.raises(ValueError, match="consecutive"):
        comp.update(a[1:2], a[1:2], 2)
    comp.update(a[:1], a[:1], 0)
    with pytest.raises(ValueError, match="only 2 of 8"):
        comp.result()
    comp = StreamingComparator("x", (2,), "float32", (3,), "float32", Criteria())
    with pytest.raises(ValueError, match="shapes differ"):
        comp.update(np.zeros(2), np.zeros(2), 0)


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_working_memory_is_bounded_by_chunk(dtype):
    import tracemalloc

    rng = np.random.default_rng(3)
    a, b = _random_pair(rng, (64, 8192), dtype)          # 2 or 4 MiB per side
    chunk = 64 << 10
    tracemalloc.start()
    try:
        m = compare("x", a, b, Criteria(atol=1e-3, rtol=1e-3), chunk_bytes=chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert m.n_compared == a.size - 2
    assert peak < 10 * chunk < a.nbytes


def test_zero_d_and_empty():
    m = compare("s", np.float32(1.0), np.float32(1.5))
    assert m.worst_index == () and m.max_abs_error == 0.5 and m.size == 1 and m.reference_shape == ()
    m = compare("e", np.zeros((0, 3)), np.zeros((0, 3)), Criteria(max_abs=0.0, min_cosine=1.0))
    assert m.passed and m.size == 0 and m.worst_index is None


# ----------------------------------------------------------------------------- HDF5 inputs

class CountingReads:
    """Wraps an h5py Dataset and records the bytes of every read."""

    def __init__(self, ds):
        self._ds, self.reads = ds, []

    shape = property(lambda self: self._ds.shape)
    dtype = property(lambda self: self._ds.dtype)

    def __getitem__(self, index):
        out = self._ds[index]
        self.reads.append(np.asarray(out).nbytes)
        return out


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_h5py_datasets_bounded_reads(tmp_path, dtype):
    rng = np.random.default_rng(2)
    a, b = _random_pair(rng, (6, 5, 4), dtype)
    path = tmp_path / "taps.h5"
    with h5py.File(path, "w") as f:
        f["ref"], f["cand"] = a, b
        f["scalar"] = np.float64(2.0)
    crit = Criteria(max_rel_to_peak=1e-2, atol=1e-2)
    expected = compare("x", a, b, crit).to_dict()
    with h5py.File(path, "r") as f:
        m = compare("x", f["ref"], f["cand"], crit)
        assert m.to_dict() == expected
        for chunk_bytes in (16, 40, 64):                   # the array is 960 or 1920 bytes
            ref, cand = CountingReads(f["ref"]), CountingReads(f["cand"])
            m = compare("x", ref, cand, crit, chunk_bytes=chunk_bytes)
            assert len(cand.reads) > 10
            assert max(ref.reads + cand.reads) <= chunk_bytes
            assert sum(cand.reads) == b.nbytes
            got = m.to_dict()
            for key in ("max_abs_error", "worst_index", "n_out_of_tolerance", "phase_max_abs_error", "passed"):
                assert got[key] == expected[key], key
            assert got["rms_error"] == pytest.approx(expected["rms_error"], rel=1e-12)
        m = compare("s", f["scalar"], f["scalar"], Criteria(max_abs=0.0))
        assert m.passed and m.worst_index == () and m.reference_peak == 2.0


# ----------------------------------------------------------------------------- serialisation

def test_to_dict_json_round_trip():
    z = np.array([[1 + 1j, np.nan], [0.5j, 2.0]], np.complex64)
    w = z.copy()
    w[1, 1] = 2.1 - 0.1j
    cases = [
        compare("z", z, w, Criteria(max_rel_to_peak=1e-6, atol=1e-3, max_phase_error=0.01)),
        compare("zero", np.zeros(2), np.array([0.0, 1.0]), Criteria(max_rel_to_peak=1e-6)),   # inf
        compare("shape", np.zeros(2), np.zeros(3)),                                            # nan
        compare("nan", np.array([np.nan]), np.array([1.0])),
    ]
    for m in cases:
        d = m.to_dict()
        text = json.dumps(d, allow_nan=False)
        back = TapMetrics.from_dict(json.loads(text))
        assert back.to_dict() == d
        assert isinstance(back.criteria, Criteria) and back.reference_shape == m.reference_shape
    d = cases[0].to_dict()
    assert d["worst_index"] == [1, 1] and d["worst_reference"] == [2.0, 0.0]
    assert isinstance(d["worst_candidate"], list) and len(d["worst_candidate"]) == 2
    assert cases[1].to_dict()["max_rel_to_peak"] == "inf"
    assert cases[2].to_dict()["max_abs_error"] == "nan"
    assert TapMetrics.from_dict(cases[0].to_dict()).worst_reference == 2 + 0j


# ----------------------------------------------------------------------------- honest allclose (issue #9)

def test_allclose_fields_are_null_when_no_elementwise_tolerance_is_set():
    a = np.array([1.0, 2.0, 4.0], np.float32)
    b = a * 64                                        # fails max_rel_to_peak by 63x
    m = compare("farfield", a, b, Criteria(max_rel_to_peak=1e-6))
    assert not m.passed and m.max_rel_to_peak == 63.0
    assert m.allclose is None and m.n_out_of_tolerance is None and m.fraction_out_of_tolerance is None
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert (d["allclose"], d["n_out_of_tolerance"], d["fraction_out_of_tolerance"]) == (None, None, None)
    assert TapMetrics.from_dict(d).allclose is None
    m = compare("farfield", a, b, Criteria(max_rel_to_peak=1e-6, rtol=1e-3))
    assert m.allclose is False and m.n_out_of_tolerance == 3 and m.fraction_out_of_tolerance == 1.0
    m = compare("shape", a, np.zeros(4, np.float32))
    assert m.allclose is None and m.fraction_out_of_tolerance is None


# ----------------------------------------------------------------------------- breakdown (issue #8)

def _image(rng, shape=(3, 16, 16, 2)):
    return rng.uniform(0.5, 1.0, size=shape).astype(np.float32)


def test_breakdown_tells_a_border_fault_from_an_interior_fault():
    rng = np.random.default_rng(11)
    a = _image(rng)
    border, interior = a.copy(), a.copy()
    border[1, 0:2, 5, 1] *= 1.5               # rows 0-1: inside the 4-pixel border band (16 / 4)
    interior[2, 8, 7, 0] += 0.25              # the middle of the patch
    m = compare("object.canvas", a, border, layout="BHWC")
    bd = m.breakdown
    assert bd["border_width"] == 4
    assert bd["worst"] == {"sample": 1, "channel": 1, "index": list(m.worst_index)}
    assert bd["regions"]["interior"]["max_abs_error"] == 0.0 and bd["regions"]["interior"]["max_rel"] == 0.0
    expected = float(np.abs(border - a)[:, :4].max())
    assert bd["regions"]["border"]["max_abs_error"] == pytest.approx(expected, rel=1e-7)
    assert bd["regions"]["border"]["elements"] == 3 * 2 * (16 * 16 - 8 * 8)
    assert bd["by_sample"][0]["sample"] == 1 and bd["by_channel"][0]["channel"] == 1
    assert [row["max_rel"] for row in bd["by_sample"][1:]] == [0.0, 0.0]
    m = compare("object.canvas", a, interior, layout="BHWC")
    bd = m.breakdown
    assert bd["regions"]["border"]["max_rel"] == 0.0
    assert bd["regions"]["interior"]["max_abs_error"] == pytest.approx(0.25, rel=1e-6)
    assert bd["regions"]["interior"]["max_rel"] == pytest.approx(0.25 / a[:, 4:12, 4:12].max(), rel=1e-6)
    assert bd["worst"] == {"sample": 2, "channel": 0, "index": [2, 8, 7, 0]}
    assert compare("x", a, border, layout="BHWC", border_fraction=0.0).breakdown["regions"]["border"]["elements"] == 0


def test_breakdown_by_sample_is_sorted_and_exact_across_chunks():
    rng = np.random.default_rng(12)
    a = _image(rng, (9, 8, 8, 1))
    b = a.copy()
    for sample, factor in ((4, 1e-2), (7, 1e-3), (0, 1e-4), (8, 1e-5), (2, 1e-6), (5, 1e-7)):
        b[sample, 3, 3, 0] = a[sample, 3, 3, 0] * (1 + factor)
    for chunk_bytes in (8, 8 * 64 * 3, 1 << 20):
        bd = compare("t", a, b, layout="BHWC", chunk_bytes=chunk_bytes).breakdown
        assert [row["sample"] for row in bd["by_sample"]] == [4, 7, 0, 8, 2], chunk_bytes
        for row in bd["by_sample"]:
            s = row["sample"]
            assert row["peak"] == float(a[s].max())
            assert row["max_abs_error"] == float(np.abs(b[s] - a[s]).max())
        assert bd["by_channel"] == [{"channel": 0, "max_abs_error": bd["by_sample"][0]["max_abs_error"],
                                     "peak": float(a.max()), "max_rel": pytest.approx(
                                         bd["by_sample"][0]["max_abs_error"] / float(a.max()))}]


def test_breakdown_of_taps_without_batch_or_channel_axes():
    a = np.arange(1.0, 65.0).reshape(8, 8)
    b = a.copy()
    b[0, 0] += 1.0
    bd = compare("probe.effective", a, b, layout="HW").breakdown
    assert bd["worst"] == {"sample": None, "channel": None, "index": [0, 0]}
    assert bd["by_sample"] == [] and bd["by_channel"] == [] and bd["border_width"] == 2
    assert bd["regions"]["border"]["max_rel"] == 1.0 / 64 and bd["regions"]["interior"]["max_rel"] == 0.0
    bd = compare("loss.poisson", np.float32(2.0), np.float32(2.5), layout="scalar").breakdown
    assert bd == {"worst": {"sample": None, "channel": None, "index": []}, "by_sample": [], "by_channel": [],
                  "regions": {}, "border_width": None}
    with pytest.raises(ValueError, match="layout BHWC needs 4 axes"):
        compare("x", np.zeros((2, 3)), np.zeros((2, 3)), layout="BHWC")


# ----------------------------------------------------------------------------- undiluted scales (issue #9)

def test_max_rel_to_sample_peak():
    a = np.stack([np.full((4, 4, 1), 1000.0), np.full((4, 4, 1), 1.0)])   # two samples, 1000x apart
    b = a.copy()
    b[1, 2, 2, 0] += 1e-3                                                   # 1e-3 of sample 1's own peak
    m = compare("t", a, b, Criteria(max_rel_to_peak=1e-5, max_rel_to_sample_peak=1e-5), layout="BHWC")
    assert m.max_rel_to_peak == pytest.approx(1e-6) and m.max_rel_to_sample_peak == pytest.approx(1e-3)
    assert len(m.failures) == 1 and "max over samples" in m.failures[0] and "(sample 1)" in m.failures[0]
    m = compare("t", a[:1], b[:1], Criteria(max_rel_to_sample_peak=1e-12), layout="BHWC")
    assert m.passed and m.max_rel_to_sample_peak == 0.0


def test_region_criteria_judge_each_region_on_its_own_peak():
    rng = np.random.default_rng(13)
    a = _image(rng, (2, 10, 10, 1)).astype(np.float64)
    a[:, :3] *= 1000                                        # a large band the criteria should not see
    covered = np.zeros(a.shape, bool)
    covered[:, 5:, :] = True
    b = a.copy()
    b[covered] *= 1 + 3e-4
    regions = {"covered": covered, "uncovered": ~covered}
    crit = Criteria(max_rel_to_peak=1e-6, regions={"covered": {"max_rel_to_peak": 1e-6}})
    plain = compare("object.canvas", a, b, Criteria(max_rel_to_peak=1e-6), layout="BHWC", regions=regions)
    assert plain.passed and plain.max_rel_to_peak < 1e-6            # diluted by the 1000x band
    m = compare("object.canvas", a, b, crit, layout="BHWC", regions=regions)
    assert not m.passed and len(m.failures) == 1
    assert m.failures[0].startswith("object.canvas [covered, 100 elements]: max |a-b| / max |a| over the region = "
                                    "3.0e-04 exceeds 1.0e-06")
    region = m.breakdown["regions"]["covered"]
    assert region["peak"] == float(np.abs(a[covered]).max()) and region["elements"] == 100
    assert region["max_rel"] == pytest.approx(3e-4, rel=1e-9)
    assert m.breakdown["regions"]["uncovered"]["max_abs_error"] == 0.0
    missing = compare("object.canvas", a, b, crit, layout="BHWC")  # the registry's regions were not passed
    assert not missing.passed and "judges region 'covered', which this comparison does not have" in missing.failures[-1]
    border = compare("t", a, b, Criteria(regions={"interior": {"max_abs": 1.0}, "border": {"max_abs": 1e-9}}),
                     layout="BHWC")
    assert len(border.failures) == 1 and border.failures[0].startswith("t [border, ")


def test_criteria_regions_round_trip_and_validation():
    c = Criteria(max_rel_to_peak=1e-6, regions={"uncovered": {"max_rel_to_peak": 1e-5}, "covered": Criteria(max_abs=1)})
    assert [name for name, _ in c.regions] == ["covered", "uncovered"] and hash(c)
    assert Criteria.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.set_fields()["regions"] == {"covered": {"max_abs": 1.0}, "uncovered": {"max_rel_to_peak": 1e-5}}
    with pytest.raises(ValueError, match="a region can set only"):
        Criteria(regions={"covered": {"atol": 1e-6}})
    with pytest.raises(TypeError, match="non-empty string"):
        Criteria(regions={"": {"max_abs": 1.0}})


def test_streaming_regions_must_keep_their_names():
    a = np.ones((2, 3))
    comp = StreamingComparator("x", a.shape, a.dtype, a.shape, a.dtype, Criteria())
    comp.update(a[:1], a[:1], 0, {"r": np.ones((1, 3), bool)})
    with pytest.raises(ValueError, match="differ from the first chunk"):
        comp.update(a[1:], a[1:], 3)
    with pytest.raises(ValueError, match="boolean"):
        compare("x", a, a, regions={"r": np.ones((2, 3))})


def test_diluted_canvas_error_fails_with_the_shipped_tolerances(shipped_tolerances):
    """Issue #9: a 3e-4 relative error confined to the covered region of a real canvas."""
    from backends.common.regions import tap_regions
    from backends.common.taps import tap_index
    from backends.torch import TorchBackend
    from parity.builtin_cases import builtin_case

    case = builtin_case("physics-default")
    spec = tap_index(case.pipeline, case.config)["object.canvas"]
    canvas = TorchBackend().run_all(case.pipeline, case.config, case.inputs)["object.canvas"]
    regions = tap_regions(spec, case.config, case.inputs)
    diluted = canvas.copy()
    diluted[regions["covered"]] *= np.complex64(1 + 3e-4)
    criteria = shipped_tolerances.lookup(spec.name, "float32", "cpu", "isolated", case.pipeline).criteria
    m = compare(spec.name, canvas, diluted, criteria, layout=spec.layout, regions=regions)
    assert m.reference_peak > 3000 and m.max_rel_to_peak < 1e-6        # the tap-wide bound alone lets it pass
    assert m.breakdown["regions"]["covered"]["peak"] < 10
    assert m.breakdown["regions"]["covered"]["max_rel"] == pytest.approx(3e-4, rel=1e-3)
    assert not m.passed and [f.split(":")[0] for f in m.failures] == [
        f"object.canvas [covered, {int(regions['covered'].sum())} elements]"]
    clean = compare(spec.name, canvas, canvas.copy(), criteria, layout=spec.layout, regions=regions)
    assert clean.passed


@pytest.fixture(scope="module")
def shipped_tolerances():
    from pathlib import Path

    from parity.tolerances import load_tolerances

    return load_tolerances(Path(__file__).resolve().parent.parent / "fixtures" / "tolerances.toml")
