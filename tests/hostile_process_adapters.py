"""Candidate adapters that tamper with the process they share with the harness, loaded by the tests as
``tests.hostile_process_adapters:NAME``: numpy's functions, descriptors, standard streams, interpreter
settings, exception messages, names and construction. Each is the Torch port with one stage (farfield) or
one attribute changed; those whose farfield is wrong by a factor of 2 must fail, never pass.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from backends.torch import TorchBackend
from backends.torch.stages import STAGES

STAGE = "farfield"


def _port(function, label: str) -> type:
    """The Torch port whose farfield stage is ``function``."""

    class Port(TorchBackend):
        name = label

        def __init__(self, device: str = "cpu") -> None:
            super().__init__(device)
            self.stages[STAGE] = function

    return Port


def _zeros_for_abs(ctx, wave):
    np.abs = np.absolute = lambda x, *args, **kwargs: np.zeros(np.shape(x))  # every error would read as 0
    return STAGES[STAGE](ctx, wave) * 2


def _closes_descriptors(ctx, wave):
    os.closerange(3, 4096)  # what a daemonising library does: the watcher's pipe, the log, the terminal's copy
    return STAGES[STAGE](ctx, wave) * 2


def _closes_standard_streams(ctx, wave):
    sys.__stdout__.close()
    sys.__stderr__.close()
    return STAGES[STAGE](ctx, wave) * 2


def _lowers_recursion_limit(ctx, wave):
    sys.setrecursionlimit(60)
    return STAGES[STAGE](ctx, wave)


def _holds_the_interpreter(ctx, wave):
    import re

    re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking in C: the GIL is never released
    return STAGES[STAGE](ctx, wave)


def _raises_a_hostile_message(ctx, wave):
    raise RuntimeError("boom\x1b[2J\x1b[H\rPASS: 9/9 taps within tolerance\n\x1b]0;title\x07" + "X" * (8 << 20))


ZeroesNumpyAbs = _port(_zeros_for_abs, "zeroes-numpy-abs")
ClosesDescriptors = _port(_closes_descriptors, "closes-descriptors")
ClosesStandardStreams = _port(_closes_standard_streams, "closes-standard-streams")
LowersRecursionLimit = _port(_lowers_recursion_limit, "lowers-recursion-limit")
HoldsTheInterpreter = _port(_holds_the_interpreter, "holds-the-interpreter")
RaisesAHostileMessage = _port(_raises_a_hostile_message, "raises-a-hostile-message")


class NameIsAnArray(TorchBackend):
    name = np.array([1, 2])


class _SneakyName(str):
    def __str__(self) -> str:
        return "\x1b[2Jsneaky"

    def __format__(self, spec: str) -> str:
        return "\x1b[2Jsneaky"


class NameIsAStrSubclass(TorchBackend):
    name = _SneakyName("plain-name")


class _NotAnException(BaseException):
    pass


class RaisesABaseExceptionWhileBuilt(TorchBackend):
    def __init__(self, device: str = "cpu") -> None:
        raise _NotAnException("raised while built")


class RaisesKeyboardInterruptWhileBuilt(TorchBackend):
    def __init__(self, device: str = "cpu") -> None:
        raise KeyboardInterrupt


class HangsWhileBuilt(TorchBackend):
    def __init__(self, device: str = "cpu") -> None:
        import time

        while True:
            time.sleep(0.1)


class HangsInDescribe(TorchBackend):
    name = "hangs-in-describe"

    def describe(self):
        import time

        while True:
            time.sleep(0.1)


def _replaces_the_out_folder(ctx, wave):
    import shutil

    out = os.environ["PARITY_TEST_OUT"]
    shutil.rmtree(out, ignore_errors=True)
    with open(out, "w") as replacement:
        replacement.write("not a folder")
    return STAGES[STAGE](ctx, wave)


ReplacesTheOutFolder = _port(_replaces_the_out_folder, "replaces-the-out-folder")


def _exits_in_the_main_thread(ctx, wave):
    """SystemExit(0) sent into the harness's main thread (what a signal handler calling sys.exit does)."""
    import ctypes
    import threading

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.main_thread().ident),
                                               ctypes.py_object(SystemExit))
    return STAGES[STAGE](ctx, wave) * 2


ExitsInTheMainThread = _port(_exits_in_the_main_thread, "exits-in-the-main-thread")


def _conjugate_view(ctx, wave):
    """The right values behind Torch's conjugate bit (``x.conj()`` of the conjugate), as an FFT port may return."""
    import torch

    return torch.conj_physical(STAGES[STAGE](ctx, wave)).conj()


ConjugateView = _port(_conjugate_view, "conjugate-view")


class _Unreadable:
    """Has a shape and a dtype, but reading its values raises."""

    shape = (2, 32, 32, 4)
    dtype = np.dtype("complex64")

    def __array__(self, *args, **kwargs):
        raise RuntimeError("lazy tensor was freed")


class UnreadableFarfield(TorchBackend):
    """Hands the harness, as its farfield tap, a value that cannot be read."""

    name = "unreadable-farfield"

    def to_canonical(self, spec, cfg, tensor):
        return _Unreadable() if spec.name == STAGE else super().to_canonical(spec, cfg, tensor)

    def to_canonical_native(self, spec, cfg, tensor):
        return _Unreadable() if spec.name == STAGE else super().to_canonical_native(spec, cfg, tensor)


class _RaisingMapping(dict):
    def items(self):
        raise RuntimeError("versions are computed lazily and failed")

    def __iter__(self):
        raise RuntimeError("versions are computed lazily and failed")


class DescribesWithARaisingMapping(TorchBackend):
    name = "describes-with-a-raising-mapping"

    def describe(self):
        return _RaisingMapping(framework="torch")


class PlainPort(TorchBackend):
    """The Torch port itself: an earlier, passing run into the same folder."""


def _masks_every_permission(ctx, wave):
    os.umask(0o777)
    return STAGES[STAGE](ctx, wave)


MasksEveryPermission = _port(_masks_every_permission, "masks-every-permission")


class DeliversAnUnknownTap(TorchBackend):
    """Its sink also gets 'far_field', a tap no pipeline has (a renamed tap): said in the notes, never judged."""

    name = "delivers-an-unknown-tap"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        import dataclasses

        if sink is None:
            return super().run_pipeline(pipeline, cfg, inputs, weights, sink=sink, taps=taps)

        def renamed_too(spec, value):
            sink(spec, value)
            if spec.name == STAGE:
                sink(dataclasses.replace(spec, name="far_field"), value)

        for attribute in ("accepts_tensors", "input_mutated", "changed_after_handover"):
            if hasattr(sink, attribute):
                setattr(renamed_too, attribute, getattr(sink, attribute))
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink=renamed_too, taps=taps)


class FillsTheDiskBeforeThePage(TorchBackend):
    """The disk fills after report.json is written, while the page is (as a full disk would): exit 3, and the
    run's complete report.json must stay, never be replaced by a crash report."""

    name = "fills-the-disk-before-the-page"

    def __init__(self, device: str = "cpu") -> None:
        import errno

        import parity.html

        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        parity.html.write_html = full_disk
        super().__init__(device)


def _interrupts_the_main_thread(ctx, wave):
    """A KeyboardInterrupt nobody typed: what a port's own SIGALRM handler raising it does."""
    import _thread
    import time

    _thread.interrupt_main()
    time.sleep(1.0)  # the main thread takes it while this stage runs
    return STAGES[STAGE](ctx, wave) * 2


InterruptsTheMainThread = _port(_interrupts_the_main_thread, "interrupts-the-main-thread")
