"""Weight mapping between a real Keras file, canonical weights and the Torch port's state_dict.

Every function returns a ``WeightMapReport``: one row per parameter (canonical
name, Keras file key and shape, Torch name and shape, the layout transform
and the max |difference| after a round trip, which must be exactly 0).
``audit_weights`` is what the harness runs before any forward comparison: a
mapping problem is reported there, never discovered as a forward divergence.

TensorFlow and torch are imported inside the functions that need them, so
the report types and ``torch_roundtrip_report`` import without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backends.common.config import ForwardConfig
from backends.common.weights import weight_problems
from backends.torch.state_dict import from_state_dict, parameter_table, to_state_dict


class WeightMappingError(ValueError):
    """A state_dict (or canonical weights) that does not fit the configuration's parameter table."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("weights do not fit the configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclasses.dataclass(frozen=True)
class ParameterReport:
    canonical: str
    keras_path: str  # dataset path inside the Keras weights file ('' where no file was involved)
    keras_shape: tuple[int, ...]
    torch_name: str
    torch_shape: tuple[int, ...]
    transform: str  # "transpose(3, 2, 0, 1)" for kernels, "identity" for biases
    max_abs_roundtrip_diff: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["keras_shape"], row["torch_shape"] = list(self.keras_shape), list(self.torch_shape)
        diff = self.max_abs_roundtrip_diff
        row["max_abs_roundtrip_diff"] = diff if math.isfinite(diff) else str(diff)
        return row


@dataclasses.dataclass(frozen=True)
class WeightMapReport:
    rows: list[ParameterReport]
    problems: list[str]
    source: str = ""  # what was mapped: a file path, or a description of the round trip

    @property
    def ok(self) -> bool:
        return not self.problems and all(row.ok for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ok": self.ok, "problems": list(self.problems),
                "parameters": [row.to_dict() for row in self.rows]}

    def render_lines(self) -> list[str]:
        header = ("parameter", "keras key", "keras shape", "torch name", "torch shape", "transform",
                  "max |diff|", "ok")
        table = [header] + [
            (row.canonical, row.keras_path or "-", _shape(row.keras_shape), row.torch_name,
             _shape(row.torch_shape), row.transform, _number(row.max_abs_roundtrip_diff),
             "ok" if row.ok else "FAIL")
            for row in self.rows
        ]
        widths = [max(len(line[column]) for line in table) for column in range(len(header))]
        lines = [f"weight mapping{f' ({self.source})' if self.source else ''}: "
                 f"{len(self.rows)} parameters, {'ok' if self.ok else 'PROBLEMS'}"]
        for index, line in enumerate(table):
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        lines += [f"problem: {problem}" for problem in self.problems]
        return lines


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def _number(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


def _max_abs_diff(a: Any, b: Any) -> float:
    a, b = _numpy(a), _numpy(b)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nan) if np.isnan(diff).any() else float(diff.max())


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _report(cfg: ForwardConfig, diffs: Mapping[str, float], keras_paths: Mapping[str, str],
            problems: list[str], source: str) -> WeightMapReport:
    """Rows in parameter_table order; a nonzero or missing diff is a problem line of its own."""
    rows = []
    problems = list(problems)
    for entry in parameter_table(cfg):
        diff = diffs.get(entry.canonical, math.nan)
        ok = diff == 0
        if not ok:
            problems.append(f"parameter {entry.canonical!r} ({entry.torch}): round-trip max |difference| "
                            f"{_number(diff)}, expected exactly 0")
        rows.append(ParameterReport(entry.canonical, keras_paths.get(entry.canonical, ""), entry.canonical_shape,
                                    entry.torch, entry.torch_shape, entry.transform, diff, ok))
    return WeightMapReport(rows, problems, source)


def _state_dict_problems(cfg: ForwardConfig, state: Mapping[str, Any]) -> list[str]:
    table = parameter_table(cfg)
    known = {entry.torch: entry for entry in table}
    problems = [f"state_dict lacks key {entry.torch!r} (parameter {entry.canonical!r}, "
                f"shape {entry.torch_shape})" for entry in table if entry.torch not in state]
    problems += [f"state_dict has unexpected key {key!r}" for key in state if key not in known]
    for key, entry in known.items():
        if key in state and tuple(_numpy(state[key]).shape) != entry.torch_shape:
            problems.append(f"state_dict[{key!r}] has shape {tuple(_numpy(state[key]).shape)}, "
                            f"expected {entry.torch_shape}")
    return problems


def to_torch_tensors(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}


