"""The PtychoPINN data contract as an input: a dataset ``.npz`` turned into pipeline inputs.

Keys (see docs/datasets.md):
- ``xcoords``, ``ycoords`` (M,): scan positions in object pixels (x column, y row), all distinct;
- ``diff3d`` or ``diffraction`` (M, N, N): measured diffraction AMPLITUDES (sqrt of counts),
  or photon COUNTS when the file holds ``diffraction_counts = 1``; the legacy layout
  (N, N, M) is transposed, with a note;
- ``probeGuess`` (N, N) complex; optional ``objectGuess`` (H, W) complex;
- optional ``diffraction_counts``: a scalar, 1 when the diffraction holds counts.

``pinn``: for gridsize g > 1, every scan point anchors a group of C = g*g points drawn
(numpy PCG64, seeded) from its K = C + 3 nearest neighbours (scipy cKDTree), as PtychoPINN
groups; ``X`` (B, N, N, C) = amplitude / intensity_scale and ``positions`` (B, 1, 2, C) =
-(pos_c - mean(pos)) (spec section 2). All of it in float64, cast to the run's dtype last:
counts are square-rooted as float64, never squared in their own (uint16) dtype.
intensity_scale, unless set, is PtychoPINN's normalisation: the s for which the scaled
patterns' mean sum of X^2 is (N/2)^2, s = sqrt(mean_m sum amplitude_m^2) / (N/2).
``simulate`` (when ``objectGuess`` is present): object = objectGuess, scan_positions =
(xcoords, ycoords) used as they are (object pixels, as PtychoPINN's datasets store them);
nphotons, unless set, is the measured mean photon count per pattern.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from backends.common.config import ForwardConfig

from .data import fixtures_dir, moon_object, probe_for
from .budget import check_read
from .errors import ParityInputError
from .npz import NpzArchive

DIFFRACTION_KEYS = ("diff3d", "diffraction")
COUNTS_KEY = "diffraction_counts"
EXTRA_NEIGHBOURS = 3  # K = C + 3 nearest neighbours to draw each group from
GROUP_SEED = 0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A validated dataset, float64 / complex128, before any grouping."""

    path: str
    coords: np.ndarray  # (M, 2) as (x, y)
    amplitude: np.ndarray  # (M, N, N), sqrt of counts
    probe: np.ndarray  # (N, N)
    obj: np.ndarray | None  # (H, W)
    notes: tuple[str, ...] = ()
    diffraction_key: str = "diff3d"  # or "diffraction", as the file names it

    def file_keys(self) -> dict[str, str]:
        """The pipelines' input names -> the file's keys they come from (for messages)."""
        return {"object": "objectGuess", "probe": "probeGuess", "X": self.diffraction_key,
                "scan_positions": "xcoords/ycoords", "positions": "xcoords/ycoords"}

    @property
    def N(self) -> int:
        return self.amplitude.shape[1]

    @property
    def M(self) -> int:
        return self.amplitude.shape[0]

    def intensity_scale(self) -> float:
        """PtychoPINN's normalisation: mean sum of (amplitude / s)^2 over patterns = (N/2)^2."""
        return float(np.sqrt(np.mean(np.sum(self.amplitude**2, axis=(1, 2))))) / (self.N / 2)

    def photons(self) -> float:
        return float(np.mean(np.sum(self.amplitude**2, axis=(1, 2))))


def _fail(path: str, key: str, expectation: str) -> ParityInputError:
    return ParityInputError(f"{path}: key {key!r}: expected {expectation}")


def _diffraction_key(path: str, archive: NpzArchive) -> str:
    present = [key for key in DIFFRACTION_KEYS if key in archive]
    if len(present) != 1:
        found = "both" if present else "neither"
        raise ParityInputError(f"{path}: key {DIFFRACTION_KEYS[0]!r} or {DIFFRACTION_KEYS[1]!r}: expected exactly one "
                               f"(diffraction (M, N, N)), found {found}; keys are {sorted(archive)}")
    return present[0]


