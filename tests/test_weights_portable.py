"""The seeded weights are bit-portable: pure Python (ints and floats) regenerates the same bits.

Goldens do not store the pinn weights (the default network's are ~9 MB); every
machine regenerates them from the seed. This holds only if ``init_weights``
uses integer draws and correctly rounded arithmetic alone. Here the whole
chain is re-implemented from the published algorithms, with Python integers
and one float multiplication per value: numpy's SeedSequence, PCG64 (a 128-bit
LCG with the XSL-RR output), the draw-to-value map, and the float32 rounding
(``struct``). Elements deep in the stream are reached by LCG jump-ahead.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from backends.common.config import ForwardConfig
from backends.common.weights import init_weights, weight_specs, weights_fingerprint
from parity.builtin_cases import BUILTIN_CASES

M32, M64, M128 = (1 << 32) - 1, (1 << 64) - 1, (1 << 128) - 1
INIT_A, MULT_A, INIT_B, MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
MIX_MULT_L, MIX_MULT_R = 0xCA01F9DD, 0x4973F715
PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645


def seed_sequence_words(seed: int, count: int) -> list[int]:
    """numpy's SeedSequence(seed).generate_state(count, uint64), in 32-bit integer arithmetic."""
    entropy = []
    while True:
        entropy.append(seed & M32)
        seed >>= 32
        if not seed:
            break
    constant = INIT_A

    def hashmix(value: int) -> int:
        nonlocal constant
        value = (value ^ constant) & M32
        constant = (constant * MULT_A) & M32
        value = (value * constant) & M32
        return value ^ (value >> 16)

    def mix(x: int, y: int) -> int:
        result = (MIX_MULT_L * x - MIX_MULT_R * y) & M32
        return result ^ (result >> 16)

    pool = [hashmix(entropy[i] if i < len(entropy) else 0) for i in range(4)]
    for source in range(4):
        for target in range(4):
            if source != target:
                pool[target] = mix(pool[target], hashmix(pool[source]))
    for source in range(4, len(entropy)):
        for target in range(4):
            pool[target] = mix(pool[target], hashmix(entropy[source]))
    constant, words = INIT_B, []
    for index in range(2 * count):
        value = pool[index % 4] ^ constant
        constant = (constant * MULT_B) & M32
        value = (value * constant) & M32
        words.append(value ^ (value >> 16))
    return [words[2 * i] | (words[2 * i + 1] << 32) for i in range(count)]


def pcg64_start(seed: int) -> tuple[int, int]:
    """(state, increment) of numpy's PCG64(seed) before its first draw."""
    words = seed_sequence_words(seed, 4)
    initial, sequence = (words[0] << 64) | words[1], (words[2] << 64) | words[3]
    increment = ((sequence << 1) | 1) & M128
    state = (increment + initial) & M128  # srandom: state = 0, step, += initstate, step
    return (state * PCG_MULTIPLIER + increment) & M128, increment


def pcg64_advance(state: int, increment: int, steps: int) -> int:
    """The LCG state ``steps`` steps later (Brown's jump-ahead)."""
    multiplier, addend, step_multiplier, step_addend = 1, 0, PCG_MULTIPLIER, increment
    while steps:
        if steps & 1:
            multiplier = (multiplier * step_multiplier) & M128
            addend = (addend * step_multiplier + step_addend) & M128
        step_addend = ((step_multiplier + 1) * step_addend) & M128
        step_multiplier = (step_multiplier * step_multiplier) & M128
        steps >>= 1
    return (multiplier * state + addend) & M128


