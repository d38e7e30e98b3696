"""The report's pictures, drawn with matplotlib (Agg, no pyplot state) and returned as PNG bytes.

Every picture has a fixed size in pixels (figure size x dpi, no tight bounding
box), so the HTML can state it and the tests can check it.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator

from .patch_stats import spatial_axes

DPI = 80
PHASE_LIMIT = math.pi


@dataclasses.dataclass(frozen=True)
class Picture:
    png: bytes
    width: int
    height: int
    alt: str = ""


def _render(figure: Figure, alt: str) -> Picture:
    """PNG bytes with a 256-colour palette: colour maps have 256 entries anyway, and a noisy
    |difference| panel compresses 3-4x smaller than as RGBA (the report must stay small)."""
    from PIL import Image  # a dependency of matplotlib

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    image = Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    height, width = rgba.shape[:2]
    return Picture(buffer.getvalue(), int(width), int(height), alt)


def _cmap(name: str):
    return colormaps[name].with_extremes(bad="#9a9a9a")


def _finite_range(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if high <= low:
        pad = abs(high) * 1e-6 or 1e-30
        low, high = low - pad, high + pad
    return low, high


def _norm(a: np.ndarray, b: np.ndarray, part: str) -> tuple[Normalize, Any, str]:
    """The colour scale shared by reference and candidate: phase on [-pi, pi]; a non-negative
    image whose peak is over 100x its median (a far field) on a log scale, else linear."""
    if part == "phase":
        return Normalize(-PHASE_LIMIT, PHASE_LIMIT), _cmap("twilight"), ""
    low, high = _finite_range(a, b)
    if low >= 0 and high > 0:
        values = np.concatenate([a[np.isfinite(a) & (a > 0)].ravel(), b[np.isfinite(b) & (b > 0)].ravel()])
        if values.size and high / np.percentile(values, 50) > 100:
            return LogNorm(max(high * 1e-6, float(values.min())), high), _cmap("viridis"), " (log)"
    return Normalize(low, high), _cmap("viridis"), ""


@dataclasses.dataclass(frozen=True)
class ImageRow:
    """One row of a comparison picture: a 2-D slice of both sides, shown as ``part``."""

    label: str
    reference: np.ndarray
    candidate: np.ndarray
    part: str  # "value", "amplitude" or "phase"


def complex_rows(label: str, reference: np.ndarray, candidate: np.ndarray) -> list[ImageRow]:
    if np.iscomplexobj(reference) or np.iscomplexobj(candidate):
        return [ImageRow(label, reference, candidate, "amplitude"), ImageRow(label, reference, candidate, "phase")]
    return [ImageRow(label, reference, candidate, "value")]


def _parts(row: ImageRow) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    a, b = row.reference, row.candidate
    with np.errstate(invalid="ignore"):
        if row.part == "amplitude":
            return np.abs(a), np.abs(b), np.abs(np.abs(b) - np.abs(a)), "||b|−|a||"
        if row.part == "phase":  # the difference of the angles, wrapped: exactly 0 where a == b
            pa, pb = np.angle(a), np.angle(b)
            return pa, pb, np.abs(np.remainder(pb - pa + math.pi, 2 * math.pi) - math.pi), "|Δ phase|"
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return a64, b64, np.abs(b64 - a64), "|b−a|"


PANEL = 128  # pixels of an image panel's longer side (nearest-neighbour resampling)


def _resample(image: np.ndarray, keep_peaks: bool = False) -> np.ndarray:
    """``image`` at PANEL pixels on its longer side, nearest neighbour. Shrinking with ``keep_peaks``
    takes the maximum of the source pixels behind each panel pixel, so no worst pixel is lost."""
    scale = PANEL / max(image.shape)
    for axis, size in enumerate(image.shape):
        out = max(1, int(round(size * scale)))
        starts = (np.arange(out) * size) // out
        if keep_peaks and out < size:
            image = np.maximum.reduceat(image, starts, axis=axis)  # NaN propagates: it shows grey
        else:
            image = np.take(image, starts, axis=axis)
    return image


def comparison_picture(rows: Sequence[ImageRow], title: str) -> Picture:
    """Reference, candidate (one shared colour scale) and |difference| (its own scale), a row per slice.

    Images are colour-mapped by matplotlib (``ScalarMappable.to_rgba``) and placed as figure images
    in pixel coordinates; only the colour bars are axes. Ten image axes with titles and ticks cost
    twice as long to draw, and every run draws a picture per image tap."""
    prepared = []
    for row in rows:
        a, b, difference, label = _parts(row)
        norm, cmap, scale = _norm(a, b, row.part)
        finite = difference[np.isfinite(difference)]
        top = float(finite.max()) if finite.size else 0.0
        shared = ScalarMappable(norm, cmap)
        own = ScalarMappable(Normalize(0.0, top or 1e-30), _cmap("magma"))
        images = [shared.to_rgba(_resample(a)), shared.to_rgba(_resample(b)), own.to_rgba(_resample(difference, True))]
        prepared.append((row, label, scale, top, finite.size < difference.size, shared, own, images))
    panel_h = max(image.shape[0] for *_, images in prepared for image in images)
    panel_w = max(image.shape[1] for *_, images in prepared for image in images)
    left, gap, bar, bar_text, head, row_gap = 62, 8, 11, 58, 30, 22
    xs = [left, left + panel_w + gap]
    bars = [xs[1] + panel_w + 6]
    xs.append(bars[0] + bar + bar_text)
    bars.append(xs[2] + panel_w + 6)
    width = bars[1] + bar + bar_text
    height = head + len(rows) * (panel_h + row_gap) + 6
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    figure.text(0.5, 1 - 6 / height, title, ha="center", va="top", fontsize=10)

    def at(x: float, y: float) -> tuple[float, float]:  # pixels from the top left -> figure fraction
        return x / width, 1 - y / height

    for r, (row, label, scale, top, nonfinite, shared, own, images) in enumerate(prepared):
        y_top = head + r * (panel_h + row_gap) + row_gap - 4
        for x, image in zip(xs, images):
            figure.figimage(image, xo=x, yo=height - y_top - image.shape[0], origin="upper")
        names = ("reference" + scale, "candidate" + scale,
                 f"{label}: max {top:.2g}" + (" (NaN/Inf grey)" if nonfinite else ""))
        for x, name in zip(xs, names):
            figure.text(*at(x + panel_w / 2, y_top - 3), name, ha="center", va="bottom", fontsize=8)
        figure.text(*at(left / 2, y_top + panel_h / 2), f"{row.label}\n{row.part}", ha="center", va="center",
                    rotation=90, fontsize=8)
        if top == 0 and not nonfinite:
            figure.text(*at(xs[2] + panel_w / 2, y_top + panel_h / 2), "identical", color="white", ha="center",
                        va="center", fontsize=10)
        for x, mappable, form in ((bars[0], shared, "%.3g"), (bars[1], own, "%.2g")):
            if mappable is own and top == 0 and not nonfinite:
                continue  # "identical" says it; a colour bar from 0 to 0 says nothing
            x0, y0 = at(x, y_top + panel_h)
            cax = figure.add_axes([x0, y0, bar / width, panel_h / height])
            low, high = mappable.norm.vmin, mappable.norm.vmax
            middle = math.sqrt(low * high) if isinstance(mappable.norm, LogNorm) else (low + high) / 2
            # three fixed ticks (both ends labelled) and no minor ticks: tick text is most of the drawing time
            bar_ = figure.colorbar(mappable, cax=cax, format=form, ticks=FixedLocator([low, middle, high]))
            bar_.minorticks_off()
            cax.tick_params(labelsize=6, length=2, pad=1)
    return _render(figure, title)


def _sample_layout(layout: str, batched: bool) -> str:
    return layout[1:] if batched else layout


def _slices(sample: np.ndarray, layout: str) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Every 2-D image of one sample, with the index of its other axes (e.g. the channel)."""
    rows, cols = spatial_axes(layout)
    moved = np.moveaxis(sample, (rows, cols), (-2, -1))
    outer = moved.shape[:-2]
    return [(index, moved[index]) for index in np.ndindex(*outer)] if outer else [((), moved)]


