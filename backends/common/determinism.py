"""The one determinism switch for both frameworks, recorded with every result.

Import order matters: the environment variables below are read by TensorFlow
and cuBLAS when they load, so ``apply_environment`` runs before the first
``import tensorflow`` / ``import torch`` (the backends call it at import).
``PARITY_THREADS`` fixes the intra-op thread count (default 2): on CPU the
way a reduction is split across threads changes its rounding.

Torch's deterministic-algorithms flag is set with
``torch.set_deterministic_debug_mode("error")``: the same ATen switch as
``torch.use_deterministic_algorithms(True)``, which also imports
``torch._inductor`` (and dynamo) only to copy the flag into inductor's
configuration, ~1.5 s of start-up for a compiler the harness never runs. If
an adapter has loaded inductor, its flag is set too.

TF32 (tensor cores rounding float32 matmul/convolution inputs to 10 bits) is
off on both sides unless ``allow_tf32(True)`` (``--allow-tf32``) asks for it;
the state is recorded, and with it on the tight float32 tolerances fail
visibly on a GPU.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

ENVIRONMENT = {
    # oneDNN's fused CPU kernels reorder accumulations depending on the CPU's
    # instruction set, so results move between machines; Eigen's don't.
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_DETERMINISTIC_OPS": "1",
    "TF_CUDNN_DETERMINISTIC": "1",
    # cuBLAS needs a fixed workspace to be deterministic with torch's switch on.
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    # TensorFlow's start-up chatter drowns the report otherwise.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # Torch's OpenMP workers spin after every parallel op by default; in a process that also
    # runs TensorFlow's thread pool, or on a shared machine, the spinning steals the cores the
    # other pool needs (10x slower physics runs measured on a loaded 2-core machine). Speed
    # only: the thread count, hence the rounding, is unchanged.
    "OMP_WAIT_POLICY": "PASSIVE",
}


MAX_THREADS = 1024


class SettingsError(ValueError):
    """An environment setting (``PARITY_THREADS``) has a value the switch cannot use (bad input: exit 2)."""


GRAPPLER_OPTIONS = {"constant_folding": False, "arithmetic_optimization": False}


@dataclasses.dataclass(frozen=True)
class DeterminismSettings:
    intra_op_threads: int
    inter_op_threads: int = 1

    @classmethod
    def from_environment(cls) -> DeterminismSettings:
        raw = os.environ.get("PARITY_THREADS", "2")
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_THREADS:
            raise SettingsError(f"environment variable PARITY_THREADS={raw!r}: expected a whole number of threads "
                                f"from 1 to {MAX_THREADS} (default 2)")
        return cls(intra_op_threads=int(text))


_settings: DeterminismSettings | None = None
_configured: set[str] = set()


def settings() -> DeterminismSettings:
    """The settings, read from the environment on first use (not at import: a bad value is bad input,
    reported by the caller, never a traceback at import)."""
    global _settings
    if _settings is None:
        _settings = DeterminismSettings.from_environment()
    return _settings


def __getattr__(name: str) -> object:  # ``determinism.SETTINGS`` still works, lazily
    if name == "SETTINGS":
        return settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_loaded_first: list[str] = []  # frameworks imported before the variables were set: they did not read them


def apply_environment() -> None:
    """Set the variables frameworks read at import; one already imported (by the host program, before the
    harness) read what was there then, and the provenance says so (``record``)."""
    if not _allocator:  # the first call
        _loaded_first.extend(name for name in ("tensorflow", "torch") if name in sys.modules)
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    tune_allocator()


# glibc serves every allocation above 32 MiB with a fresh mmap and unmaps it on free, so each
# op on a large batch page-faults and zeroes its output anew (both frameworks allocate through
# malloc): a 4x larger physics batch cost 6-8x the time. Served from the heap and kept there, the
# pages are reused and the time is linear in the batch (measured 3x faster at B=1024), for ~15%
# more peak RSS. Speed only; PARITY_MALLOC=system leaves glibc's defaults alone.
# Not done: one arena for every thread (M_ARENA_MAX=1). Adapters run on a worker thread
# (parity/guard.py) whose own arena these settings serve less well: a pinn forward there took
# 1.45 s against 1.14 s on the main thread (2-core CPU, batch 64), and one arena made the two
# equal, but it doubled the peak RSS of a 4096-position simulate run (3.2 -> 6.2-6.9 GiB).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
_allocator: dict[str, Any] = {}


def tune_allocator() -> dict[str, Any]:
    """Apply (once) and return the allocator settings; recorded with every result."""
    if _allocator:
        return _allocator
    choice = os.environ.get("PARITY_MALLOC", "heap").strip().lower()
    _allocator["PARITY_MALLOC"] = choice
    if choice == "system":
        _allocator["applied"] = {}
        return _allocator
    if choice != "heap":
        raise ValueError(f"PARITY_MALLOC must be heap or system, got {choice!r}")
    applied: dict[str, int] = {}
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): nothing to tune
        mallopt = None
    if mallopt is not None and platform_is_glibc():
        for name, option, value in (("M_MMAP_MAX", M_MMAP_MAX, 0), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 2**31 - 1)):
            if mallopt(option, value) == 1:
                applied[name] = value
    _allocator["applied"] = applied
    return _allocator


def platform_is_glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


def configure_tensorflow() -> Any:
    """Import TensorFlow under the switch and return the module."""
    apply_environment()
    import tensorflow as tf

    if "tensorflow" not in _configured:
        tf.config.experimental.enable_op_determinism()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(settings().intra_op_threads)
            tf.config.threading.set_inter_op_parallelism_threads(settings().inter_op_threads)
        except RuntimeError:
            pass  # runtime already initialised by the host program; recorded as found
        # Grappler rewrites that change roundings in traced graphs: constant folding turns x / c
        # into x * (1 / c), the arithmetic optimizer turns x ** 2 into Square and regroups sums.
        # Off, a traced stage is bitwise identical to the same stage run eagerly.
        tf.config.optimizer.set_experimental_options(GRAPPLER_OPTIONS)
        _configured.add("tensorflow")
    _apply_tf32_tensorflow(tf)
    return tf


def configure_torch() -> Any:
    """Import PyTorch under the switch and return the module."""
    apply_environment()
    import torch

    if "torch" not in _configured:
        torch.set_deterministic_debug_mode("error")  # = use_deterministic_algorithms(True), no inductor import
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(settings().intra_op_threads)
        try:
            torch.set_num_interop_threads(settings().inter_op_threads)
        except RuntimeError:
            pass  # only settable before the first parallel op; recorded as found
        _configured.add("torch")
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:  # an adapter compiles: its generated kernels must be deterministic too
        inductor.deterministic = True
    _apply_tf32_torch(torch)
    return torch


FRAMEWORK_SWITCHES = {"tf": "configure_tensorflow", "tensorflow": "configure_tensorflow",
                      "torch": "configure_torch", "pytorch": "configure_torch", "numpy": None, "jax": None}


def configure_frameworks(names: tuple[str, ...] | list[str]) -> list[str]:
    """Apply the switch for each declared framework ("tf", "torch", "numpy"); returns those applied."""
    applied = []
    for name in names:
        key = str(name).lower()
        if key not in FRAMEWORK_SWITCHES:
            raise ValueError(f"frameworks: unknown framework {name!r}; known: {sorted(FRAMEWORK_SWITCHES)}")
        switch = FRAMEWORK_SWITCHES[key]
        if switch is not None:
            globals()[switch]()
            applied.append(key)
    return applied


_tf32 = {"allowed": False}


def allow_tf32(allowed: bool) -> None:
    """Let float32 matmuls and convolutions use TF32 on GPUs (both frameworks; off by default).

    Applies at once to a framework already configured, and to one configured later.
    """
    _tf32["allowed"] = bool(allowed)
    if "torch" in _configured:
        _apply_tf32_torch(sys.modules["torch"])
    if "tensorflow" in _configured:
        _apply_tf32_tensorflow(sys.modules["tensorflow"])


def tf32_allowed() -> bool:
    return _tf32["allowed"]


def _apply_tf32_torch(torch: Any) -> None:
    allowed = _tf32["allowed"]
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    torch.set_float32_matmul_precision("high" if allowed else "highest")


def _apply_tf32_tensorflow(tf: Any) -> None:
    try:
        tf.config.experimental.enable_tensor_float_32_execution(_tf32["allowed"])
    except AttributeError:
        pass


def record() -> dict[str, Any]:
    """The determinism state as it is now, for provenance."""
    state: dict[str, Any] = {
        "settings": dataclasses.asdict(settings()),
        "environment": {key: os.environ.get(key) for key in ENVIRONMENT},
        # these imported the frameworks' variables before they were set: the values above are not what they read
        "imported_before_the_switch": list(_loaded_first),
        "allow_tf32": _tf32["allowed"],
        "allocator": dict(tune_allocator()),
    }
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        from tensorflow.python.framework import config as tf_config  # the public API has no getter

        state["tensorflow"] = {
            "op_determinism": bool(tf_config.is_op_determinism_enabled()),
            "tensor_float_32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "grappler": {key: tf.config.optimizer.get_experimental_options().get(key) for key in GRAPPLER_OPTIONS},
        }
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "backends"):
        state["torch"] = {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_debug_mode": torch.get_deterministic_debug_mode(),
            "fill_uninitialized_memory": bool(torch.utils.deterministic.fill_uninitialized_memory),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
        }
        inductor = sys.modules.get("torch._inductor.config")
        if inductor is not None:
            state["torch"]["inductor_deterministic"] = bool(inductor.deterministic)
    return state
