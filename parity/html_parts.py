"""Blocks of one tap's section in ``report.html``: metrics side by side, breakdown, diagnoses, statistics.

Each function takes the JSON document's tap entry (``report.json``) and
returns an HTML fragment; fields added by other engineers (``breakdown``,
``diagnoses``, ``status``/``reason``) are optional everywhere.
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from .report import format_margin, margin
from .results import error_word

MODES = ("propagated", "isolated")


def verdict_badge(passed: bool | None, status: str | None = None) -> str:
    unjudged = {"not_compared": "not compared", "not_provided": "not compared",
                "not_comparable": "not comparable"}.get(status or "", "not judged")
    label, css = {True: ("PASS", "PASS"), False: ("FAIL", "FAIL")}.get(passed, (unjudged, "NOTJUDGED"))
    return f'<span class="badge {css}">{label}</span>'


JUDGED = ("passed", "failed", "error")  # a mode status with a verdict; anything else says why there is none


def why_not_compared(tap: dict[str, Any]) -> str:
    """Why a tap lacks a verdict in some mode (the ``skipped`` text of each mode), or ''."""
    reasons = []
    for mode, result in tap.get("modes", {}).items():
        status = result.get("status")
        if status in JUDGED or (status is None and result.get("passed") is not None):
            continue
        text = result.get("skipped") or result.get("reason") or status
        if text:
            reasons.append(f"{mode}: {text}")
    if len(reasons) > 1 and len({reason.split(": ", 1)[1] for reason in reasons}) == 1:
        return reasons[0].split(": ", 1)[1]  # the same reason in every mode: say it once
    return "; ".join(reasons)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt(v, digits) for v in value) + ")"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.{digits - 1}e}"


def fmt_value(value: Any, digits: int = 7) -> str:
    """A metric value as report.json writes it: complex numbers are [re, im]."""
    if isinstance(value, list) and len(value) == 2:
        imag = fmt(value[1], digits)
        return f"{fmt(value[0], digits)}{'' if imag.startswith('-') else '+'}{imag}j"
    return fmt(value, digits)


def criteria_text(criteria: dict[str, Any] | None) -> str:
    if not criteria:
        return "-"
    parts = []
    for key, label in (("max_rel_to_peak", "rel ≤"), ("max_abs", "abs ≤"), ("atol", "atol "), ("rtol", "rtol "),
                       ("min_cosine", "cos ≥"), ("max_phase_error", "phase ≤")):
        if criteria.get(key) is not None:
            parts.append(f"{label}{fmt(criteria[key], 2)}")
    if criteria.get("allow_nonfinite"):
        parts.append("NaN/Inf allowed where both agree")
    return ", ".join(parts) or "none"


def _metric_rows(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """label -> (cell html, css class) for one mode."""
    rows: dict[str, tuple[str, str]] = {}
    tolerance = result.get("tolerance") or {}
    rows["verdict"] = (verdict_badge(result.get("passed"), result.get("status")), "")
    rows["tolerance"] = (escape(criteria_text(tolerance.get("criteria"))) + (
        f"<br><span class='dim'>{escape(tolerance.get('source', ''))}</span>" if tolerance.get("source") else ""), "")
    value = margin(result)
    rows["margin (error / tolerance)"] = (format_margin(value), "dim" if value is None else
                                          ("good" if value < 1 else "bad"))
    if result.get("error"):
        rows[error_word(result.get("error_kind"))] = (f"<code>{escape(result['error'])}</code>", "bad")
    for key in ("skipped", "note"):
        if result.get(key):
            rows[key] = (escape(str(result[key])), "dim")
    metrics = result.get("metrics") or {}
    if not metrics:
        return rows
    bad = not metrics.get("passed")
    rows["max |a−b| / max |a|"] = (fmt(metrics.get("max_rel_to_peak")), "bad num" if bad else "num")
    for key, label in (("max_abs_error", "max |a−b|"), ("reference_peak", "max |a|"),
                       ("mean_abs_error", "mean |a−b|"), ("rms_error", "rms error"), ("cosine_similarity", "cosine")):
        rows[label] = (fmt(metrics.get(key), 10 if key == "cosine_similarity" else 3), "num")
    if metrics.get("n_out_of_tolerance") is not None and (metrics.get("criteria") or {}).get("atol") is not None:
        fraction = fmt(metrics.get("fraction_out_of_tolerance"))
        rows["outside atol/rtol"] = (f"{metrics['n_out_of_tolerance']} ({fraction})", "num")
    if metrics.get("worst_index") is not None:
        rows["worst element"] = (f"{fmt(metrics['worst_index'])}: {fmt_value(metrics.get('worst_reference'))} → "
                                 f"{fmt_value(metrics.get('worst_candidate'))}", "")
    if metrics.get("complex"):
        rows["modulus: max rel."] = (fmt(metrics.get("magnitude_max_rel_to_peak")), "num")
        rows["phase: max error (rad)"] = (fmt(metrics.get("phase_max_abs_error")), "num")
    nonfinite = [metrics.get(k) or 0 for k in ("nan_reference", "inf_reference", "nan_candidate", "inf_candidate")]
    if any(nonfinite):
        rows["NaN / Inf"] = (f"reference {nonfinite[0]} / {nonfinite[1]}, candidate {nonfinite[2]} / {nonfinite[3]}",
                             "bad" if metrics.get("nonfinite_positions_agree") is False else "")
    if not metrics.get("shape_match", True) or not metrics.get("dtype_match", True):
        rows["shape / dtype"] = (f"reference {fmt(metrics.get('reference_shape'))} {metrics.get('reference_dtype')}, "
                                 f"candidate {fmt(metrics.get('candidate_shape'))} {metrics.get('candidate_dtype')}",
                                 "bad")
    return rows


def metrics_table(tap: dict[str, Any]) -> str:
    """The tap's metrics, tolerance and margin, propagated and isolated side by side."""
    modes = tap.get("modes", {})
    columns = [mode for mode in MODES if mode in modes] + [mode for mode in modes if mode not in MODES]
    if not columns:
        return '<p class="note">no mode was run for this tap</p>'
    cells = {mode: _metric_rows(modes[mode]) for mode in columns}
    labels: list[str] = []
    for mode in columns:
        labels += [label for label in cells[mode] if label not in labels]
    rows = []
    for label in labels:
        row = "".join(f'<td class="{cells[m].get(label, ("", "dim"))[1]}">{cells[m].get(label, ("-", ""))[0]}</td>'
                      for m in columns)
        rows.append(f"<tr><th>{escape(label)}</th>{row}</tr>")
    failures: dict[str, list[str]] = {}  # one line per failure, with the modes it occurs in
    for mode in columns:
        for line in ((modes[mode] or {}).get("metrics") or {}).get("failures") or []:
            failures.setdefault(line, []).append(mode)
    listed = "".join(f"<li><code>{escape(line)}</code> <span class='dim'>({', '.join(where)})</span></li>"
                     for line, where in failures.items())
    return ("<table class='metrics'><tr><th></th>" + "".join(f"<th>{m}</th>" for m in columns) + "</tr>"
            + "".join(rows) + "</table>" + (f"<ul class='msgs bad'>{listed}</ul>" if listed else ""))


