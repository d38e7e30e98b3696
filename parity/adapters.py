"""Adapters: anything that runs pipelines and single stages and returns canonical taps.

The two built-in backends are adapters. ``--reference`` / ``--candidate`` also
take ``module:attr`` import paths: ``attr`` may be an adapter instance, or a
class / factory called with ``device=...``. A user can thus plug in, say, a
wrapper around a real PtychoPINN install without editing the harness. To
replace a single stage of a built-in backend, subclass it or call
``backend.with_stage(stage_key, function)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from backends.common import determinism
from backends.common.config import ForwardConfig
from backends.common.taps import TapSpec, pipeline_taps

from . import integrity, process_end  # integrity: its snapshot precedes any adapter import
from .errors import ParityInputError
from .shown_text import is_safe_name, plain_str, shown

BUILTIN = {
    "tf": ("backends.tf", "TensorFlowBackend"),
    "tensorflow": ("backends.tf", "TensorFlowBackend"),
    "torch": ("backends.torch", "TorchBackend"),
    "pytorch": ("backends.torch", "TorchBackend"),
}
REQUIRED = ("run_pipeline", "run_stage", "describe", "resolve_config")


@runtime_checkable
class Adapter(Protocol):
    name: str
    device: str

    def describe(self) -> dict[str, Any]: ...

    def resolve_config(self, cfg: ForwardConfig) -> ForwardConfig: ...

    def run_pipeline(self, pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                     weights: Mapping[str, np.ndarray] | None = None,
                     sink: Any = None, taps: Iterable[str] | None = None) -> None:
        """Run a pipeline, calling ``sink(spec: TapSpec, value: canonical ndarray)`` per selected tap."""

    def run_stage(self, tap: str, pipeline: str, cfg: ForwardConfig, stage_inputs: Mapping[str, np.ndarray],
                  weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run the one stage producing ``tap`` on canonical inputs; NotImplementedError if it can't be isolated."""



@dataclasses.dataclass(frozen=True)
class Graph:
    """What one side computes for a pipeline: its taps (with the inputs each reads) and what it leaves out."""

    specs: list[TapSpec]
    unprovided: dict[str, str]


def graph_of(adapter: Any, pipeline: str, cfg: ForwardConfig, guard: Any = None) -> Graph:
    """The adapter's own graph (``graph()`` / ``unprovided()`` when it has them), else the registry's."""
    def call(what, function, *args):
        return guard.call(what, function, *args) if guard is not None else function(*args)

    registry = pipeline_taps(pipeline, cfg)
    name = getattr(adapter, "name", type(adapter).__name__)
    unprovided: dict[str, str] = {}
    if callable(getattr(adapter, "unprovided", None)):
        declared, what = call("unprovided()", adapter.unprovided, pipeline, cfg), "unprovided()"
    else:
        declared, what = getattr(adapter, "not_provided", None) or {}, "not_provided"
    if not isinstance(declared, Mapping) or not all(isinstance(key, str) for key in declared):
        raise ParityInputError(f"adapter {name!r}: {what} gave {type(declared).__name__}, expected a mapping of "
                               "tap name -> reason")
    unprovided = {key: str(reason) for key, reason in declared.items()}
    specs = registry
    if callable(getattr(adapter, "graph", None)):
        returned = call("graph()", adapter.graph, pipeline, cfg)
        if isinstance(returned, (str, bytes, Mapping)) or not isinstance(returned, Iterable):
            raise ParityInputError(f"adapter {name!r}: graph() returned {type(returned).__name__}, expected a "
                                   "list of TapSpec (the registry's, as pipeline_taps gives them)")
        specs = list(returned)
        junk = next((spec for spec in specs if not isinstance(spec, TapSpec)), None)
        if junk is not None:
            raise ParityInputError(f"adapter {name!r}: graph() holds a {type(junk).__name__} ({junk!r:.60}), "
                                   "expected TapSpec entries (the registry's, as pipeline_taps gives them)")
    specs = [spec for spec in specs if spec.name not in unprovided]
    return Graph(specs, unprovided)


def frameworks_of(target: Any) -> tuple[str, ...]:
    declared = getattr(target, "frameworks", ()) or ()
    return (declared,) if isinstance(declared, str) else tuple(declared)