def _check_headers(path: str, archive: NpzArchive) -> tuple[str, int, bool, bool]:
    """(diffraction key, M, legacy layout, counts) from the headers alone."""
    missing = [key for key in ("xcoords", "ycoords", "probeGuess") if key not in archive]
    if missing:
        raise ParityInputError(f"{path}: missing key(s) {missing}; a PtychoPINN dataset holds xcoords, ycoords, "
                               f"diff3d (or diffraction), probeGuess and optionally objectGuess; found {sorted(archive)}")
    diff = _diffraction_key(path, archive)
    for key in ("xcoords", "ycoords"):
        member = archive[key]
        if member.ndim != 1 or member.dtype.kind not in "fiu":
            raise _fail(path, key, f"real scan coordinates of shape (M,), got {member.dtype} {member.shape}")
    M = archive["xcoords"].shape[0]
    if archive["ycoords"].shape[0] != M:
        raise _fail(path, "ycoords", f"{M} coordinates (as xcoords), got {archive['ycoords'].shape[0]}")
    if M == 0:
        raise _fail(path, "xcoords", "at least one scan position")
    shape, kind = archive[diff].shape, archive[diff].dtype.kind
    if len(shape) != 3 or kind not in "fiu":
        raise _fail(path, diff, f"real diffraction of shape (M, N, N), got {archive[diff].dtype} {shape}")
    legacy = not (shape[0] == M and shape[1] == shape[2]) and shape[2] == M and shape[0] == shape[1]
    if not legacy and not (shape[0] == M and shape[1] == shape[2]):
        raise _fail(path, diff, f"shape (M, N, N) with M = {M} (the number of xcoords) and square patterns, "
                                f"got {shape}")
    n = shape[0] if legacy else shape[1]
    probe = archive["probeGuess"]
    if probe.shape != (n, n) or probe.dtype.kind != "c":
        raise _fail(path, "probeGuess", f"a complex ({n}, {n}) probe (N = {n} from {diff!r}), got "
                                        f"{probe.dtype} {probe.shape}")
    if "objectGuess" in archive:
        obj = archive["objectGuess"]
        if obj.ndim != 2 or obj.dtype.kind != "c" or min(obj.shape) == 0:
            raise _fail(path, "objectGuess", f"a complex (H, W) object, got {obj.dtype} {obj.shape}")
    counts = False
    if COUNTS_KEY in archive:
        member = archive[COUNTS_KEY]
        if member.shape != () or member.dtype.kind not in "biu":
            raise _fail(path, COUNTS_KEY, f"a scalar 0 or 1, got {member.dtype} {member.shape}")
        value = archive.read(COUNTS_KEY)
        if int(value) not in (0, 1):
            raise _fail(path, COUNTS_KEY, f"0 (amplitudes) or 1 (photon counts), got {value!r}")
        counts = bool(value)
    if kind in "iu" and not counts:
        raise _fail(path, diff, f"amplitudes (floating point), got integers ({archive[diff].dtype}); if these are "
                                f"photon counts say so with {COUNTS_KEY} = 1")
    return diff, M, legacy, counts


