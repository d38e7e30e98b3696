"""The bytes a run will need, estimated before anything is allocated, and the refusal of too many.

``estimate(cfg, pipeline, batch)`` adds up, from the registry's shapes alone
(no input is built, no file read): the inputs and weights (held for the whole
run), and per chunk of the batch the reference's taps (the store), the
candidate's live taps at its fullest stage and that stage's temporaries
(``backends.common.footprint``: convolution buffers, translated canvases). It
names the knob that makes the total large: the one whose reset to its default
shrinks the estimate most. The frameworks' own memory (~1 GiB for TensorFlow
and PyTorch) is not included: no knob changes it.

``check(...)`` refuses (ParityInputError, exit 2) a run whose estimate
exceeds the memory limit: ``--max-memory``, else ``DEFAULT_FRACTION`` of the
memory available now (``/proc/meminfo`` MemAvailable, a cgroup limit if lower,
else ``os.sysconf``, else ``FALLBACK_BYTES``).

Runner v2 will process the batch in chunks: pass ``chunk_batch`` and the
per-chunk parts are sized for one chunk while inputs and weights stay whole.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

from backends.common.config import DEFAULTS, ConfigError, ForwardConfig
from backends.common.footprint import stage_temporaries
from backends.common.taps import PIPELINES, batched, pipeline_inputs, pipeline_taps
from backends.common.weights import weight_specs

from .errors import ParityInputError
from .npz import human_bytes

DEFAULT_FRACTION = 0.5
FALLBACK_BYTES = 4 << 30
COMPARE_BYTES = 4 * (64 << 20)  # two comparison chunks per side, and their float64 upcasts
WEIGHT_COPIES = 4  # canonical numpy, TF variables, Torch parameters, the mapping audit's round trip
INPUT_COPIES = 2  # the case's arrays and one framework copy

_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("parity_memory_limit", default=None)


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    bytes: int
    per_chunk: bool  # scales with the chunk's batch (else held for the whole run)
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Estimate:
    pipeline: str
    batch: int
    chunk_batch: int
    parts: tuple[Part, ...]

    @property
    def fixed_bytes(self) -> int:
        return sum(part.bytes for part in self.parts if not part.per_chunk)

    @property
    def per_chunk_bytes(self) -> int:
        return sum(part.bytes for part in self.parts if part.per_chunk)

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + self.per_chunk_bytes

    @property
    def largest(self) -> Part:
        return max(self.parts, key=lambda part: part.bytes)

    def breakdown(self) -> str:
        return ", ".join(f"{part.name} {human_bytes(part.bytes)}" for part in sorted(self.parts, key=lambda p: -p.bytes)
                         if part.bytes)

    def to_dict(self) -> dict[str, object]:
        return {"pipeline": self.pipeline, "batch": self.batch, "chunk_batch": self.chunk_batch,
                "total_bytes": self.total_bytes, "fixed_bytes": self.fixed_bytes,
                "per_chunk_bytes": self.per_chunk_bytes, "parts": [dataclasses.asdict(part) for part in self.parts]}


def _nbytes(shape: Sequence[int | None], itemsize: int) -> int:
    return math.prod(dim or 1 for dim in shape) * itemsize


def _input_bytes(cfg: ForwardConfig, pipeline: str, batch: int, shapes: Mapping[str, Sequence[int]],
                 in_file: Collection[str] = (), rows: int = 1) -> int:
    """The inputs' bytes at ``batch`` samples (a file's shapes, where known, resized to it); the inputs named in
    ``in_file`` stay in their file and are read ``rows`` samples at a time."""
    total = 0
    for spec in pipeline_inputs(pipeline):
        shape = shapes.get(spec.name) or spec.shape(cfg, batch)
        if batched(spec) and len(shape):
            shape = (rows if spec.name in in_file else batch, *shape[1:])
        if None in shape:  # a free size (simulate's object): the built-in cases' object is about 3N x 3N
            shape = tuple(3 * cfg.N if dim is None else dim for dim in shape)
        total += _nbytes(shape, spec.dtype(cfg).itemsize)
    return INPUT_COPIES * total


def _pipeline_parts(cfg: ForwardConfig, pipeline: str, batch: int, shapes: Mapping[str, Sequence[int]],
                    ) -> tuple[int, int, str]:
    """(reference store, candidate peak, the stage at the peak) for one chunk of ``batch``."""
    specs = pipeline_taps(pipeline, cfg)
    sizes = {spec.name: _nbytes(spec.shape(cfg, batch), spec.dtype(cfg).itemsize) for spec in specs}
    for spec in pipeline_inputs(pipeline):
        sizes[spec.name] = _nbytes(shapes.get(spec.name) or [d or 3 * cfg.N for d in spec.shape(cfg, batch)],
                                   spec.dtype(cfg).itemsize)
    last_use = {name: index for index, spec in enumerate(specs) for name in spec.inputs}
    store = sum(sizes[spec.name] for spec in specs)
    peak, at = 0, ""
    for index, spec in enumerate(specs):
        live = sum(sizes[other.name] for other in specs[:index] if last_use.get(other.name, -1) >= index)
        live += sum(sizes[name] for name in spec.inputs if name not in {s.name for s in specs})  # pipeline inputs
        # + the output, its layout conversion at the tap, and the stage's own temporaries
        need = live + 2 * sizes[spec.name] + stage_temporaries(spec, cfg, batch)
        if need > peak:
            peak, at = need, spec.stage or spec.name
    return store, peak, at


def estimate(cfg: ForwardConfig, pipeline: str, batch: int, *, chunk_batch: int | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None, reference_copies: int = 1,
             inputs_in_file: Collection[str] = ()) -> Estimate:
    """Bytes a run of ``pipeline`` on ``batch`` samples needs (``chunk_batch``: per-chunk parts sized for it).

    ``input_shapes``: the inputs' real shapes where known (headers of a user's
    file); ``reference_copies``: how many whole sets of reference taps a
    command holds at once (calibrate holds several runs).
    """
    if pipeline not in PIPELINES:
        raise ParityInputError(f"--pipeline {pipeline!r}: expected one of {PIPELINES}")
    batch = max(int(batch), 1)
    chunk = min(batch, max(int(chunk_batch), 1)) if chunk_batch else batch
    shapes = dict(input_shapes or {})
    store, peak, at = _pipeline_parts(cfg, pipeline, chunk, shapes)
    largest = max(_nbytes(spec.shape(cfg, chunk), spec.dtype(cfg).itemsize) for spec in pipeline_taps(pipeline, cfg))
    in_memory = _input_bytes(cfg, pipeline, batch, shapes, inputs_in_file, chunk)
    parts = [Part("inputs", in_memory, False, f"x{INPUT_COPIES}" + (
                  f"; {', '.join(sorted(inputs_in_file))} read {chunk} samples at a time from the file"
                  if inputs_in_file else "")),
             Part("comparison buffers", min(COMPARE_BYTES, 4 * largest), True)]
    if pipeline == "pinn":
        parameters = sum(math.prod(shape) for _, shape in weight_specs(cfg))
        parts.append(Part("weights", WEIGHT_COPIES * parameters * (4 if cfg.dtype == "float32" else 8), False,
                          f"{parameters} parameters x{WEIGHT_COPIES}"))
    parts.append(Part("reference taps", reference_copies * store, True, f"x{reference_copies}"))
    parts.append(Part("candidate working set", peak, True, f"peak at stage {at}"))
    return Estimate(pipeline, batch, chunk, tuple(parts))


def _reset(cfg: ForwardConfig, knob: str) -> ForwardConfig | None:
    try:
        return cfg.replace(**{knob: DEFAULTS[knob]})
    except ConfigError:
        return None


def dominant_knob(cfg: ForwardConfig, pipeline: str, batch: int, **options: object) -> tuple[str, int]:
    """(the knob, or 'batch', whose reset to its default shrinks the estimate most; the estimate after it)."""
    best, best_total = "", estimate(cfg, pipeline, batch, **options).total_bytes
    for knob, default in DEFAULTS.items():
        if getattr(cfg, knob) == default or knob == "dtype":
            continue
        smaller = _reset(cfg, knob)
        if smaller is not None:
            total = estimate(smaller, pipeline, batch, **options).total_bytes
            if total < best_total:
                best, best_total = knob, total
    if batch > 1:
        total = estimate(cfg, pipeline, 1, **options).total_bytes
        if total < best_total:
            best, best_total = "batch", total
    return best, best_total


# ---- the limit ----

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '8GiB', '2.5G', '1000000' -> bytes (K/M/G/T are binary; KB/MB/GB/TB decimal)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size such as 8G, 512MiB or 1000000 (bytes), got {text!r}")
    value = float(match.group(1)) * _UNITS[unit]
    if not (math.isfinite(value) and 1 <= value < 2**63):
        raise ValueError(f"expected a size between 1 byte and 8 EiB, got {text!r}")
    return int(value)


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit, if this process has one."""
    try:
        relative = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split(":", 2)[2]
        folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((folder / "memory.current").read_text()), 0)
    except (OSError, IndexError, ValueError):
        return None


