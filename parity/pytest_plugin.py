"""The ptycho-parity pytest plugin: parity as ordinary tests, with regression baselines.

Loaded by the ``pytest11`` entry point ``parity`` when the package is
installed, or with one conftest line where it is not::

    pytest_plugins = ["parity.pytest_plugin"]

Once a candidate is configured (``--parity-candidate`` or the ini key
``parity_candidate``) the plugin adds a module ``<suite dir>/parity`` with one
test per case x tap and mode (``test_parity[<case>-<tap>]``,
``test_parity_isolated[...]``) and one baseline test per case. Fixtures
(``parity_case``, ``parity_report``, ``parity_run``, ``parity_load_case``) and
``assert_parity`` serve hand-written tests. Options and ini keys:
``parity.pytest_options``; README "pytest plugin".

Nothing here imports TensorFlow or PyTorch: collection reads the tap
registry; frameworks load when the first test runs a case. A session that
configures nothing imports none of the harness either (the entry point loads
this module in every session of an environment that has the package).
PYTEST_DONT_REWRITE: the plugin's messages are its own; no assert needs rewriting.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .pytest_options import add_options, configured

if TYPE_CHECKING:
    from .cases import Case
    from .pytest_baselines import BaselineCheck
    from .pytest_runs import ParityOutcome, ParityRuns
    from .pytest_settings import ParitySettings
    from .pytest_verdicts import TapCheck

__all__ = ["assert_parity", "load_case"]

SETTINGS = pytest.StashKey["ParitySettings"]()
ACTIVE = pytest.StashKey[bool]()
SESSION = pytest.StashKey[str]()
DUMP_CASES = pytest.StashKey[set]()
ENTRY_POINT = "parity"
SUITE_NAME = "parity"
BASELINE_TESTS = {"arrays": "test_baseline_arrays", "stats": "test_baseline_stats"}
MARKERS = (
    "parity_mode(mode): the mode a generated parity test judges (propagated or isolated)",
    "parity_baseline_kind(kind): arrays (ndarrays_regression) or stats (data_regression)",
    "parity_case(name): the case the parity_case fixture loads when not parametrized",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]):
    """A session that configures a candidate takes its snapshot of numpy and the builtins (``parity.integrity``)
    before the first conftest is imported: a conftest that imports a port which replaces ``numpy.abs`` at
    import would otherwise have the harness snapshot, and compute its errors with, the replacement. It also
    keeps standard error as it is before pytest's capture (outside it: tryfirst), so that a process adapter
    code ends outright still says why on the terminal (``process_end.remember_terminal``), and sets the
    determinism switch's environment before any conftest or test module imports a framework."""
    try:
        wanted = bool(getattr(early_config.known_args_namespace, "parity_candidate", None)
                      or early_config.getini("parity_candidate"))
    except (ValueError, KeyError, AttributeError):
        wanted = False
    if wanted:
        from backends.common import determinism

        from . import integrity  # noqa: F401 - imported for its snapshot
        from . import process_end

        process_end.remember_terminal()
        # the frameworks read the determinism variables when first imported: a conftest or a test module that
        # imports the port (and with it torch or TensorFlow) must find them set, as a command's process does
        try:
            determinism.apply_environment()
        except ValueError as error:  # PARITY_MALLOC and the like
            raise pytest.UsageError(f"parity plugin: {error}") from None
    return (yield)


def pytest_plugin_registered(plugin: Any, plugin_name: str, manager: Any) -> None:
    """One registration, whether the entry point (``parity``) or a conftest line (this module's name) came first.

    pluggy refuses a module registered under a second name; a repository that
    keeps the conftest line and also pip-installs the package would otherwise
    fail to start. Blocking the other name turns the second load into a no-op.
    """
    if plugin is sys.modules[__name__]:
        for name in (ENTRY_POINT, __name__):
            if name != plugin_name and manager.get_plugin(name) is None:
                manager.set_blocked(name)


def settings_of(config: pytest.Config) -> ParitySettings:
    """The resolved settings, read on first use (at configuration when anything is configured)."""
    if SETTINGS not in config.stash:
        from .pytest_settings import read_settings

        config.stash[SETTINGS] = read_settings(config)
    return config.stash[SETTINGS]


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[ACTIVE] = configured(config)
    if _faulthandler_timeout(config):  # pytest arms faulthandler's one timer per test: the harness leaves it alone
        from . import process_end

        process_end.leave_the_timer()
    if config.stash[ACTIVE]:  # bad values stop the session now, with a usage error naming the setting
        settings_of(config)
    # One id per session, handed to xdist workers, so runs recorded by an earlier session are never reused.
    config.stash[SESSION] = getattr(config, "workerinput", {}).get("parity_session") or uuid.uuid4().hex
    config.stash[DUMP_CASES] = set()
    config.pluginmanager.register(_Summary(config), "parity-summary")