def worst_rows(kept: Any, limit: int = 2, hint: Mapping[str, Any] | None = None) -> list[ImageRow]:
    """Rows for the worst kept samples, each at its worst channel (the breakdown's worst channel first)."""
    layout = _sample_layout(kept.layout, kept.batched)
    if spatial_axes(layout) is None or kept.index.size == 0 or kept.mismatch:
        return []
    chosen = [int(i) for i in kept.worst[:limit]] or [int(i) for i in kept.first[:1]]
    rows: list[ImageRow] = []
    for sample in chosen:
        a, b = kept.sample(sample)
        pairs = list(zip(_slices(a, layout), _slices(b, layout)))
        with np.errstate(invalid="ignore"):
            errors = [np.nan_to_num(np.abs(y.astype(np.complex128) - x.astype(np.complex128)), nan=np.inf).max()
                      for (_, x), (_, y) in pairs]
        pick = int(np.argmax(errors))
        if hint and hint.get("sample") == sample and hint.get("channel") is not None and len(pairs) > 1:
            pick = min(int(hint["channel"]), len(pairs) - 1)
        (index, x), (_, y) = pairs[pick]
        where = f"sample {sample}" if kept.batched else "whole tap"
        if index:
            where += ", channel " + ",".join(str(i) for i in index)
        rows += complex_rows(where, x, y)
    return rows


