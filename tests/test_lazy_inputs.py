"""Issue #11, memory: a user's batched inputs stay in their file and a run reads them chunk by chunk.

What must hold: a lazy input reads like the array it stands for (slices, hashes, casts); validating
it piece by piece refuses exactly what validating it whole refuses, with the same message; the
degenerate-input checks judge it by its stand-in exactly as by the whole array; a run reads only its
chunks' rows and never the whole batch; and the Python-side peak memory of a run (tracemalloc: numpy
buffers included) does not grow with the batch. No wall-clock or RSS thresholds: tracemalloc counts
are the same on any machine.
"""

from __future__ import annotations

import gc
import tracemalloc
import zipfile

import numpy as np
import pytest

from backends.common.config import resolve_config
from backends.common.input_checks import input_problems
from parity import input_stream, synthetic
from parity import inputs as inputs_module
from parity.cases import array_hash
from parity.errors import ParityInputError
from parity.inputs import load_inputs
from parity.lazy import LazyArray, WholeReadError
from parity.npz import NpzArchive
from parity.npz_rows import StoredRows, StreamRows, member_rows

CFG = resolve_config({"N": 32})


@pytest.fixture
def streamed(monkeypatch):
    """Every batched member streamed, validated in small pieces (several per array)."""
    monkeypatch.setattr(inputs_module, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(input_stream, "SCAN_PIECE", 3000)


def _physics(batch: int, seed: int = 1, **changes: np.ndarray) -> dict[str, np.ndarray]:
    return synthetic.pipeline_inputs("physics", CFG, batch, seed=seed) | changes


def _compressed(path, arrays):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(value))
    return path


@pytest.mark.parametrize("how", ["stored", "compressed"])
def test_rows_of_a_member_read_like_the_array(tmp_path, how):
    array = np.arange(7 * 3 * 2, dtype=">f8").reshape(7, 3, 2)
    path = tmp_path / "a.npz"
    np.savez(path, a=array) if how == "stored" else _compressed(path, {"a": array})
    archive = NpzArchive(path)
    rows = member_rows(archive, "a")
    assert isinstance(rows, StoredRows if how == "stored" else StreamRows)
    for start, stop in [(0, 3), (3, 7), (1, 2), (5, 7), (0, 7), (2, 2)]:  # forward, then back again
        np.testing.assert_array_equal(rows.rows(start, stop), array[start:stop])
    lazy = LazyArray(rows, np.float32)
    for key in [slice(1, 5), slice(None, None, -2), 4, -1, (slice(2, 6), 1), (3, Ellipsis, 0), Ellipsis, slice(9, 12)]:
        np.testing.assert_array_equal(lazy[key], array.astype(np.float32)[key])
    assert (lazy.shape, lazy.dtype, len(lazy), lazy.nbytes) == ((7, 3, 2), np.float32, 7, 7 * 6 * 4)
    np.testing.assert_array_equal(np.asarray(lazy), array.astype(np.float32))
    assert array_hash(lazy) == array_hash(array.astype(np.float32)) == lazy.memo["array_hash"]


def test_a_member_changed_after_its_check_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.zeros((4, 2), np.float32))
    rows = member_rows(NpzArchive(path), "a")
    np.savez(path, a=np.ones((4, 2), np.float32), b=np.ones(3))  # same member, a different file
    with pytest.raises(ParityInputError, match="key 'a': the file changed while it was being read"):
        rows.rows(0, 2)


BAD = [
    ("nan", "object_patches", lambda a: a.__setitem__((5, 3, 1, 2), np.nan)),
    ("inf twice", "positions", lambda a: (a.__setitem__((6, 0, 1, 3), np.inf), a.__setitem__((9, 0, 0, 0), -np.inf))),
    ("overflow", "positions", lambda a: a.__setitem__((7, 0, 0, 1), 1e39)),
]


@pytest.mark.parametrize("name,key,spoil", BAD, ids=[item[0] for item in BAD])
def test_streamed_validation_refuses_with_the_whole_array_message(tmp_path, monkeypatch, name, key, spoil):
    arrays = _physics(12)
    arrays[key] = arrays[key].astype(np.float64) if name == "overflow" else arrays[key]
    spoil(arrays[key])
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    with pytest.raises(ParityInputError) as whole:
        load_inputs(path, "physics", CFG)
    monkeypatch.setattr(inputs_module, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(input_stream, "SCAN_PIECE", 3000)
    with pytest.raises(ParityInputError) as pieces:
        load_inputs(path, "physics", CFG)
    assert str(pieces.value) == str(whole.value)
    assert f"key {key!r}" in str(whole.value)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e8, 1e20, 3e30])
