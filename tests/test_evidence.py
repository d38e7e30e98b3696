"""The evidence collector on its own: kept samples, streaming patch statistics, assembly dumps, samples.h5.

No backend runs here (the registry's real TapSpecs, synthetic arrays from PCG64); the end-to-end
report tests are in ``tests/test_report_html.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.common.config import resolve_config
from backends.common.taps import INPUTS, pipeline_taps, tap_index
from parity.evidence import EvidenceCollector, EvidenceSettings, load_samples, region_split, write_samples
from parity.patch_stats import batch_statistics, per_sample_error

CFG = resolve_config({"N": 32})
SPECS = tap_index("physics", CFG)
BATCH = 7


def _collector(settings: EvidenceSettings = EvidenceSettings()) -> EvidenceCollector:
    shapes = {name: tuple(spec.shape(CFG, BATCH)) for name, spec in SPECS.items()}
    return EvidenceCollector(SPECS, shapes, settings)


def _pair(seed: int, shape=(BATCH, 32, 32, 4), complex_=True):
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.normal(size=shape) + (1j * rng.normal(size=shape) if complex_ else 0)
    a = a.astype(np.complex64 if complex_ else np.float32)
    b = a.copy()
    return a, b


def _feed(collector, mode, spec, a, b, sizes):
    start = 0
    for size in sizes:
        collector.update(mode, spec, a[start:start + size], b[start:start + size], start)
        start += size


@pytest.mark.parametrize("sizes", [[BATCH], [1] * BATCH, [3, 4], [2, 2, 3]])
def test_first_and_worst_samples_do_not_depend_on_chunking(sizes):
    spec = SPECS["patches.extracted"]
    a, b = _pair(0)
    b[5, 3, 4, 1] += 0.5  # worst sample 5
    b[2, 0, 0, 0] += 0.1  # second worst 2
    b[6] += 1e-3
    collector = _collector()
    _feed(collector, "propagated", spec, a, b, sizes)
    kept = collector.kept("propagated", "patches.extracted")
    assert list(kept.first) == [0, 1] and list(kept.worst) == [5, 2]
    assert list(kept.index) == [0, 1, 2, 5] and kept.n_samples == BATCH
    assert np.array_equal(kept.reference, a[[0, 1, 2, 5]]) and np.array_equal(kept.candidate, b[[0, 1, 2, 5]])
    assert kept.error[3] == pytest.approx(0.5, rel=1e-6)


def test_memory_stays_bounded_over_many_chunks():
    spec = SPECS["amplitude"]
    collector = _collector(EvidenceSettings(first_samples=1, worst_samples=2, patch_stats_limit=3))
    rng = np.random.Generator(np.random.PCG64(1))
    for start in range(0, 200):
        a = rng.normal(size=(1, 32, 32, 4)).astype(np.float32)
        collector.update("propagated", spec, a, a + np.float32(start == 150), start)
    keeper = collector.keepers[("propagated", "amplitude")]
    assert len(keeper.first) == 1 and len(keeper.worst) == 2
    assert keeper.worst[0][1] == 150
    stats = collector.patch_stats_document()["taps"]["amplitude"]
    assert len(stats["reference"]) == 3 and stats["batches_seen"]["reference"] == 200  # limit bounds the record


def test_non_consecutive_chunks_are_refused():
    spec = SPECS["amplitude"]
    a, b = _pair(2, complex_=False)
    collector = _collector()
    collector.update("propagated", spec, a[:2], b[:2], 0)
    with pytest.raises(ValueError, match="chunk starts at sample 3, expected 2"):
        collector.update("propagated", spec, a[3:], b[3:], 3)


def test_a_flat_element_offset_is_understood_too():
    spec = SPECS["amplitude"]
    a, b = _pair(3, complex_=False)
    collector = _collector()
    collector.update("propagated", spec, a[:3], b[:3], 0)
    collector.update("propagated", spec, a[3:], b[3:], 3 * 32 * 32 * 4)  # as the comparator counts
    assert collector.kept("propagated", "amplitude").n_samples == BATCH


def test_nan_in_the_candidate_ranks_worst_and_shared_nan_does_not():
    a, b = _pair(4, complex_=False)
    a[1, 0, 0, 0] = b[1, 0, 0, 0] = np.nan  # the same NaN on both sides
    b[4, 2, 2, 2] = np.nan
    b[0] += 10
    errors = per_sample_error(a, b)
    assert np.isinf(errors[4]) and errors[1] == 0 and errors[0] == pytest.approx(10)


def test_a_torch_candidate_is_reduced_where_it_lives():
    torch = pytest.importorskip("torch")
    spec = SPECS["exit_wave"]
    a, b = _pair(5)
    b[3] *= 1.01
    collector = _collector()
    collector.update("propagated", spec, a, torch.from_numpy(b).permute(0, 3, 1, 2).permute(0, 2, 3, 1), 0)
    kept = collector.kept("propagated", "exit_wave")
    assert isinstance(kept.candidate, np.ndarray) and list(kept.worst)[0] == 3
    assert np.array_equal(kept.candidate[kept.index == 3][0], b[3])
    assert np.allclose(per_sample_error(a, torch.from_numpy(b)), per_sample_error(a, b))
    canvas, _ = _pair(6, shape=(BATCH, CFG.P, CFG.P, 1))
    collector.update("propagated", SPECS["object.canvas"], canvas, torch.from_numpy(canvas * 2), 0)
    stats = collector.patch_stats_document()["taps"]
    assert stats["object.canvas"]["propagated"][0]["mean"] == pytest.approx(2 * np.abs(canvas).mean(), rel=1e-6)
    assert stats["exit_wave"]["propagated"][0]["first_patches"][0]["max"] == pytest.approx(np.abs(b[0, :, :, 0]).max())
    document = collector.assembly.canvas_document()
    assert document["propagated"]["peak_modulus"] == pytest.approx(2 * np.abs(canvas).max(), rel=1e-6)


def test_patch_statistics_match_numpy():
    rng = np.random.Generator(np.random.PCG64(6))
    x = (rng.normal(size=(3, 16, 16, 2)) * 4 + 1).astype(np.float32)
    entry = batch_statistics(x, "BHWC", start=10, batch=1)
    patches = np.moveaxis(x.astype(np.float64), (1, 2), (2, 3)).reshape(6, 256)
    assert entry["batch"] == 1 and entry["start"] == 10 and entry["patches_in_batch"] == 6
    assert entry["mean"] == pytest.approx(x.mean(dtype=np.float64), rel=1e-12)
    assert entry["std"] == pytest.approx(x.std(dtype=np.float64), rel=1e-12)
    assert entry["var_zero_mean"] == pytest.approx(patches.var(axis=1).mean(), rel=1e-12)
    assert [p["index"] for p in entry["first_patches"]] == [[10, 0], [10, 1], [11, 0], [11, 1]]
    second = entry["first_patches"][1]
    assert second["mean"] == pytest.approx(x[0, :, :, 1].mean(dtype=np.float64), rel=1e-12)
    assert second["min"] == pytest.approx(x[0, :, :, 1].min()) and second["max"] == pytest.approx(x[0, :, :, 1].max())
    complex_entry = batch_statistics(x * 1j, "BHWC", 0, 0)  # complex taps: statistics of the modulus
    assert complex_entry["mean"] == pytest.approx(np.abs(x).mean(dtype=np.float64), rel=1e-6)


def test_offsets_and_canvas_dumps_follow_the_registry_roles():
    rng = np.random.Generator(np.random.PCG64(7))
    positions = rng.normal(size=(BATCH, 1, 2, CFG.C)) * 3
    collector = _collector()
    collector.assembly.observe_input(INPUTS["positions"], positions)
    canvas = SPECS["object.canvas"]
    a, b = _pair(8, shape=(BATCH, CFG.P, CFG.P, 1))
    b[:, :5] = 0
    collector.update("propagated", canvas, a, b, 0)
    offsets = collector.assembly.offsets_document()
    dx, dy = positions[:, 0, 0, :], positions[:, 0, 1, :]
    centred = dx - dx.mean(axis=1, keepdims=True)
    assert offsets["tap"] == "positions" and offsets["reference"] == offsets["candidate"]
    side = offsets["reference"]
    assert side["count"] == BATCH * CFG.C and side["first"][1] == pytest.approx([dx[0, 1], dy[0, 1]])
    assert side["mean_dx"] == pytest.approx(dx.mean()) and side["std_dy"] == pytest.approx(dy.std())
    assert side["centred_std_dx"] == pytest.approx(centred.std())
    assert side["max_abs_dy"] == pytest.approx(np.abs(dy).max())
    document = collector.assembly.canvas_document()
    assert document["tap"] == "object.canvas" and document["patches_from"] == "object_patches"
    assert document["patch_size"] == [CFG.N, CFG.N] and document["n_slots"] == CFG.C
    assert document["reference"]["canvas_size"] == [CFG.P, CFG.P] and document["reference"]["n_canvases"] == BATCH
    assert document["reference"]["filled_fraction"] == 1.0
    assert document["propagated"]["filled_fraction"] == pytest.approx(1 - 5 / CFG.P)
    assert document["propagated"]["max_abs_dx_centred"] == pytest.approx(np.abs(centred).max())


def test_samples_h5_round_trips_exactly(tmp_path):
    collector = _collector()
    for index, spec in enumerate(pipeline_taps("physics", CFG)):
        shape = tuple(spec.shape(CFG, BATCH))
        rng = np.random.Generator(np.random.PCG64(index))
        a = rng.normal(size=shape).astype(spec.dtype(CFG))
        b = a * np.float32(1 + 1e-6) if spec.name != "farfield" else a * 1.01
        for mode in ("propagated", "isolated"):
            collector.update(mode, spec, a, b.astype(a.dtype), 0)
    kept = [keeper.kept() for keeper in collector.keepers.values()]
    write_samples(tmp_path / "samples.h5", kept, collector.settings)
    loaded = load_samples(tmp_path / "samples.h5")
    assert set(loaded) == {(item.mode, item.tap) for item in kept}
    for item in kept:
        back = loaded[(item.mode, item.tap)]
        for field in ("index", "reference", "candidate", "error", "first", "worst"):
            assert np.array_equal(getattr(back, field), getattr(item, field)), (item.tap, field)
        assert back.reference.dtype == item.reference.dtype and back.layout == item.layout
    assert loaded[("propagated", "amplitude")].pictures == "patches"  # registry metadata travels with it
    assert loaded[("propagated", "probe.effective")].batched is False


def test_written_evidence_keeps_failing_taps_whole_and_passing_ones_small(tmp_path):
    collector = _collector()
    for spec in (SPECS["farfield"], SPECS["exit_wave"], SPECS["amplitude"]):
        a, b = _pair(9, complex_=spec.kind == "complex")
        b = b * (1.01 if spec.name == "farfield" else 1)
        for mode in ("propagated", "isolated"):
            collector.update(mode, spec, a.astype(spec.dtype(CFG)), b.astype(spec.dtype(CFG)), 0)
    paths = collector.write(tmp_path, failing={("propagated", "farfield"), ("isolated", "farfield")})
    names = sorted(path.name for path in paths)
    assert names == ["patch_stats.json", "patches-amplitude.png", "samples.h5"]
    loaded = load_samples(tmp_path / "samples.h5")
    failing = loaded[("isolated", "farfield")]  # failing: its worst sample, the report's picture
    worst = collector.kept("isolated", "farfield").worst
    assert list(failing.index) == [worst[0]] and list(failing.worst) == [worst[0]]
    assert ("isolated", "exit_wave") not in loaded  # passing isolated: never drawn, not stored
    assert loaded[("propagated", "exit_wave")].index.size == 1  # passing: the worst sample, the picture
    assert loaded[("propagated", "amplitude")].index.size == 2  # a patch tap: the samples of its 8-patch grid
    stats = json.loads((tmp_path / "patch_stats.json").read_text())
    assert set(stats["taps"]["farfield"]) >= {"reference", "propagated", "isolated", "value"}


def test_region_split_tells_border_from_interior():
    a, b = _pair(10, shape=(2, 40, 40, 1), complex_=False)
    border, interior = b.copy(), b.copy()
    border[:, :3] += 1.0
    interior[:, 18:22, 18:22] += 1.0
    split = region_split(a, border, "BHWC")
    assert split["border_width"] == 10
    assert split["interior"]["max_abs_error"] == 0 and split["border"]["max_abs_error"] == pytest.approx(1.0)
    split = region_split(a, interior, "BHWC")
    assert split["border"]["max_abs_error"] == 0 and split["interior"]["max_abs_error"] == pytest.approx(1.0)
    assert region_split(a[:, 0, 0], b[:, 0, 0], "B") is None
