"""An independent NumPy/SciPy oracle of the physics stages (spec sections 1, 4-7).

Written from the text of ``docs/forward-model.md`` only: nothing
here imports or copies ``backends`` (not even ``backends.common.constants``),
so a misreading shared by both backends still shows up against it. Tests use
it; nothing else should.

Everything is computed in float64 / complex128 from the (possibly float32)
inputs, with independent tools: ``scipy.ndimage.map_coordinates`` for the
bilinear translation, ``numpy.fft`` for the far field, ``numpy.pad`` for the
mirror padding of the Gaussian smoothing.

One deliberate exception to "float64 throughout", see ``centred_offsets``:
the per-sample mean of the offsets is rounded to the configuration's dtype
exactly as a float32 implementation must round it, because the canvas
division amplifies a 1-ulp offset difference ~1000x (section 4.1 divides by
coverage + 0.001, where a coverage weight of a few 1e-7 moves the quotient by
~1e-4 relative). The oracle checks the formulas, not float32 rounding.
``sim_patches`` likewise rounds its shift N/2 - pos in the configuration's dtype.

What the oracle does not reproduce exactly: ``map_coordinates`` takes the
sample coordinate x - t_x as one float64 number, rounded to ~4e-15 px for
coordinates ~50, while an implementation that splits t into integer and
fraction has exact interpolation weights. Normally invisible (~1e-15), the
canvas amplifies it ~1000x where a coverage weight is ~1e-5 (an offset within
1e-5 of an integer): ~3.5e-12 measured. Inputs of float32 configurations are
exact in a float64 coordinate; float64 tests of that corner use dyadic
fractions (2^-10, 2^-17), which are exact too.

Shapes are canonical (channels last); configurations are anything with the
knob attributes of ``ForwardConfig`` (N, gridsize, offset, buffer, object_big,
probe_mask, gaussian_sigma, intensity_scale, nphotons, dtype).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CANVAS_EPS = 1e-3  # spec 4.1: "+ 0.001"
POISSON_EPS = 1e-12  # spec 6: "log(lambda + 1e-12)"


# ---------------------------------------------------------------- sizes (spec 1)
def channels(cfg) -> int:
    return cfg.gridsize * cfg.gridsize


def canvas_size(cfg) -> tuple[int, int]:
    """(P, k): P = N + (g-1)*offset + buffer, +1 if P-N is odd; k = (P-N)/2."""
    size = cfg.N + (cfg.gridsize - 1) * cfg.offset + cfg.buffer
    if (size - cfg.N) % 2 == 1:
        size += 1
    return size, (size - cfg.N) // 2


# ---------------------------------------------------------------- translation (spec 4)
def _translate_real(img: np.ndarray, t: tuple[float, float], rows=None, cols=None) -> np.ndarray:
    """out[y, x] = bilinear sample of img at (y - t_y, x - t_x); outside neighbours read 0.

    ``mode='grid-constant'`` is the spec's edge rule (each of the four
    neighbours outside the image counts as 0); ``mode='constant'`` would
    instead zero every sample whose coordinate leaves [0, H-1] x [0, W-1].
    """
    height, width = img.shape
    rows = np.arange(height) if rows is None else rows
    cols = np.arange(width) if cols is None else cols
    tx, ty = float(t[0]), float(t[1])
    yy, xx = np.meshgrid(rows.astype(np.float64) - ty, cols.astype(np.float64) - tx, indexing="ij")
    return ndimage.map_coordinates(np.asarray(img, np.float64), [yy, xx], order=1,
                                   mode="grid-constant", cval=0.0, prefilter=False)


def translate(img: np.ndarray, t, rows=None, cols=None) -> np.ndarray:
    """T(img, t) of spec section 4 on one 2-D image, t = (t_x, t_y); content moves by +t.

    A complex image is translated as real and imaginary parts. ``rows`` and
    ``cols`` optionally pick output pixel coordinates (default: the whole image).
    """
    img = np.asarray(img)
    if np.iscomplexobj(img):
        return (_translate_real(img.real, t, rows, cols)
                + 1j * _translate_real(img.imag, t, rows, cols))
    return _translate_real(img, t, rows, cols)


# ---------------------------------------------------------------- masks and kernel
def centre_window(n: int) -> np.ndarray:
    """Spec 4.1 mask m: 1 on rows and columns [N/4, 3N/4) of an N x N patch."""
    inside = (np.arange(n) >= n // 4) & (np.arange(n) < 3 * n // 4)
    return (inside[:, None] & inside[None, :]).astype(np.float64)


def disk(n: int) -> np.ndarray:
    """Spec 5 mask M: (y - (N/2 - 0.5))^2 + (x - (N/2 - 0.5))^2 < (N // 4)^2."""
    y = np.arange(n, dtype=np.float64)[:, None]
    x = np.arange(n, dtype=np.float64)[None, :]
    c = n / 2 - 0.5
    return ((y - c) ** 2 + (x - c) ** 2 < (n // 4) ** 2).astype(np.float64)


def gaussian_3x3(sigma: float) -> np.ndarray:
    """Normalised 3 x 3 Gaussian exp(-(dx^2 + dy^2) / (2 sigma^2)) / sum."""
    d = np.array([-1.0, 0.0, 1.0])
    kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """G of spec 5 on one real 2-D image: 3x3 Gaussian with mirror (numpy 'reflect') padding."""
    kernel = gaussian_3x3(sigma)
    padded = np.pad(np.asarray(img, np.float64), 1, mode="reflect")
    height, width = img.shape
    out = np.zeros((height, width))
    for dy in range(3):
        for dx in range(3):
            out += kernel[dy, dx] * padded[dy:dy + height, dx:dx + width]
    return out


# ---------------------------------------------------------------- offsets
def centred_offsets(cfg, positions: np.ndarray) -> np.ndarray:
    """(B, 1, 2, C) positions -> (B, C, 2) centred offsets o'_c = o_c - mean_c o, as (x, y).

    The mean and the subtraction are rounded in the configuration's dtype
    (a left-to-right sum over channels, then / C, then o - mean), the result
    then widened to float64. See the module docstring: in float32 a 1-ulp
    difference of o' is amplified ~1000x by the canvas normalisation, which
    would be a test of rounding order, not of the spec's formulas. In float64
    the same rounding is kept for consistency (an ulp there is ~1e-16).
    """
    dtype = np.dtype(cfg.dtype)
    offsets = np.transpose(np.asarray(positions)[:, 0, :, :], (0, 2, 1)).astype(dtype)  # (B, C, 2)
    count = offsets.shape[1]
    total = offsets[:, 0, :].copy()
    for c in range(1, count):
        total = (total + offsets[:, c, :]).astype(dtype)
    mean = (total / dtype.type(count)).astype(dtype)
    return (offsets - mean[:, None, :]).astype(dtype).astype(np.float64)


def centred_offsets_exact(positions: np.ndarray) -> np.ndarray:
    """The same in float64 throughout (no dtype rounding), for the record."""
    offsets = np.transpose(np.asarray(positions, np.float64)[:, 0, :, :], (0, 2, 1))
    return offsets - offsets.mean(axis=1, keepdims=True)


# ---------------------------------------------------------------- spec 4.1 - 4.3
def _pad_to_canvas(img: np.ndarray, k: int) -> np.ndarray:
    return np.pad(img, ((k, k), (k, k)))


def object_canvas(cfg, patches: np.ndarray, positions: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """(B, N, N, Co) complex patches -> (B, P, P, 1) complex canvas.

    ``offsets`` (B, C, 2) overrides the centred offsets (default: ``centred_offsets``).
    """
    patches = np.asarray(patches).astype(np.complex128)
    size, k = canvas_size(cfg)
    batch = patches.shape[0]
    canvas = np.zeros((batch, size, size, 1), np.complex128)
    if not cfg.object_big:
        for b in range(batch):
            canvas[b, :, :, 0] = _pad_to_canvas(patches[b, :, :, 0], k)
        return canvas
    offsets = centred_offsets(cfg, positions) if offsets is None else offsets
    mask = _pad_to_canvas(centre_window(cfg.N), k)
    for b in range(batch):
        numerator = np.zeros((size, size), np.complex128)
        coverage = np.zeros((size, size))
        for c in range(channels(cfg)):
            shift = -offsets[b, c]
            numerator += translate(_pad_to_canvas(patches[b, :, :, c], k), shift)
            coverage += translate(mask, shift)
        canvas[b, :, :, 0] = numerator / (coverage + CANVAS_EPS)
    return canvas


def object_trimmed(cfg, canvas: np.ndarray) -> np.ndarray:
    _, k = canvas_size(cfg)
    return np.asarray(canvas)[:, k:k + cfg.N, k:k + cfg.N, :].astype(np.complex128)


def patches_extracted(cfg, canvas: np.ndarray, positions: np.ndarray,
                      offsets: np.ndarray | None = None) -> np.ndarray:
    """Channel c = central N x N crop of T(canvas, +o'_c): (B, N, N, C)."""
    canvas = np.asarray(canvas).astype(np.complex128)
    _, k = canvas_size(cfg)
    offsets = centred_offsets(cfg, positions) if offsets is None else offsets
    window = np.arange(k, k + cfg.N)
    batch = canvas.shape[0]
    out = np.zeros((batch, cfg.N, cfg.N, channels(cfg)), np.complex128)
    for b in range(batch):
        for c in range(channels(cfg)):
            out[b, :, :, c] = translate(canvas[b, :, :, 0], offsets[b, c], rows=window, cols=window)
    return out


# ---------------------------------------------------------------- spec 5
def probe_effective(cfg, probe: np.ndarray) -> np.ndarray:
    probe = np.asarray(probe).astype(np.complex128)
    return probe * disk(cfg.N) if cfg.probe_mask else probe


def exit_wave(cfg, probe: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """M * G(probe * patch), per sample and channel: (B, N, N, C).

    ``probe`` is the input probe, not ``probe.effective``: the disk mask is
    applied once, after smoothing ("smooth, then mask"), as PtychoPINN's
    ProbeIllumination does; masking before smoothing too would change the rim.
    """
    wave = np.asarray(probe).astype(np.complex128)[None, :, :, None] * np.asarray(patches).astype(np.complex128)
    if cfg.gaussian_sigma > 0:
        smoothed = np.empty_like(wave)
        for b in range(wave.shape[0]):
            for c in range(wave.shape[3]):
                smoothed[b, :, :, c] = (smooth(wave[b, :, :, c].real, cfg.gaussian_sigma)
                                        + 1j * smooth(wave[b, :, :, c].imag, cfg.gaussian_sigma))
        wave = smoothed
    if cfg.probe_mask:
        wave = wave * disk(cfg.N)[None, :, :, None]
    return wave


def farfield(cfg, wave: np.ndarray) -> np.ndarray:
    """Orthonormal FFT2 over the spatial axes, unshifted (= FFT2 / N)."""
    return np.fft.fft2(np.asarray(wave).astype(np.complex128), axes=(1, 2), norm="ortho")


def amplitude(cfg, field: np.ndarray) -> np.ndarray:
    field = np.asarray(field).astype(np.complex128)
    return np.sqrt(np.fft.fftshift(np.abs(field) ** 2, axes=(1, 2)))


def amplitude_scaled(cfg, amp: np.ndarray) -> np.ndarray:
    return cfg.intensity_scale * np.asarray(amp, np.float64)


def intensity(cfg, amp_scaled: np.ndarray) -> np.ndarray:
    return np.asarray(amp_scaled, np.float64) ** 2


# ---------------------------------------------------------------- spec 6
def _poisson_terms(cfg, lam: np.ndarray, X: np.ndarray) -> np.ndarray:
    lam = np.asarray(lam, np.float64)
    counts = (cfg.intensity_scale * np.asarray(X, np.float64)) ** 2
    return lam - counts * np.log(lam + POISSON_EPS)


def _mae_terms(cfg, amp_scaled: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(amp_scaled, np.float64) - cfg.intensity_scale * np.asarray(X, np.float64))


def losses(cfg, lam: np.ndarray, amp_scaled: np.ndarray, X: np.ndarray) -> dict[str, np.ndarray]:
    """The four loss taps of spec 6, given intensity (lambda), amplitude.scaled and X."""
    poisson = _poisson_terms(cfg, lam, X)
    mae = _mae_terms(cfg, amp_scaled, X)
    return {
        "loss.poisson": np.asarray(poisson.mean()),
        "loss.poisson.per_sample": poisson.reshape(poisson.shape[0], -1).mean(axis=1),
        "loss.mae": np.asarray(mae.mean()),
        "loss.mae.per_sample": mae.reshape(mae.shape[0], -1).mean(axis=1),
    }


# ---------------------------------------------------------------- spec 7 simulate
def sim_patches(cfg, obj: np.ndarray, scan_positions: np.ndarray) -> np.ndarray:
    """patch_m[y, x] = O bilinear at (pos_y + y - N/2, pos_x + x - N/2), zero outside: (M, N, N, 1).

    Sampling O at (pos + p - N/2) is T(O, N/2 - pos) read at p. The shift
    N/2 - pos is rounded to the configuration's dtype, as an implementation
    in that dtype computes it: for a float32 position near 0 (a scan over the
    object's top or left edge), 16 - 0.3 keeps only float32's ulp of 16, a
    ~5e-7 px move that costs ~8e-7 relative on a smooth object, most of the
    1e-6 budget, and is float32 rounding, not a formula. (Float64: no effect.)
    """
    obj = np.asarray(obj).astype(np.complex128)
    dtype = np.dtype(cfg.dtype)
    pos = np.asarray(scan_positions).astype(dtype)
    half = cfg.N / 2
    window = np.arange(cfg.N)
    out = np.zeros((pos.shape[0], cfg.N, cfg.N, 1), np.complex128)
    for m in range(pos.shape[0]):
        shift = (dtype.type(half) - pos[m]).astype(dtype).astype(np.float64)  # (t_x, t_y)
        out[m, :, :, 0] = translate(obj, shift, rows=window, cols=window)
    return out


def sim_intensity_scale(cfg, wave: np.ndarray) -> np.ndarray:
    power = np.abs(np.asarray(wave).astype(np.complex128)) ** 2
    per_pattern = power.reshape(power.shape[0], -1).sum(axis=1)
    return np.asarray(np.sqrt(cfg.nphotons / per_pattern.mean()))


def sim_intensity(cfg, scale, amp: np.ndarray) -> np.ndarray:
    return (float(scale) * np.asarray(amp, np.float64)) ** 2


# ---------------------------------------------------------------- pipelines
def run_physics(cfg, inputs) -> dict[str, np.ndarray]:
    """Every tap of the ``physics`` pipeline from its inputs (object_patches, positions, probe)."""
    taps: dict[str, np.ndarray] = {}
    taps["object.canvas"] = object_canvas(cfg, inputs["object_patches"], inputs["positions"])
    taps["object.trimmed"] = object_trimmed(cfg, taps["object.canvas"])
    taps["patches.extracted"] = patches_extracted(cfg, taps["object.canvas"], inputs["positions"])
    taps["probe.effective"] = probe_effective(cfg, inputs["probe"])
    taps["exit_wave"] = exit_wave(cfg, inputs["probe"], taps["patches.extracted"])
    taps["farfield"] = farfield(cfg, taps["exit_wave"])
    taps["amplitude"] = amplitude(cfg, taps["farfield"])
    taps["amplitude.scaled"] = amplitude_scaled(cfg, taps["amplitude"])
    taps["intensity"] = intensity(cfg, taps["amplitude.scaled"])
    return taps


def run_simulate(cfg, inputs) -> dict[str, np.ndarray]:
    """Every tap of the ``simulate`` pipeline from (object, scan_positions, probe)."""
    taps: dict[str, np.ndarray] = {}
    taps["sim.patches"] = sim_patches(cfg, inputs["object"], inputs["scan_positions"])
    taps["probe.effective"] = probe_effective(cfg, inputs["probe"])
    taps["exit_wave"] = exit_wave(cfg, inputs["probe"], taps["sim.patches"])
    taps["farfield"] = farfield(cfg, taps["exit_wave"])
    taps["amplitude"] = amplitude(cfg, taps["farfield"])
    taps["sim.intensity_scale"] = sim_intensity_scale(cfg, taps["exit_wave"])
    taps["sim.intensity"] = sim_intensity(cfg, taps["sim.intensity_scale"], taps["amplitude"])
    return taps
