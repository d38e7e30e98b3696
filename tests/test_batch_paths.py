"""A port whose code changes with the batch size (PtychoPINN switches paths from some number of patterns on)
is judged only at the batch sizes it is given: a run cut into chunks says how many samples each call saw, and
``--batch-chunk`` (``RunOptions.batch_chunk``) gives it more than the memory-bounded default."""

from __future__ import annotations

import dataclasses

from backends.torch import TorchBackend
from backends.torch.stages import STAGES
from parity import RunOptions, builtin_case, run_case
from parity.workflows import tolerance_table

LARGE = 3  # samples from which the port takes its other path


class LargeBatchPath(TorchBackend):
    """farfield without one of its factors once a call holds LARGE samples or more."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages["farfield"] = lambda ctx, wave: STAGES["farfield"](ctx, wave) * (
            1.5 if wave.shape[0] >= LARGE else 1.0)


def test_a_large_batch_path_is_judged_when_the_chunk_holds_the_batch():
    case = dataclasses.replace(builtin_case("physics-default").with_config(N=32), batch=4)
    chunk_bytes = 200_000  # small enough that each default chunk holds fewer than LARGE samples
    small = RunOptions(spill_bytes=chunk_bytes, modes=("propagated",))
    chunked = run_case(case, TorchBackend("cpu"), LargeBatchPath(), tolerance_table(None), small)
    said = " ".join(chunked.notes)
    assert chunked.passed and "ran in" in said and "--batch-chunk 4" in said, said
    whole = run_case(case, TorchBackend("cpu"), LargeBatchPath(), tolerance_table(None),
                     RunOptions(spill_bytes=chunk_bytes, batch_chunk=4, modes=("propagated",)))
    assert not whole.passed and whole.first_divergence.tap == "farfield"
    assert not any("ran in" in note for note in whole.notes)


def test_chunk_mb_sets_how_many_samples_a_call_sees(tmp_path):
    """``--chunk-mb``: the MiB of taps per chunk and side, so a smaller value cuts the batch finer."""
    import json

    from parity.cli import main

    argv = ["run", "--case", "physics-n32-intensity-scale", "--reference", "torch", "--mode", "propagated",
            "--quiet", "--out", str(tmp_path / "fine"), "--chunk-mb", "1"]
    assert main(argv) == 0
    notes = " ".join(json.loads((tmp_path / "fine" / "physics-n32-intensity-scale" / "report.json").read_text())["notes"])
    assert "the batch of 16 samples ran in" in notes, notes
    assert main(argv[:-4] + ["--out", str(tmp_path / "whole")]) == 0  # 16 MiB: one chunk
    notes = json.loads((tmp_path / "whole" / "physics-n32-intensity-scale" / "report.json").read_text())["notes"]
    assert not any("ran in" in note for note in notes), notes
