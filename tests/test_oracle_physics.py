"""Both backends (TensorFlow reference and PyTorch port, CPU) against the NumPy oracle.

The oracle (``tests/oracle.py``) is written from the spec text alone, so a
misreading shared by both backends (their common constants included) shows up
here even though the backends agree with each other.

Error measure per tap: max|oracle - backend| / max|oracle|. Bounds: 1e-6 for
float32 configurations, 1e-12 for float64 ones. Run with ``-s`` to see the
worst measured value per tap, dtype and backend at the end of the module.

On the canvas (spec 4.1): it divides by (sum of translated masks + 0.001).
Outside the masks' coverage the quotient is ~1000x the patch, and where a
coverage weight w is tiny but nonzero, d(canvas)/dw ~ 1e6 x the patch, so an
absolute error in a weight of d shows up as ~1000 d relative to the canvas
peak. A weight is a fractional part of a centred offset, and a float32
backend computes those offsets (o - mean o) in float32: a 1-ulp difference
(~5e-7 px for |o| ~ 4) then costs up to ~5e-4 relative. The oracle therefore
rounds the centred offsets in the configuration's dtype exactly as the spec's
formula evaluated in that dtype does (``oracle.centred_offsets``) and works in
float64 from there; ``test_canvas_offset_rounding_is_the_only_float32_amplifier``
documents that this, and nothing else, is what it takes.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import oracle  # noqa: E402
pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
from backends.tf import TensorFlowBackend  # noqa: E402  (sets determinism before TF loads)
from backends.torch import TorchBackend  # noqa: E402
from backends.common.config import resolve_config  # noqa: E402
from backends.common.weights import init_weights  # noqa: E402
from parity.synthetic import pipeline_inputs  # noqa: E402

BOUND = {"float32": 1e-6, "float64": 1e-12}
PHYSICS_TAPS = ("object.canvas", "object.trimmed", "patches.extracted", "probe.effective", "exit_wave", "farfield",
                "amplitude", "amplitude.scaled", "intensity")
SIMULATE_TAPS = ("sim.patches", "probe.effective", "exit_wave", "farfield", "amplitude", "sim.intensity_scale",
                 "sim.intensity")
LOSS_TAPS = ("loss.poisson", "loss.poisson.per_sample", "loss.mae", "loss.mae.per_sample")

# (tap, dtype, backend) -> (worst relative error, case id); printed at module teardown.
WORST: dict[tuple[str, str, str], tuple[float, str]] = defaultdict(lambda: (-1.0, ""))


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def backends():
    return {"tf": TensorFlowBackend(), "torch": TorchBackend()}


@pytest.fixture(scope="module", autouse=True)
def worst_table():
    yield WORST
    if WORST:
        lines = ["", "worst max|oracle - backend| / max|oracle| per tap (dtype, backend):"]
        for (tap, dtype, name), (value, case) in sorted(WORST.items()):
            lines.append(f"  {tap:24s} {dtype:8s} {name:6s} {value:9.2e}  [{case}]")
        print("\n".join(lines))


def rel_err(reference, value) -> float:
    reference = np.asarray(reference)
    value = np.asarray(value)
    assert reference.shape == value.shape, f"shape {value.shape} != oracle {reference.shape}"
    scale = float(np.max(np.abs(reference)))
    assert scale > 0, "oracle tap is identically zero; the case tests nothing"
    return float(np.max(np.abs(reference.astype(np.complex128) - value.astype(np.complex128)))) / scale


def check_taps(expected: dict, got: dict, taps, cfg, backend: str, case: str) -> None:
    failures = []
    for tap in taps:
        assert tap in got, f"{backend} produced no tap {tap!r}"
        error = rel_err(expected[tap], got[tap])
        key = (tap, cfg.dtype, backend)
        if error > WORST[key][0]:
            WORST[key] = (error, case)
        if not error <= BOUND[cfg.dtype]:
            failures.append(f"{tap}: {error:.3e}")
    assert not failures, f"{backend} vs oracle over {BOUND[cfg.dtype]:g} ({cfg.dtype}, {case}): {failures}"


def grid_positions(cfg, batch: int, rng, *, scale: float = 1.0, jitter: float = 1.5) -> np.ndarray:
    """Offsets (B, 1, 2, C) as PtychoPINN stores them, o_c = -(pos_c - mean pos), times ``scale``."""
    g = cfg.gridsize
    rows, cols = np.divmod(np.arange(cfg.C), g)
    nominal = np.stack([cols * cfg.offset, rows * cfg.offset]).astype(float)
    scan = nominal[None] + rng.uniform(-jitter, jitter, size=(batch, 2, cfg.C))
    offsets = -(scan - scan.mean(axis=2, keepdims=True)) * scale
    return offsets[:, None].astype(cfg.dtype)


def near_integer_positions(cfg, batch: int, rng, delta: float) -> np.ndarray:
    """Offsets whose centred values are integers +- ``delta`` (summing to 0, so o' = o).

    A shift of integer + delta gives the pixel just outside a translated
    mask's edge a coverage weight of delta: with delta << 0.001 the canvas
    divides by ~0.001 + delta, its most ill-conditioned point. delta = 0 gives
    integer offsets, delta = 0.5 half-pixel ones.
    """
    integers = np.round(grid_positions(resolve_config(cfg.to_dict() | {"dtype": "float64"}), batch, rng)[:, 0])
    integers[:, :, -1] = -integers[:, :, :-1].sum(axis=2)  # (B, 2, C), summing to 0 per sample and axis
    signs = np.array([1.0 if c % 2 == 0 else -1.0 for c in range(cfg.C)])
    if cfg.C % 2:
        signs[-1] = 0.0
    return (integers + delta * signs)[:, None].astype(cfg.dtype)


# ---------------------------------------------------------------- physics pipeline
# (id, knobs, positions) with positions one of: "synthetic" (parity.synthetic,
# jittered grid, non-integer), "far" (offsets x 5: patches pushed past the
# canvas edge), or a float delta: centred offsets integer +- delta (0: integer,
# 0.5: half pixels, tiny: the ill-conditioned canvas, see near_integer_positions).
#
# Tiny deltas in float64 are dyadic (2^-10, 2^-17) on purpose: the oracle's
# map_coordinates receives the sample coordinate x - t_x as one float64 number,
# rounded to ~4e-15 px for coordinates ~50, while the backends split t exactly
# into integer and fraction. At a coverage weight ~1e-5 the canvas amplifies
# that oracle-side rounding ~1000x (measured 3.5e-12 with delta = 1e-5, gridsize 3),
# which would test the oracle's coordinate rounding, not the backends. With a
# dyadic delta every coordinate is exact in float64 (measured ~4e-16). In
# float32 configurations every float32 value is exact in a float64 coordinate,
# so the tiny deltas there are plain decimals (1e-3, 1e-5), which also makes the
# float32 rounding of o - mean live (see oracle.centred_offsets).
PHYSICS_CASES = [
    ("n32-g2-f32", dict(N=32, gridsize=2, dtype="float32"), "synthetic"),
    ("n32-g2-f64", dict(N=32, gridsize=2, dtype="float64"), "synthetic"),
    ("n64-g2-off7-mask-sig-s2.5-f32", dict(N=64, gridsize=2, offset=7, probe_mask=True, gaussian_sigma=0.8,
                                            intensity_scale=2.5, dtype="float32"), "synthetic"),
    ("n64-g2-off5-mask-sig-s2.5-f64", dict(N=64, gridsize=2, offset=5, probe_mask=True, gaussian_sigma=0.8,
                                            intensity_scale=2.5, dtype="float64"), "synthetic"),
    ("n32-g1-sig-f32", dict(N=32, gridsize=1, dtype="float32", gaussian_sigma=0.8), "synthetic"),
    ("n32-g1-nobig-mask-f64", dict(N=32, gridsize=1, object_big=False, probe_mask=True, dtype="float64"),
     "synthetic"),
    ("n32-g2-nobig-sig-s2.5-f32", dict(N=32, gridsize=2, object_big=False, gaussian_sigma=0.8, intensity_scale=2.5,
                                       dtype="float32"), "synthetic"),
    ("n32-g2-nobig-off5-far-f64", dict(N=32, gridsize=2, object_big=False, offset=5, dtype="float64"), "far"),
    ("n32-g3-off5-f32", dict(N=32, gridsize=3, offset=5, dtype="float32"), "synthetic"),
    ("n32-g3-off5-mask-sig-f64", dict(N=32, gridsize=3, offset=5, probe_mask=True, gaussian_sigma=0.8,
                                      dtype="float64"), "synthetic"),
    ("n32-g2-off5-far-f32", dict(N=32, gridsize=2, offset=5, dtype="float32"), "far"),
    ("n32-g2-off5-far-mask-f64", dict(N=32, gridsize=2, offset=5, dtype="float64", probe_mask=True), "far"),
    ("n32-g2-off7-near1e-3-f32", dict(N=32, gridsize=2, offset=7, dtype="float32"), 1e-3),
    ("n32-g3-off5-near1e-5-f32", dict(N=32, gridsize=3, offset=5, dtype="float32"), 1e-5),
    ("n32-g2-off7-near2^-10-f64", dict(N=32, gridsize=2, offset=7, dtype="float64"), 2.0**-10),
    ("n32-g3-off5-near2^-17-f64", dict(N=32, gridsize=3, offset=5, dtype="float64"), 2.0**-17),
    ("n32-g2-off5-int-s2.5-f32", dict(N=32, gridsize=2, offset=5, dtype="float32", intensity_scale=2.5), 0.0),
    ("n64-g2-off7-half-sig-f64", dict(N=64, gridsize=2, offset=7, dtype="float64", gaussian_sigma=0.8), 0.5),
]


def physics_inputs(cfg, kind, seed: int) -> dict[str, np.ndarray]:
    inputs = pipeline_inputs("physics", cfg, batch=2, seed=seed)
    rng = np.random.Generator(np.random.PCG64(1000 + seed))
    if kind == "far":
        inputs["positions"] = grid_positions(cfg, 2, rng, scale=5.0)
    elif kind != "synthetic":
        inputs["positions"] = near_integer_positions(cfg, 2, rng, kind)
    return inputs


@pytest.mark.parametrize("case, knobs, kind", PHYSICS_CASES, ids=[case[0] for case in PHYSICS_CASES])
def test_physics_matches_oracle(backends, case, knobs, kind):
    cfg = resolve_config(knobs)
    inputs = physics_inputs(cfg, kind, seed=len(case))
    if kind == "far":  # the case must really push content off the canvas
        reach = np.abs(oracle.centred_offsets(cfg, inputs["positions"])).max() + cfg.N / 2
        assert reach > cfg.P / 2
    expected = oracle.run_physics(cfg, inputs)
    for name, backend in backends.items():
        check_taps(expected, backend.run_all("physics", cfg, inputs), PHYSICS_TAPS, cfg, name, case)


# ---------------------------------------------------------------- simulate pipeline
SIMULATE_CASES = [
    ("sim-n32-f32", dict(N=32, dtype="float32")),
    ("sim-n32-f64", dict(N=32, dtype="float64", nphotons=1e6)),
    ("sim-n64-mask-sig-f32", dict(N=64, dtype="float32", probe_mask=True, gaussian_sigma=0.8, nphotons=1e5)),
    ("sim-n64-mask-sig-f64", dict(N=64, dtype="float64", probe_mask=True, gaussian_sigma=0.8)),
]


def simulate_inputs(cfg, seed: int) -> dict[str, np.ndarray]:
    inputs = pipeline_inputs("simulate", cfg, batch=4, seed=seed)
    height, width = inputs["object"].shape
    # Scan positions at and over the object's edges and corners, integer and not.
    edge = np.array([[0.0, 0.0], [width - 1.0, height - 1.0], [-3.25, 7.5], [width + 2.7, height / 2],
                     [width / 2, -cfg.N / 2 + 0.4], [cfg.N / 2, cfg.N / 2]])
    # Positions within a few pixels of 0: N/2 - pos then needs more bits than pos has (float32 rounding).
    rng = np.random.Generator(np.random.PCG64(seed))
    near_zero = rng.uniform(-3, 3, size=(3, 2)) + np.array([[0.0, height / 2]])
    inputs["scan_positions"] = np.concatenate([inputs["scan_positions"], edge.astype(cfg.dtype),
                                               near_zero.astype(cfg.dtype)])
    return inputs


@pytest.mark.parametrize("case, knobs", SIMULATE_CASES, ids=[case[0] for case in SIMULATE_CASES])
def test_simulate_matches_oracle(backends, case, knobs):
    cfg = resolve_config(knobs)
    inputs = simulate_inputs(cfg, seed=len(case))
    expected = oracle.run_simulate(cfg, inputs)
    # A patch over the corner is partly zero, partly object: the edge rule is exercised.
    corner = expected["sim.patches"][4, :, :, 0]
    assert np.any(corner == 0) and np.any(corner != 0)
    for name, backend in backends.items():
        check_taps(expected, backend.run_all("simulate", cfg, inputs), SIMULATE_TAPS, cfg, name, case)


# ---------------------------------------------------------------- losses (isolated stages)
LOSS_CASES = [
    ("loss-n32-g2-s1-f32", dict(N=32, gridsize=2, dtype="float32")),
    ("loss-n32-g2-s2.5-f32", dict(N=32, gridsize=2, intensity_scale=2.5, dtype="float32")),
    ("loss-n32-g1-s1-f64", dict(N=32, gridsize=1, dtype="float64")),
    ("loss-n32-g2-s2.5-f64", dict(N=32, gridsize=2, intensity_scale=2.5, dtype="float64")),
]


@pytest.mark.parametrize("case, knobs", LOSS_CASES, ids=[case[0] for case in LOSS_CASES])
def test_losses_match_oracle(backends, case, knobs):
    cfg = resolve_config(knobs)
    rng = np.random.Generator(np.random.PCG64(len(case)))
    X = pipeline_inputs("pinn", cfg, batch=3, seed=len(case))["X"]
    # A prediction near the data, with some exact zeros (log(0 + 1e-12) must be finite).
    amp_scaled = (cfg.intensity_scale * X.astype(np.float64) * rng.uniform(0.7, 1.3, size=X.shape))
    amp_scaled[:, :2, :2, :] = 0.0
    amp_scaled = amp_scaled.astype(cfg.dtype)
    lam = (amp_scaled.astype(np.float64) ** 2).astype(cfg.dtype)
    expected = oracle.losses(cfg, lam, amp_scaled, X)
    stage_inputs = {"intensity": lam, "amplitude.scaled": amp_scaled, "X": X}
    # The loss stages sit in the pinn pipeline, whose context asks for weights
    # even though the losses do not read them.
    weights = init_weights(cfg)
    for name, backend in backends.items():
        got = {tap: backend.run_stage(tap, "pinn", cfg, stage_inputs, weights=weights) for tap in LOSS_TAPS}
        check_taps(expected, got, LOSS_TAPS, cfg, name, case)


def test_loss_units_are_counts_not_amplitudes():
    """Hand-computed values: the oracle's losses use k = (s X)^2 and lambda as given."""
    cfg = resolve_config({"N": 32, "gridsize": 1, "intensity_scale": 2.0, "dtype": "float64"})
    X = np.full((1, 32, 32, 1), 1.5)
    lam = np.full((1, 32, 32, 1), 4.0)
    amp = np.full((1, 32, 32, 1), 2.0)
    values = oracle.losses(cfg, lam, amp, X)
    assert np.isclose(values["loss.poisson"], 4.0 - 9.0 * np.log(4.0 + 1e-12), rtol=1e-15)
    assert np.isclose(values["loss.mae"], 1.0, rtol=1e-15)
    np.testing.assert_allclose(values["loss.mae.per_sample"], [1.0], rtol=1e-15)


# ---------------------------------------------------------------- oracle self-checks
def test_oracle_translate_edge_rule_and_direction():
    img = np.arange(1.0, 13.0).reshape(3, 4)
    # Integer shift by (t_x, t_y) = (1, 2): content moves right by 1 and down by 2.
    moved = oracle.translate(img, (1.0, 2.0))
    expected = np.zeros_like(img)
    expected[2:, 1:] = img[:1, :3]
    np.testing.assert_array_equal(moved, expected)
    # Half a pixel left: out[y, x] = (img[y, x] + img[y, x + 1]) / 2, the last column half of img and 0.
    half = oracle.translate(img, (-0.5, 0.0))
    np.testing.assert_allclose(half[:, :3], (img[:, :3] + img[:, 1:]) / 2, rtol=1e-15)
    np.testing.assert_allclose(half[:, 3], img[:, 3] / 2, rtol=1e-15)  # 'constant' mode would give 0 here
    # Complex images are translated as real and imaginary parts.
    z = img + 1j * img[::-1]
    np.testing.assert_allclose(oracle.translate(z, (0.3, -0.7)),
                               oracle.translate(img, (0.3, -0.7)) + 1j * oracle.translate(img[::-1], (0.3, -0.7)))


def test_oracle_constants_from_spec_text():
    cfg = resolve_config({"N": 32, "gridsize": 2, "offset": 5, "buffer": 10})
    assert oracle.canvas_size(cfg) == (48, 8)  # 32 + 5 + 10 = 47 -> odd margin -> 48
    assert oracle.canvas_size(cfg) == (cfg.P, cfg.k)
    m = oracle.centre_window(32)
    assert m.sum() == 16 * 16 and m[8, 8] == 1 and m[7, 8] == 0 and m[23, 23] == 1 and m[24, 23] == 0
    d = oracle.disk(32)
    assert d[16, 16] == 1 and d[15, 15] == 1 and d[0, 0] == 0 and np.array_equal(d, d[::-1, ::-1])
    k = oracle.gaussian_3x3(0.8)
    assert np.isclose(k.sum(), 1.0) and k[1, 1] == k.max() and np.isclose(k[0, 1] / k[1, 1], np.exp(-1 / 1.28))
    wave = np.random.default_rng(0).normal(size=(1, 32, 32, 1)) + 0j
    assert np.allclose(oracle.farfield(cfg, wave), np.fft.fft2(wave, axes=(1, 2)) / 32)


def test_canvas_offset_rounding_is_the_only_float32_amplifier(backends):
    """Why the oracle rounds centred offsets in the config dtype (see module docstring).

    Hand-built float32 offsets: x = (2.00001, -0.7, 0.3, -1.6) sum to ~1e-5, and
    their float32 left-to-right sum is off by ~1.2e-7, so o'_0 = 2 + ~7.6e-6
    in float32 is 1.2e-7 px away from its float64 value. A shift that close to
    an integer gives a coverage weight of ~7.6e-6 next to a mask edge, where
    the canvas divides by ~0.001. Both float32 backends sit within 1e-6 of the
    oracle fed the float32 centred offsets, and ~1e-4 away from the oracle fed
    float64 centred offsets of the very same float32 positions; those two
    oracle canvases differ by the same ~1e-4, so the offsets' rounding is the
    whole story.
    """
    cfg = resolve_config({"N": 32, "gridsize": 2, "offset": 4, "dtype": "float32"})
    positions = np.array([[[[2.00001, -0.7, 0.3, -1.6], [0.25, 0.25, -0.25, -0.25]]]], np.float32)
    patches = pipeline_inputs("physics", cfg, batch=1, seed=3)["object_patches"]
    exact = oracle.centred_offsets_exact(positions)
    rounded = oracle.centred_offsets(cfg, positions)
    assert 5e-8 < np.abs(exact - rounded).max() < 2e-7  # about one float32 ulp at 2
    matched = oracle.object_canvas(cfg, patches, positions)
    unmatched = oracle.object_canvas(cfg, patches, positions, offsets=exact)
    amplified = rel_err(unmatched, matched)
    assert amplified > 20 * BOUND["float32"]
    for name, backend in backends.items():
        got = backend.run_stage("object.canvas", "physics", cfg, {"object_patches": patches, "positions": positions})
        assert rel_err(matched, got) <= BOUND["float32"], name
        assert rel_err(unmatched, got) > 20 * BOUND["float32"], name


# ---------------------------------------------------------------- round trip 4.1 then 4.3
def _round_trip_cases():
    """(id, knobs, positions) where every patch's N x N support is disjoint from the others'."""
    rng = np.random.Generator(np.random.PCG64(11))
    cases = []
    for dtype in ("float32", "float64"):
        # gridsize 1: the single centred offset is 0 whatever the position.
        cfg1 = resolve_config({"N": 32, "gridsize": 1, "dtype": dtype})
        cases.append((f"g1-{dtype}", cfg1, rng.uniform(-9, 9, size=(2, 1, 2, 1)).astype(dtype)))
        # gridsize 2, spacing N: integer offsets of +-N/2, patches side by side, not overlapping.
        cfg2 = resolve_config({"N": 32, "gridsize": 2, "offset": 32, "dtype": dtype})
        rows, cols = np.divmod(np.arange(4), 2)
        scan = np.stack([cols * 32.0, rows * 32.0])
        offsets = -(scan - scan.mean(axis=1, keepdims=True))
        cases.append((f"g2-disjoint-{dtype}", cfg2, np.repeat(offsets[None, None], 2, axis=0).astype(dtype)))
    return cases


ROUND_TRIP = _round_trip_cases()


@pytest.mark.parametrize("case, cfg, positions", ROUND_TRIP, ids=[case[0] for case in ROUND_TRIP])
def test_round_trip_place_then_extract(backends, case, cfg, positions):
    """4.1 then 4.3 returns each patch divided by its own coverage: x / (m + 0.001); interior x / 1.001."""
    patches = pipeline_inputs("physics", cfg, batch=2, seed=5)["object_patches"]
    n, q = cfg.N, cfg.N // 4
    coverage = oracle.centre_window(n)[None, :, :, None] + 1e-3
    expected = patches.astype(np.complex128) / coverage
    interior = (slice(None), slice(q, 3 * q), slice(q, 3 * q), slice(None))
    # The interior is the patch itself up to the epsilon's factor.
    np.testing.assert_allclose(expected[interior] * 1.001, patches[interior].astype(np.complex128), rtol=1e-15)

    canvas = oracle.object_canvas(cfg, patches, positions)
    results = {"oracle": oracle.patches_extracted(cfg, canvas, positions)}
    stage_inputs = {"object_patches": patches, "positions": positions}
    for name, backend in backends.items():
        canvas = backend.run_stage("object.canvas", "physics", cfg, stage_inputs)
        results[name] = backend.run_stage("patches.extracted", "physics", cfg,
                                          {"object.canvas": canvas, "positions": positions})
    bound = BOUND[cfg.dtype]
    for name, extracted in results.items():
        assert rel_err(expected, extracted) <= bound, name
        assert rel_err(expected[interior], extracted[interior]) <= bound, name


# ---------------------------------------------------------------- TF translate vs the native op
def native_translate(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """TF's own ImageProjectiveTransformV3 (bilinear, zero fill) moving each image by (t_x, t_y)."""
    import tensorflow as tf

    batch, height, width = images.shape
    transforms = np.zeros((batch, 8), np.float32)
    transforms[:, 0] = transforms[:, 4] = 1.0  # output (x, y) reads input (x - t_x, y - t_y)
    transforms[:, 2], transforms[:, 5] = -shifts[:, 0], -shifts[:, 1]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(images[..., None]), transforms=tf.constant(transforms),
        output_shape=tf.constant([height, width], tf.int32), fill_value=tf.constant(0.0, tf.float32),
        interpolation="BILINEAR", fill_mode="CONSTANT").numpy()[..., 0]


def test_tf_translate_agrees_with_native_projective_transform():
    import tensorflow as tf

    from backends.tf.ops import translate as tf_translate

    height, width = 48, 56
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    # Smooth, with a soft taper to ~0 at the border so the zero fill adds no jump.
    taper = np.sin(np.pi * (y + 0.5) / height) * np.sin(np.pi * (x + 0.5) / width)
    image = (taper**2 * (1.2 + np.sin(x / 5.0) * np.cos(y / 7.0))).astype(np.float32)
    shifts = np.array([[0.0, 0.0], [3.0, -2.0], [0.37, -1.61], [-4.813, 2.25], [11.7, 9.1],
                       [-20.33, -15.77], [30.05, 44.9], [0.0001, -0.9999]], np.float32)
    batch = len(shifts)
    images = np.repeat(image[None], batch, axis=0)

    ours = tf_translate(tf.constant(images), tf.constant(shifts)).numpy()
    native = native_translate(images, shifts)

    # The native kernel forms the source coordinate x - t_x (and y - t_y) in
    # float32: an error of at most half an ulp of the largest coordinate it
    # forms, moving each sample along the image's slope; the gather version
    # splits t exactly into integer and fraction. Bound: that coordinate error
    # times the steepest step of the zero-padded image, per axis, plus a few
    # float32 roundings of the peak in the interpolation arithmetic.
    eps = np.finfo(np.float32).eps
    largest = max(height + np.abs(shifts[:, 1]).max(), width + np.abs(shifts[:, 0]).max())
    coordinate_error = 0.5 * np.spacing(np.float32(largest))
    padded = np.pad(image.astype(np.float64), 1)
    slope = np.abs(np.diff(padded, axis=0)).max() + np.abs(np.diff(padded, axis=1)).max()
    peak = np.abs(image).max()
    bound = (coordinate_error * slope + 4 * eps * peak) / peak
    measured = float(np.abs(ours.astype(np.float64) - native).max() / peak)
    print(f"\nTF translate vs ImageProjectiveTransformV3 (float32): {measured:.2e} relative to peak; "
          f"bound {bound:.2e} (coordinate half-ulp {coordinate_error:.1e} px x slope {slope / peak:.3f}/px)")
    assert measured <= bound
    # Integer shifts form exact coordinates: the two agree to the interpolation's rounding.
    for index in (0, 1):
        assert np.abs(ours[index] - native[index]).max() <= 4 * eps * peak
    # And the gather version is the spec's T: the oracle agrees in float64 terms.
    for index in range(batch):
        assert np.abs(ours[index] - oracle.translate(image, shifts[index])).max() <= 4 * eps * peak


def test_tf_translate_edge_rule_matches_native_projective_transform():
    """At a hard image edge the native op's CONSTANT fill is the spec's rule: a neighbour outside reads 0.

    No taper here, so the image jumps to the zero fill at its border; the
    shifts have few fractional bits, so x - t_x is exact in float32 and the
    two must agree to the interpolation's rounding everywhere, edges included.
    """
    import tensorflow as tf

    from backends.tf.ops import translate as tf_translate

    height, width = 20, 24
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = (1.0 + 0.5 * np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.float32)
    shifts = np.array([[0.5, -0.5], [-2.5, 3.25], [10.75, -7.125], [-0.25, 0.0], [25.5, 0.5]], np.float32)
    batch = len(shifts)
    images = np.repeat(image[None], batch, axis=0)
    native = native_translate(images, shifts)
    ours = tf_translate(tf.constant(images), tf.constant(shifts)).numpy()
    peak = np.abs(image).max()
    tolerance = 4 * np.finfo(np.float32).eps * peak
    assert np.abs(ours - native).max() <= tolerance
    for index in range(batch):
        assert np.abs(native[index] - oracle.translate(image, shifts[index])).max() <= tolerance
    # Shift (0.5, -0.5) samples (y + 0.5, x - 0.5): column 0 has its left neighbours outside (0),
    # the last row its lower ones. A rule zeroing any sample whose coordinate leaves the image
    # (scipy's mode='constant') would give 0 on all of column 0 instead.
    edge = native[0][:, 0].astype(np.float64)
    np.testing.assert_allclose(edge[:-1], 0.25 * (image[:-1, 0] + image[1:, 0]), rtol=4e-7)
    np.testing.assert_allclose(edge[-1], 0.25 * image[-1, 0], rtol=4e-7)


def test_exit_wave_masks_once_after_smoothing(backends):
    """Spec 5: M * G(probe * patch) with the input probe; smoothing an already-masked probe
    (M * G(M * probe * patch)) changes the pixels just inside the disk's rim."""
    cfg = resolve_config({"N": 32, "probe_mask": True, "gaussian_sigma": 0.8, "dtype": "float64"})
    rng = np.random.default_rng(5)
    probe = (1.0 + rng.uniform(0, 1, (32, 32)) + 1j * rng.uniform(0, 1, (32, 32))).astype(np.complex128)
    patches = np.exp(1j * rng.uniform(-1, 1, (1, 32, 32, 4))).astype(np.complex128)
    expected = oracle.exit_wave(cfg, probe, patches)
    masked_twice = oracle.exit_wave(cfg, oracle.probe_effective(cfg, probe), patches)
    assert rel_err(expected, masked_twice) > 1e-2  # the two readings really differ
    for name, backend in backends.items():
        got = backend.run_stage("exit_wave", "physics", cfg, {"probe": probe, "patches.extracted": patches})
        assert rel_err(expected, got) <= 1e-12, name
