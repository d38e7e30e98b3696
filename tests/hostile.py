"""Helpers for the hostile-input tests: real ``python -m parity`` processes and hostile files.

``parity_process`` runs the CLI as a user would; ``assert_refused`` is the
contract of a refusal: exit 2, exactly one stderr line starting with
``parity: error:`` that holds the given fragments, and no traceback.
Tests that need an unreadable file run the process without the root
privilege to bypass file permissions (``CAP_DAC_OVERRIDE``,
``CAP_DAC_READ_SEARCH``), since CI and these machines run as root.
"""

from __future__ import annotations

import ctypes
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PR_CAPBSET_DROP = 24
DAC_CAPABILITIES = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


def _drop_permission_bypass() -> None:
    """preexec_fn: drop the capabilities that let root read and write any file (kept out of the exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in DAC_CAPABILITIES:
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) refused")


def permissions_apply() -> bool:
    """Whether a process started with ``honour_permissions=True`` is refused a mode-000 file."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_permission_bypass,
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def parity_process(*args: object, env: dict[str, str] | None = None, honour_permissions: bool = False,
                   timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environment = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    preexec = _drop_permission_bypass if honour_permissions and os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-m", "parity", *map(str, args)], cwd=cwd or ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 with one line naming what was wrong; returns that line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parity: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def skip_unless_permissions_apply() -> None:
    if not permissions_apply():
        pytest.skip("running as root, and this kernel refuses to drop CAP_DAC_OVERRIDE: permissions cannot apply")


def npy_bytes(header_shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    """An npy member whose header claims ``header_shape`` followed by ``data`` (possibly too little)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": header_shape})
    return buffer.getvalue() + data


def write_npz(path: Path, members: dict[str, bytes | np.ndarray], compress: bool = False) -> Path:
    """A zip with raw member bytes (or arrays, saved as npy) under ``<key>.npy``."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for key, value in members.items():
            if isinstance(value, np.ndarray):
                buffer = io.BytesIO()
                np.save(buffer, value)
                value = buffer.getvalue()
            archive.writestr(f"{key}.npy", value)
    return path


def zip_bomb(path: Path, key: str, shape: tuple[int, ...], dtype: str = "float32",
             others: dict[str, np.ndarray] | None = None) -> Path:
    """A deflated member of zeros: tiny on disk, ``prod(shape) * itemsize`` bytes when inflated."""
    itemsize = np.dtype(dtype).itemsize
    total = int(np.prod(shape)) * itemsize
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, value in (others or {}).items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{name}.npy", buffer.getvalue())
        with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
            member.write(npy_bytes(shape, dtype, b""))
            zeros = bytes(16 << 20)
            for start in range(0, total, len(zeros)):
                member.write(zeros[: min(len(zeros), total - start)])
    return path