def first_patches(kept: Any, count: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    layout = _sample_layout(kept.layout, kept.batched)
    labels, reference, candidate = [], [], []
    for sample in kept.first:
        a, b = kept.sample(int(sample))
        for (index, x), (_, y) in zip(_slices(a, layout), _slices(b, layout)):
            if len(labels) == count:
                return labels, reference, candidate
            labels.append(f"s{int(sample)}" + "".join(f" c{i}" for i in index))
            reference.append(x)
            candidate.append(y)
    return labels, reference, candidate


def _normalised(patch: np.ndarray) -> np.ndarray:
    magnitude = np.abs(patch).astype(np.float64)
    finite = magnitude[np.isfinite(magnitude)]
    if finite.size == 0:
        return magnitude
    low, high = finite.min(), finite.max()
    return (magnitude - low) / (high - low) if high > low else magnitude * 0.0


def _mosaic(patches: Sequence[np.ndarray], gap: int) -> np.ndarray:
    """Normalised patches side by side, separated by ``gap`` NaN columns (drawn as the background)."""
    rows = max(p.shape[0] for p in patches)
    tiles = []
    for patch in patches:
        tile = np.full((rows, patch.shape[1] + gap), np.nan)
        tile[: patch.shape[0], : patch.shape[1]] = _normalised(patch)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)[:, :-gap] if gap else np.concatenate(tiles, axis=1)