def _faulthandler_timeout(config: pytest.Config) -> bool:
    try:
        return float(config.getini("faulthandler_timeout") or 0) > 0
    except (ValueError, KeyError):
        return False


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's status is the verdict an adapter's later ``os._exit(0)`` (an atexit handler, a thread of
    its own) may not replace (``parity.process_end``; loaded only once an adapter was)."""
    process_end = sys.modules.get("parity.process_end")
    if process_end is not None:
        process_end.said(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread adapter code left running would hang the interpreter's exit: see ``process_end``. xdist
    workers are left to xdist, which ends them itself."""
    process_end = sys.modules.get("parity.process_end")
    if process_end is not None and not hasattr(config, "workerinput"):
        process_end.end_despite_threads()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["parity_session"] = node.config.stash[SESSION]


class ParitySuite(pytest.Module):
    """``parity/pytest_suite.py`` collected under the suite folder, whatever the project's python_files say."""

    def _getobj(self) -> Any:
        from . import pytest_suite

        return pytest_suite

    def funcnamefilter(self, name: str) -> bool:
        return name.startswith("test_")

    def collect(self) -> list[Any]:
        settings = settings_of(self.config)
        kinds = {param.kind for param in settings.baseline_params()} if _regressions_loaded(self.config) else set()
        dropped = {name for kind, name in BASELINE_TESTS.items() if kind not in kinds}
        return [item for item in super().collect() if getattr(item, "originalname", None) not in dropped]


