"""The ``parity`` command line: exit codes 0 (parity holds), 1 (parity fails), 2 (bad usage / bad input).

Most commands run in-process through ``parity.cli.main``; a few run as real
subprocesses, for real exit codes and to show that ``parity check`` needs no
TensorFlow. Every run uses the physics pipeline at N=32.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

import torch  # noqa: E402

from backends.common.config import resolve_config  # noqa: E402
from backends.common.taps import pipeline_taps  # noqa: E402
from backends.common.weights import init_weights, weights_fingerprint  # noqa: E402
from parity import synthetic  # noqa: E402
from parity.builtin_cases import BUILTIN_CASES  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "N=32"]
CASE = ["--case", "physics-default"]
FAULTY = "tests.faulty_adapters:FaultyTorch"
RAISING = "tests.faulty_adapters:RaisingTorch"
PHYSICS_TAPS = [spec.name for spec in pipeline_taps("physics", resolve_config({"N": 32}))]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _report(out: Path, case: str = "physics-default") -> dict:
    return json.loads((out / case / "report.json").read_text())


@pytest.fixture(scope="module")
def goldens(tmp_path_factory) -> Path:
    """physics-default at N=32 recorded by ``parity record`` into a private folder."""
    folder = tmp_path_factory.mktemp("goldens")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["record", "--goldens", str(folder), *CASE, *SMALL])
    assert code == EXIT_OK
    assert f"recorded physics-default ({BUILTIN_CASES['physics-default'].with_config(N=32).hash()})" in stdout.getvalue()
    assert sorted(path.name for path in folder.iterdir()) == ["physics-default.h5"]
    return folder


# ---- cases ----

def test_cases_lists_every_builtin_case(capsys):
    code, out, _ = cli(capsys, "cases")
    assert code == EXIT_OK
    lines = out.strip().splitlines()
    assert len(lines) == len(BUILTIN_CASES)
    for line, case in zip(lines, BUILTIN_CASES.values()):
        assert line.split()[:2] == [case.name, case.pipeline]


def test_cases_json(capsys):
    code, out, _ = cli(capsys, "cases", "--json")
    assert code == EXIT_OK
    listed = json.loads(out)
    assert [item["name"] for item in listed] == list(BUILTIN_CASES)
    for item in listed:
        case = BUILTIN_CASES[item["name"]]
        assert item["hash"] == case.hash() and item["config"] == case.config.to_dict()


# ---- run ----

def test_run_passes_and_writes_a_report(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *CASE, *SMALL, "--out", tmp_path)
    assert code == EXIT_OK, err
    assert "PASS: 9/9 taps" in out
    report = _report(tmp_path)
    assert report["schema"] == "ptycho-parity/report" and report["schema_version"] == 2
    assert report["case"]["name"] == "physics-default" and report["pipeline"] == "physics"
    assert report["config"] == resolve_config({"N": 32}).to_dict()
    assert report["reference"]["name"] == "tf" and report["candidate"]["name"] == "torch"
    assert report["passed"] is True and report["first_divergence"] is None
    assert [tap["name"] for tap in report["taps"]] == PHYSICS_TAPS  # stage order
    for tap in report["taps"]:
        assert tap["passed"] is True
        assert set(tap["modes"]) == {"propagated", "isolated"}
        for mode, result in tap["modes"].items():
            assert result["mode"] == mode and result["passed"] is True and result["error"] is None
            assert result["tolerance"]["criteria"]["max_rel_to_peak"] == 1e-6
            assert "tolerances.toml [[rule]]" in result["tolerance"]["source"]
            metrics = result["metrics"]
            assert metrics["name"] == tap["name"] and metrics["passed"] is True
            assert metrics["reference_shape"] == tap["shape"] and metrics["max_rel_to_peak"] <= 1e-6
    provenance = report["provenance"]
    assert {"timestamp", "code_version", "device", "libraries", "determinism"} <= set(provenance)
    assert provenance["device"] == "cpu"
    assert not list((tmp_path / "physics-default").glob(".*.tmp"))


def test_run_with_an_injected_fault_exits_1_and_names_the_stage(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *CASE, *SMALL, "--candidate", FAULTY, "--out", tmp_path)
    assert code == EXIT_DIVERGED, err
    assert "first divergence: farfield (isolated)" in out and "FAIL" in out
    report = _report(tmp_path)
    assert report["passed"] is False and report["candidate"]["name"] == "torch-faulty"
    assert report["candidate"]["stages_replaced"] == ["farfield"]
    divergence = report["first_divergence"]
    assert divergence["tap"] == "farfield" and divergence["mode"] == "isolated" and not divergence["inherited"]
    assert "1.0e-02 exceeds 1.0e-06" in divergence["messages"][0]
    taps = {tap["name"]: tap for tap in report["taps"]}
    upstream = PHYSICS_TAPS[: PHYSICS_TAPS.index("farfield")]
    assert all(taps[name]["passed"] for name in upstream)
    assert taps["farfield"]["modes"]["isolated"]["passed"] is False
    assert taps["amplitude"]["modes"]["isolated"]["passed"] is True  # isolated: given the reference's far field
    assert taps["amplitude"]["modes"]["propagated"]["passed"] is False  # propagated: inherits the error


def test_run_with_a_raising_stage_exits_1(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *CASE, *SMALL, "--candidate", RAISING, "--out", tmp_path)
    assert code == EXIT_DIVERGED, err
    report = _report(tmp_path)
    assert report["first_divergence"]["tap"] == "farfield"
    assert "injected fault" in report["first_divergence"]["messages"][0]
    taps = {tap["name"]: tap for tap in report["taps"]}
    assert "FloatingPointError: " in taps["farfield"]["modes"]["propagated"]["error"]
    assert taps["amplitude"]["modes"]["propagated"]["skipped"].startswith("not reached")


def test_run_with_user_inputs(capsys, tmp_path):
    arrays = synthetic.pipeline_inputs("physics", resolve_config({"N": 32, "dtype": "float64"}), 2, seed=3)
    path = tmp_path / "my_scan.npz"
    np.savez(path, **arrays, comment=np.arange(2))
    out_dir = tmp_path / "reports"
    code, out, err = cli(capsys, "run", "--pipeline", "physics", "--inputs", path, *SMALL, "--out", out_dir)
    assert code == EXIT_OK, err
    assert "ignored keys ['comment']" in out
    report = _report(out_dir, "user-my_scan")
    assert report["passed"] is True and report["case"]["tags"] == ["user"]
    # float64 inputs and no dtype set: the run takes the inputs' precision instead of rounding them
    assert report["config"]["N"] == 32 and report["config"]["dtype"] == "float64"
    assert report["case"]["batch"] == 2
    assert [tap["name"] for tap in report["taps"]] == PHYSICS_TAPS


def test_user_inputs_rounded_to_float32_are_named(capsys, tmp_path):
    arrays = synthetic.pipeline_inputs("physics", resolve_config({"N": 32}), 2, seed=3)
    arrays["positions"] = arrays["positions"].astype(np.float64)  # one 64-bit key among float32 ones
    path = tmp_path / "mixed.npz"
    np.savez(path, **arrays)
    code, out, err = cli(capsys, "run", "--pipeline", "physics", "--inputs", path, *SMALL, "--out", tmp_path)
    assert code == EXIT_OK, err
    assert "['positions'] are 64-bit and are rounded to the float32 run" in out
    assert _report(tmp_path, "user-mixed")["config"]["dtype"] == "float32"


def test_run_with_user_inputs_in_float64(capsys, tmp_path):
    arrays = synthetic.pipeline_inputs("simulate", resolve_config({"N": 32}), 3, seed=4)  # float32 on disk
    path = tmp_path / "scan.npz"
    np.savez(path, **arrays)
    code, _, err = cli(capsys, "run", "--pipeline", "simulate", "--inputs", path, *SMALL, "--set", "dtype=float64",
                       "--out", tmp_path, "--mode", "isolated")
    assert code == EXIT_OK, err
    report = _report(tmp_path, "user-scan")
    assert report["config"]["dtype"] == "float64" and report["modes"] == ["isolated"]
    assert all(tap["modes"]["isolated"]["tolerance"]["criteria"]["max_rel_to_peak"] == 1e-12 for tap in report["taps"])


PINN_KNOBS = ["--set", "N=32", "--set", "n_filters_scale=1"]


def _pinn_files(tmp_path: Path, weights_cfg=None) -> tuple[Path, Path, dict]:
    cfg = resolve_config({"N": 32, "n_filters_scale": 1})
    inputs, weights = tmp_path / "pinn_inputs.npz", tmp_path / "pinn_weights.npz"
    np.savez(inputs, **synthetic.pipeline_inputs("pinn", cfg, 2, seed=1))
    values = init_weights(weights_cfg or cfg, seed=5, bias_scale=0.05)
    np.savez(weights, **values)
    return inputs, weights, values


def test_run_pinn_with_user_inputs_and_weights(capsys, tmp_path):
    inputs, weights, values = _pinn_files(tmp_path)
    code, out, err = cli(capsys, "run", "--pipeline", "pinn", "--inputs", inputs, "--weights", weights, *PINN_KNOBS,
                         "--out", tmp_path / "reports")
    assert code == EXIT_OK, err
    assert "no --weights" not in out
    report = _report(tmp_path / "reports", "user-pinn_inputs")
    assert report["passed"] is True and report["pipeline"] == "pinn"
    assert report["case"]["hashes"]["weights"] == weights_fingerprint(values)  # the user's weights were used
    audits = {audit["name"]: audit for audit in report["audits"]}
    assert audits["config"]["passed"] and audits["weights"]["passed"]
    assert [tap["name"] for tap in report["taps"]] == [
        spec.name for spec in pipeline_taps("pinn", resolve_config({"N": 32, "n_filters_scale": 1}))]


def test_run_pinn_with_weights_of_another_shape_exits_2(capsys, tmp_path):
    inputs, weights, _ = _pinn_files(tmp_path, weights_cfg=resolve_config({"N": 32, "n_filters_scale": 2}))
    code, _, err = cli(capsys, "run", "--pipeline", "pinn", "--inputs", inputs, "--weights", weights, *PINN_KNOBS,
                       "--out", tmp_path / "reports")
    assert code == EXIT_BAD_INPUT
    assert f"{weights}: weights do not fit the configuration" in err
    assert "parameter 'encoder.block0.conv0.kernel' has shape (3, 3, 4, 128), expected (3, 3, 4, 64)" in err
    assert not (tmp_path / "reports").exists()


def test_weights_for_the_physics_pipeline_exit_2(capsys, tmp_path):
    inputs, weights, _ = _pinn_files(tmp_path)
    physics = tmp_path / "physics.npz"
    np.savez(physics, **synthetic.pipeline_inputs("physics", resolve_config({"N": 32}), 2, seed=1))
    code, _, err = cli(capsys, "run", "--pipeline", "physics", "--inputs", physics, "--weights", weights, *SMALL,
                       "--out", tmp_path / "reports")
    assert code == EXIT_BAD_INPUT and "--weights is only for the pinn pipeline" in err


def test_dump_taps_writes_every_tap(capsys, tmp_path):
    code, _, err = cli(capsys, "run", *CASE, *SMALL, "--dump-taps", "--out", tmp_path)
    assert code == EXIT_OK, err
    folder = tmp_path / "physics-default"
    assert {"report.json", "taps_candidate.h5", "taps_reference.h5"} <= {path.name for path in folder.iterdir()}
    cfg = resolve_config({"N": 32})
    with h5py.File(folder / "taps_reference.h5") as reference, h5py.File(folder / "taps_candidate.h5") as candidate:
        assert sorted(reference["taps"]) == sorted(PHYSICS_TAPS)
        assert sorted(candidate) == ["isolated", "propagated"]
        for group in ("propagated", "isolated"):
            assert sorted(candidate[group]) == sorted(PHYSICS_TAPS), group
        for spec in pipeline_taps("physics", cfg):
            expected = spec.shape(cfg, 2)
            assert reference["taps"][spec.name].shape == expected
            assert reference["taps"][spec.name].dtype == spec.dtype(cfg)
            assert candidate["propagated"][spec.name].shape == expected
        far_ref = reference["taps"]["farfield"][()]
        far_cand = candidate["propagated"]["farfield"][()]
        assert np.abs(far_ref - far_cand).max() <= 1e-6 * np.abs(far_ref).max()


def test_taps_and_mode_filters(capsys, tmp_path):
    code, _, err = cli(capsys, "run", *CASE, *SMALL, "--taps", "amplitude*", "--taps", "farfield",
                       "--mode", "propagated", "--out", tmp_path, "--quiet")
    assert code == EXIT_OK, err
    report = _report(tmp_path)
    assert [tap["name"] for tap in report["taps"]] == ["farfield", "amplitude", "amplitude.scaled"]
    assert all(list(tap["modes"]) == ["propagated"] for tap in report["taps"])


# ---- exit 2: bad usage or bad input ----

def _bad_tolerances(tmp_path: Path) -> Path:
    path = tmp_path / "tolerances.toml"
    path.write_text('[[rule]]\ntaps = "*"\nmode = "sideways"\n')
    return path


def _not_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tolerances.toml"
    path.write_text("[[rule]\n")
    return path


BAD_USAGE = {
    "unknown case": (lambda tmp: ["run", "--case", "physics-nope"], "unknown case 'physics-nope'"),
    "glob matching no case": (lambda tmp: ["run", "--case", "physics-nope*"], "--case 'physics-nope*' matches no"),
    "bad --set value": (lambda tmp: ["run", *CASE, "--set", "N=abc"], "N must be an integer, got 'abc'"),
    "bad --set syntax": (lambda tmp: ["run", *CASE, "--set", "N"], "expected knob=value"),
    "unknown knob": (lambda tmp: ["run", *CASE, "--set", "colour=red"], "unknown knob(s) ['colour']"),
    "bad --set bool": (lambda tmp: ["run", *CASE, "--set", "object_big=maybe"], "object_big must be true or false"),
    "missing inputs file": (lambda tmp: ["run", "--pipeline", "physics", "--inputs", tmp / "absent.npz", *SMALL],
                            "absent.npz: inputs file not found"),
    "bad tolerance selector": (lambda tmp: ["run", *CASE, *SMALL, "--tolerances", _bad_tolerances(tmp)],
                               "[[rule]] 1: key 'mode'"),
    "tolerance file not TOML": (lambda tmp: ["run", *CASE, *SMALL, "--tolerances", _not_toml(tmp)], "not valid TOML"),
    "missing tolerance file": (lambda tmp: ["run", *CASE, *SMALL, "--tolerances", tmp / "absent.toml"],
                               "tolerance file not found"),
    "unknown adapter module": (lambda tmp: ["run", *CASE, *SMALL, "--candidate", "tests.no_such_module:Backend"],
                               "cannot import 'tests.no_such_module'"),
    "unknown adapter attribute": (lambda tmp: ["run", *CASE, *SMALL, "--candidate", "tests.faulty_adapters:Nope"],
                                  "has no attribute 'Nope'"),
    "misspelt adapter attribute": (lambda tmp: ["run", *CASE, *SMALL, "--candidate", "tests.faulty_adapters:FaultyTorh"],
                                   "has no attribute 'FaultyTorh'; did you mean 'FaultyTorch'?"),
    "object that is no adapter": (lambda tmp: ["run", *CASE, *SMALL, "--candidate",
                                               "tests.faulty_adapters:not_an_adapter"], "lacks ['run_pipeline'"),
    "adapter name without module": (lambda tmp: ["run", *CASE, *SMALL, "--candidate", "jax"], "adapter 'jax'"),
    "inputs without pipeline": (lambda tmp: ["run", "--inputs", tmp / "x.npz", *SMALL], "--inputs needs --pipeline"),
    "inputs with case": (lambda tmp: ["run", *CASE, "--pipeline", "physics", "--inputs", tmp / "x.npz"],
                         "--case and --inputs exclude each other"),
    "weights without inputs": (lambda tmp: ["run", *CASE, "--weights", tmp / "w.npz"], "--weights needs --inputs"),
    "bad config file": (lambda tmp: ["run", *CASE, "--config", tmp / "absent.toml"], "config file not found"),
    "a named case without its golden": (lambda tmp: ["check", *CASE, "--goldens", tmp, "--out", tmp / "out"],
                                         "no golden file for "),
}


@pytest.mark.parametrize("build, fragment", [
    *[pytest.param(build, fragment, id=label) for label, (build, fragment) in BAD_USAGE.items()],
    pytest.param(lambda tmp: ["run", *CASE, *SMALL, "--device", "cuda:0"], "sees no CUDA device",
                 id="cuda on a machine without one",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_usage_exits_2(capsys, tmp_path, build, fragment):
    out_dir = tmp_path / "reports"
    code, out, err = cli(capsys, *build(tmp_path), "--out", out_dir)
    assert code == EXIT_BAD_INPUT
    assert err.startswith("parity: error: ") and fragment in err, err
    assert not out_dir.exists()  # nothing half-done was written


@pytest.mark.parametrize("args", [["run", "--mode", "sideways"], ["run", "--pipeline", "jax"], ["frobnicate"], [],
                                  ["check", "--repeat", "99999999999999"], ["check", "--stage-timeout", "0.001"]])
def test_argparse_errors_exit_2(capsys, args):
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == EXIT_BAD_INPUT
    assert "usage: parity" in capsys.readouterr().err


def test_bad_input_array_exits_2(capsys, tmp_path):
    arrays = synthetic.pipeline_inputs("physics", resolve_config({"N": 32}), 2, seed=3)
    arrays["positions"] = arrays["positions"][:1]
    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays)
    code, _, err = cli(capsys, "run", "--pipeline", "physics", "--inputs", path, *SMALL, "--out", tmp_path)
    assert code == EXIT_BAD_INPUT
    assert f"{path}: key 'positions': expected batch size 2" in err


def test_npy_inputs_file_exits_2(capsys, tmp_path):
    """Regression: a .npy file raised TypeError (a traceback and exit 1, 'parity fails') instead of exit 2."""
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((2, 32, 32, 4), np.complex64))
    code, _, err = cli(capsys, "run", "--pipeline", "physics", "--inputs", path, *SMALL, "--out", tmp_path)
    assert code == EXIT_BAD_INPUT and str(path) in err


# ---- record / check ----

def test_check_against_recorded_goldens_passes(capsys, tmp_path, goldens):
    code, out, err = cli(capsys, "check", "--goldens", goldens, *CASE, *SMALL, "--out", tmp_path)
    assert code == EXIT_OK, err
    report = _report(tmp_path)
    assert report["passed"] is True and report["reference"]["path"] == str(goldens / "physics-default.h5")
    assert [tap["name"] for tap in report["taps"]] == PHYSICS_TAPS


def test_check_with_a_faulty_candidate_exits_1(capsys, tmp_path, goldens):
    code, out, err = cli(capsys, "check", "--goldens", goldens, *CASE, *SMALL, "--candidate", FAULTY,
                         "--out", tmp_path)
    assert code == EXIT_DIVERGED, err
    assert _report(tmp_path)["first_divergence"]["tap"] == "farfield"


@pytest.mark.parametrize("extra, changed", [(["--set", "gaussian_sigma=0.5"], "gaussian_sigma"),
                                            (["--set", "dtype=float64"], "dtype"),
                                            ([], "N: golden 32 -> now 64")])
def test_check_after_changing_a_knob_is_stale(capsys, tmp_path, goldens, extra, changed):
    small = [] if changed.startswith("N:") else SMALL
    code, _, err = cli(capsys, "check", "--goldens", goldens, *CASE, *small, *extra, "--out", tmp_path)
    assert code == EXIT_BAD_INPUT
    assert "stale" in err and changed in err
    assert not (tmp_path / "physics-default").exists()


def test_check_without_a_golden_exits_2(capsys, tmp_path, goldens):
    code, _, err = cli(capsys, "check", "--goldens", goldens, "--case", "simulate-n32-f64", "--out", tmp_path)
    assert code == EXIT_BAD_INPUT and "no golden file for simulate-n32-f64" in err


def test_record_leaves_no_temporary_files(goldens):
    assert [path.name for path in goldens.iterdir()] == ["physics-default.h5"]


# ---- real processes ----

BLOCK_TENSORFLOW = textwrap.dedent("""
    import atexit, importlib.abc, importlib.machinery, json, sys

    BLOCKED = ("tensorflow", "keras", "tf_keras")
    imports, probes = [], []

    class _Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            imports.append(spec.name)
            raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked by the test)", name=spec.name)

        def exec_module(self, module):
            raise AssertionError("unreachable")

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        # find_spec probes (torch._dynamo probes for tensorflow) get a spec without origin;
        # an actual import of the spec fails and is recorded.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] not in BLOCKED:
                return None
            probes.append(name)
            return importlib.machinery.ModuleSpec(name, _Refuse(), origin=None)

    sys.meta_path.insert(0, BlockTensorFlow())

    @atexit.register
    def _report():
        loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
        print("BLOCK-REPORT " + json.dumps({"imports": imports, "probes": probes, "loaded": loaded}), file=sys.stderr)

    from parity.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _process(args: list, block_tensorflow: bool = False, timeout: int = 240) -> subprocess.CompletedProcess:
    prefix = ["-c", BLOCK_TENSORFLOW] if block_tensorflow else ["-m", "parity"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *prefix, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _block_report(stderr: str) -> dict:
    lines = [line for line in stderr.splitlines() if line.startswith("BLOCK-REPORT ")]
    assert len(lines) == 1, stderr
    return json.loads(lines[0].removeprefix("BLOCK-REPORT "))


def test_check_runs_without_tensorflow(tmp_path, goldens):
    result = _process(["check", "--goldens", goldens, *CASE, *SMALL, "--out", tmp_path, "--quiet"],
                      block_tensorflow=True)
    assert result.returncode == EXIT_OK, result.stderr
    blocked = _block_report(result.stderr)
    assert blocked["imports"] == [] and blocked["loaded"] == [], blocked
    assert "Traceback" not in result.stderr
    assert "physics-default: PASS" in result.stdout
    report = _report(tmp_path)
    assert report["passed"] is True and "tensorflow" not in report["provenance"]["determinism"]


def test_the_tensorflow_block_works(tmp_path):
    """Control: `parity run` needs TensorFlow; under the block it is refused with exit 2."""
    result = _process(["run", *CASE, *SMALL, "--out", tmp_path], block_tensorflow=True)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "cannot import 'backends.tf'" in result.stderr
    assert _block_report(result.stderr)["imports"] == ["tensorflow"]
    selftest = _process(["selftest", "--fast", "--only", "canvas-offset-sign"], block_tensorflow=True)
    assert selftest.returncode == EXIT_BAD_INPUT and "cannot import 'backends.tf'" in selftest.stderr
    assert "Traceback" not in selftest.stderr, selftest.stderr


def test_real_exit_codes_of_python_m_parity(tmp_path):
    listed = _process(["cases"])
    assert listed.returncode == EXIT_OK and all(name in listed.stdout for name in BUILTIN_CASES)
    bad = _process(["run", "--case", "nope", "--out", tmp_path])
    assert bad.returncode == EXIT_BAD_INPUT
    assert bad.stderr.startswith("parity: error: unknown case 'nope'") and "Traceback" not in bad.stderr
    usage = _process(["run", "--mode", "sideways"])
    assert usage.returncode == EXIT_BAD_INPUT and "invalid choice" in usage.stderr
    assert _process(["--help"]).returncode == EXIT_OK  # argparse's own exits pass through the supervisor


def test_a_crashing_reference_exits_3_not_1(tmp_path, capsys):
    code = main(["run", "--case", "physics-default", "--set", "N=32", "--out", str(tmp_path),
                 "--reference", "tests.plugin_adapters:RaisingReference"])
    captured = capsys.readouterr()
    assert code == 3
    assert "reference farfield exploded" in captured.err and "not a parity verdict" in captured.err


def test_pinn_check_runs_without_tensorflow(tmp_path):
    """A pinn golden checked with TensorFlow unimportable: the weights audit falls back to Torch alone."""
    goldens = tmp_path / "goldens"
    assert main(["record", "--case", "pinn-n32-single-patch", "--goldens", str(goldens)]) == EXIT_OK
    result = _process(["check", "--goldens", goldens, "--case", "pinn-n32-single-patch", "--out", tmp_path / "out",
                       "--quiet"], block_tensorflow=True)
    assert result.returncode == EXIT_OK, result.stderr
    assert _block_report(result.stderr)["loaded"] == []  # tried, refused, never loaded
    report = json.loads((tmp_path / "out" / "pinn-n32-single-patch" / "report.json").read_text())
    weights = next(audit for audit in report["audits"] if audit["name"] == "weights")
    assert weights["passed"] and all(row["keras_path"] == "" for row in weights["details"]["mapping"]["parameters"])


def test_record_with_overrides_into_the_shipped_goldens_is_refused(capsys):
    code, _, err = cli(capsys, "record", "--case", "physics-default", "--set", "N=32")
    assert code == EXIT_BAD_INPUT and "--goldens" in err


def test_goldens_of_your_own_inputs_are_recorded_and_checked(capsys, tmp_path):
    """record --inputs (into a folder of your own), check --inputs against it; other bytes are a stale golden."""
    from parity.synthetic import pipeline_inputs

    arrays = pipeline_inputs("physics", resolve_config({"N": 32}), 3, seed=2)
    inputs = tmp_path / "mine.npz"
    np.savez(inputs, **arrays)
    own = ("--inputs", str(inputs), "--pipeline", "physics", "--set", "N=32")
    code, _, err = cli(capsys, "record", *own)
    assert code == EXIT_BAD_INPUT and "--goldens" in err  # never into the shipped goldens
    folder = tmp_path / "goldens"
    code, out, err = cli(capsys, "record", *own, "--goldens", str(folder), "--reference", "torch")
    assert code == EXIT_OK, err
    assert (folder / "user-mine.h5").is_file()
    code, out, err = cli(capsys, "check", *own, "--goldens", str(folder), "--candidate", "torch",
                         "--out", str(tmp_path / "out"), "--quiet")
    assert code == EXIT_OK, err
    assert "user-mine: PASS" in out
    np.savez(inputs, **dict(arrays, probe=arrays["probe"] * 2))
    code, _, err = cli(capsys, "check", *own, "--goldens", str(folder), "--candidate", "torch",
                       "--out", str(tmp_path / "out2"), "--quiet")
    assert code == EXIT_BAD_INPUT and "user-mine.h5" in err


def test_case_globs_choose_the_built_in_cases_they_match_once_each():
    from parity.builtin_cases import BUILTIN_CASES, select_cases

    chosen = [case.name for case in select_cases(["physics-n32-*", "physics-n32-intensity-scale", "pinn-default"])]
    assert chosen == [name for name in BUILTIN_CASES if name.startswith("physics-n32-")] + ["pinn-default"]


def test_a_knob_note_is_left_out_where_another_case_of_the_command_sets_the_knob(capsys, tmp_path):
    args = ["run", "--reference", "torch", "--candidate", "torch", "--out", str(tmp_path), "--quiet"]
    assert main([*args, "--case", "physics-n32-edge-offsets-f64"]) == 0
    assert "intensity_scale = 1 here" in capsys.readouterr().out
    assert main([*args, "--case", "physics-n32-edge-offsets-f64", "--case", "physics-n32-intensity-scale"]) == 0
    assert "intensity_scale = 1 here" not in capsys.readouterr().out
