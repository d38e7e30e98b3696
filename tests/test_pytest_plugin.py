"""The pytest plugin (parity/pytest_plugin.py), exercised the way a porting team uses it.

Most checks run a small pytest session with ``pytester``: in-process where the
test only reads outcomes (fast: PyTorch is already imported here), in a
subprocess where a clean interpreter matters (nothing imported at
collection, the plugin loaded twice, the example port). Candidates are real
Torch backends, references the recorded goldens or real backends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backends.common.taps import pipeline_taps
from parity import synthetic
from parity.builtin_cases import BUILTIN_CASES
from parity.pytest_plugin import assert_parity
from parity.runner import RunOptions
from parity.workflows import DEFAULT_GOLDENS, check_against_golden, open_golden, tolerance_table

# In-process runs restore sys.modules afterwards: a C extension first imported inside one would be
# imported again by the next and crash, and every run would pay for the Torch backend's imports again;
# so they are imported here, once, before any of them.
pytest.importorskip("torch", reason="PyTorch (every candidate here) is not installed")
pytest.importorskip("backends.torch")

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SMALL = "physics-n32-edge-offsets-f64"  # float64, N=32: the cheapest case to run
TAPS = [spec.name for spec in pipeline_taps("physics", BUILTIN_CASES[SMALL].config)]
BROKEN = TAPS.index("farfield")  # tests/faulty_adapters.py breaks the far field


@pytest.fixture
def port(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A fresh repository of a porting team: the conftest line, and workers that can import the harness."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    pytester.makeconftest('pytest_plugins = ["parity.pytest_plugin"]')
    return pytester


def configure(pytester: pytest.Pytester, **keys: str) -> None:
    lines = ["[pytest]", "pythonpath = ."] + [f"parity_{key} = {value}" for key, value in keys.items()]
    pytester.makeini("\n".join(lines))


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """nodeid -> passed / failed / skipped (in-process runs)."""
    found = {}
    for report in result.reprec.getreports("pytest_runtest_logreport"):
        if report.when == "call" or report.outcome != "passed":
            found[report.nodeid] = report.outcome
    return found


def messages(result: pytest.RunResult) -> dict[str, str]:
    return {report.nodeid: report.longreprtext for report in result.reprec.getreports("pytest_runtest_logreport")
            if report.when == "call" and report.outcome != "passed"}


def tap_id(function: str, tap: str, case: str = SMALL) -> str:
    return f"parity::{function}[{case}-{tap}]"


def test_collection_lists_one_test_per_case_tap_and_mode_without_importing_a_framework(port):
    configure(port, candidate="torch", reference="golden")
    port.makeconftest(textwrap.dedent("""
        import sys
        pytest_plugins = ["parity.pytest_plugin"]

        def pytest_collection_finish(session):
            loaded = [name for name in ("tensorflow", "torch", "keras") if name in sys.modules]
            (session.config.rootpath / "frameworks.txt").write_text(" ".join(loaded))
    """))
    result = port.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in result.outlines if "::test_" in line]
    expected = [f"parity::test_parity[{case.name}-{spec.name}]" for case in BUILTIN_CASES.values()
                for spec in pipeline_taps(case.pipeline, case.config)]
    assert [line for line in ids if "::test_parity[" in line] == expected
    assert len(expected) >= 100
    assert len([line for line in ids if "::test_parity_isolated[" in line]) == len(expected)
    assert "parity::test_parity[physics-fly001-moon-object.canvas]" in ids
    assert (port.path / "frameworks.txt").read_text() == ""


@pytest.mark.parametrize("adapter", ["FaultyTorch", "RaisingTorch"])
def test_broken_candidate_fails_from_its_stage_on_propagated_and_only_that_stage_isolated(port, adapter):
    configure(port, candidate=f"tests.faulty_adapters:{adapter}", reference="golden", cases=SMALL, baselines="off")
    port.makepyfile(test_whole_case="""
        import pytest
        from parity.pytest_plugin import assert_parity

        @pytest.mark.parity_case("%s")
        def test_whole_case(parity_report):
            assert_parity(parity_report)
    """ % SMALL)
    result = port.runpytest("-p", "no:cacheprovider")
    found, texts = outcomes(result), messages(result)
    assert {tap: found[tap_id("test_parity", tap)] for tap in TAPS} == {
        tap: "passed" if index < BROKEN else "failed" for index, tap in enumerate(TAPS)}
    assert {tap: found[tap_id("test_parity_isolated", tap)] for tap in TAPS} == {
        tap: "failed" if tap == "farfield" else "passed" for tap in TAPS}
    first = texts[tap_id("test_parity_isolated", "farfield")]
    assert first.startswith(f"FIRST DIVERGENCE of {SMALL} at farfield (isolated): ")
    report = Path(first.split("report: ")[-1].split()[0])
    assert report.name == "report.json" and report.is_file()
    downstream = texts[tap_id("test_parity", "intensity")]
    assert downstream.startswith(f"{SMALL}: intensity (propagated) fails [first divergence: farfield (isolated)]: ")
    if adapter == "FaultyTorch":  # the metrics and the tolerance that failed, in the message
        assert "max|a-b|/max|a| = 1.00e-02" in first and "max_rel_to_peak <= 1e-12" in first
    else:
        assert "the stage raised" in first and "injected fault" in first
    whole = texts["test_whole_case.py::test_whole_case"]
    assert f"parity fails for {SMALL}" in whole and "farfield (isolated)" in whole
    result.stdout.fnmatch_lines(["*parity: first divergence per case*",
                                 f"{SMALL} (golden vs tests.faulty_adapters:{adapter}, cpu): "
                                 "FIRST DIVERGENCE farfield (isolated)*", "    report: *report.json"])


def test_assert_parity_names_the_first_divergence_its_metrics_and_a_diagnosis_where_one_exists(tmp_path):
    from tests.faulty_adapters import FaultyTorch

    case = BUILTIN_CASES[SMALL]
    with open_golden(case, DEFAULT_GOLDENS, tolerance_table(None)) as opened:
        report = check_against_golden(opened, FaultyTorch(), tolerance_table(None), RunOptions(), tmp_path)
    # ModeResult.diagnoses, where the diagnosis engine left any, is read as it comes (objects or text).
    report.tap("farfield").modes["isolated"].diagnoses = [SimpleNamespace(headline="a scale factor: the error is 1% everywhere")]
    with pytest.raises(AssertionError) as failure:
        assert_parity(report)
    text = str(failure.value)
    assert text.startswith(f"parity fails for {SMALL} (golden vs torch-faulty, cpu): farfield (isolated): ")
    assert "FIRST DIVERGENCE" not in text and text.count("farfield (isolated): ") == 1, text  # said once
    assert "max|a-b|/max|a| = 1.00e-02" in text and "diagnosis: a scale factor: the error is 1% everywhere" in text
    assert f"{SMALL}: intensity (isolated)" not in text and f"{SMALL}: intensity (propagated) fails" in text
    assert_parity(report, taps=["object.canvas", "exit_wave"])  # the taps upstream of the fault hold
    assert_parity(report, taps=["object.*", "exit_*"])  # globs, as --taps takes them
    with pytest.raises(AssertionError, match="farfield"):
        assert_parity(report, taps=["far*"])
    with pytest.raises(AssertionError) as unmatched:
        assert_parity(report, taps=["encoder.*"])  # a physics case has none: never a vacuous pass
    said = str(unmatched.value)
    assert "no tap of the report matches 'encoder.*'" in said and said.count(f"{SMALL} (golden") == 1, said
    with pytest.raises(AssertionError) as from_disk:
        assert_parity(tmp_path / SMALL / "report.json")  # the document on disk judges the same
    assert str(from_disk.value).startswith(f"parity fails for {SMALL} (golden vs torch-faulty, cpu): farfield "
                                           "(isolated): ")


COUNTING = """
    import os
    from pathlib import Path

    from tests.faulty_adapters import FaultyTorch

    class Counting(FaultyTorch):
        def run_pipeline(self, pipeline, cfg, inputs, *args, **kwargs):
            with open(Path(__file__).parent / "runs.log", "a") as log:
                log.write(f"{os.getpid()} {pipeline}\\n")
            return super().run_pipeline(pipeline, cfg, inputs, *args, **kwargs)