def _regressions_loaded(config: pytest.Config) -> bool:
    return any(getattr(plugin, "__name__", "") == "pytest_regressions.plugin"
               for plugin in config.pluginmanager.get_plugins())


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    if collector.config.stash.get(ACTIVE, False) and report.passed and isinstance(collector, pytest.Directory):
        settings = settings_of(collector.config)
        if settings.active and collector.path.resolve() == settings.suite_dir:
            report.result.append(ParitySuite.from_parent(collector, path=collector.path / SUITE_NAME))
    return report


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parity_tap" in metafunc.fixturenames or "parity_baseline" in metafunc.fixturenames:
        settings = settings_of(metafunc.config)
    if "parity_tap" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("parity_mode")
        params: list[Any] = settings.tap_params(marker.args[0] if marker else "propagated")
        metafunc.parametrize("parity_tap", params, ids=[param.id for param in params], indirect=True)
    if "parity_baseline" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("parity_baseline_kind")
        params = [param for param in settings.baseline_params() if marker is None or param.kind == marker.args[0]]
        metafunc.parametrize("parity_baseline", params, ids=[param.id for param in params], indirect=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the candidate's taps on disk only for the cases whose baseline test survived selection."""
    config.stash[DUMP_CASES] = {item.callspec.params["parity_baseline"].case for item in items
                                if "parity_baseline" in getattr(getattr(item, "callspec", None), "params", {})}


def load_case(name: str | None = None, *, inputs: str | Path | None = None, pipeline: str | None = None,
              weights: str | Path | None = None, config: str | Path | None = None,
              assignments: tuple[str, ...] = ()) -> Case:
    """A built-in case (knob overrides ``assignments`` = ``("N=32",)`` applied) or a user case from an .npz
    (``inputs`` and ``pipeline``; ``name``, if given, names that case)."""
    import dataclasses

    from .workflows import choose_cases

    from_file = inputs is not None
    cases, _ = choose_cases([name] if name and not from_file else None, None if config is None else str(config),
                            list(assignments), pipeline, None if inputs is None else str(inputs),
                            None if weights is None else str(weights))
    return dataclasses.replace(cases[0], name=name) if name and from_file else cases[0]


def assert_parity(report: Any, taps: list[str] | None = None, modes: tuple[str, ...] = ("propagated", "isolated"),
                  ) -> None:
    """Fail with a readable message unless parity holds (for ``taps`` / ``modes`` when given).

    ``report``: a ``parity_report`` / ``parity_run`` outcome, a ``RunReport``,
    a report.json document or its path. Skips when the run could not happen
    here (e.g. the reference needs TensorFlow and it is not installed).
    """
    __tracebackhide__ = True
    from .pytest_verdicts import assert_parity as judge

    judge(report, taps, modes)


# ---- fixtures ----

@pytest.fixture(scope="session")
def parity_settings(pytestconfig: pytest.Config) -> ParitySettings:
    """The resolved --parity-* options and parity_* ini keys."""
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def parity_runs(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> ParityRuns:
    """The session's runs: each (case, reference, candidate, device) runs once, shared by threads and xdist workers."""
    from .pytest_runs import ParityRuns

    root = tmp_path_factory.getbasetemp()
    if hasattr(pytestconfig, "workerinput"):  # xdist: the workers' basetemps share this parent
        root = root.parent
    settings = settings_of(pytestconfig)
    runs = ParityRuns(settings, root / "parity-runs" / pytestconfig.stash[SESSION], settings.out or root / "parity")
    runs.dump_cases = pytestconfig.stash[DUMP_CASES]
    return runs


@pytest.fixture(scope="session")
def parity_run(parity_runs: ParityRuns) -> Callable[..., ParityOutcome]:
    """``parity_run(case, reference=None, candidate=None, device=None)``: the (cached) outcome of a run."""
    return parity_runs.outcome


@pytest.fixture(scope="session")
def parity_load_case(pytestconfig: pytest.Config) -> Callable[..., Case]:
    """``parity_load_case("physics-default")`` or ``parity_load_case(inputs="x.npz", pipeline="physics")``.

    Relative ``inputs``, ``weights`` and ``config`` paths resolve against the folder of the ini file (else the
    rootdir), as the ``parity_inputs`` ini setting's do, so a test finds its files from any working folder.
    """
    base = Path(pytestconfig.inipath).parent if pytestconfig.inipath else Path(pytestconfig.rootpath)

    def anchored(path: str | Path | None) -> str | Path | None:
        return None if path is None or Path(path).is_absolute() else base / path

    def load(name: str | None = None, *, inputs: str | Path | None = None, pipeline: str | None = None,
             weights: str | Path | None = None, config: str | Path | None = None,
             assignments: tuple[str, ...] = ()) -> Case:
        __tracebackhide__ = True
        from .errors import ParityInputError

        try:
            return load_case(name, inputs=anchored(inputs), pipeline=pipeline, weights=anchored(weights),
                             config=anchored(config), assignments=assignments)
        except ParityInputError as error:  # the file, key and expectation in one line, not a harness traceback
            pytest.fail(f"parity_load_case: {error}", pytrace=False)

    return load


@pytest.fixture
def parity_case(request: pytest.FixtureRequest, parity_settings: ParitySettings) -> Case:
    """The case of the test: parametrize it indirectly with names or Cases, or mark ``@pytest.mark.parity_case(name)``."""
    value = getattr(request, "param", None)
    if value is None:
        marker = request.node.get_closest_marker("parity_case")
        value = marker.args[0] if marker else None
    if value is None:
        pytest.fail("parity_case: no case given; use @pytest.mark.parametrize('parity_case', ['physics-default'], "
                    "indirect=True) or @pytest.mark.parity_case('physics-default')", pytrace=False)
    value = getattr(value, "case", value)  # a generated test's parameter names its case
    return parity_settings.case(value) if isinstance(value, str) else value


@pytest.fixture
def parity_report(parity_case: Case, parity_runs: ParityRuns) -> ParityOutcome:
    """The run of ``parity_case`` with the configured reference and candidate (pass it to ``assert_parity``)."""
    return parity_runs.outcome(parity_case)


@pytest.fixture
def parity_tap(request: pytest.FixtureRequest, parity_runs: ParityRuns) -> TapCheck:
    """One tap of one case in one mode (generated); ``parity_tap.check()`` judges it."""
    if not hasattr(request, "param"):
        pytest.fail("parity_tap is parametrized by the parity plugin; a test requesting it needs a candidate "
                    "(--parity-candidate) and the plugin's generate_tests", pytrace=False)
    from .pytest_verdicts import TapCheck

    return TapCheck(request.param, parity_runs, request.node)


@pytest.fixture
def parity_baseline(request: pytest.FixtureRequest, parity_settings: ParitySettings,
                    parity_runs: ParityRuns) -> BaselineCheck:
    """One case's candidate taps against their regression baseline (generated)."""
    from .pytest_baselines import BaselineCheck

    return BaselineCheck(request.param, parity_settings, parity_runs, request)


# ---- the terminal summary: the first divergence of every case, readable without scrolling ----

class _Summary:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cases: dict[str, tuple[str, str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        if report.when == "call" and "parity_case" in properties:
            self.cases[properties["parity_case"]] = (properties["parity_run"], properties["parity_first_divergence"],
                                                     properties["parity_report"])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = []
        for label, (status, divergence, report) in sorted(self.cases.items()):
            if status == "fail":
                lines += [f"{label}: FIRST DIVERGENCE {divergence}", f"    report: {report}"]
            else:
                lines.append(f"{label}: {status}")
        settings = self.config.stash.get(SETTINGS, None)
        if settings is not None and settings.active and settings.baselines is not None and not _regressions_loaded(
                self.config):
            lines.append("baselines not checked: pytest-regressions is not installed (pip install pytest-regressions)")
        if lines:
            terminalreporter.write_sep("=", "parity: first divergence per case")
            for line in lines:
                terminalreporter.write_line(line)
