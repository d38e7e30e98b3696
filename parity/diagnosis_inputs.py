"""Input hypotheses: rerun the REFERENCE's stage on transformed inputs and see whether it gives the candidate.

What an input is comes from its layout, never its name: a "B12C" input holds per-channel offsets
(x, y), an "M2" input scan positions (x, y), a "BHWC" input images with channels, an "HW" input one
image (an illumination). The residual of an input hypothesis is max |rerun(transformed) - b| / max |a|.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np

from .diagnosis_core import Diagnosis, Problem

MAX_RERUNS = 32  # input hypotheses tried per tap, at most
MAX_SECONDS = 10.0  # and no more time than this on reruns per tap

Transform = tuple[str, str, dict[str, np.ndarray], Callable[[np.ndarray], np.ndarray] | None]


def _offsets_images(x: np.ndarray) -> np.ndarray:
    return np.transpose(x[:, 0], (0, 2, 1))  # (k, 1, 2, C) -> (k, C, 2)


def _offsets_from_images(images: np.ndarray) -> np.ndarray:
    return np.transpose(images, (0, 2, 1))[:, None]


def _grid_column_major(channels: int) -> list[int] | None:
    g = math.isqrt(channels)
    if g < 2 or g * g != channels:
        return None
    return [(c % g) * g + c // g for c in range(channels)]


def _offset_transforms(name: str, x: np.ndarray) -> Iterator[tuple[str, str, np.ndarray]]:
    k, _, _, channels = x.shape
    mean = x.mean(axis=-1, keepdims=True)
    yield ("offset_sign", f"the offsets of input {name!r} applied with the opposite sign (patch positions "
                          f"point-reflected within each group)", 2 * mean - x)
    for axis, word in ((0, "x"), (1, "y")):
        mirrored = x.copy()
        mirrored[:, :, axis] = 2 * mean[:, :, axis] - x[:, :, axis]
        yield ("offset_sign", f"the {word} offsets of input {name!r} applied with the opposite sign (patch positions "
                              f"mirrored in {word} within each group)", mirrored)
    yield ("offset_swap_xy", f"x and y of the offsets of input {name!r} swapped (column/row order)", x[:, :, ::-1])
    yield ("offsets_ignored", f"the offsets of input {name!r} ignored (every patch at its group's centre)",
           np.zeros_like(x))
    centred = x - mean
    for rounding, word in ((np.round, "rounded"), (np.floor, "floored"), (np.trunc, "truncated")):
        yield ("offsets_rounded", f"the offsets of input {name!r} {word} to whole pixels (nearest-pixel placement, "
                                  "an integer cast, or an integer-only shift where bilinear is meant)",
               mean + rounding(centred))
    images = _offsets_images(x)
    column_major = _grid_column_major(channels)
    if column_major:
        yield ("channel_permutation", f"the offsets of input {name!r} assigned to the channels of a column-major "
                                      f"grid (row-major is meant)", x[..., column_major])
    if channels > 1:
        yield ("channel_permutation", f"the offsets of input {name!r} in reversed channel order", x[..., ::-1])
        yield ("channel_permutation", f"input {name!r} (batch, 1, (x, y), channel) read as (batch, channel, (x, y)) "
                                      f"(a reshape where a transpose was meant)",
               _offsets_from_images(x.reshape(k, channels, 2)))
    if k > 1 and channels > 1:
        yield ("channel_permutation", f"the offsets of input {name!r} flattened (channel, batch) where the patches "
                                      f"are (batch, channel): each patch gets another patch's offset",
               _offsets_from_images(np.transpose(images, (1, 0, 2)).reshape(k, channels, 2)))


def _image_transforms(name: str, x: np.ndarray) -> Iterator[tuple[str, str, np.ndarray]]:
    k, h, w, channels = x.shape
    if channels < 2:
        return
    column_major = _grid_column_major(channels)
    if column_major:
        yield ("channel_permutation", f"the channels of input {name!r} in column-major grid order (row-major is "
                                      f"meant)", x[..., column_major])
    yield ("channel_permutation", f"the channels of input {name!r} in reversed order", x[..., ::-1])
    yield ("channel_permutation", f"input {name!r} channels-first data read as channels-last (a reshape where a "
                                  f"permute was meant)", np.moveaxis(x, 3, 1).reshape(k, h, w, channels))
    yield ("channel_permutation", f"input {name!r} channels-last data read as channels-first",
           np.moveaxis(x.reshape(k, channels, h, w), 1, 3))
    if k > 1:
        flat = np.moveaxis(x, 3, 1).reshape(k * channels, h, w)
        order = np.arange(k * channels).reshape(k, channels).T.ravel()
        yield ("channel_permutation", f"input {name!r} flattened (channel, batch) where (batch, channel) is meant",
               np.moveaxis(flat[order].reshape(k, channels, h, w), 1, 3))


def _origin_moves(p: Problem, name: str) -> Iterator[tuple[np.ndarray, str]]:
    """Scan positions counted from another origin: a patch's corner for its centre (N/2), the object's centre
    for its pixel (0, 0) ((W/2, H/2)), either way round."""
    n = getattr(p.cfg, "N", None)
    if n:
        half = float(n) / 2
        yield np.array([half, half]), (f"+N/2 ({half:g} px) in x and y: a patch's top-left corner taken for its "
                                       "centre (a slice obj[y:y+N, x:x+N] where the spec centres the patch)")
        yield np.array([-half, -half]), f"-N/2 ({half:g} px) in x and y: a patch's centre taken for its corner"
    objects = [np.shape(value) for key, value in p.stage_inputs.items()
               if key != name and p.input_layouts.get(key) == "HW" and np.ndim(value) == 2]
    if len(objects) == 1:
        height, width = objects[0]
        centre = np.array([width / 2, height / 2])
        yield centre, (f"+(W/2, H/2) = ({centre[0]:g}, {centre[1]:g}) px: positions counted from the object's "
                       "centre where its pixel (0, 0) is meant")
        yield -centre, (f"-(W/2, H/2) = ({-centre[0]:g}, {-centre[1]:g}) px: positions counted from the object's "
                        "pixel (0, 0) where its centre is meant")


def _transforms(p: Problem) -> Iterator[Transform]:
    spatial_inputs = {}
    for name, value in p.stage_inputs.items():
        x = np.asarray(value)
        layout = p.input_layouts.get(name)
        if layout == "B12C" and x.ndim == 4 and x.shape[2] == 2:
            for kind, words, moved in _offset_transforms(name, x):
                yield kind, words, {name: moved}, None
        elif layout == "M2" and x.ndim == 2 and x.shape[1] == 2:
            yield "offset_swap_xy", f"x and y of input {name!r} swapped (column/row order)", {name: x[:, ::-1]}, None
            for rounding, word in ((np.round, "rounded"), (np.floor, "floored")):
                yield ("offsets_rounded", f"the positions of input {name!r} {word} to whole pixels (nearest-pixel "
                                          "placement or an integer cast)", {name: rounding(x)}, None)
            for move, word in (((0.5, 0.5), "+0.5"), ((-0.5, -0.5), "-0.5"), ((0.5, 0.0), "+0.5 in x"),
                               ((0.0, 0.5), "+0.5 in y"), ((-0.5, 0.0), "-0.5 in x"), ((0.0, -0.5), "-0.5 in y")):
                yield ("offset_half_pixel", f"the positions of input {name!r} moved by {word} pixel (a pixel's "
                                            "centre where its corner is meant: N/2 vs (N-1)/2, align_corners)",
                       {name: x + np.asarray(move)}, None)
            for move, words in _origin_moves(p, name):
                yield "positions_origin", f"the positions of input {name!r} moved by {words}", {name: x + move}, None
        elif layout == "BHWC" and x.ndim == 4:
            for kind, words, moved in _image_transforms(name, x):
                yield kind, words, {name: moved}, None
            if np.iscomplexobj(x):
                yield "conjugate", f"input {name!r} conjugated (its phase sign flipped)", {name: np.conj(x)}, None
        if layout in ("BHWC", "HW") and x.ndim in (2, 4):
            axes = (1, 2) if x.ndim == 4 else (0, 1)
            if x.shape[axes[0]] == x.shape[axes[1]]:
                spatial_inputs[name] = np.swapaxes(x, *axes)
        if layout == "HW" and np.iscomplexobj(x):
            yield "conjugate", f"input {name!r} conjugated (its phase sign flipped)", {name: np.conj(x)}, None
            if x.shape[0] == x.shape[1]:
                yield "transpose", f"input {name!r} transposed (x/y swapped)", {name: x.T}, None
    out_axes = {"BHWC": (1, 2), "HW": (0, 1)}.get(p.layout)
    if spatial_inputs and out_axes and p.a.shape[out_axes[0]] == p.a.shape[out_axes[1]]:
        yield ("transpose", "the stage computes on transposed spatial axes (e.g. convolution kernels with H and W "
                            "swapped: (H, W, in, out) mapped to (out, in, W, H))", spatial_inputs,
               lambda out: np.swapaxes(out, *out_axes))
    # a convolution with its kernels rotated by 180 degrees is the same convolution of the rotated image, rotated
    # back (odd kernels, symmetric 'same' padding, pooling on even sizes)
    rotated = {name: np.flip(np.asarray(value), axis=(1, 2) if np.ndim(value) == 4 else (0, 1))
               for name, value in p.stage_inputs.items() if p.input_layouts.get(name) == "BHWC" and np.ndim(value) == 4}
    if rotated and p.layout == "BHWC" and p.a.ndim == 4:
        yield ("kernel_flip", "the stage's kernels are rotated by 180 degrees (a convolution where the reference "
                              "cross-correlates, or a kernel flipped when the weights were mapped)", rotated,
               lambda out: np.flip(out, axis=(1, 2)))


def rerun_inputs(p: Problem) -> list[Diagnosis]:
    started = time.monotonic()
    out = []
    for count, (kind, words, changed, undo) in enumerate(_transforms(p)):
        if count >= MAX_RERUNS or time.monotonic() - started > MAX_SECONDS:
            break
        if all(np.array_equal(value, np.asarray(p.stage_inputs[name])) for name, value in changed.items()):
            continue  # the transform changes nothing here (C = 1, zero offsets, ...)
        inputs = dict(p.stage_inputs)
        inputs.update({name: np.ascontiguousarray(value).astype(np.asarray(p.stage_inputs[name]).dtype)
                       for name, value in changed.items()})
        try:
            result = np.asarray(p.rerun(inputs))
        except Exception:  # noqa: BLE001 - the reference cannot run this transform: it explains nothing
            continue
        if undo is not None:
            result = undo(result)
        if result.shape != p.b.shape:
            continue
        keep = p.finite & np.isfinite(result)
        if not keep.any():
            continue
        residual = float(np.abs(result[keep] - p.b[keep]).max()) / p.peak
        out.append(Diagnosis(kind, f"the reference's stage gives the candidate when {words}", residual,
                             {"inputs": sorted(changed), "rerun": True}))
        if p.complete(residual):
            break  # the candidate is reproduced: the remaining transforms cannot do better
    return out


TESTS = (rerun_inputs,)
