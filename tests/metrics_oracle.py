"""A deliberately plain float64 implementation of every comparison statistic, for the tests.

Whole arrays, no chunks, no screening, no engines: what the numbers mean, written the
obvious way (complex128 for everything), against which ``parity.metrics`` is checked.
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = {"BHWC": (True, 3, (1, 2)), "HW": (False, None, (0, 1)), "B12C": (True, 3, None),
           "M2": (True, None, None), "B": (True, None, None), "scalar": (False, None, None)}


def _ratio(err, peak):
    return 0.0 if err == 0 else (err / peak if peak > 0 else math.inf)


def _group_max(values, labels, n):
    out = np.zeros(n)
    for i in range(n):
        sel = values[labels == i]
        out[i] = sel.max() if sel.size else 0.0
    return out


def oracle(a, b, *, layout=None, regions=None, border_fraction=0.25, phase_floor=1e-3, atol=None, rtol=None):
    a, b = np.asarray(a), np.asarray(b)
    complex_ = a.dtype.kind == "c" or b.dtype.kind == "c"
    work = np.complex128 if complex_ else np.float64
    A, B = a.astype(work), b.astype(work)
    fa, fb = np.isfinite(A), np.isfinite(B)
    pair = fa & fb
    absa = np.where(fa, np.abs(np.where(fa, A, 0)), 0.0)
    d = np.where(pair, np.abs(np.where(pair, B - A, 0)), 0.0)
    out = {"n_compared": int(pair.sum()), "reference_peak": float(absa.max()) if a.size else 0.0}
    flat_pairs = np.flatnonzero(pair.ravel())
    if flat_pairs.size:
        key = np.where(pair.ravel(), d.ravel(), -1.0)
        w = int(np.argmax(key))
        out["worst_index"] = tuple(int(i) for i in np.unravel_index(w, a.shape))
        out["max_abs_error"] = float(d.ravel()[w])
    else:
        out["worst_index"], out["max_abs_error"] = None, 0.0
    out["max_rel_to_peak"] = _ratio(out["max_abs_error"], out["reference_peak"])
    n = max(out["n_compared"], 1)
    out["mean_abs_error"] = float(d[pair].sum()) / n if out["n_compared"] else 0.0
    out["rms_error"] = math.sqrt(float((d[pair] ** 2).sum()) / n) if out["n_compared"] else 0.0
    ap, bp = A[pair], B[pair]
    na, nb, dot = float(np.vdot(ap, ap).real), float(np.vdot(bp, bp).real), float(np.vdot(ap, bp).real)
    out["cosine_similarity"] = min(1.0, max(-1.0, dot / math.sqrt(na * nb))) if na and nb else float(na == nb)
    if atol is not None or rtol is not None:
        out["n_out_of_tolerance"] = int(np.count_nonzero(d[pair] > (atol or 0.0) + (rtol or 0.0) * np.abs(ap)))
    if complex_:
        out["magnitude_max_abs_error"] = float(np.abs(np.abs(bp) - np.abs(ap)).max()) if ap.size else 0.0
        keep = np.abs(ap) >= phase_floor * out["reference_peak"]
        phase = np.abs(np.angle(bp[keep] * np.conj(ap[keep])))
        out["phase_max_abs_error"] = float(phase.max()) if phase.size else 0.0
    out["breakdown"] = _breakdown(a.shape, d, absa, layout, regions or {}, border_fraction)
    out["max_rel_to_sample_peak"] = out["breakdown"].pop("sample_ratio")
    return out


def _breakdown(shape, d, absa, layout, regions, border_fraction):
    if layout is None:
        samples, channel, spatial = len(shape) >= 1, None, None
    else:
        samples, channel, spatial = LAYOUTS[layout]
    index = np.indices(shape) if shape else np.zeros((0,), int)
    ns = shape[0] if samples else 1
    sample_of = index[0] if samples else np.zeros(shape, int)
    s_err, s_peak = _group_max(d, sample_of, ns), _group_max(absa, sample_of, ns)
    s_ratio = [_ratio(e, p) for e, p in zip(s_err, s_peak)]
    order = sorted(range(ns), key=lambda i: (-s_ratio[i], i))[:5]
    out = {"by_sample": [{"sample": i, "max_abs_error": s_err[i], "peak": s_peak[i], "max_rel": s_ratio[i]}
                         for i in order] if samples else [],
           "by_channel": [], "regions": {}, "sample_ratio": max(s_ratio) if s_ratio else 0.0}
    if channel is not None:
        nc = shape[channel]
        c_err, c_peak = _group_max(d, index[channel], nc), _group_max(absa, index[channel], nc)
        c_ratio = [_ratio(e, p) for e, p in zip(c_err, c_peak)]
        order = sorted(range(nc), key=lambda i: (-c_ratio[i], i))[:5]
        out["by_channel"] = [{"channel": i, "max_abs_error": c_err[i], "peak": c_peak[i], "max_rel": c_ratio[i]}
                             for i in order]
    masks = dict(regions)
    width = None
    if spatial is not None:
        side = min(shape[spatial[0]], shape[spatial[1]])
        width = min(int(math.floor(border_fraction * side + 0.5)), side // 2)
        rows, cols = index[spatial[0]], index[spatial[1]]
        interior = ((rows >= width) & (rows < shape[spatial[0]] - width)
                    & (cols >= width) & (cols < shape[spatial[1]] - width))
        masks = {"interior": interior, "border": ~interior, **masks}
    for name, mask in masks.items():
        mask = np.asarray(mask, bool)
        err, peak = (float(x[mask].max()) if mask.any() else 0.0 for x in (d, absa))
        r_err, r_peak = (_group_max(np.where(mask, x, 0.0), sample_of, ns) for x in (d, absa))
        out["regions"][name] = {"max_abs_error": err, "peak": peak, "max_rel": _ratio(err, peak),
                                "max_rel_to_sample_peak": max(_ratio(e, p) for e, p in zip(r_err, r_peak)),
                                "elements": int(mask.sum())}
    out["border_width"] = width
    return out