def available_memory() -> tuple[int, str]:
    """(bytes available now, where the number came from)."""
    found: tuple[int, str] | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = (int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
    if found is None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            found = (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "os.sysconf")
    if found is None:
        return FALLBACK_BYTES, "a fallback (the available memory could not be read)"
    room = _cgroup_room()
    if room is not None and room < found[0]:
        return room, "the cgroup memory limit"
    return found


def default_limit() -> tuple[int, str]:
    available, source = available_memory()
    return max(int(available * DEFAULT_FRACTION), 1), f"{DEFAULT_FRACTION:g} of the {human_bytes(available)} " \
                                                      f"available ({source})"


def current_limit() -> tuple[int, str]:
    limit = _LIMIT.get()
    return (limit, "--max-memory") if limit is not None else default_limit()


@contextlib.contextmanager
def memory_limit(limit: int | None) -> Iterator[None]:
    """Within the block, checks use ``limit`` (None: the default) instead of the machine's default."""
    token = _LIMIT.set(limit)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def check(cfg: ForwardConfig, pipeline: str, batch: int, what: str, **options: object) -> Estimate:
    """The estimate, or ParityInputError (exit 2) naming the dominant knob when it exceeds the limit."""
    found = estimate(cfg, pipeline, batch, **options)
    limit, source = current_limit()
    if found.total_bytes <= limit:
        return found
    knob, smaller = dominant_knob(cfg, pipeline, batch, **options)
    if knob == "batch":
        blame = f"the batch size B={batch} (at B=1: {human_bytes(smaller)})"
    elif knob:
        blame = f"{knob}={getattr(cfg, knob)!r} (at its default {DEFAULTS[knob]!r}: {human_bytes(smaller)})"
    else:
        blame = "no single knob; the configuration as a whole"
    raise ParityInputError(f"{what}: needs an estimated {human_bytes(found.total_bytes)} ({found.breakdown()}), "
                           f"more than the memory limit {human_bytes(limit)} ({source}); what makes it large: "
                           f"{blame}. Lower it, or raise --max-memory")


def check_read(what: str, nbytes: int) -> None:
    """Refuse to read ``nbytes`` of a user's file beyond the memory limit (from the headers, before reading)."""
    limit, source = current_limit()
    if nbytes > limit:
        raise ParityInputError(f"{what}: its arrays hold {human_bytes(nbytes)}, more than the memory limit "
                               f"{human_bytes(limit)} ({source}); raise --max-memory or use a smaller batch")


def check_case(case, what: str | None = None, config: ForwardConfig | None = None, **options: object) -> Estimate:
    """``check`` for a case (under ``config`` if given), without building its inputs (their shapes
    are used if already built)."""
    built = case.__dict__.get("inputs")  # a cached_property: only if already computed
    shapes = {name: value.shape for name, value in built.items()} if built else {}
    # a user's inputs that stay in their file (parity.lazy) are read a chunk of rows at a time
    in_file = [name for name, value in (built or {}).items() if callable(getattr(value, "rows", None))]
    return check(config or case.config, case.pipeline, case.batch, what or case.name, input_shapes=shapes,
                 inputs_in_file=in_file, **options)