def _construct(factory: Any, device: str, where: str) -> Any:
    from .guard import describe_exception

    with _noting_interrupts() as interrupted:
        try:
            try:
                return factory(device=device)
            except TypeError:
                if device != "cpu":
                    raise ParityInputError(f"{where}: does not accept device={device!r}") from None
                return factory()
        except ParityInputError:
            raise
        except ValueError as error:
            raise ParityInputError(f"{where}: {describe_exception(error).partition(': ')[2]}") from None
        except BaseException as error:  # its own code failed (raised anything, called sys.exit) while it was built
            if isinstance(error, KeyboardInterrupt) and interrupted:
                raise  # a real Ctrl-C
            raise ParityInputError(f"{where}: building it failed: {describe_exception(error)}") from None


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[list[int]]:
    """Tells a real Ctrl-C (SIGINT received: the list is not empty) from adapter code raising
    KeyboardInterrupt itself, which is a failure of that code like any other exception."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield received
        return

    def note(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def check_device(device: str) -> None:
    """Refuse a device no adapter can honour before any adapter is built: an indexed CPU, a CUDA
    device this PyTorch does not see (other names, e.g. ``mps``, are left to the adapter)."""
    kind, colon, index = device.partition(":")
    if not device or (colon and not index.isdigit()):
        raise ParityInputError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if kind == "cpu" and colon and int(index) != 0:
        raise ParityInputError(f"--device {device!r}: there is one CPU device; expected cpu")
    if kind == "cuda":
        try:
            import torch
        except ImportError:
            raise ParityInputError(f"--device {device!r}: PyTorch is not installed") from None
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = int(index) if colon else 0
        if wanted >= count:
            raise ParityInputError(f"--device {device!r}: this PyTorch sees "
                                   + (f"{count} CUDA device(s) (cuda:0 to cuda:{count - 1})" if count
                                      else "no CUDA device; expected cpu"))


def load_adapter(spec: str, device: str = "cpu", timeout: float | None = None) -> Adapter:
    """'tf', 'torch' or 'package.module:attr' -> an adapter instance.

    ``timeout``: seconds importing and building it may take before the watcher (``parity.watcher``)
    ends the command (exit 2); default the stage timeout's default."""
    check_device(device)
    if timeout is None:
        from .guard import DEFAULT_STAGE_TIMEOUT

        timeout = DEFAULT_STAGE_TIMEOUT
    integrity.expect_umask()
    try:
        with process_end.running_adapter_code("construct", timeout):  # timed; its os._exit refused where unwatched
            adapter = _load_adapter(spec, device)
    finally:
        replaced = integrity.restore()
        if replaced:
            print(f"parity: warning: importing or building adapter {spec!r} replaced {', '.join(replaced[:8])}; "
                  "the originals were put back (the harness computes its errors with them)", file=sys.stderr)
    return adapter


def _load_adapter(spec: str, device: str) -> Adapter:
    from .guard import describe_exception

    if spec in BUILTIN:
        module_name, attr = BUILTIN[spec]
    elif ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        raise ParityInputError(f"adapter {spec!r}: expected one of {sorted(BUILTIN)} or an import path "
                               "'package.module:attr'")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a user's own package in the current folder, as `python -m` would see it
    # the variables TensorFlow and cuBLAS read when they load, before the module (which may import them) is
    determinism.apply_environment()
    with _noting_interrupts() as interrupted:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ParityInputError(f"adapter {spec!r}: cannot import {module_name!r} "
                                   f"({describe_exception(error).partition(': ')[2]})") from None
        except BaseException as error:  # the module's own code failed (raised anything, exited) while importing
            if isinstance(error, KeyboardInterrupt) and interrupted:
                raise  # a real Ctrl-C
            raise ParityInputError(f"adapter {spec!r}: importing {module_name!r} failed: "
                                   f"{describe_exception(error)}") from None
    target = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            close = difflib.get_close_matches(part, [name for name in dir(target) if not name.startswith("_")], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ParityInputError(f"adapter {spec!r}: module {module_name!r} has no attribute {attr!r}{hint}") from None
    try:  # the determinism switch, for every framework the adapter declares, before any of its code runs
        determinism.configure_frameworks(frameworks_of(target))
    except ValueError as error:
        raise ParityInputError(f"adapter {spec!r}: {error}") from None
    adapter = _construct(target, device, f"adapter {spec!r}") if isinstance(target, type) or (
        callable(target) and not all(hasattr(target, name) for name in REQUIRED)) else target
    missing = [name for name in REQUIRED if not callable(getattr(adapter, name, None))]
    if missing:
        raise ParityInputError(f"adapter {spec!r}: object {adapter!r} lacks {missing}; an adapter needs "
                               f"{list(REQUIRED)} (see parity.adapters.Adapter)")
    name = getattr(adapter, "name", None)
    if name is None or (isinstance(name, str) and not name):
        raise ParityInputError(f"adapter {spec!r}: has no 'name' attribute")
    if not isinstance(name, str):
        raise ParityInputError(f"adapter {spec!r}: name is a {shown(type(name).__name__, 80)}; expected a str")
    name = plain_str(name)  # a str subclass's own __str__ or __format__ would decide what tables print
    if not is_safe_name(name):  # it is printed in tables and titles as it is
        raise ParityInputError(f"adapter {spec!r}: name {shown(repr(name), 120)} is not a printable one-line name "
                               "of at most 200 characters")
    with contextlib.suppress(AttributeError, TypeError):
        adapter.name = name
    if not hasattr(adapter, "device"):
        adapter.device = device
    return adapter