"""


def test_xdist_gives_the_same_outcomes_and_still_runs_each_case_once(port):
    port.makepyfile(counting=COUNTING)
    configure(port, candidate="counting:Counting", reference="golden", cases=f"{SMALL} simulate-n32-f64",
              baselines="off")
    runs = {}
    for label, extra in (("serial", ["-p", "no:xdist"]), ("xdist", ["-n", "2", "--dist", "load"])):
        (port.path / "runs.log").unlink(missing_ok=True)
        result = port.runpytest("-p", "no:cacheprovider", *extra)
        runs[label] = outcomes(result)
        assert sorted(line.split()[1] for line in (port.path / "runs.log").read_text().splitlines()) == [
            "physics", "simulate"], label  # one candidate run per case, whatever the number of workers
    assert runs["xdist"] == runs["serial"]
    assert "failed" in runs["serial"].values() and "passed" in runs["serial"].values()
    assert len(runs["serial"]) == 2 * (len(TAPS) + 7)


PORT = """
    import os
    import torch
    from backends.torch import TorchBackend
    from backends.torch.stages import STAGES

    def amplitude(ctx, field):
        out = STAGES["amplitude"](ctx, field) * float(os.environ.get("PORT_AMPLITUDE_FACTOR", "1"))
        return out.to(torch.float64) if os.environ.get("PORT_WIDEN") else out  # a port that widens one tensor

    class Port(TorchBackend):
        name = "port"
        STAGES = {**TorchBackend.STAGES, "amplitude": amplitude}