def test_degenerate_input_checks_judge_the_stand_in_as_the_whole_array(tmp_path, streamed, scale):
    rng = np.random.default_rng(int(np.log10(scale)))
    arrays = _physics(10)
    arrays["object_patches"] = (arrays["object_patches"] * rng.uniform(0, scale, size=(10, 1, 1, 1))).astype(
        np.complex64)
    arrays["positions"] = (arrays["positions"] * scale).astype(np.float32)
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    try:
        loaded, _ = load_inputs(path, "physics", CFG)
    except ParityInputError as error:
        problems = input_problems("physics", CFG, arrays)
        assert problems and f"key {problems[0][0]!r}: expected {problems[0][1]}" in str(error)
    else:
        assert isinstance(loaded["object_patches"], LazyArray)
        assert input_problems("physics", CFG, arrays) == []
    pinn = synthetic.pipeline_inputs("pinn", CFG, 6, seed=2)
    pinn["X"] = (pinn["X"] * scale).astype(np.float32)
    np.savez(path, **pinn)
    expected = input_problems("pinn", CFG, pinn)
    try:
        load_inputs(path, "pinn", CFG)
        assert expected == []
    except ParityInputError as error:
        assert expected and f"key {expected[0][0]!r}: expected {expected[0][1]}" in str(error)


def _write(tmp_path, batch: int, name: str = "in"):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **_physics(batch))
    return path


def _user_case(path):
    from parity.workflows import choose_cases

    (case,), _ = choose_cases(None, None, ["N=32"], "physics", str(path))
    return case


def test_a_run_reads_only_its_chunks_and_matches_the_in_memory_run(tmp_path, streamed, monkeypatch, reference,
                                                                    candidate, tolerances):
    from parity.runner import RunOptions, run_case

    case = _user_case(_write(tmp_path, 13))
    lazy = {name: value for name, value in case.inputs.items() if isinstance(value, LazyArray)}
    assert sorted(lazy) == ["object_patches", "positions"]
    in_memory = case.with_inputs({name: np.asarray(value) for name, value in case.inputs.items()})
    assert in_memory.hashes() == case.hashes()  # hashed piece by piece: the same digests
    monkeypatch.setattr(LazyArray, "strict_bytes", 64)  # any whole read of a batched input now raises
    for value in lazy.values():
        value.reads = []
    options = RunOptions(batch_chunk=4)
    report = run_case(case, reference, candidate, tolerances, options)
    chunks = [(0, 4), (4, 8), (8, 12), (12, 13)]
    assert {name: value.reads for name, value in lazy.items()} == {name: chunks for name in lazy}
    with pytest.raises(WholeReadError):
        np.asarray(lazy["object_patches"])
    expected = run_case(in_memory, reference, candidate, tolerances, options)
    assert report.passed and expected.passed
    for ours, theirs in zip(report.taps, expected.taps):
        for mode, result in ours.modes.items():
            assert result.metrics.to_dict() == theirs.modes[mode].metrics.to_dict(), (ours.name, mode)


def _traced_peak(tmp_path, batch: int, reference, candidate, tolerances) -> int:
    """Peak traced allocations (numpy buffers included) of loading a user's file and running it with evidence."""
    from parity.runner import RunOptions
    from parity.workflows import run_and_write

    path = _write(tmp_path, batch, f"in{batch}")  # building the inputs takes the whole batch: not traced
    gc.collect()  # what an earlier run left for the collector is not this run's peak
    tracemalloc.start()
    try:
        case = _user_case(path)
        report = run_and_write(case, reference, candidate, tolerances, RunOptions(batch_chunk=16),
                               tmp_path / f"out{batch}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.passed
    return peak


def test_python_peak_memory_of_a_run_does_not_grow_with_the_batch(tmp_path, streamed, reference, candidate,
                                                                  tolerances):
    _traced_peak(tmp_path, 32, reference, candidate, tolerances)  # warm: imports, traced stages of this shape
    # the least of two runs each: the adapter's worker thread frees a chunk's buffers on its own schedule, so
    # one run's peak may hold a transient another does not (seen once under load: 29 MiB against 21)
    def least(batch: int) -> int:
        peaks = []
        for run in range(2):
            folder = tmp_path / f"b{batch}-{run}"
            folder.mkdir()
            peaks.append(_traced_peak(folder, batch, reference, candidate, tolerances))
        return min(peaks)

    small, large = least(64), least(512)  # 512: 16 MiB of object patches
    # a whole-batch copy of the inputs alone would add 8x the small run's input bytes (measured 1.6x here)
    assert large < 1.3 * small, f"peak traced memory {large >> 20} MiB at B=512 vs {small >> 20} MiB at B=64"


def test_the_memory_check_of_a_file_weighs_the_chunks_a_run_takes_not_the_whole_batch(tmp_path, streamed):
    from parity import budget

    path = _compressed(tmp_path / "inputs.npz", _physics(256))
    whole = budget.estimate(CFG, "physics", 256).total_bytes
    chunked = budget.estimate(CFG, "physics", 256, chunk_batch=16, inputs_in_file={"object_patches", "positions"}).total_bytes
    assert chunked < whole / 4
    with budget.memory_limit((whole + chunked) // 2):  # enough for a run in chunks, not for the batch at once
        validated, _ = load_inputs(path, "physics", CFG)
    assert isinstance(validated["object_patches"], LazyArray)
    with budget.memory_limit(chunked // 4), pytest.raises(ParityInputError, match="more than the memory limit"):
        load_inputs(path, "physics", CFG)
