"""The pytest plugin's settings: its options and ini keys (``pytest_options``) resolved once per session.

Everything here runs at configuration and collection time, so it must never
import TensorFlow or PyTorch: cases come from the registry of built-in cases
(or a user's ``.npz``), taps from ``backends.common.taps``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.common.taps import pipeline_taps

from .cases import Case
from .builtin_cases import BUILTIN_CASES
from .errors import ParityInputError
from .tolerances import ToleranceTable
from .workflows import DEFAULT_GOLDENS, DEFAULT_TOLERANCES, choose_cases, tolerance_table

DEVICES = ("cpu", "cuda", "auto")
# The built-in adapters (parity.adapters) and the framework each needs, so a missing one is a skip, not an error.
BUILTIN_ADAPTERS = {"tf": "tensorflow", "tensorflow": "tensorflow", "torch": "torch", "pytorch": "torch"}
MODES = ("propagated", "isolated")
GOLDEN = "golden"


@dataclasses.dataclass(frozen=True)
class Reference:
    """An adapter spec (``tf``, ``torch``, ``module:attr``) or a goldens folder."""

    adapter: str | None = None
    goldens: Path | None = None

    @property
    def label(self) -> str:
        return GOLDEN if self.goldens is not None else str(self.adapter)


@dataclasses.dataclass(frozen=True)
class UserInputs:
    """A user case: ``PIPELINE FILE.npz [WEIGHTS] [CONFIG.toml] [KNOB=VALUE ...]`` (knobs the inputs do not
    carry, e.g. N=32; a ``--config`` file's, the KNOB=VALUE words overriding it, as on the command line)."""

    pipeline: str
    path: Path
    weights: Path | None
    assignments: tuple[str, ...]
    config: Path | None = None


@dataclasses.dataclass(frozen=True)
class TapParam:
    """One generated test: a tap of a case, judged in one mode."""

    case: str
    tap: str
    mode: str

    @property
    def id(self) -> str:
        return f"{self.case}-{self.tap}"


@dataclasses.dataclass(frozen=True)
class BaselineParam:
    case: str
    kind: str  # "arrays" or "stats"

    @property
    def id(self) -> str:
        return self.case


@dataclasses.dataclass
class ParitySettings:
    candidate: str | None
    reference: Reference
    device: str
    case_globs: tuple[str, ...]
    inputs: tuple[UserInputs, ...]
    tolerances_path: Path
    tolerances: ToleranceTable
    out: Path | None
    baselines: Path | None
    array_baseline_bytes: int
    suite_dir: Path
    _cases: dict[str, Case] | None = dataclasses.field(default=None, repr=False)

    @property
    def active(self) -> bool:
        """The generated suite exists only where a candidate is configured (the plugin may be installed anywhere)."""
        return self.candidate is not None

    def cases(self) -> dict[str, Case]:
        """The selected cases by name, built-in first (built once per process, no framework imported)."""
        if self._cases is None:
            selected = [case for case in BUILTIN_CASES.values()
                        if any(fnmatch.fnmatchcase(case.name, glob) for glob in self.case_globs)]
            for given in self.inputs:
                selected += _usage(lambda: choose_cases(
                    None, None if given.config is None else str(given.config), list(given.assignments),
                    given.pipeline, str(given.path), None if given.weights is None else str(given.weights)))[0]
            self._cases = {case.name: case for case in selected}
        return self._cases

    def case(self, name: str) -> Case:
        try:
            return self.cases()[name]
        except KeyError:
            return _usage(lambda: choose_cases([name])[0][0])

    def tap_params(self, mode: str) -> list[TapParam]:
        return [TapParam(case.name, spec.name, mode) for case in self.cases().values()
                for spec in pipeline_taps(case.pipeline, case.config)]

    def baseline_params(self) -> list[BaselineParam]:
        if self.baselines is None:
            return []
        return [BaselineParam(case.name, "arrays" if tap_bytes(case) <= self.array_baseline_bytes else "stats")
                for case in self.cases().values()]


def tap_bytes(case: Case) -> int:
    """What the candidate's taps of ``case`` weigh, from the registry's shapes (nothing is run)."""
    total = 0
    for spec in pipeline_taps(case.pipeline, case.config):
        shape = spec.shape(case.config, case.batch)
        total += int(np.prod([dim or 1 for dim in shape], dtype=np.int64)) * spec.dtype(case.config).itemsize
    return total


def _usage(call: Any) -> Any:
    """Bad input in a setting is a usage error: pytest stops before running anything."""
    try:
        return call()
    except ParityInputError as error:
        raise pytest.UsageError(f"parity plugin: {error}") from None


class _Source:
    """Where a setting came from, so relative paths resolve against the right folder."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cli_dir = Path(config.invocation_params.dir)
        self.ini_dir = Path(config.inipath).parent if config.inipath else Path(config.rootpath)

    def get(self, name: str) -> tuple[Any, Path | None]:
        value = self.config.getoption(f"parity_{name}")
        if value not in (None, []):
            return value, self.cli_dir
        value = self.config.getini(f"parity_{name}")
        if value not in ("", []):
            return value, self.ini_dir
        return None, None

    def path(self, name: str, default: Path | None) -> Path | None:
        value, base = self.get(name)
        if value is None:
            return default
        return (base / Path(value).expanduser()).resolve()


def parse_reference(value: str | None, base: Path | None) -> Reference:
    """``tf`` / ``torch`` / ``MODULE:ATTR`` (an adapter), ``golden`` (the shipped goldens) or a goldens folder."""
    if value is None:
        return Reference(adapter="tf")
    if value in BUILTIN_ADAPTERS or (":" in value and not value.startswith("golden:")):
        return Reference(adapter=value)
    folder = (base or Path.cwd()) / Path(value.removeprefix("golden:")).expanduser()
    if folder.is_dir():  # a folder of the user's own, even one named `goldens`, is theirs
        return Reference(goldens=folder.resolve())
    if value in (GOLDEN, "goldens"):
        return Reference(goldens=DEFAULT_GOLDENS)
    raise pytest.UsageError(
        f"parity plugin: --parity-reference {value!r}: expected tf, torch, MODULE:ATTR (an adapter), golden (the "
        f"shipped goldens) or a goldens folder; there is no folder {folder}")


def _inputs(lines: list[str], base: Path) -> tuple[UserInputs, ...]:
    parsed = []
    for line in lines:
        words = line.split()
        knobs = tuple(word for word in words[2:] if "=" in word)
        configs = [word for word in words[2:] if "=" not in word and word.endswith(".toml")]
        files = [word for word in words[2:] if "=" not in word and not word.endswith(".toml")]
        if len(words) < 2 or len(files) > 1 or len(configs) > 1:
            raise pytest.UsageError(f"parity plugin: parity_inputs {line!r}: expected "
                                    "'PIPELINE FILE.npz [WEIGHTS] [CONFIG.toml] [KNOB=VALUE ...]'")
        parsed.append(UserInputs(words[0], base / words[1], base / files[0] if files else None, knobs,
                                 base / configs[0] if configs else None))
    return tuple(parsed)


def _suite_dir(config: pytest.Config, source: _Source) -> Path:
    configured = config.getini("parity_suite_dir")
    if configured:
        return (source.ini_dir / configured).resolve()
    # the first testpaths entry where the session collects it, else the first folder it collects (`pytest tests`),
    # else the invocation folder. The rootdir may be a folder the session never collects (`--rootdir` elsewhere,
    # an option's value taken for a path moves it up to a common ancestor): a suite generated in a folder the
    # session does not collect would not run, and a configured candidate never be judged.
    invoked = Path(config.invocation_params.dir)
    collected = []
    for argument in config.args:
        for base in (invoked, Path(config.rootpath)):
            folder = (base / str(argument).split("::")[0]).resolve()
            if folder.is_dir():
                collected.append(folder)
                break
    testpaths = config.getini("testpaths")
    if testpaths:
        for base in (Path(config.rootpath), source.ini_dir):
            listed = (base / testpaths[0]).resolve()
            if not collected or any(listed == folder or folder in listed.parents for folder in collected):
                return listed
    return collected[0] if collected else invoked.resolve()


def _kib(text: str) -> int:
    try:
        value = int(text or "1024")
    except ValueError:
        raise pytest.UsageError(f"parity plugin: parity_baseline_array_kib = {text!r}: expected an integer") from None
    if value < 0:
        raise pytest.UsageError(f"parity plugin: parity_baseline_array_kib = {text!r}: expected >= 0")
    return value << 10


def _nearest_config_file(start: Path) -> Path | None:
    """The pytest configuration file a session started in ``start`` with no path arguments would read."""
    import configparser
    import tomllib

    native_toml = int(pytest.__version__.split(".")[0]) >= 9  # pytest.toml and [tool.pytest] from pytest 9 on
    for folder in (start, *start.parents):
        names = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini") if native_toml else ("pytest.ini",
                                                                                                  ".pytest.ini")
        for name in names:
            if (folder / name).is_file():
                return folder / name
        pyproject = folder / "pyproject.toml"
        try:
            table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("pytest") if pyproject.is_file() else None
            if isinstance(table, dict) and ("ini_options" in table or (native_toml and table)):
                return pyproject
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
            parser = configparser.ConfigParser(interpolation=None)
            try:
                if (folder / name).is_file() and parser.read(folder / name) and parser.has_section(section):
                    return folder / name
            except (OSError, configparser.Error, UnicodeDecodeError):
                pass
    return None


PATH_OPTIONS = ("--parity-out", "--parity-tolerances", "--parity-baselines", "--parity-reference", "--parity-inputs")


def check_rootdir(config: pytest.Config) -> None:
    """``--parity-out DIR`` (a space, not ``=``): pytest chooses its rootdir before plugins' options are known,
    so an existing DIR is taken for a test path there and the rootdir moves up to a common ancestor, where the
    project's configuration file (its parity_candidate, parity_reference, ...) is not read. The session would
    then quietly judge nothing, or against another reference: a usage error says so instead."""
    args = [str(arg) for arg in config.invocation_params.args]
    if any(arg in ("-c", "--config-file", "--rootdir", "--inifile") or arg.startswith(("--rootdir=", "--config-file="))
           for arg in args):
        return
    invoked = Path(config.invocation_params.dir)
    taken = [(option, value) for option, value in zip(args, args[1:])
             if option in PATH_OPTIONS and not value.startswith("-") and (invoked / value).exists()]
    if not taken:
        return
    nearest = _nearest_config_file(invoked)
    read = Path(config.inipath).resolve() if config.inipath else None
    if nearest is not None and read != nearest.resolve():
        option, value = taken[0]
        raise pytest.UsageError(
            f"parity plugin: {option} {value}: pytest took {value!r} for a test path when it chose its rootdir "
            f"({config.rootpath}), so it did not read {nearest}, which may hold parity_candidate and the other "
            f"parity_* keys; write {option}={value}")


def read_settings(config: pytest.Config) -> ParitySettings:
    """Options override ini keys; bad values stop the session with a usage error naming the setting."""
    check_rootdir(config)
    source = _Source(config)
    candidate, _ = source.get("candidate")
    device, _ = source.get("device")
    device = device or "cpu"
    if device not in DEVICES and not device.startswith("cuda:"):
        raise pytest.UsageError(f"parity plugin: --parity-device {device!r}: expected one of {DEVICES} or cuda:N")
    inputs_lines, inputs_base = source.get("inputs")
    globs, _ = source.get("cases")  # default: every built-in case, or none when the user brings inputs
    globs = tuple(word for entry in (globs or ([] if inputs_lines else ["*"])) for word in entry.replace(",", " ").split())
    unmatched = [glob for glob in globs if not fnmatch.filter(BUILTIN_CASES, glob)]
    if unmatched:
        raise pytest.UsageError(f"parity plugin: --parity-cases {unmatched}: match no built-in case; "
                                f"cases are {sorted(BUILTIN_CASES)}")
    tolerances_path = source.path("tolerances", DEFAULT_TOLERANCES)
    # the shipped table through tolerance_table: named in reports without a machine path
    tolerances = _usage(lambda: tolerance_table(None if tolerances_path == DEFAULT_TOLERANCES else tolerances_path))
    baselines_value, _ = source.get("baselines")
    baselines = None if baselines_value == "off" else source.path("baselines", Path(config.rootpath) / "parity_baselines")
    reference_value, reference_base = source.get("reference")
    return ParitySettings(
        candidate=candidate, reference=parse_reference(reference_value, reference_base), device=device,
        case_globs=globs, inputs=_inputs(inputs_lines or [], inputs_base or Path.cwd()),
        tolerances_path=tolerances_path, tolerances=tolerances, out=source.path("out", None),
        baselines=baselines, array_baseline_bytes=_kib(config.getini("parity_baseline_array_kib")),
        suite_dir=_suite_dir(config, source))
