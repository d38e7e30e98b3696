"""The size estimate (``parity.budget``): parts, chunking, the dominant knob, the limit. No framework needed."""

from __future__ import annotations

import math

import pytest

from backends.common.config import resolve_config
from backends.common.taps import pipeline_taps
from parity import budget
from parity.builtin_cases import BUILTIN_CASES
from parity.errors import ParityInputError


def test_the_reference_store_is_the_sum_of_the_registrys_tap_sizes():
    cfg = resolve_config({"N": 32})
    found = budget.estimate(cfg, "physics", 3)
    store = sum(math.prod(spec.shape(cfg, 3)) * spec.dtype(cfg).itemsize for spec in pipeline_taps("physics", cfg))
    parts = {part.name: part for part in found.parts}
    assert parts["reference taps"].bytes == store and parts["reference taps"].per_chunk
    assert not parts["inputs"].per_chunk and "weights" not in parts  # physics has no network
    assert found.total_bytes == found.fixed_bytes + found.per_chunk_bytes == sum(p.bytes for p in found.parts)


def test_float64_doubles_the_taps_and_pinn_counts_weights():
    single, double = (budget.estimate(resolve_config({"N": 32, "dtype": d}), "pinn", 2) for d in ("float32", "float64"))
    part = {p.name: p.bytes for p in single.parts}, {p.name: p.bytes for p in double.parts}
    assert part[1]["reference taps"] == 2 * part[0]["reference taps"]
    assert part[1]["weights"] == 2 * part[0]["weights"] > 0


def test_chunking_sizes_the_per_chunk_parts_for_one_chunk():
    cfg = resolve_config({"N": 32})
    whole = budget.estimate(cfg, "physics", 64)
    chunked = budget.estimate(cfg, "physics", 64, chunk_batch=8)
    assert chunked.chunk_batch == 8 and whole.chunk_batch == 64
    assert chunked.fixed_bytes == whole.fixed_bytes  # the inputs are held whole
    assert chunked.per_chunk_bytes == budget.estimate(cfg, "physics", 8).per_chunk_bytes
    assert chunked.per_chunk_bytes * 4 < whole.per_chunk_bytes


def test_every_builtin_case_fits_in_a_gibibyte():
    for case in BUILTIN_CASES.values():
        assert budget.estimate(case.config, case.pipeline, case.batch).total_bytes < 1 << 30, case.name


@pytest.mark.parametrize("knobs, pipeline, knob", [({"N": 1048576, "n_filters_scale": 512}, "pinn", "N"),
                                                   ({"buffer": 10**9}, "pinn", "buffer"),
                                                   ({"n_filters_scale": 10**6}, "pinn", "n_filters_scale"),
                                                   ({"N": 4096, "gridsize": 3}, "physics", "N"),
                                                   ({"gridsize": 64}, "physics", "gridsize")])
def test_the_dominant_knob_is_the_one_whose_default_shrinks_the_estimate_most(knobs, pipeline, knob):
    cfg = resolve_config(knobs)
    found, smaller = budget.dominant_knob(cfg, pipeline, 2)
    assert found == knob and smaller < budget.estimate(cfg, pipeline, 2).total_bytes


def test_a_huge_batch_is_named_as_the_batch():
    assert budget.dominant_knob(resolve_config({"N": 32}), "physics", 10**7)[0] == "batch"


def test_check_refuses_with_the_knob_and_the_limit():
    with budget.memory_limit(1 << 30):
        with pytest.raises(ParityInputError) as caught:
            budget.check(resolve_config({"buffer": 100000}), "physics", 2, "my-case")
    message = str(caught.value)
    assert message.startswith("my-case: needs an estimated ") and "\n" not in message
    assert "memory limit 1.0 GiB (--max-memory)" in message and "buffer=100000 (at its default 10:" in message


def test_check_case_never_builds_the_inputs():
    case = BUILTIN_CASES["simulate-fly001-moon"]
    fresh = type(case)(**{f: getattr(case, f) for f in case.__dataclass_fields__})
    budget.check_case(fresh)
    assert "inputs" not in fresh.__dict__


def test_the_default_limit_is_a_fraction_of_what_is_available():
    available, source = budget.available_memory()
    limit, text = budget.default_limit()
    assert available > 0 and source and limit == max(int(available * budget.DEFAULT_FRACTION), 1)
    assert "available" in text


@pytest.mark.parametrize("text, expected", [("1000000", 1000000), ("512M", 512 << 20), ("8G", 8 << 30),
                                            ("2.5GiB", int(2.5 * (1 << 30))), ("1GB", 10**9), ("64 k", 64 << 10)])
def test_parse_size(text, expected):
    assert budget.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1G", "0", "1X", "nan", "inf", "1e30T", "G"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="expected a size"):
        budget.parse_size(text)
