"""Property-based tests of the validators: whatever the file, knob or table, a clean answer.

The property, for inputs files, knobs, tolerance tables and golden files drawn
by hypothesis (shapes, dtypes, values, raw bytes, mutated real files): the
validator either accepts or raises ``ParityInputError`` (exit 2) with a
one-line message naming the file; never another exception (a traceback,
exit 3), never a hang (each example runs under an alarm), nothing written
over. Seeded and bounded by the ``parity`` profile in conftest.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from backends.common.config import FIELDS, resolve_config  # noqa: E402
from parity import budget  # noqa: E402
from parity.builtin_cases import BUILTIN_CASES  # noqa: E402
from parity.errors import ParityInputError  # noqa: E402
from parity.tolerances import load_tolerances, parse_table  # noqa: E402
from parity.workflows import choose_cases, open_golden  # noqa: E402

EXAMPLE_SECONDS = 20
LIMIT = 256 << 20  # a small memory limit, so that no drawn batch can allocate much


@contextlib.contextmanager
def alarm(seconds: int = EXAMPLE_SECONDS) -> Iterator[None]:
    """Fail an example that runs too long (a hang) instead of blocking the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"an example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@contextlib.contextmanager
def clean_refusal(path: Path) -> Iterator[None]:
    """The block may succeed or raise ParityInputError naming ``path`` on one line; nothing else, nothing written."""
    folder = path.parent
    before = _digest(folder)
    try:
        with alarm(), budget.memory_limit(LIMIT):
            yield
    except ParityInputError as error:
        message = str(error)
        assert "\n" not in message and message.strip(), repr(message)
        assert str(path) in message or "--set" in message or "knob" in message, message
    assert _digest(folder) == before, "a validator wrote into the folder of the file it read"


# ---- inputs files: shapes, dtypes and values ----

DTYPES = ["float16", "float32", "float64", ">f8", "complex64", "complex128", "int8", "uint16", "int64", "bool"]
KEYS = ["X", "positions", "probe", "object_patches", "object", "scan_positions", "scan.positions", "junk"]
SPECIAL = [0.0, -0.0, 1.0, math.nan, math.inf, -math.inf, 1e39, -1e39, 1e-45, 1e308, 2.0**24 + 1, 1e9]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 32]), min_size=0, max_size=4)))
    elements = st.sampled_from(SPECIAL) | st.floats(-1e3, 1e3)
    if dtype.kind in "iub":
        return draw(hnp.arrays(dtype, shape))
    values = draw(hnp.arrays(np.float64, shape, elements=elements))
    with np.errstate(over="ignore", invalid="ignore"):
        return (values + (1j * np.flip(values) if dtype.kind == "c" else 0)).astype(dtype)


def _near_valid(pipeline: str, seed: int) -> dict[str, np.ndarray]:
    from parity import synthetic

    return synthetic.pipeline_inputs(pipeline, resolve_config({"N": 32}), 2, seed)


@given(pipeline=st.sampled_from(["pinn", "physics", "simulate"]),
       replaced=st.dictionaries(st.sampled_from(KEYS), arrays(), max_size=3),
       dropped=st.sets(st.sampled_from(KEYS), max_size=1), seed=st.integers(0, 3))
def test_any_inputs_file_is_accepted_or_refused_cleanly(pipeline, replaced, dropped, seed):
    with tempfile.TemporaryDirectory() as folder:
        arrays_ = {k: v for k, v in (_near_valid(pipeline, seed) | replaced).items() if k not in dropped}
        path = Path(folder) / "inputs.npz"
        np.savez(path, **arrays_)
        with clean_refusal(path):
            cases, _ = choose_cases(None, None, ["N=32"], pipeline, str(path))
            assert cases[0].batch >= 1


def _valid_npz_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **_near_valid("physics", seed))
    return buffer.getvalue()


@given(data=st.one_of(st.binary(max_size=4096),
                      st.tuples(st.integers(0, 3), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                            min_size=1, max_size=6), st.integers(1, 10**6))))
def test_any_bytes_as_an_inputs_file_are_refused_cleanly(data):
    if isinstance(data, tuple):  # a real archive with bytes flipped, then possibly truncated
        seed, flips, keep = data
        raw = bytearray(_valid_npz_bytes(seed))
        for position, value in flips:
            raw[position % len(raw)] = value
        data = bytes(raw[:keep])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inputs.npz"
        path.write_bytes(data)
        with clean_refusal(path):
            choose_cases(None, None, ["N=32"], "physics", str(path))


