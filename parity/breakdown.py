"""Where the error of a tap is: ``metrics.breakdown``, a JSON-able dict.

::

    {"worst": {"sample": int | None, "channel": int | None, "index": [...] | None},
     "by_sample":  [{"sample", "max_abs_error", "peak", "max_rel"}, ...],   # top 5 by max_rel
     "by_channel": [{"channel", "max_abs_error", "peak", "max_rel"}, ...],  # top 5; taps with channels
     "regions": {"interior": {...}, "border": {...}, "covered": {...}, ...},
     "border_width": int | None}

A row's ``max_rel`` is its max |a-b| over its own max |a| (0 when both are 0,
inf when only the peak is).  A region (``interior`` and ``border`` of an image
tap, plus the regions the registry supplies, e.g. ``covered``) has
``max_abs_error``, ``peak``, ``max_rel`` relative to the region's own peak,
``max_rel_to_sample_peak`` (the largest over samples of the region's error in
the sample over the region's peak in the sample) and ``elements``.  Values are
computed in the tap's precision (``metrics.max_abs_error`` is float64 at the
worst element, so the two can differ in the last digits of a float32 tap).
"""

from __future__ import annotations

import numpy as np

from .accumulator import TOP, Accumulator, ratio, ratios


def _row(err: float, peak: float) -> dict:
    return {"max_abs_error": float(err), "peak": float(peak), "max_rel": ratio(float(err), float(peak))}


def region_summaries(acc: Accumulator) -> dict[str, dict]:
    return {name: {**_row(state.err, state.peak), "max_rel_to_sample_peak": state.sample_ratio,
                   "elements": state.elements}
            for name, state in acc.regions.items()}


def build(acc: Accumulator, worst_index: tuple | None) -> dict:
    geom = acc.geom
    worst = {"sample": None, "channel": None, "index": None if worst_index is None else list(worst_index)}
    if worst_index is not None:
        if geom.has_samples:
            worst["sample"] = int(worst_index[0])
        if geom.channel_axis is not None:
            worst["channel"] = int(worst_index[geom.channel_axis])
    by_sample = []
    if geom.has_samples:
        by_sample = [{"sample": sample, **_row(err, peak)} for _, sample, err, peak in acc.top]
    by_channel = []
    if geom.channel_axis is not None:
        channel_ratio = ratios(acc.channel_err, acc.channel_peak)
        order = np.lexsort((np.arange(len(channel_ratio)), -channel_ratio))[:TOP]
        by_channel = [{"channel": int(c), **_row(acc.channel_err[c], acc.channel_peak[c])} for c in order]
    return {"worst": worst, "by_sample": by_sample, "by_channel": by_channel,
            "regions": region_summaries(acc), "border_width": geom.border_width}