def patch_grid(kept: Any, count: int) -> Picture | None:
    """The first ``count`` patches of both backends, each scaled to its own min..max (modulus if complex).

    One image axes holding a mosaic (reference row over candidate row): sixteen small axes cost
    ten times as much to draw."""
    if kept.mismatch or spatial_axes(_sample_layout(kept.layout, kept.batched)) is None:
        return None
    labels, reference, candidate = first_patches(kept, count)
    if not labels:
        return None
    side = max(p.shape[1] for p in reference)
    gap = max(1, side // 12)
    top, bottom = _mosaic(reference, gap), _mosaic(candidate, gap)
    mosaic = np.concatenate([top, np.full((gap * 2, top.shape[1]), np.nan), bottom], axis=0)
    columns = len(labels)
    width = min(11.0, 1.05 * columns + 1.2)
    image_width = width - 1.2
    image_height = image_width * mosaic.shape[0] / mosaic.shape[1]
    height = image_height + 0.75
    figure = Figure(figsize=(width, height), dpi=DPI)
    ax = figure.add_axes([1.0 / width, 0.1 / height, image_width / width, image_height / height])
    ax.imshow(mosaic, cmap=_cmap("gray").with_extremes(bad="white"), vmin=0, vmax=1, interpolation="nearest",
              aspect="auto")
    ax.set_axis_off()
    part = "modulus" if kept.kind == "complex" else "value"
    figure.text(0.5, 1 - 0.05 / height, f"{kept.tap}: first {columns} patches ({part}, each scaled to its own "
                "min..max)", ha="center", va="top", fontsize=9)
    step = (top.shape[1] + gap) / columns
    for column, label in enumerate(labels):
        ax.text((column + 0.5) * step - gap / 2, -1, label, ha="center", va="bottom", fontsize=7)
    for row, text in ((top.shape[0] / 2, "reference"), (top.shape[0] * 1.5 + 2 * gap, f"candidate\n({kept.mode})")):
        ax.text(-gap, row, text, ha="right", va="center", fontsize=8)
    return _render(figure, f"patch grid of {kept.tap}")


def grid_path(directory: Path, tap: str) -> Path:
    return Path(directory) / f"patches-{tap.replace('/', '_')}.png"


def write_patch_grids(samples: Mapping[tuple[str, str], Any], directory: Path, count: int) -> list[Path]:
    """``patches-<tap>.png`` for each tap the registry marks ``pictures="patches"`` (propagated first)."""
    paths = []
    taps = {tap for (_, tap), kept in samples.items() if kept.pictures == "patches"}
    for tap in sorted(taps):
        kept = samples.get(("propagated", tap)) or samples.get(("isolated", tap))
        picture = patch_grid(kept, count)
        if picture is not None:
            path = grid_path(directory, tap)
            path.write_bytes(picture.png)
            paths.append(path)
    return paths


def _plotted(value: Any) -> float:
    """A JSON metric as a float; None (not judged) becomes NaN, "nan"/"inf" their floats."""
    return math.nan if value is None else float(value)


def error_vs_depth(names: Sequence[str], errors: Mapping[str, Sequence[Any]], limits: Mapping[str, Sequence[Any]],
                   raised: Mapping[str, Sequence[bool]], divergence: int | None,
                   failed: Mapping[str, Sequence[bool]] | None = None) -> Picture:
    """max |a-b| / max |a| per tap in stage order, per mode, with each mode's tolerance as a step line.

    A zero error is drawn at the bottom edge; an error that is NaN/Inf, or a stage that raised, as a red
    cross at the top edge; a tap not judged in a mode leaves a gap. Every failing point is ringed in red:
    a tap can fail on NaN positions, cosine or phase while its plotted error is below the line."""
    width = max(7.5, 0.42 * len(names) + 2.0) + 1.8  # the legend's column
    figure = Figure(figsize=(width, 3.9), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    x = np.arange(len(names))
    series = {mode: np.array([_plotted(v) for v in values], dtype=float) for mode, values in errors.items()}
    bounds = {mode: np.array([_plotted(v) for v in values], dtype=float) for mode, values in limits.items()}
    positive = [v for y in [*series.values(), *bounds.values()] for v in y if math.isfinite(v) and v > 0]
    floor = min(positive) / 30 if positive else 1e-12
    ceiling = max(positive) * 30 if positive else 1.0
    styles = {"propagated": ("tab:blue", "o"), "isolated": ("tab:orange", "s")}
    for mode, y in series.items():
        colour, marker = styles.get(mode, ("tab:gray", "^"))
        failed_top = np.array(raised.get(mode, [False] * len(y)), dtype=bool) | np.isinf(y)
        failed_top |= np.isnan(y) & np.array([isinstance(v, str) for v in errors[mode]], dtype=bool)
        shown = np.where(y == 0, floor, np.where(failed_top, ceiling, y))
        shift = {"propagated": -0.08, "isolated": 0.08}.get(mode, 0.0)  # both modes stay visible where equal
        ax.plot(x + shift, shown, marker=marker, color=colour, label=mode, linewidth=1.2, markersize=5)
        if failed_top.any():
            ax.plot(x[failed_top] + shift, np.full(int(failed_top.sum()), ceiling), "x", color="red", markersize=9,
                    mew=2, label=f"{mode}: raised / NaN / Inf")
        ringed = np.array((failed or {}).get(mode, [False] * len(y)), dtype=bool) & ~failed_top
        if ringed.any():
            ax.plot(x[ringed] + shift, shown[ringed], "o", mfc="none", mec="red", markersize=11, mew=1.5,
                    label=f"{mode}: fails" if not failed_top.any() else None)
        if mode in bounds and bounds[mode].size:
            ax.step(x, bounds[mode], where="mid", color=colour, linestyle="--", linewidth=1, alpha=0.8,
                    label=f"{mode} tolerance")
    if divergence is not None:
        ax.axvline(divergence, color="red", linestyle=":", linewidth=1.2, label="first divergence")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, ceiling * 3)
    ax.set_xlim(-0.5, max(len(names) - 0.5, 0.5))
    ax.set_xticks(x, names, rotation=55, ha="right", fontsize=8)
    ax.set_ylabel("max |a−b| / max |a|", fontsize=9)
    ax.set_title("error vs depth, stage order (0 at the bottom edge; NaN/Inf/raised: red cross at the top)",
                 fontsize=9)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    # beside the axes, not over them: inside, it covered the first taps' points
    ax.legend(fontsize=7, ncols=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _render(figure, "error vs depth")