def pcg64_draw(seed: int, index: int) -> int:
    """The ``index``-th raw 64-bit output of PCG64(seed) (XSL-RR of the state after ``index + 1`` steps)."""
    state, increment = pcg64_start(seed)
    state = pcg64_advance(state, increment, index + 1)
    folded, rotation = ((state >> 64) ^ state) & M64, state >> 122
    return ((folded >> rotation) | (folded << (-rotation & 63))) & M64


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def pure_python_weight(cfg: ForwardConfig, seed: int, bias_scale: float, name: str, flat_index: int) -> float:
    """One element of ``init_weights(cfg, seed, bias_scale)[name]`` without numpy."""
    position = 0
    for other, shape in weight_specs(cfg):
        size = math.prod(shape)
        draws = other.endswith(".kernel") or bias_scale > 0
        if other == name:
            break
        position += size if draws else 0
    if name.endswith(".kernel"):
        fan_in, fan_out = shape[0] * shape[1] * shape[2], shape[0] * shape[1] * shape[3]
        bound = math.sqrt(6.0 / (fan_in + fan_out))
    elif bias_scale > 0:
        bound = bias_scale
    else:
        return 0.0
    steps = (pcg64_draw(seed, position + flat_index) >> 11) - (1 << 52)
    value = float(steps) * (bound * 2.0**-52)
    return float32(value) if cfg.dtype == "float32" else value


def test_the_pure_python_generator_is_numpy_s_pcg64():
    for seed in (0, 1, 7, 2**40 + 3, 12345678901234567890123):
        generator = np.random.PCG64(seed)
        assert pcg64_start(seed) == (generator.state["state"]["state"], generator.state["state"]["inc"])
        raw = generator.random_raw(300)
        assert [pcg64_draw(seed, i) for i in (0, 1, 2, 299)] == [int(raw[i]) for i in (0, 1, 2, 299)]


CONFIGS = [
    (ForwardConfig(), 1, 0.05),  # pinn-default: float32, 2.26 M parameters
    (ForwardConfig(N=32, dtype="float64", probe_big=True, n_filters_scale=1), 3, 0.05),
    (ForwardConfig(N=32, gridsize=1, pad_object=False), 0, 0.0),  # zero biases draw nothing
]


@pytest.mark.parametrize("cfg, seed, bias_scale", CONFIGS, ids=["default-f32", "probe-big-f64", "zero-bias"])
def test_init_weights_bits_are_reproduced_by_pure_python(cfg, seed, bias_scale):
    weights = init_weights(cfg, seed=seed, bias_scale=bias_scale)
    specs = weight_specs(cfg)
    chosen = [specs[0][0], specs[1][0], specs[len(specs) // 2][0], specs[-2][0], specs[-1][0]]
    for name in chosen:
        array = weights[name].reshape(-1)
        for index in sorted({index for index in (0, 1, array.size // 3, array.size - 1) if index < array.size}):
            expected = pure_python_weight(cfg, seed, bias_scale, name, index)
            got = array[index]
            assert got.dtype == np.dtype(cfg.dtype)
            assert float(got) == expected and np.float64(got).tobytes() == struct.pack("<d", expected), (name, index)


def test_values_are_glorot_uniform_within_their_bounds():
    cfg = ForwardConfig(N=32, dtype="float64", n_filters_scale=1)
    weights = init_weights(cfg, seed=9, bias_scale=0.25)
    for name, shape in weight_specs(cfg):
        values = weights[name]
        if name.endswith(".kernel"):
            bound = math.sqrt(6.0 / (9 * shape[2] + 9 * shape[3]))
            assert -bound <= values.min() and values.max() < bound and values.max() > 0.9 * bound, name
        else:
            assert -0.25 <= values.min() and values.max() < 0.25 and values.any(), name


# The weights of the built-in pinn cases: a machine that generates other bits fails here (and its
# `parity check` refuses the golden, naming the weights).
BUILTIN_WEIGHT_DIGESTS = {
    "pinn-default": "883aed8ededcf93a",
    "pinn-fly001-moon": "a16626178c464440",
    "pinn-n32-probe-big-f64": "46b9323dca35ed08",
    "pinn-n32-single-patch": "6d3c399abb525612",
    "pinn-n32-g2-single-object": "be2e9b3dc8c5834f",
    "pinn-n32-softplus-switch-f64": "2afce3ddc1317165",
    "pinn-dataset-moon": "ff994a7af0d6c999",
}


def test_builtin_case_weights_have_their_recorded_digests():
    assert {name for name, case in BUILTIN_CASES.items() if case.pipeline == "pinn"} == set(BUILTIN_WEIGHT_DIGESTS)
    for name, digest in BUILTIN_WEIGHT_DIGESTS.items():
        assert weights_fingerprint(BUILTIN_CASES[name].weights) == digest, name