def torch_roundtrip_report(cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> WeightMapReport:
    """canonical -> state_dict -> canonical, without TensorFlow and without a file."""
    problems = weight_problems(cfg, weights)
    if problems:
        return WeightMapReport([], problems, "canonical -> torch state_dict -> canonical")
    back = from_state_dict(cfg, to_state_dict(cfg, weights))
    diffs = {name: _max_abs_diff(back[name], weights[name]) for name in weights}
    return _report(cfg, diffs, {}, [], "canonical -> torch state_dict -> canonical")


def keras_file_to_state_dict(cfg: ForwardConfig, path: str | os.PathLike) -> tuple[dict[str, Any], WeightMapReport]:
    """A real Keras weights file (read by Keras) -> Torch state_dict of tensors, with its report.

    Raises ``WeightFileError`` where the file cannot be mapped (missing,
    corrupt, another configuration's shapes). Each row's diff is
    state_dict -> canonical against what Keras loaded.
    """
    from backends.tf.keras_io import keras_weight_paths, load_keras_weights

    weights = load_keras_weights(cfg, path)
    state = to_state_dict(cfg, weights)
    back = from_state_dict(cfg, state)
    diffs = {name: _max_abs_diff(back[name], weights[name]) for name in weights}
    report = _report(cfg, diffs, keras_weight_paths(cfg), [], str(path))
    return to_torch_tensors(state), report


def state_dict_to_keras_file(cfg: ForwardConfig, state_dict: Mapping[str, Any],
                             path: str | os.PathLike) -> WeightMapReport:
    """A Torch state_dict -> a real Keras file (``.weights.h5`` or ``.keras``), with its report.

    Raises ``WeightMappingError`` for a missing, unexpected or mis-shaped key
    (or a dtype other than ``cfg.dtype``). Each row's diff is the file read
    back by Keras and converted to Torch layout, against the given tensor.
    """
    from backends.tf.keras_io import keras_weight_paths, load_keras_weights, save_keras_weights

    problems = _state_dict_problems(cfg, state_dict)
    if problems:
        raise WeightMappingError(problems)
    weights = from_state_dict(cfg, state_dict)
    problems = weight_problems(cfg, weights)
    if problems:
        raise WeightMappingError(problems)
    save_keras_weights(cfg, weights, path)
    reread = to_state_dict(cfg, load_keras_weights(cfg, path))
    diffs = {entry.canonical: _max_abs_diff(reread[entry.torch], state_dict[entry.torch])
             for entry in parameter_table(cfg)}
    return _report(cfg, diffs, keras_weight_paths(cfg), [], str(path))


def check_weight_mapping(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], workdir: str | os.PathLike,
                         suffix: str = ".weights.h5") -> WeightMapReport:
    """canonical -> Keras file -> canonical -> state_dict -> PtychoNet -> canonical; every diff must be 0.

    Problems (weights that do not fit, a file Keras cannot read back, a
    state_dict the Torch module rejects, a nonzero difference) are returned in
    the report, not raised.
    """
    from backends.tf.keras_io import keras_weight_paths, load_keras_weights, save_keras_weights
    from backends.torch.network import PtychoNet

    path = Path(workdir) / f"weight_mapping{suffix}"
    source = f"canonical -> {path.name} -> canonical -> torch state_dict -> PtychoNet -> canonical"
    problems = weight_problems(cfg, weights)
    if problems:
        return WeightMapReport([], problems, source)
    try:
        save_keras_weights(cfg, weights, path)
        from_file = load_keras_weights(cfg, path)
        net = PtychoNet(cfg)
        net.load_state_dict(to_torch_tensors(to_state_dict(cfg, from_file)), strict=True)
        back = from_state_dict(cfg, net.state_dict())
    except (KeyError, ValueError, RuntimeError) as error:  # WeightFileError is a ValueError
        return WeightMapReport([], [f"weight round trip failed: {type(error).__name__}: {error}"], source)
    diffs = {name: _max_abs_diff(back[name], weights[name]) for name in weights}
    return _report(cfg, diffs, keras_weight_paths(cfg), [], source)


def audit_weights(cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> list[str]:
    """Everything wrong with these weights for this configuration, one line each; [] means go.

    ``weight_problems`` (names, shapes, dtypes, finiteness) first; if those
    pass, the full round trip of ``check_weight_mapping`` through a real Keras
    file in a temporary directory.
    """
    with tempfile.TemporaryDirectory(prefix="weightmap-") as workdir:
        return check_weight_mapping(cfg, weights, workdir).problems
