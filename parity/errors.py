"""Exceptions that map to the CLI's exit codes.

0 parity holds, 1 parity fails, 2 bad usage or bad input, 3 something crashed
that is neither (the reference raised, or a harness bug): a traceback is
printed, and it is never mistaken for a parity verdict.
"""

from __future__ import annotations

import difflib

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_BAD_INPUT = 2
EXIT_CRASHED = 3
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as shells report them


def did_you_mean(name: str, pool) -> str:
    """' (did you mean 'a', 'b'?)' for the names of ``pool`` closest to a misspelt ``name``; '' if none is close."""
    close = difflib.get_close_matches(name, sorted(pool), n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


class ParityInputError(Exception):
    """Bad usage or bad input: a file, key or value that is not what was expected (exit 2).

    Messages name the file, the key and what was expected, e.g.
    ``inputs.npz: key 'positions': expected shape (B, 1, 2, 4), got (3, 2, 4)``.
    """

    exit_code = EXIT_BAD_INPUT


class PipelineNotCovered(ParityInputError):
    """An adapter says it cannot run a case's pipeline (its ``graph()`` raised ``StageError``).

    A run over every built-in case skips such cases, with a note; a case asked for by name is exit 2.
    """

    def __init__(self, message: str, case: str = "", pipeline: str = "", why: str = "") -> None:
        super().__init__(message)
        self.case, self.pipeline, self.why = case, pipeline, why


class StaleGoldenError(ParityInputError):
    """A golden file was recorded for a different case definition."""


class CorruptGoldenError(ParityInputError):
    """A golden file fails its checksums or lacks what its schema promises."""


class WriteRefusedError(Exception):
    """The machine refused a write (disk full, quota, file-size limit): exit 3, neither a verdict nor bad input.

    The message names the file and says that any previous file there is intact.
    """

    exit_code = EXIT_CRASHED


class ReferenceFailed(Exception):
    """The reference's code raised, hung or ended while ``record`` ran it: no golden is written (any earlier one is
    intact), and it is no verdict on any candidate (exit 3)."""

    exit_code = EXIT_CRASHED


class AdapterSetupError(Exception):
    """An adapter's own setup (``PluginAdapter.setup``) raised: no stage of it can run, so none is blamed."""