"""


def test_baselines_catch_a_widened_dtype_and_a_drift_that_moves_the_reference_too(port, monkeypatch):
    """Two float32 user cases: one keeps every tap (arrays), the larger one statistics; tolerances: the table's."""
    pytest.importorskip("pytest_regressions", reason="the baselines need pytest-regressions, not installed here")
    cfg = BUILTIN_CASES["physics-default"].config.replace(N=32)
    for name, batch in (("small", 1), ("large", 2)):  # 177 and 345 KiB of taps
        np.savez(port.path / f"{name}.npz", **synthetic.pipeline_inputs("physics", cfg, batch, seed=3))
    port.makepyfile(port=PORT)
    port.makeini(textwrap.dedent("""
        [pytest]
        pythonpath = .
        parity_candidate = port:Port
        parity_inputs =
            physics small.npz N=32
            physics large.npz N=32
        parity_baselines = baselines
        parity_baseline_array_kib = 256
    """))
    arrays, stats = port.path / "baselines/port/user-small.npz", port.path / "baselines/port/user-large.yml"
    baseline_ids = ["parity::test_baseline_arrays[user-small]", "parity::test_baseline_stats[user-large]"]

    def run(*args: str, reference: str = "torch") -> tuple[dict[str, str], dict[str, str]]:
        result = port.runpytest("-p", "no:cacheprovider", f"--parity-reference={reference}", *args)
        return outcomes(result), messages(result)

    found, texts = run("-k", "baseline")  # the first run records the baselines
    assert [found[node] for node in baseline_ids] == ["failed", "failed"]
    assert "created" in texts[baseline_ids[0]] and arrays.is_file() and stats.is_file()
    assert [run("-k", "baseline")[0][node] for node in baseline_ids] == ["passed", "passed"]

    # Drift past the tolerance in the port and in the reference alike: parity holds, the baselines do not.
    monkeypatch.setenv("PORT_AMPLITUDE_FACTOR", "1.0001")
    found, texts = run(reference="port:Port")
    assert {outcome for node, outcome in found.items() if "test_parity" in node} == {"passed"}
    assert [found[node] for node in baseline_ids] == ["failed", "failed"]
    assert "Values are not sufficiently close" in texts[baseline_ids[0]] and "amplitude" in texts[baseline_ids[0]]
    assert len(texts[baseline_ids[0]].splitlines()) <= 45  # not one line per differing element
    assert "mean_abs" in texts[baseline_ids[1]]

    # --force-regen will not pin a candidate that fails parity: the files stay as they were.
    before = arrays.read_bytes(), stats.read_bytes()
    found, texts = run("-k", "baseline", "--force-regen")
    assert all("refusing to regenerate" in texts[node] for node in baseline_ids)
    assert (arrays.read_bytes(), stats.read_bytes()) == before

    # float32 -> float64 fails, although pytest-regressions would compare the values alone.
    monkeypatch.delenv("PORT_AMPLITUDE_FACTOR")
    monkeypatch.setenv("PORT_WIDEN", "1")
    found, texts = run("-k", "baseline")
    assert [found[node] for node in baseline_ids] == ["failed", "failed"]
    assert "amplitude: baseline float32 (1, 32, 32, 4) -> now float64 (1, 32, 32, 4)" in texts[baseline_ids[0]]
    assert "dtype: float64" in texts[baseline_ids[1]]

    # A baseline that carries a tolerance is refused: tolerances live in the table only.
    monkeypatch.delenv("PORT_WIDEN")
    stats.write_text(stats.read_text().replace("  amplitude:\n", "  amplitude:\n    atol: 1.0\n", 1))
    found, texts = run("-k", "baseline")
    assert found[baseline_ids[0]] == "passed" and found[baseline_ids[1]] == "failed"
    assert "['amplitude.atol'] are not values this plugin writes" in texts[baseline_ids[1]]

    # Each baseline says which case it pins: a knob changed since is said, not hundreds of differing elements.
    assert json.loads((arrays.parent / "user-small.case.json").read_text())["config"]["intensity_scale"] == 1.0
    ini = (port.path / "tox.ini") if (port.path / "tox.ini").is_file() else (port.path / "pytest.ini")
    (port.path / "knobs.toml").write_text("intensity_scale = 2.0\n")  # knobs from a --config file, as the CLI takes
    ini.write_text(ini.read_text().replace("physics small.npz N=32", "physics small.npz knobs.toml N=32"))
    found, texts = run("-k", "baseline")
    assert found[baseline_ids[0]] == "failed", texts
    assert "the case changed since its baseline was pinned: intensity_scale 1.0 -> 2.0" in texts[baseline_ids[0]]
    assert len(texts[baseline_ids[0]].splitlines()) <= 3


