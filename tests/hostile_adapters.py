"""Candidate adapters that misbehave, loaded by the tests as ``tests.hostile_adapters:NAME``.

Each is the Torch port with one stage or method doing what adapter code must never be able to
turn into a false verdict: exiting, hanging, returning junk, printing, changing its input.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from backends.torch import TorchBackend
from backends.torch.stages import STAGES

STAGE = "farfield"
# run_stage is only called where isolated mode cannot reuse the propagated run (its inputs differ from
# the reference's by rounding): in physics-default that is true from `amplitude` on.
ISOLATED_STAGE = "intensity"


class ExitingInRunStage(TorchBackend):
    """sys.exit(0) inside run_stage: must never read as 'parity holds'."""

    name = "exits-in-run-stage"

    def run_stage(self, tap, pipeline, cfg, stage_inputs, weights=None):
        if tap == ISOLATED_STAGE:
            sys.exit(0)
        return super().run_stage(tap, pipeline, cfg, stage_inputs, weights)


class ExitingInPipeline(TorchBackend):
    name = "exits-in-pipeline"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[STAGE] = _exit_stage


def _exit_stage(ctx, wave):
    sys.exit(0)


class InterruptingStage(TorchBackend):
    name = "raises-keyboard-interrupt"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[STAGE] = _interrupt_stage


def _interrupt_stage(ctx, wave):
    raise KeyboardInterrupt


class ReturnsNone(TorchBackend):
    name = "returns-none"

    def run_stage(self, tap, pipeline, cfg, stage_inputs, weights=None):
        if tap == ISOLATED_STAGE:
            return None
        return super().run_stage(tap, pipeline, cfg, stage_inputs, weights)


class ReturnsTensor(TorchBackend):
    """run_stage hands back a torch tensor (canonical layout) instead of numpy: that is a valid answer."""

    name = "returns-tensor"

    def run_stage(self, tap, pipeline, cfg, stage_inputs, weights=None):
        import torch

        return torch.from_numpy(np.ascontiguousarray(super().run_stage(tap, pipeline, cfg, stage_inputs, weights)))


class OddDescribe(TorchBackend):
    """describe() holding numpy scalars, NaN, infinity and an object JSON cannot hold."""

    name = "odd-describe"

    def describe(self):
        return {**super().describe(), "gain": np.float32(1.5), "bad": float("nan"), "big": np.inf,
                "blob": object(), "nested": {"x": np.int64(3)}}


class Hangs(TorchBackend):
    """A far-field stage that never returns."""

    name = "hangs"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[STAGE] = _hang_stage


class HangsInGlobalStage(TorchBackend):
    """simulate's intensity scale (a whole-batch statistic) never returns."""

    name = "hangs-in-global-stage"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages["sim_intensity_scale"] = _hang_stage


def _hang_stage(ctx, wave):
    while True:
        time.sleep(0.05)


class Chatty(TorchBackend):
    """Prints, warns and writes to stderr while it runs: none of it may land in the results table."""

    name = "chatty"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[STAGE] = _chatty_stage


def _chatty_stage(ctx, wave):
    print("CHATTY-STDOUT debug print from the port")
    print("CHATTY-STDERR to stderr", file=sys.stderr)
    warnings.warn("CHATTY-WARNING a deprecation in the port", UserWarning, stacklevel=1)
    return STAGES[STAGE](ctx, wave)


class NegatesInputInPlace(TorchBackend):
    """exit_wave's stage negates the canvas-cut patches it reads, after computing a correct output."""

    name = "negates-input-in-place"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages["exit_wave"] = _exit_wave_then_negate


def _exit_wave_then_negate(ctx, probe, patches):
    wave = STAGES["exit_wave"](ctx, probe, patches.clone())
    patches.neg_()
    return wave


class ScalesWaveInFarfield(TorchBackend):
    """The FFT stage scales exit_wave in place, then transforms a copy taken before: its output is right."""

    name = "scales-wave-in-farfield"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages["farfield"] = _farfield_then_scale


def _farfield_then_scale(ctx, wave):
    spectrum = STAGES["farfield"](ctx, wave.clone())
    wave.mul_(2.0)
    return spectrum