def _finite(path: str, key: str, value: np.ndarray) -> None:
    bad = ~np.isfinite(value)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _fail(path, key, f"finite values, found {int(bad.sum())} NaN/Inf (first at index {first})")


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a dataset (headers first, then values); every problem names its key."""
    path = str(path)
    archive = NpzArchive(path, "dataset file")
    diff, M, legacy, counts = _check_headers(path, archive)
    used = ["xcoords", "ycoords", diff, "probeGuess"] + (["objectGuess"] if "objectGuess" in archive else [])
    check_read(path, 3 * sum(archive[key].nbytes for key in used))  # file dtype, float64 copy, run-dtype copy
    x, y = (archive.read(key).astype(np.float64) for key in ("xcoords", "ycoords"))
    for key, value in (("xcoords", x), ("ycoords", y)):
        _finite(path, key, value)
    coords = np.stack([x, y], axis=1)
    _, first, inverse, repeats = np.unique(coords, axis=0, return_index=True, return_inverse=True,
                                           return_counts=True)
    if (repeats > 1).any():
        twice = int(np.argmax(repeats > 1))
        where = np.flatnonzero(inverse.reshape(-1) == twice)[:2].tolist()
        raise _fail(path, "xcoords", f"distinct scan positions; positions {where} are both "
                                     f"({coords[where[0], 0]:g}, {coords[where[0], 1]:g})")
    raw = archive.read(diff)
    notes: list[str] = []
    if legacy:
        raw = np.transpose(raw, (2, 0, 1))
        notes.append(f"{path}: key {diff!r} is in the legacy (N, N, M) layout; transposed to (M, N, N)")
    elif raw.shape[0] == raw.shape[1] == raw.shape[2]:  # M == N: both layouts fit; (M, N, N) is read
        notes.append(f"{path}: key {diff!r} has M = N = {M} positions, so its layout is ambiguous; read as (M, N, N) "
                     "(a legacy (N, N, M) file of this size would be misread: transpose it to (M, N, N))")
    values = raw.astype(np.float64)  # counts are never squared (or summed) in their own integer dtype
    _finite(path, diff, values)
    if (values < 0).any():
        first = tuple(int(i) for i in np.argwhere(values < 0)[0])
        what = "photon counts" if counts else "amplitudes"
        raise _fail(path, diff, f"non-negative {what}, found {int((values < 0).sum())} negative (first at {first})")
    amplitude = np.sqrt(values) if counts else values
    if not amplitude.any():
        raise _fail(path, diff, "some signal; every pattern is zero")
    probe = archive.read("probeGuess").astype(np.complex128)
    _finite(path, "probeGuess", probe)
    obj = archive.read("objectGuess").astype(np.complex128) if "objectGuess" in archive else None
    if obj is not None:
        _finite(path, "objectGuess", obj)
    return Dataset(path, coords, amplitude, probe, obj, tuple(notes), diff)


def group_indices(coords: np.ndarray, gridsize: int, seed: int = GROUP_SEED) -> np.ndarray:
    """(M, C) scan indices: each point with C - 1 others drawn from its K = C + 3 nearest (itself first)."""
    C = gridsize * gridsize
    M = len(coords)
    if C == 1:
        return np.arange(M)[:, None]
    if M < C:
        raise ParityInputError(f"gridsize {gridsize} groups {C} scan positions, the dataset has only {M}")
    from scipy.spatial import cKDTree

    K = min(M, C + EXTRA_NEIGHBOURS)
    _, neighbours = cKDTree(coords).query(coords, k=K)
    rng = np.random.Generator(np.random.PCG64(seed))
    groups = np.empty((M, C), np.int64)
    for index in range(M):
        others = neighbours[index][neighbours[index] != index][: K - 1]
        groups[index] = [index, *rng.choice(others, size=C - 1, replace=False)]
    return groups


def pinn_arrays(data: Dataset, cfg: ForwardConfig, groups_wanted: int | None = None) -> dict[str, np.ndarray]:
    """X (B, N, N, C) and positions (B, 1, 2, C), float64, plus the probe.

    B = M (every scan point anchors a group), or ``groups_wanted`` groups drawn (seeded) from those.
    """
    if len(data.coords) < cfg.gridsize**2:
        raise _fail(data.path, "xcoords", f"at least {cfg.gridsize**2} scan positions for gridsize {cfg.gridsize} "
                                          f"(each group holds gridsize^2), got {len(data.coords)}; --set gridsize=1 "
                                          "groups one")
    groups = group_indices(data.coords, cfg.gridsize)
    if groups_wanted is not None and groups_wanted < len(groups):
        rng = np.random.Generator(np.random.PCG64(GROUP_SEED + 1))
        groups = groups[np.sort(rng.choice(len(groups), size=groups_wanted, replace=False))]
    X = np.transpose(data.amplitude[groups], (0, 2, 3, 1)) / cfg.intensity_scale  # (B, N, N, C)
    pos = np.transpose(data.coords[groups], (0, 2, 1))  # (B, 2, C) as (x, y)
    offsets = -(pos - pos.mean(axis=2, keepdims=True))
    return {"X": X, "positions": offsets[:, None], "probe": data.probe}


def simulate_arrays(data: Dataset) -> dict[str, np.ndarray]:
    if data.obj is None:
        raise ParityInputError(f"{data.path}: key 'objectGuess': expected a complex object for the simulate "
                               "pipeline; this dataset has none (run --pipeline pinn)")
    return {"object": data.obj, "scan_positions": data.coords, "probe": data.probe}


def default_knobs(data: Dataset) -> dict[str, object]:
    return {"N": data.N, "intensity_scale": data.intensity_scale(), "nphotons": data.photons()}


def arrays_for(pipeline: str, data: Dataset, cfg: ForwardConfig) -> dict[str, np.ndarray]:
    if pipeline == "pinn":
        return pinn_arrays(data, cfg)
    if pipeline == "simulate":
        return simulate_arrays(data)
    raise ParityInputError(f"--pipeline {pipeline}: a dataset runs the pinn or the simulate pipeline")


# ---- the shipped dataset: moon object, fly001 probe, seeded Poisson noise ----

MOON_DATASET = Path("datasets") / "moon.npz"  # under fixtures/
MOON_SEED = 12
MOON_SIDE = 4  # a 4 x 4 raster: M = 16
MOON_PHOTONS = 1e6


def simulate_moon_dataset(seed: int = MOON_SEED) -> dict[str, np.ndarray]:
    """The shipped dataset's arrays: a jittered raster over the moon object, Poisson counts, amplitudes stored."""
    rng = np.random.Generator(np.random.PCG64(seed))
    obj = moon_object().astype(np.complex64)
    probe = probe_for(64).astype(np.complex64)
    n = probe.shape[0]
    centre = np.array(obj.shape[::-1]) / 2  # (x, y)
    grid = (np.arange(MOON_SIDE) - (MOON_SIDE - 1) / 2) * 12.0
    xs, ys = np.meshgrid(grid, grid)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1) + centre + rng.integers(-2, 3, size=(xs.size, 2))
    patterns = []
    for x, y in coords.astype(int):
        patch = obj[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2].astype(np.complex128)
        far = np.fft.fftshift(np.fft.fft2(probe * patch) / n)
        power = np.abs(far) ** 2
        patterns.append(np.sqrt(rng.poisson(power * (MOON_PHOTONS / power.sum()))))
    return {"xcoords": coords[:, 0].astype(np.float64), "ycoords": coords[:, 1].astype(np.float64),
            "diff3d": np.asarray(patterns, np.float32), "probeGuess": probe, "objectGuess": obj}