def test_without_tensorflow_tf_tests_skip_with_a_reason_and_golden_checks_still_run(port, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what an import finds on a GPU machine without TF
    configure(port, candidate="torch", reference="tf", cases=SMALL, baselines="off", device="auto", out="reports")
    port.makepyfile(test_golden="""
        from parity.pytest_plugin import assert_parity

        def test_against_goldens(parity_run):
            assert_parity(parity_run("%s", reference="golden"))
    """ % SMALL)
    result = port.runpytest("-p", "no:cacheprovider", "-rs")
    found = outcomes(result)
    assert found.pop("test_golden.py::test_against_goldens") == "passed"
    assert set(found.values()) == {"skipped"} and len(found) == 2 * len(TAPS)
    result.stdout.fnmatch_lines(["*TensorFlow is not installed here, and 'tf' needs it; the golden checks*"])
    assert len(list(port.path.glob(f"reports/golden-vs-torch-c*/{SMALL}/report.json"))) == 1  # auto: cpu or cuda


@pytest.mark.parametrize("args, complaint", [
    (["--parity-device", "gpu"], "*--parity-device 'gpu': expected one of*"),
    (["--parity-cases", "no-such-case"], "*--parity-cases ?'no-such-case'?: match no built-in case*"),
    (["--parity-tolerances", "missing.toml"], "*missing.toml*"),
    (["--parity-reference", "no_such_dir"], "*--parity-reference 'no_such_dir': expected tf, torch, MODULE:ATTR*"
                                            "no folder*no_such_dir*"),
], ids=["device", "cases", "tolerances", "reference"])
def test_bad_settings_stop_the_session_with_a_usage_error(port, args, complaint):
    result = port.runpytest("--parity-candidate", "torch", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([complaint])


def test_an_installed_plugin_and_a_conftest_line_load_it_once(port):
    """pip-installed (the pytest11 entry point) and still named in a conftest: one plugin, no pluggy error."""
    pytest.importorskip("pytest_regressions", reason="the baselines need pytest-regressions, not installed here")
    dist = port.path / "site" / "ptycho_parity-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ptycho-parity\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nparity = parity.pytest_plugin\n")
    port.makeconftest(textwrap.dedent("""
        import sys
        pytest_plugins = ["parity.pytest_plugin"]

        def pytest_collection_finish(session):
            plugin = sys.modules["parity.pytest_plugin"]
            names = [name for name, p in session.config.pluginmanager.list_name_plugin() if p is plugin]
            (session.config.rootpath / "names.txt").write_text(" ".join(names))
    """))
    configure(port, candidate="torch", reference="golden", cases=SMALL)
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    path = os.pathsep.join([str(dist.parent), os.environ["PYTHONPATH"]])
    done = subprocess.run(command, cwd=port.path, env=dict(os.environ, PYTHONPATH=path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (port.path / "names.txt").read_text() == "parity"  # the entry point's; the conftest line did nothing
    assert f"{2 * len(TAPS) + 1} tests collected" in done.stdout


@pytest.mark.parametrize("parity_case", [SMALL, "simulate-n32-f64"], indirect=True)
def test_tensorflow_reference_and_torch_agree_through_the_fixtures(parity_case, parity_run):
    """The project's own TF-vs-Torch check on two small cases (the generated suite uses the goldens)."""
    outcome = parity_run(parity_case, reference="tf", candidate="torch")
    assert_parity(outcome)
    assert outcome.document["reference"]["name"] != "golden" and outcome.report_path.is_file()


def test_the_example_port_runs_its_suite_from_outside_the_package(pytester):
    """examples/port_tests copied into a repository of its own: its conftest, configuration and baselines."""
    pytest.importorskip("pytest_regressions", reason="the baselines need pytest-regressions, not installed here")
    shutil.copytree(ROOT / "examples" / "port_tests", pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest("-p", "no:cacheprovider")
    taps = sum(len(pipeline_taps(BUILTIN_CASES[name].pipeline, BUILTIN_CASES[name].config))
               for name in (SMALL, "simulate-n32-f64"))
    result.assert_outcomes(passed=2 * taps + 2 + 2)
    result.stdout.fnmatch_lines([f"{SMALL} (golden vs my_port:MyPort, cpu): pass"])


def test_a_failure_prints_report_diagnoses_as_the_terminal_does():
    from parity.pytest_verdicts import _diagnosis_text

    item = {"kind": "unexplained", "summary": "no hypothesis explains it", "residual": None,
            "evidence": {"tested": ["scale", "offset_sign"]}}
    assert _diagnosis_text(item) == "unexplained: no hypothesis explains it"
    assert _diagnosis_text({"kind": "scale", "summary": "x 2.5", "residual": 3.1e-7}) == "scale: x 2.5 [residual 3.1e-07]"


def test_load_case_names_a_case_built_from_an_inputs_file(tmp_path):
    from parity.pytest_plugin import load_case
    from parity.synthetic import pipeline_inputs

    from backends.common.config import ForwardConfig as Config

    arrays = pipeline_inputs("physics", Config().replace(N=32), 2, seed=0)
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    case = load_case("acme-physics", inputs=path, pipeline="physics", assignments=("N=32",))
    assert (case.name, case.pipeline, case.batch) == ("acme-physics", "physics", 2)
    assert load_case(inputs=path, pipeline="physics", assignments=("N=32",)).name == "user-mine"


def test_a_goldens_folder_of_the_users_own_is_read_even_when_named_like_the_keyword(tmp_path):
    from parity.pytest_settings import parse_reference

    assert parse_reference("goldens", tmp_path).goldens == DEFAULT_GOLDENS  # no such folder: the shipped ones
    (tmp_path / "goldens").mkdir()
    assert parse_reference("goldens", tmp_path).goldens == (tmp_path / "goldens").resolve()
    assert parse_reference("golden:goldens", tmp_path).goldens == (tmp_path / "goldens").resolve()
    assert parse_reference("golden", tmp_path).goldens == DEFAULT_GOLDENS
    assert parse_reference("torch", tmp_path).adapter == "torch"


def _project(tmp_path, config_file="pyproject.toml"):
    """A porting team's repository: its configuration (a candidate, golden reference) and a tests folder."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    keys = ('testpaths = ["tests"]\nparity_candidate = "torch"\nparity_reference = "golden"\n'
            f'parity_cases = ["{SMALL}"]\nparity_baselines = "off"\n')
    header = {"pyproject.toml": "[tool.pytest.ini_options]", "pytest.toml": "[pytest]"}[config_file]
    (project / config_file).write_text(f"{header}\n{keys}")
    (project / "tests" / "test_own.py").write_text("def test_own():\n    pass\n")
    return project


def _collect(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("config_file", [
    "pyproject.toml",
    pytest.param("pytest.toml", marks=pytest.mark.skipif(int(pytest.__version__.split(".")[0]) < 9,
                                                          reason="pytest.toml is read from pytest 9 on"))])
def test_an_option_value_pytest_takes_for_a_path_is_a_usage_error_not_a_session_without_its_configuration(
        tmp_path, config_file):
    project = _project(tmp_path, config_file)
    outside = tmp_path / "reports"
    outside.mkdir()
    moved = _collect(project, "--parity-out", str(outside))  # pytest's rootdir moves to tmp_path: no pyproject read
    assert moved.returncode == pytest.ExitCode.USAGE_ERROR, moved.stdout[-2000:] + moved.stderr[-2000:]
    assert f"write --parity-out={outside}" in moved.stderr and config_file in moved.stderr
    fine = _collect(project, f"--parity-out={outside}")
    assert fine.returncode == 0 and f"parity::test_parity[{SMALL}-farfield]" in fine.stdout, fine.stdout[-2000:]


def test_a_rootdir_elsewhere_still_gets_the_generated_suite_in_the_folder_it_collects(tmp_path):
    project = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _collect(elsewhere, f"--rootdir={elsewhere}", str(project / "tests"))
    assert result.returncode == 0 and f"parity::test_parity[{SMALL}-farfield]" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-2000:])


def test_a_case_that_could_not_run_is_explained_whole_once_then_referred_to():
    """A stale golden fails every tap test of its case: the first shows the message, the others point to it."""
    from parity.pytest_runs import ParityOutcome
    from parity.pytest_verdicts import FAILED, tap_verdict

    outcome = ParityOutcome("c", "golden", "torch", "cpu", error="g/c.h5: stale golden for case 'c': " + "x" * 400)
    status, first = tap_verdict(outcome, "farfield", "isolated", "tests/t.py::test_parity[c-farfield-isolated]")
    assert status == FAILED and first.endswith("x" * 400)
    status, again = tap_verdict(outcome, "amplitude", "isolated", "tests/t.py::test_parity[c-amplitude-isolated]")
    assert status == FAILED and "stale golden for case 'c'" in again and len(again) < 400
    assert again.endswith("(the whole message: tests/t.py::test_parity[c-farfield-isolated])")
    status, same = tap_verdict(outcome, "farfield", "isolated", "tests/t.py::test_parity[c-farfield-isolated]")
    assert same == first  # the test that said it whole says it whole again (a rerun)


def test_the_determinism_variables_are_set_before_the_first_conftest_imports_a_framework(pytester, monkeypatch):
    """Installed (the entry point loads the plugin early), a session with a candidate sets the switch's variables
    before any conftest runs: a conftest that imports the port, and with it TensorFlow, finds them set."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("TF_DETERMINISTIC_OPS", raising=False)
    pytester.makeconftest('import os\nopen("seen.txt", "w").write(str(os.environ.get("TF_DETERMINISTIC_OPS")))\n')
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "parity.pytest_plugin", "--parity-candidate=torch",
                                           "--parity-reference=golden", "--parity-baselines=off", "--collect-only",
                                           "-q", "-p", "no:cacheprovider")
    assert (pytester.path / "seen.txt").read_text() == "1", result.stdout.str() + result.stderr.str()


def test_baseline_files_stay_in_their_folder_and_a_fifo_case_file_does_not_hang(tmp_path):
    from parity.pytest_baselines import _definition_changes, adapter_folder

    assert [adapter_folder(name) for name in ("..", ".", "a/../b", "torch", "my port")] == [
        "adapter", "adapter", "a-..-b", "torch", "my-port"]
    baseline = tmp_path / "c.npz"
    os.mkfifo(tmp_path / "c.case.json")  # a FIFO where the case file goes: read, it would block forever
    assert _definition_changes(baseline, BUILTIN_CASES[SMALL]) is None