def _ranked(title: str, key: str, entries: list[dict[str, Any]]) -> str:
    if not entries:
        return ""
    rows = "".join(f"<tr><td class='num'>{fmt(e.get(key))}</td><td class='num'>{fmt(e.get('max_abs_error'))}</td>"
                   f"<td class='num'>{fmt(e.get('peak'))}</td><td class='num'>{fmt(e.get('max_rel'))}</td></tr>"
                   for e in entries)
    return (f"<h4>{title}</h4><table><tr><th>{key}</th><th>max |a−b|</th><th>peak</th><th>max rel.</th></tr>"
            + rows + "</table>")


def _one_breakdown(breakdown: dict[str, Any]) -> str:
    worst = breakdown.get("worst") or {}
    parts = [f"<p class='meta'>worst: sample {fmt(worst.get('sample'))}, channel {fmt(worst.get('channel'))}, "
             f"index {fmt(worst.get('index'))}</p>"]
    regions = breakdown.get("regions") or {}
    if regions:
        peak_rel = max((float(r.get("max_rel") or 0) for r in regions.values()
                        if not isinstance(r.get("max_rel"), str)), default=0.0)
        rows = "".join(f"<tr><td>{escape(name)}</td><td class='num'>{fmt(r.get('max_abs_error'))}</td>"
                       f"<td class='num'>{fmt(r.get('peak'))}</td>"
                       f"<td class='num{' bad' if peak_rel and r.get('max_rel') == peak_rel else ''}'>"
                       f"{fmt(r.get('max_rel'))}</td></tr>" for name, r in regions.items())
        parts.append(f"<h4>Regions (border band {fmt(breakdown.get('border_width'))} px)</h4><table><tr><th>region</th>"
                     f"<th>max |a−b|</th><th>peak</th><th>max rel.</th></tr>{rows}</table>")
    parts.append(_ranked("By sample (top 5)", "sample", breakdown.get("by_sample") or []))
    parts.append(_ranked("By channel", "channel", breakdown.get("by_channel") or []))
    return "".join(parts)


