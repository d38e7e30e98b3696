"""Checks made before (and beside) any tensor comparison: configuration, weights, the reference's contract.

The configuration audit is per knob: a knob an adapter resolves differently makes the taps that
depend on it (the registry's ``knobs`` of a tap, and everything downstream of such a tap in either
adapter's graph) "not comparable"; the other taps are still compared, and the run fails with the
audit named first.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from backends.common.config import ForwardConfig
from backends.common.taps import TapSpec
from backends.common.weights import weight_problems

from .cases import Case
from .engines import to_numpy
from .guard import describe_exception
from .results import Audit


def config_audit(case: Case, resolved: Mapping[str, ForwardConfig | BaseException]) -> Audit:
    """``resolved``: per role ("reference", "candidate"), the configuration the adapter will run, or the
    exception its ``resolve_config`` raised. Details map each differing knob to the values."""
    messages: list[str] = []
    details: dict[str, Any] = {"knobs": {}}
    for role, outcome in resolved.items():
        if isinstance(outcome, BaseException):
            messages.append(f"{role} could not resolve the configuration: {outcome}")
            details.setdefault("unresolved", []).append(role)
            continue
        if not isinstance(outcome, ForwardConfig):
            messages.append(f"{role}.resolve_config returned {type(outcome).__name__}, expected a ForwardConfig")
            details.setdefault("unresolved", []).append(role)
            continue
        for knob, (mine, theirs) in case.config.diff(outcome).items():
            details["knobs"].setdefault(knob, {"harness": mine})[role] = theirs
            messages.append(f"{role} resolves {knob}={theirs!r}, the harness resolved {mine!r}")
    return Audit("config", not messages, messages, details)


def affected_taps(audit: Audit, graphs: Iterable[list[TapSpec]], registry: list[TapSpec]) -> dict[str, str]:
    """Tap -> "not comparable: <knob> differs ..." for every tap a differing knob reaches.

    An adapter whose configuration could not be resolved at all makes every tap not comparable.
    """
    knobs = audit.details.get("knobs", {})
    if audit.details.get("unresolved"):
        roles = ", ".join(audit.details["unresolved"])
        return {spec.name: f"not comparable: the {roles} could not resolve the configuration" for spec in registry}
    if not knobs:
        return {}
    roots: dict[str, str] = {}  # tap -> "<knob> differs (...)"
    reasons: dict[str, str] = {}
    for spec in registry:
        for knob in spec.knobs:
            if knob in knobs and spec.name not in roots:
                values = ", ".join(f"{role} {value!r}" for role, value in knobs[knob].items())
                roots[spec.name] = f"{knob} differs ({values})"
                reasons[spec.name] = f"not comparable: {roots[spec.name]}"
    edges: dict[str, set[str]] = {}
    for graph in [registry, *graphs]:
        for spec in graph:
            edges.setdefault(spec.name, set()).update(spec.inputs)
    changed = True
    while changed:  # everything downstream of an affected tap is affected too
        changed = False
        for spec in registry:
            if spec.name in roots:
                continue
            source = next((name for name in sorted(edges.get(spec.name, ())) if name in roots), None)
            if source is not None:
                roots[spec.name] = roots[source]
                reasons[spec.name] = f"not comparable: reads {source!r}, downstream of where {roots[source]}"
                changed = True
    return reasons


def weights_audit(case: Case, keras_files: bool = True) -> Audit:
    """Names, shapes, dtypes and finiteness, then the Keras <-> Torch mapping round trip.

    The round trip goes through a real Keras weights file when ``keras_files`` and TensorFlow is
    installed, else through the Torch state_dict alone (GPU machines, ``check``).
    """
    problems = weight_problems(case.config, case.weights or {})
    details: dict[str, Any] = {}
    if not problems:
        from . import weightmap

        use_keras = keras_files
        if use_keras:
            try:
                importlib.import_module("backends.tf.keras_io")
            except ImportError:
                use_keras = False
        if use_keras:
            with tempfile.TemporaryDirectory(prefix="parity-weights-") as workdir:
                mapping = weightmap.check_weight_mapping(case.config, case.weights, workdir)
        else:
            mapping = weightmap.torch_roundtrip_report(case.config, case.weights)
        problems += mapping.problems
        problems += [f"parameter {row.canonical!r} ({row.torch_name}, {row.transform}) changes by "
                     f"{row.max_abs_roundtrip_diff:g} through the Keras/Torch round trip"
                     for row in mapping.rows if not row.ok]
        details["mapping"] = mapping.to_dict()
    return Audit("weights", not problems, problems, details)


def contract_problems(spec: TapSpec, cfg: ForwardConfig, batch: int, value: Any) -> str | None:
    """Why a reference tap breaks the registry's contract (shape, dtype), or None."""
    shape, dtype = tuple(spec.shape(cfg, batch)), spec.dtype(cfg)
    got_shape = tuple(getattr(value, "shape", ()))
    got_dtype = getattr(value, "dtype", None)
    if got_shape != shape or got_dtype != dtype:
        return (f"reference tap {spec.name!r} is {got_dtype} {got_shape}, the registry declares {dtype} {shape}")
    return None


