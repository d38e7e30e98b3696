"""Where a result came from: versions, code version, device, determinism, time."""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from backends.common import determinism

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("numpy", "scipy", "h5py", "tensorflow-cpu", "tensorflow", "keras", "torch")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Hash of the harness and backend sources: identifies the code without git."""
    digest = hashlib.sha256()
    for folder in ("parity", "backends"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    if not (ROOT / ".git").exists():  # installed (perhaps inside a user's repository, whose commit this is not)
        return f"no-git+src.{source_digest()}"
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        described = "no-git"
    return f"{described}+src.{source_digest()}"


def timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def collect(device: str, portable: bool = False) -> dict[str, Any]:
    """Where a result comes from. ``portable`` (a golden, which travels with the project): no path of
    this machine in it, the interpreter by its file name only."""
    return {
        "timestamp": timestamp(),
        "code_version": code_version(),
        "device": device,
        "platform": platform.platform(),
        "python_executable": os.path.basename(sys.executable) if portable else sys.executable,
        "libraries": library_versions(),
        "determinism": determinism.record(),
    }
