"""numpy and the builtins as the harness imported them, put back after adapter code replaced a function.

(And the interpreter's recursion limit, where adapter code lowered it, its thread switch interval and the
process's file creation mask.)

Adapter code runs in the harness's process. A port that assigns ``numpy.abs = ...`` or ``builtins.max = ...``
(to silence a warning, to "fix" a dtype, or with hostile intent) would change the functions the
comparison computes its errors with: a wrong candidate could pass. The first import of this module
takes a snapshot of those namespaces (the harness imports it before it imports any adapter); after each
adapter call and before each delivered tap is compared, ``restore()`` puts back every public name that
was replaced and says which. Names added later (numpy's lazily loaded submodules) are left alone.
"""

from __future__ import annotations

import builtins
import math
import os
import sys
import threading

import numpy

_MODULES = (numpy, math, builtins)
_SUBMODULES = ("numpy.linalg", "numpy.fft", "numpy.lib")
_lock = threading.Lock()


def _public(namespace: dict) -> dict:
    return {key: value for key, value in namespace.items() if not key.startswith("_")}


_snapshot: dict[str, tuple[dict, dict]] = {
    module.__name__: (vars(module), _public(vars(module))) for module in _MODULES}
for _name in _SUBMODULES:
    if _name in sys.modules:
        _snapshot[_name] = (vars(sys.modules[_name]), _public(vars(sys.modules[_name])))


_recursion_limit = sys.getrecursionlimit()
_switch_interval = sys.getswitchinterval()
_umask: int | None = None  # the file creation mask when the current adapter call began (expect_umask)


def _read_umask() -> int:
    """The process's umask; read from /proc where the kernel shows it (setting it to read it is visible to
    other threads for an instant)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def expect_umask() -> None:
    """An adapter call begins: the host's file creation mask now is the one to keep (the host may set its own)."""
    global _umask
    _umask = _read_umask()


def restore() -> list[str]:
    """Put back what adapter code replaced (or deleted); the qualified names of what was put back."""
    replaced = []
    with _lock:
        # interpreter settings a stage may lower or raise: a limit of 60 frames would crash the harness's
        # own code, an interval of hours would starve the thread that times the stage
        if sys.getrecursionlimit() < _recursion_limit:
            sys.setrecursionlimit(_recursion_limit)
            replaced.append("the recursion limit (sys.setrecursionlimit)")
        if sys.getswitchinterval() != _switch_interval:
            sys.setswitchinterval(_switch_interval)
            replaced.append("the thread switch interval (sys.setswitchinterval)")
        if _umask is not None:  # a umask of 0o777 set in a stage would write every report with no permissions
            umask = _read_umask()
            if umask != _umask:
                os.umask(_umask)
                replaced.append(f"the file creation mask (os.umask {umask:#o})")
        for module_name, (namespace, saved) in _snapshot.items():
            for key, value in saved.items():
                if namespace.get(key, restore) is not value:
                    namespace[key] = value
                    replaced.append(f"{module_name}.{key}")
    return replaced