def port_weights_audit(expected: Mapping[str, np.ndarray], returned: Any) -> Audit:
    """The candidate's own parameters, mapped back to the canonical names and Keras layout by its
    ``canonical_weights()``, against the weights it was given: a mapping (a transposed kernel, a bias
    left out) is a copy, so every parameter must come back bit for bit."""
    if isinstance(returned, BaseException):
        return Audit("port weights", False, [f"canonical_weights() raised: {returned}"])
    if not isinstance(returned, Mapping):
        return Audit("port weights", False, [f"canonical_weights() returned {type(returned).__name__}; expected a "
                                             "mapping of canonical parameter names to arrays"])
    try:  # read once: its items() is the port's code
        returned = {str(name): value for name, value in returned.items()}
    except Exception as error:  # noqa: BLE001
        return Audit("port weights", False, [f"canonical_weights() returned a mapping that cannot be read "
                                             f"({describe_exception(error)})"])
    problems = [f"parameter {name!r}: missing from canonical_weights()" for name in expected if name not in returned]
    problems += [f"{name!r}: not a parameter of the network (canonical names: encoder.block0.conv0.kernel, ...)"
                 for name in returned if name not in expected]
    rows = []
    for name, want in expected.items():
        if name not in returned:
            continue
        try:
            got = to_numpy(returned[name])
        except Exception as error:  # noqa: BLE001 - whatever the port handed back
            problems.append(f"parameter {name!r}: not an array ({type(error).__name__})")
            continue
        if got.shape != want.shape:
            problems.append(f"parameter {name!r}: shape {got.shape} mapped back, expected {want.shape} (Keras layout, "
                            "kernels (H, W, in, out))")
            continue
        difference = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
        rows.append({"name": name, "max_abs_diff": difference})
        if not difference == 0.0:
            how = ": the port has zeros" if not np.any(got) and np.any(want) else _rearranged(want, got)
            problems.append(f"parameter {name!r}: the port's differs from the one it was given by up to "
                            f"{difference:.3g} (max |given| {float(np.max(np.abs(want))):.3g}){how}")
    return Audit("port weights", not problems, problems[:20] + ([f"... {len(problems) - 20} more"]
                                                                 if len(problems) > 20 else []), {"parameters": rows})


def _rearranged(given: np.ndarray, mapped: np.ndarray) -> str:
    """How the port's parameter holds the given one's values, where it is a plain rearrangement of them (the
    usual kernel-mapping slips), else ''."""
    candidates = [("the same values with the opposite sign", lambda w: -w)]
    if given.ndim == 4:  # a Keras kernel (H, W, in, out)
        h, w, i, o = given.shape
        candidates += [
            ("H and W swapped (a transpose where a permute (3, 2, 0, 1) was meant)", lambda k: k.transpose(1, 0, 2, 3)),
            ("rotated by 180 degrees (a flipped kernel: convolution vs cross-correlation, a transposed "
             "convolution's weights)", lambda k: k[::-1, ::-1]),
            ("input channels in reversed order", lambda k: k[:, :, ::-1, :]),
            ("output channels in reversed order", lambda k: k[..., ::-1]),
            ("reshaped to (out, in, H, W) instead of permuted", lambda k: k.reshape(o, i, h, w).transpose(2, 3, 1, 0)),
        ]
    elif given.ndim == 1:
        candidates.append(("in reversed order", lambda b: b[::-1]))
    for words, rearrange in candidates:
        try:
            expected = rearrange(given)
        except ValueError:
            continue
        if expected.shape == mapped.shape and np.array_equal(expected, mapped):
            return f": {words}"
    return ""


def reference_audit(problems: list[str]) -> Audit:
    return Audit("reference", not problems, problems)


def resolve_all(case: Case, adapters: Mapping[str, Any],
                call: Callable[[str, Callable, Any], Any]) -> dict[str, ForwardConfig | BaseException]:
    """Each adapter's resolved configuration through ``call(role, function, arg)`` (the guard)."""
    resolved: dict[str, ForwardConfig | BaseException] = {}
    for role, adapter in adapters.items():
        try:
            resolved[role] = call(role, adapter.resolve_config, case.config)
        except Exception as error:  # noqa: BLE001 - reported, never raised
            resolved[role] = error
    return resolved
