"""The PtychoPINN data contract (``--dataset``): validation, grouping, normalisation, the shipped dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.common.config import resolve_config
from parity import dataset
from parity.builtin_cases import BUILTIN_CASES
from parity.data import fixtures_dir
from parity.dataset_cases import dataset_cases
from parity.errors import ParityInputError

MOON = fixtures_dir() / dataset.MOON_DATASET


def _valid(M: int = 9, n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    side = int(np.ceil(np.sqrt(M)))
    xs, ys = np.meshgrid(np.arange(side) * 5.0 + 40, np.arange(side) * 5.0 + 40)
    return {"xcoords": xs.ravel()[:M], "ycoords": ys.ravel()[:M],
            "diff3d": np.sqrt(rng.poisson(50.0, size=(M, n, n))).astype(np.float32),
            "probeGuess": (rng.normal(size=(n, n)) + 1j).astype(np.complex64),
            "objectGuess": np.ones((96, 96), np.complex64)}


def _save(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_the_shipped_dataset_is_what_its_seeded_script_makes():
    with np.load(MOON, allow_pickle=False) as archive:
        stored = {key: archive[key] for key in archive.files}
    made = dataset.simulate_moon_dataset()
    assert sorted(stored) == sorted(made)
    for key in made:
        assert stored[key].dtype == made[key].dtype and np.array_equal(stored[key], made[key]), key
    assert MOON.stat().st_size < 5 << 20


def test_the_builtin_cases_knobs_match_the_shipped_file():
    data = dataset.load_dataset(MOON)
    assert data.M == dataset.MOON_POSITIONS and data.N == dataset.MOON_KNOBS["N"]
    assert dataset.MOON_KNOBS["intensity_scale"] == pytest.approx(data.intensity_scale(), rel=1e-2)
    for name, pipeline in (("pinn-dataset-moon", "pinn"), ("simulate-dataset-moon", "simulate")):
        case = BUILTIN_CASES[name]
        assert case.pipeline == pipeline
        assert case.batch == (dataset.MOON_GROUPS if pipeline == "pinn" else data.M)
        shapes = {key: value.shape for key, value in case.inputs.items()}
        expected = ({"X": (4, 64, 64, 4), "positions": (4, 1, 2, 4), "probe": (64, 64)} if pipeline == "pinn" else
                    {"object": data.obj.shape, "scan_positions": (16, 2), "probe": (64, 64)})
        assert shapes == expected


def test_groups_are_deterministic_nearest_neighbours_with_the_anchor_first():
    coords = np.random.Generator(np.random.PCG64(3)).uniform(0, 100, size=(40, 2))
    groups = dataset.group_indices(coords, 2)
    assert groups.shape == (40, 4) and np.array_equal(groups, dataset.group_indices(coords, 2))
    assert np.array_equal(groups[:, 0], np.arange(40))
    assert all(len(set(row)) == 4 for row in groups.tolist())
    distance = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    rank = np.argsort(np.argsort(distance, axis=1), axis=1)  # 0 = itself
    assert all(rank[a, b] <= 4 + dataset.EXTRA_NEIGHBOURS - 1 for a, row in enumerate(groups) for b in row)
    assert np.array_equal(dataset.group_indices(coords, 1), np.arange(40)[:, None])


def test_pinn_arrays_follow_the_spec_section_2(tmp_path):
    data = dataset.load_dataset(_save(tmp_path, _valid()))
    cfg = resolve_config({"N": 32, "intensity_scale": 2.5})
    arrays = dataset.pinn_arrays(data, cfg)
    groups = dataset.group_indices(data.coords, 2)
    assert arrays["X"].dtype == np.float64 and arrays["X"].shape == (9, 32, 32, 4)
    assert np.array_equal(arrays["X"][3, :, :, 2], data.amplitude[groups[3, 2]] / 2.5)
    pos = data.coords[groups[3]]  # (C, 2) as (x, y)
    assert np.allclose(arrays["positions"][3, 0].T, -(pos - pos.mean(axis=0)))
    assert np.allclose(arrays["positions"].mean(axis=3), 0)


def test_counts_are_square_rooted_in_float64_never_squared_in_uint16(tmp_path):
    arrays = _valid()
    counts = np.full(arrays["diff3d"].shape, 60000, np.uint16)  # 60000**2 overflows uint16 and uint32
    path = _save(tmp_path, arrays | {"diff3d": counts, "diffraction_counts": np.array(1)})
    data = dataset.load_dataset(path)
    assert data.amplitude.dtype == np.float64 and np.allclose(data.amplitude, np.sqrt(60000.0))
    assert data.photons() == pytest.approx(60000.0 * 32 * 32)
    assert data.intensity_scale() == pytest.approx(np.sqrt(60000.0 * 32 * 32) / 16)


def test_legacy_layout_is_transposed_with_a_note(tmp_path):
    arrays = _valid()
    path = _save(tmp_path, arrays | {"diff3d": np.transpose(arrays["diff3d"], (1, 2, 0))})
    data = dataset.load_dataset(path)
    assert np.array_equal(data.amplitude, arrays["diff3d"].astype(np.float64))
    assert any("legacy (N, N, M) layout" in note for note in data.notes)
    square = _save(tmp_path, _valid(M=32))  # M = N: either layout fits; read as (M, N, N), and said so
    assert any("its layout is ambiguous; read as (M, N, N)" in note for note in dataset.load_dataset(square).notes)


def test_dataset_cases_default_to_pinn_and_simulate(tmp_path):
    path = _save(tmp_path, _valid())
    cases, notes = dataset_cases(str(path), None, None, [], None)
    assert [(case.name, case.pipeline) for case in cases] == [("dataset-data-pinn", "pinn"),
                                                              ("dataset-data-simulate", "simulate")]
    cfg = cases[0].config
    assert cfg.N == 32 and cfg.intensity_scale == pytest.approx(dataset.load_dataset(path).intensity_scale())
    assert cases[0].inputs["X"].dtype == np.float32 and any("intensity_scale=" in note for note in notes)
    (only,), _ = dataset_cases(str(path), "pinn", None, ["intensity_scale=2", "gridsize=1"], None)
    assert only.config.intensity_scale == 2 and only.inputs["X"].shape == (9, 32, 32, 1)


def _drop(key):
    return lambda a: {k: v for k, v in a.items() if k != key}


MALFORMED = {
    "missing xcoords": (_drop("xcoords"), "missing key(s) ['xcoords']"),
    "missing diffraction": (_drop("diff3d"), "key 'diff3d' or 'diffraction': expected exactly one"),
    "both diffraction keys": (lambda a: a | {"diffraction": a["diff3d"]}, "found both"),
    "M disagrees": (lambda a: a | {"ycoords": a["ycoords"][:-1]}, "key 'ycoords': expected 9 coordinates"),
    "M of diffraction": (lambda a: a | {"diff3d": a["diff3d"][:-1]}, "key 'diff3d': expected shape (M, N, N) with M = 9"),
    "probe size": (lambda a: a | {"probeGuess": a["probeGuess"][:16, :16]}, "key 'probeGuess': expected a complex (32, 32)"),
    "real probe": (lambda a: a | {"probeGuess": a["probeGuess"].real}, "key 'probeGuess'"),
    "negative amplitudes": (lambda a: a | {"diff3d": a["diff3d"] - 100}, "key 'diff3d': expected non-negative amplitudes"),
    "negative counts": (lambda a: a | {"diff3d": a["diff3d"].astype(np.int32) - 100,
                                       "diffraction_counts": np.array(1)}, "non-negative photon counts"),
    "integer without flag": (lambda a: a | {"diff3d": a["diff3d"].astype(np.uint16)}, "diffraction_counts = 1"),
    "bad flag": (lambda a: a | {"diffraction_counts": np.array(7)}, "key 'diffraction_counts'"),
    "duplicate positions": (lambda a: a | {"xcoords": np.r_[a["xcoords"][:1], a["xcoords"][:-1]],
                                           "ycoords": np.r_[a["ycoords"][:1], a["ycoords"][:-1]]},
                            "key 'xcoords': expected distinct scan positions; positions [0, 1]"),
    "NaN coordinate": (lambda a: a | {"ycoords": np.where(np.arange(9) == 4, np.nan, a["ycoords"])},
                       "key 'ycoords': expected finite values"),
    "NaN diffraction": (lambda a: a | {"diff3d": np.where(np.arange(32) == 5, np.nan, a["diff3d"]).astype(np.float32)},
                        "key 'diff3d': expected finite values"),
    "NaN probe": (lambda a: a | {"probeGuess": a["probeGuess"] * np.nan}, "key 'probeGuess': expected finite"),
    "2-D coordinates": (lambda a: a | {"xcoords": a["xcoords"][:, None]}, "key 'xcoords': expected real scan"),
    "zero diffraction": (lambda a: a | {"diff3d": np.zeros_like(a["diff3d"])}, "key 'diff3d': expected some signal"),
    "object not complex": (lambda a: a | {"objectGuess": np.ones((8, 8))}, "key 'objectGuess'"),
}


@pytest.mark.parametrize("change, fragment", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_datasets_name_the_key(tmp_path, change, fragment):
    path = _save(tmp_path, change(_valid()))
    with pytest.raises(ParityInputError) as caught:
        dataset_cases(str(path), None, None, [], None)
    message = str(caught.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message, message


@pytest.mark.parametrize("assignments, fragment", [(["N=64"], "key 'probeGuess': patterns and probe are 32 x 32"),
                                                   (["gridsize=4"], "key .xcoords.: expected at least 16 scan positions for gridsize 4")])
def test_knobs_that_contradict_the_dataset(tmp_path, assignments, fragment):
    path = _save(tmp_path, _valid())
    with pytest.raises(ParityInputError, match=fragment):
        dataset_cases(str(path), "pinn", None, assignments, None)


def test_simulate_needs_an_object(tmp_path):
    path = _save(tmp_path, _drop("objectGuess")(_valid()))
    cases, _ = dataset_cases(str(path), None, None, [], None)
    assert [case.pipeline for case in cases] == ["pinn"]
    with pytest.raises(ParityInputError, match="key 'objectGuess': expected a complex object"):
        dataset_cases(str(path), "simulate", None, [], None)


def test_a_dataset_whose_positions_miss_the_object_is_refused(tmp_path):
    arrays = _valid()
    path = _save(tmp_path, arrays | {"xcoords": arrays["xcoords"] + 10000})
    with pytest.raises(ParityInputError,
                       match="key 'objectGuess': expected an object that is nonzero under at least one scan "
                             "position; it is zero under all"):
        dataset_cases(str(path), "simulate", None, [], None)


def test_run_dataset_on_the_command_line(tmp_path, capsys):
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
    from parity.cli import main
    from tests.hostile import assert_refused, parity_process

    code = main(["run", "--dataset", str(MOON), "--pipeline", "simulate", "--mode", "propagated", "--out",
                 str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "dataset-moon-simulate: PASS" in out, out
    assert (tmp_path / "dataset-moon-simulate" / "report.json").exists()
    bad = _save(tmp_path, _drop("probeGuess")(_valid()))
    assert_refused(parity_process("run", "--dataset", bad, "--out", tmp_path / "o"), str(bad), "'probeGuess'")