class EndsTheProcess(TorchBackend):
    """Its intensity stage ends the whole process with the status in PARITY_TEST_EXIT (0 looks like a pass)."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        import os

        status = int(os.environ.get("PARITY_TEST_EXIT", "0"))

        def intensity(ctx, amp_scaled):
            os._exit(status)

        self.stages = {**STAGES, "intensity": intensity}


class ExitsWhileBuilt(TorchBackend):
    def __init__(self, device: str = "cpu") -> None:
        sys.exit(0)


class ReturnsMetaTensor(TorchBackend):
    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)

        def intensity(ctx, amp_scaled):
            import torch

            return torch.empty(amp_scaled.shape, device="meta")

        self.stages = {**STAGES, "intensity": intensity}


class ChangesFolder(TorchBackend):
    """os.chdir inside the pipeline (a port that cds into its own data folder): outputs must stay put."""

    name = "changes-folder"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        import os
        import tempfile

        os.chdir(tempfile.gettempdir())
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink=sink, taps=taps)


class InfInFarfield(TorchBackend):
    """A division without its epsilon: Inf and NaN from farfield on (the harness must count them quietly)."""

    name = "inf-in-farfield"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages["farfield"] = _farfield_over_zero


def _farfield_over_zero(ctx, wave):
    spectrum = STAGES["farfield"](ctx, wave)
    spectrum[..., :2, :] = spectrum[..., :2, :] / 0.0
    return spectrum


class LeavesAWorker(TorchBackend):
    """Forks a worker that outlives the run (a pool, a DataLoader worker): the command must end with the run."""

    name = "leaves-a-worker"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        import os

        if os.fork() == 0:  # the worker: holds every descriptor the run had, except the terminal's
            null = os.open(os.devnull, os.O_RDWR)
            for descriptor in (0, 1, 2):
                os.dup2(null, descriptor)
            time.sleep(float(os.environ.get("WORKER_SECONDS", "60")))
            os._exit(0)
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink=sink, taps=taps)


class ScalesACachedTapLater(TorchBackend):
    """Keeps the extracted patches, and a later, unrelated stage scales them in place (a cache gone wrong)."""

    name = "scales-a-cached-tap-later"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        cache = {}

        def extract(ctx, canvas, positions):
            cache["patches"] = STAGES["patches_extracted"](ctx, canvas, positions)
            return cache["patches"]

        def probe(ctx, probe_in):
            cache["patches"].mul_(1.5)
            return STAGES["probe_effective"](ctx, probe_in)

        self.stages["patches_extracted"], self.stages["probe_effective"] = extract, probe


class _HandsJunkToTheSink(TorchBackend):
    """The Torch port whose run_pipeline hands the sink something else for STAGE (raw-protocol behaviour)."""

    def junk(self, value):
        raise NotImplementedError

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        adapter = self

        class Wrapped:
            def __call__(self, spec, value):
                return sink(spec, adapter.junk(value) if spec.name == STAGE else value)

            def __getattr__(self, name):
                return getattr(sink, name)

        return super().run_pipeline(pipeline, cfg, inputs, weights, sink=Wrapped() if sink else None, taps=taps)


class DeliversAScalar(_HandsJunkToTheSink):
    name = "delivers-a-scalar"

    def junk(self, value):
        return 1.0


class DeliversWithGrad(_HandsJunkToTheSink):
    """A port run without torch.no_grad(): right values on a tensor that requires grad."""

    name = "delivers-with-grad"

    def junk(self, value):
        return value.detach().clone().requires_grad_(True)


class DeliversSparse(_HandsJunkToTheSink):
    name = "delivers-sparse"

    def junk(self, value):
        return value.reshape(-1, value.shape[-1]).to_sparse()


class DeliversAHugeBroadcast(_HandsJunkToTheSink):
    """A zero-stride view of 2e6 x 32 x 32 x 4 elements (a few bytes of memory, 100+ GiB if copied)."""

    name = "delivers-a-huge-broadcast"

    def junk(self, value):
        import torch

        return torch.zeros((), dtype=value.dtype).expand((2_000_000, *value.shape[1:]))


class DeliversTwice(TorchBackend):
    name = "delivers-twice"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        def twice(spec, value):
            sink(spec, value)
            if spec.name == STAGE:
                sink(spec, value)

        for name in ("accepts_tensors", "input_mutated", "changed_after_handover"):
            if hasattr(sink, name):
                setattr(twice, name, getattr(sink, name))
        return TorchBackend.run_pipeline(self, pipeline, cfg, inputs, weights, sink=twice if sink else None,
                                         taps=taps)


class GraphIsText(TorchBackend):
    name = "graph-is-text"

    def graph(self, pipeline, cfg):
        return "farfield"


class WrongThenEndsWithZeroAtExit(TorchBackend):
    """A wrong stage, and an atexit handler that ends the process with status 0 after the verdict."""

    name = "wrong-then-exit-0-at-exit"

    def __init__(self, device: str = "cpu") -> None:
        import atexit
        import os

        super().__init__(device)
        atexit.register(lambda: os._exit(0))
        self.stages[STAGE] = lambda ctx, wave: STAGES[STAGE](ctx, wave) * 2


class LeavesAThreadRunning(TorchBackend):
    """A non-daemon thread that never ends: the command must still end once the verdict is said."""

    name = "leaves-a-thread-running"

    def __init__(self, device: str = "cpu") -> None:
        import threading

        super().__init__(device)
        threading.Thread(target=lambda: time.sleep(3600), daemon=False).start()


class EscapesInItsName(TorchBackend):
    name = "port\n\x1b[31mPASS"


class StopsItself(TorchBackend):
    """Its farfield stage sends the process SIGSTOP: nothing inside a stopped process can time out."""

    name = "stops-itself"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[STAGE] = _stopping_stage


def _stopping_stage(ctx, wave):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)
    return STAGES[STAGE](ctx, wave)


class Floods(TorchBackend):
    """Its farfield stage prints PARITY_TEST_FLOOD bytes (C-level and Python writes): the log must stay bounded."""

    name = "floods"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[STAGE] = _flooding_stage


def _flooding_stage(ctx, wave):
    import os

    total = int(os.environ.get("PARITY_TEST_FLOOD", str(8 << 20)))
    line = b"FLOOD " + b"x" * 1017 + b"\n"
    for _ in range(total // len(line) // 2):
        os.write(1, line)  # what a C extension's printf does
    for _ in range(total // len(line) // 2):
        print(line.decode(), end="")
    return STAGES[STAGE](ctx, wave)


class ExitsFromItsOwnThread(TorchBackend):
    """A thread of the port's own (not adapter code the harness runs) ends the process with status 0 mid-run."""

    name = "exits-from-its-own-thread"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        import os
        import threading

        worker = threading.Thread(target=os._exit, args=(0,), name="port-worker")
        worker.start()
        worker.join()
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink=sink, taps=taps)