@functools.lru_cache(maxsize=None)
def _moon() -> Dataset:
    return load_dataset(fixtures_dir() / MOON_DATASET)


# Knobs of the built-in dataset cases, fixed so the case table never reads the file at import:
# N of the patterns, and PtychoPINN's normalisation sqrt(mean photons) / (N/2) = sqrt(1e6) / 32
# rounded (tests/test_dataset.py checks it against the file).
MOON_KNOBS = {"N": 64, "intensity_scale": 31.25, "nphotons": MOON_PHOTONS}
MOON_POSITIONS = MOON_SIDE * MOON_SIDE
MOON_GROUPS = 4  # the built-in pinn case runs 4 of the 16 groups: its golden stays small (~3 MB)


def build_moon_inputs(case: object) -> dict[str, np.ndarray]:
    """Input builder of the built-in cases ``pinn-dataset-moon`` and ``simulate-dataset-moon``."""
    cfg: ForwardConfig = case.config  # type: ignore[attr-defined]
    pipeline: str = case.pipeline  # type: ignore[attr-defined]
    data = _moon()
    arrays = pinn_arrays(data, cfg, MOON_GROUPS) if pipeline == "pinn" else arrays_for(pipeline, data, cfg)
    return {name: value.astype(cfg.complex_dtype if np.iscomplexobj(value) else cfg.dtype)
            for name, value in arrays.items()}