# ---- knobs: --set strings and config files ----

knob_values = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0, 1, 2, 32, 64, 4096, 10**6, 10**9, 2**40, 1e-300, 1e-320, 5e-324]),
                        st.text(max_size=12), st.booleans())


@given(knobs=st.dictionaries(st.sampled_from(sorted(FIELDS) + ["colour"]), knob_values, max_size=4),
       pipeline=st.sampled_from(["pinn", "physics", "simulate"]))
def test_any_knobs_resolve_or_are_refused_and_never_reach_an_allocator(knobs, pipeline):
    from parity.inputs import resolve_knobs

    assignments = [f"{key}={value}" for key, value in knobs.items()]
    with tempfile.TemporaryDirectory() as folder, clean_refusal(Path(folder) / "none"):
        cfg = resolve_knobs(None, assignments)
        found = budget.check(cfg, pipeline, 2, "drawn knobs")  # refused (exit 2) or within the limit
        assert found.total_bytes <= LIMIT


@given(text=st.one_of(st.binary(max_size=512),
                      st.lists(st.tuples(st.sampled_from(sorted(FIELDS) + ["config", "x"]),
                                         st.sampled_from(["1", "32", "-1", "1e400", "nan", "inf", '"a"', "true",
                                                          "[1]", "{a = 1}", "1e-320", "4096", "0x10"])),
                               max_size=4).map(lambda pairs: "\n".join(f"{k} = {v}" for k, v in pairs).encode())))
def test_any_config_file_is_read_or_refused_cleanly(text):
    from parity.inputs import resolve_knobs

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(text)
        with clean_refusal(path):
            cfg = resolve_knobs(str(path), [])
            budget.check(cfg, "pinn", 2, str(path))


# ---- tolerance tables ----

toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
              st.sampled_from(["*", "encoder.*", "float32", "float64", "cpu", "cuda", "isolated", "propagated", "pinn"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
rule_keys = st.sampled_from(["taps", "dtype", "device", "mode", "pipeline", "note", "max_rel_to_peak", "atol", "rtol",
                             "max_fraction_out", "min_cosine", "allow_nonfinite", "phase_floor", "junk"])


@given(document=st.dictionaries(st.sampled_from(["schema", "default", "rule", "extra"]),
                                st.one_of(toml_values, st.lists(st.dictionaries(rule_keys, toml_values, max_size=5),
                                                                max_size=3),
                                          st.dictionaries(rule_keys, toml_values, max_size=4)), max_size=3))
def test_any_tolerance_document_is_parsed_or_refused_cleanly(document):
    with tempfile.TemporaryDirectory() as folder, clean_refusal(Path(folder) / "tolerances.toml"):
        table = parse_table(document, str(Path(folder) / "tolerances.toml"))
        table.lookup("encoder.block0", "float32", "cpu", "isolated", "pinn")


@given(text=st.one_of(st.binary(max_size=512),
                      st.text(max_size=300).map(str.encode)))
def test_any_bytes_as_a_tolerance_file_are_refused_cleanly(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tolerances.toml"
        path.write_bytes(b"[[rule]]\n" + text)
        with clean_refusal(path):
            load_tolerances(path)


# ---- golden files ----

GOLDEN_CASE = BUILTIN_CASES["pinn-n32-single-patch"]
SHIPPED_GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "goldens" / f"{GOLDEN_CASE.name}.h5"


@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=2048), st.integers(0, 400000)))
def test_any_bytes_or_truncation_as_a_golden_are_refused_cleanly(data):
    """Random bytes, or the shipped golden cut short: a clean refusal (the golden's own checks are #6's)."""
    assume(SHIPPED_GOLDEN.exists())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / SHIPPED_GOLDEN.name
        if isinstance(data, int):
            path.write_bytes(SHIPPED_GOLDEN.read_bytes()[:data])
        else:
            path.write_bytes(data)
        with clean_refusal(path):
            with open_golden(GOLDEN_CASE, folder):
                pass


@settings(max_examples=8, phases=[Phase.generate])  # bounded: each example opens and verifies a whole golden
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_golden_with_flipped_bytes_is_refused_cleanly(flips):
    assume(SHIPPED_GOLDEN.exists())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / SHIPPED_GOLDEN.name
        shutil.copy(SHIPPED_GOLDEN, path)
        raw = bytearray(path.read_bytes())
        for position, value in flips:
            raw[position % len(raw)] = value
        path.write_bytes(bytes(raw))
        with clean_refusal(path):
            with open_golden(GOLDEN_CASE, folder):
                pass