def breakdown_block(tap: dict[str, Any]) -> str:
    """Where the error is (``metrics.breakdown``, computed by the comparator), per mode side by side."""
    columns = []
    for mode in MODES:
        breakdown = ((tap.get("modes", {}).get(mode) or {}).get("metrics") or {}).get("breakdown")
        if breakdown:
            columns.append(f"<div><h4>{mode}</h4>{_one_breakdown(breakdown)}</div>")
    return "<h4>Where the error is</h4><div class='cols'>" + "".join(columns) + "</div>" if columns else ""


def diagnoses_block(tap: dict[str, Any]) -> str:
    rows = []
    for mode in MODES:
        for diagnosis in (tap.get("modes", {}).get(mode) or {}).get("diagnoses") or []:
            rows.append(f"<tr><td>{mode}</td><td><code>{escape(str(diagnosis.get('kind', '')))}</code></td>"
                        f"<td>{escape(str(diagnosis.get('summary', '')))}</td>"
                        f"<td class='num'>{fmt(diagnosis.get('residual'))}</td></tr>")
    if not rows:
        return ""
    return ("<h4>Diagnoses</h4><table><tr><th>mode</th><th>kind</th><th>summary</th><th>residual</th></tr>"
            + "".join(rows) + "</table>")


def values_table(tap: dict[str, Any], samples: dict) -> str:
    """Kept values of a per-sample or scalar tap, reference against candidate."""
    kept = samples.get(("propagated", tap["name"])) or samples.get(("isolated", tap["name"]))
    if kept is None or kept.index.size == 0 or kept.mismatch or kept.reference[0].size > 16:
        return ""
    rows = []
    for row, index in enumerate(kept.index):
        a, b = np.ravel(kept.reference[row]), np.ravel(kept.candidate[row])
        rows.append(f"<tr><td class='num'>{int(index) if kept.batched else '-'}</td><td class='num'>"
                    f"{fmt([float(v) for v in a] if a.size > 1 else float(np.real(a[0])), 9)}</td><td class='num'>"
                    f"{fmt([float(v) for v in b] if b.size > 1 else float(np.real(b[0])), 9)}</td>"
                    f"<td class='num'>{fmt(float(kept.error[row]))}</td></tr>")
    return (f"<h4>Kept values ({kept.mode})</h4><table><tr><th>sample</th><th>reference</th><th>candidate</th>"
            "<th>max |a−b|</th></tr>" + "".join(rows) + "</table>")


def _drift(reference: Any, value: Any) -> bool:
    try:
        r, v = float(reference), float(value)
    except (TypeError, ValueError):
        return reference != value
    if r != r or v != v:
        return (r != r) != (v != v)
    return abs(v - r) > 1e-3 * max(abs(r), 1e-12)


def _stats_rows(labels, first: dict[str, Any], sides: list[str]) -> str:
    rows = []
    for label, get in labels:
        reference = get(first["reference"]) if "reference" in first else None
        cells = "".join(
            f"<td class='num{' drift' if side != 'reference' and _drift(reference, get(first[side])) else ''}'>"
            f"{fmt(get(first[side]), 6)}</td>" for side in sides)
        rows.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return "".join(rows)


def patch_stats_table(entry: dict[str, Any] | None) -> str:
    """Batch 0's patch statistics, reference and candidate side by side (drifts over 1e-3 relative shaded);
    the first patches' own statistics fold out."""
    if not entry:
        return ""
    sides = [side for side in ("reference", *MODES) if entry.get(side)]
    if not sides:
        return ""
    first = {side: entry[side][0] for side in sides}
    overall = [(key, lambda b, key=key: b[key]) for key in ("mean", "std", "var_zero_mean")]
    patches = []
    for k in range(len(first[sides[0]]["first_patches"])):
        for stat in ("mean", "std", "min", "max"):
            patches.append((f"patch {fmt(first[sides[0]]['first_patches'][k]['index'])} {stat}",
                            lambda b, k=k, stat=stat: b["first_patches"][k][stat]
                            if k < len(b["first_patches"]) else None))
    header = "<tr><th></th>" + "".join(f"<th>{'candidate, ' if s != 'reference' else ''}{s}</th>"
                                       for s in sides) + "</tr>"
    seen = entry.get("batches_seen", {})
    return (f"<h4>Patch statistics ({escape(str(entry.get('value')))}, batch 0 of {max(seen.values()) if seen else 1};"
            " every batch in patch_stats.json)</h4><table>" + header + _stats_rows(overall, first, sides) + "</table>"
            "<details><summary>first patches</summary><table>" + header + _stats_rows(patches, first, sides)
            + "</table></details>")
