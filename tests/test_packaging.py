"""The harness as a user installs it: a wheel (not a checkout) that carries its fixtures, run from a folder
that is not the repository, next to files of the user's that share the harness's module names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASE = "physics-n32-edge-offsets-f64"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_for_the_wheel():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(path.parent.relative_to(ROOT).parts)
               for top in ("parity", "backends") for path in (ROOT / top).rglob("__init__.py")}
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"
    assert listed - on_disk == {"parity._fixtures"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this tree, unpacked as pip would install it (no dependencies: they are here)."""
    pytest.importorskip("setuptools", reason="building a wheel without network needs setuptools here")
    folder, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in ("parity", "backends", "fixtures"):  # a copy: an in-place build leaves build/ and egg-info here
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "baselines"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(source)]
    built = subprocess.run([*command, "--no-build-isolation"], capture_output=True, text=True, timeout=300, cwd=folder)
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("pip is not installed here")
    if built.returncode != 0:  # this environment's setuptools cannot build wheels: pip fetches a build backend
        built = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder)
    assert built.returncode == 0, built.stderr
    wheel = next(folder.glob("*.whl"))
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "parity/_fixtures/tolerances.toml" in names and f"parity/_fixtures/goldens/{CASE}.h5" in names
    assert not any(name.startswith("fixtures/") for name in names)  # no top-level 'fixtures' package
    return site


def _installed_parity(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "PARITY_FIXTURES"}
    environment["PYTHONPATH"] = str(site)  # the installed copy only, never this checkout
    return subprocess.run([sys.executable, "-P", "-m", "parity", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_an_installed_harness_checks_against_its_own_shipped_goldens_from_any_folder(installed, tmp_path):
    result = _installed_parity(installed, tmp_path, "check", "--case", CASE, "--out", "out", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / CASE / "report.json").read_text())
    assert report["passed"] is True
    assert str(installed) in json.dumps(report["reference"])  # the golden read is the wheel's


def test_an_installed_harness_never_writes_into_its_own_fixtures(installed, tmp_path):
    goldens = installed / "parity" / "_fixtures" / "goldens"
    before = sorted((path.name, path.stat().st_mtime_ns) for path in goldens.iterdir())
    result = _installed_parity(installed, tmp_path, "record", "--case", CASE)
    assert result.returncode == 2 and "--goldens DIR" in result.stderr, result.stderr
    assert sorted((path.name, path.stat().st_mtime_ns) for path in goldens.iterdir()) == before
    result = _installed_parity(installed, tmp_path, "calibrate", "--case", CASE, "--write")
    assert result.returncode == 2 and "--tolerances FILE.toml" in result.stderr, result.stderr


def test_files_of_the_users_named_like_the_harness_do_not_shadow_it(installed, tmp_path):
    (tmp_path / "parity.py").write_text("raise SystemExit('the user parity.py ran')\n")
    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "__init__.py").write_text("raise ImportError('the user backends ran')\n")
    result = _installed_parity(installed, tmp_path, "cases")
    assert result.returncode == 0 and CASE in result.stdout, result.stderr
    assert "user" not in result.stderr


def test_a_console_that_cannot_show_the_table_gets_replacements_not_a_crash(tmp_path):
    environment = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-m", "parity", "check", "--case", CASE, "--out", "out"], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout and "?" in result.stdout  # '≤' shown as '?'
