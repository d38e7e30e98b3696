"""Channel hypotheses on the outputs alone: channels in another order, the flattened (batch, channel)
order permuted, and channels-first memory read as channels-last (a reshape where a permute was meant)."""

from __future__ import annotations

import numpy as np

from .diagnosis_core import Diagnosis, Problem, from_images, to_images


def _match(a_images: np.ndarray, b_images: np.ndarray) -> np.ndarray | None:
    """For each candidate image j, the reference image closest to it; None unless that is a permutation."""
    cost = np.empty((len(b_images), len(a_images)))
    for j, image in enumerate(b_images):
        cost[j] = np.abs(a_images - image).reshape(len(a_images), -1).max(axis=1)
    order = np.argmin(cost, axis=1)
    return order if np.unique(order).size == order.size else None


def channel_permutation(p: Problem) -> list[Diagnosis]:
    if p.layout != "BHWC":
        return []
    k, h, w, c = p.a.shape
    a0, b0 = np.where(p.finite, p.a, 0), np.where(p.finite, p.b, 0)
    out = []
    if c > 1:  # channels-first memory read as channels-last, and the reverse
        for name, misread in (("channels-first data read as channels-last",
                               lambda x: np.moveaxis(x, 3, 1).reshape(k, h, w, c)),
                              ("channels-last data read as channels-first",
                               lambda x: np.moveaxis(x.reshape(k, c, h, w), 1, 3))):
            residual = float(np.abs(misread(a0) - b0)[p.finite].max()) / p.peak
            out.append(Diagnosis("channel_permutation", f"candidate = reference with its memory reinterpreted: {name} "
                                 f"(a reshape where a permute was meant)", residual, {"variant": name}))
    images = k * c
    if images < 2 or images > 256:
        return out
    a_images, b_images = to_images(a0, "BHWC"), to_images(b0, "BHWC")
    order = _match(a_images, b_images)
    if order is None or np.array_equal(order, np.arange(images)):
        return out
    corrected = from_images(a_images[order], p.a.shape, "BHWC")
    residual = float(np.abs(corrected - b0)[p.finite].max()) / p.peak
    sample_of = order // c
    if np.array_equal(sample_of, np.arange(images) // c):
        perms = (order % c).reshape(k, c)
        same = all(np.array_equal(row, perms[0]) for row in perms)
        what = f"channels in another order: candidate channel j = reference channel {perms[0].tolist()}[j]" if same \
            else "channels in another order, differently per sample"
        out.append(Diagnosis("channel_permutation", what + _grid_words(perms[0], p.cfg), residual,
                             {"order": perms.tolist()}))
    else:
        cb = np.arange(images).reshape(k, c).T.ravel()  # (C, B) order read as (B, C)
        what = ("the flattened (batch, channel) order differs: flattened (channel, batch) read as (batch, channel)"
                if np.array_equal(order, cb) or np.array_equal(np.argsort(order), cb)
                else "the flattened (batch, channel) order is permuted: patches land in other samples")
        out.append(Diagnosis("channel_permutation", what, residual, {"order": order.tolist(), "batch_crossing": True}))
    return out


def _grid_words(perm: np.ndarray, cfg) -> str:
    g = getattr(cfg, "gridsize", 0)
    if g > 1 and len(perm) == g * g and np.array_equal(perm, [(j % g) * g + j // g for j in range(g * g)]):
        return " (the g x g grid read column-major instead of row-major)"
    if np.array_equal(perm, np.arange(len(perm))[::-1]):
        return " (reversed)"
    return ""
