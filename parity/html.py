"""``report.html``: one self-contained static page per case (PNG data URIs, inline CSS, no JavaScript).

It is rendered from the saved ``report.json`` document and the evidence files
beside it (``samples.h5``, ``patch_stats.json``, ``canvas.json``,
``offsets.json``, ``patches-<tap>.png``), so ``parity report DIR`` re-renders a
saved run exactly. Taps appear in stage order; each section's id is
``tap-<name>``; the first divergence is marked ``class="tap ... first"``.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from .evidence import load_samples, read_json, region_split
from .html_parts import (breakdown_block, diagnoses_block, metrics_table, patch_stats_table, values_table,
                         verdict_badge, why_not_compared)
from .patch_stats import spatial_axes
from .report import format_margin, margin
from .results import accumulated_words, error_word

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2430;background:#f4f6f9}
main{max-width:1340px;margin:0 auto;padding:18px 22px 60px}
h1{font-size:22px;margin:6px 0 2px} h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #d5dbe3}
h3{font-size:16px;margin:0 0 6px} h4{font-size:13px;margin:12px 0 4px;color:#3d4a5c}
.meta{color:#5b6675;font-size:13px} code{font-size:12.5px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.NOTJUDGED{background:#78818c}
.summary{background:#fff;border:1px solid #d5dbe3;border-left:6px solid #2e7d32;padding:10px 16px;border-radius:6px}
.summary.failed{border-left-color:#c62828}
table{border-collapse:collapse;margin:4px 0 8px;background:#fff;font-size:12.5px}
th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600;white-space:nowrap} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.bad,span.bad{color:#c62828;font-weight:600} td.good{color:#2e7d32} td.dim,span.dim{color:#8a94a3}
td.drift{background:#fde7e7} table.metrics td{max-width:250px;overflow-wrap:anywhere}
ul.bad code{color:#c62828;white-space:pre-wrap}
section.tap{background:#fff;border:1px solid #d5dbe3;border-radius:6px;padding:12px 16px;margin:14px 0}
section.tap.fail{border-left:6px solid #c62828} section.tap.pass{border-left:6px solid #2e7d32}
section.tap.unjudged{border-left:6px solid #78818c}
section.tap.first{box-shadow:0 0 0 3px #ffb3b3}
.firstmark{color:#c62828;font-weight:700;margin-left:8px}
.cols{display:flex;gap:18px;flex-wrap:wrap} .cols>div{flex:1 1 340px;min-width:0}
.pair{display:grid;grid-template-columns:minmax(0,1fr) auto;gap:20px;align-items:start}
@media (max-width:1100px){.pair{grid-template-columns:minmax(0,1fr)}}
img{max-width:100%;height:auto;display:block;margin:6px 0;border:1px solid #e3e7ec}
.note{color:#5b6675;font-size:12.5px} ul.msgs{margin:4px 0;padding-left:20px} pre{font-size:11.5px;overflow:auto}
details{margin:8px 0} summary{cursor:pointer;font-weight:600}
"""


def _image(png: bytes, width: int, height: int, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{escape(alt)}">')


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def tap_anchor(name: str) -> str:
    return f"tap-{name}"


def _link(name: str) -> str:
    return f'<a href="#{escape(tap_anchor(name))}"><code>{escape(name)}</code></a>'


def _state(tap: dict[str, Any]) -> str:
    return {True: "pass", False: "fail"}.get(tap.get("passed"), "unjudged")


def _summary(document: dict[str, Any]) -> str:
    passed = document.get("passed")
    taps = document.get("taps", [])
    parts = [f'<section class="summary{"" if passed else " failed"}" id="summary"><h2 style="margin-top:4px">'
             f'Summary {verdict_badge(passed)}</h2>']
    divergence = document.get("first_divergence")
    if divergence:
        where = _link(divergence["tap"]) if divergence.get("tap") else f"<b>{escape(divergence['mode'])}</b> audit"
        parts.append(f"<p><b>First divergence:</b> {where} ({escape(divergence['mode'])})"
                     + (" — " + escape(accumulated_words(divergence.get("unjudged_upstream") or [])) if divergence.get("inherited") else "") + "</p>")
        parts.append('<ul class="msgs">' + "".join(f"<li><code>{escape(m)}</code></li>"
                                                   for m in divergence.get("messages", [])[:4]) + "</ul>")
    elif document.get("stopped"):  # a run that ended before its verdict (a crash report has no taps at all)
        parts.append(f"<p><b>Stopped</b> ({escape(str(document.get('stop_kind') or 'run'))}): "
                     f"<code>{escape(str(document['stopped']))}</code></p>")
    else:
        parts.append("<p>No divergence: every tap is within its tolerance in every mode judged.</p>")
    if document.get("stopped") and divergence and divergence.get("mode") != "stopped":
        parts.append(f"<p><b>Stopped</b>: <code>{escape(str(document['stopped']))}</code></p>")
    judged = sum(tap.get("passed") is True for tap in taps)
    parts.append(f"<p>{judged}/{len(taps)} taps within tolerance.</p>")
    failing = [tap for tap in taps if tap.get("passed") is False and tap["name"] != (divergence or {}).get("tap")]
    if failing:
        parts.append("<p>Also failing: " + ", ".join(
            f"{_link(tap['name'])} ({' / '.join(m for m, r in tap['modes'].items() if r.get('passed') is False)})"
            for tap in failing) + "</p>")
    for audit in document.get("audits", []):
        if not audit.get("passed"):
            parts.append(f"<p><b>{escape(audit['name'])} audit failed:</b></p><ul class='msgs'>"
                         + "".join(f"<li>{escape(m)}</li>" for m in audit.get("messages", [])) + "</ul>")
    missing = [(tap["name"], why_not_compared(tap)) for tap in taps]
    missing = [(name, why) for name, why in missing if why]
    if missing:
        parts.append("<p><b>Not judged in every mode:</b></p><ul class='msgs'>" + "".join(
            f"<li>{_link(name)}: {escape(why)}</li>" for name, why in missing) + "</ul>")
    for note in document.get("notes", []):
        parts.append(f'<p class="note">note: {escape(note)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _depth_plot(document: dict[str, Any]) -> str:
    from .figures import error_vs_depth

    taps = document.get("taps", [])
    if not taps:
        return ""
    modes = document.get("modes") or ["propagated", "isolated"]
    errors, limits, raised, failed = {}, {}, {}, {}
    for mode in modes:
        rows = [tap["modes"].get(mode) or {} for tap in taps]
        errors[mode] = [(row.get("metrics") or {}).get("max_rel_to_peak") for row in rows]
        limits[mode] = [((row.get("tolerance") or {}).get("criteria") or {}).get("max_rel_to_peak") for row in rows]
        raised[mode] = [bool(row.get("error")) for row in rows]
        failed[mode] = [row.get("passed") is False for row in rows]
    names = [tap["name"] for tap in taps]
    divergence = (document.get("first_divergence") or {}).get("tap")
    picture = error_vs_depth(names, errors, limits, raised, names.index(divergence) if divergence in names else None,
                             failed)
    return "<h2>Error vs depth</h2>" + _image(picture.png, picture.width, picture.height, picture.alt)


def _overview(document: dict[str, Any]) -> str:
    rows = []
    divergence = (document.get("first_divergence") or {}).get("tap")
    for index, tap in enumerate(document.get("taps", [])):
        cells = []
        for mode in ("propagated", "isolated"):
            result = tap["modes"].get(mode)
            value = margin(result)
            metrics = (result or {}).get("metrics") or {}
            text = (error_word((result or {}).get("error_kind")) if (result or {}).get("error") else
                    "-" if not metrics else f"{metrics.get('max_rel_to_peak')}")
            try:
                text = f"{float(text):.1e}"
            except ValueError:
                pass
            style = "dim" if value is None else ("good" if value < 1 else "bad")
            cells.append(f'<td class="num {style}">{escape(text)}</td><td class="num {style}">'
                         f"{format_margin(value)}</td>")
        mark = ' <span class="firstmark">◀ first divergence</span>' if tap["name"] == divergence else ""
        shape = "x".join(str(d) for d in tap.get("shape", [])) or "()"
        rows.append(f"<tr><td class='num'>{index}</td><td>{_link(tap['name'])}{mark}</td><td>{shape}</td>"
                    f"{''.join(cells)}<td>{verdict_badge(tap.get('passed'), tap.get('status'))}</td></tr>")
    return ("<h2>Taps in stage order</h2><table><tr><th>#</th><th>tap</th><th>shape</th><th>propagated</th>"
            "<th>margin</th><th>isolated</th><th>margin</th><th>verdict</th></tr>" + "".join(rows) + "</table>"
            '<p class="note">error: max |a−b| / max |a|; margin: error / tolerance over every criterion set '
            "(below 1 passes).</p>")


def _pictures(tap: dict[str, Any], samples: dict) -> str:
    """Reference / candidate / |difference| of the worst samples: propagated, and isolated where it fails."""
    from .figures import comparison_picture, worst_rows

    parts = []
    for mode in ("propagated", "isolated"):
        kept = samples.get((mode, tap["name"]))
        result = tap["modes"].get(mode) or {}
        if kept is None or (mode == "isolated" and result.get("passed") is not False and
                            ("propagated", tap["name"]) in samples):
            continue
        breakdown = ((result.get("metrics") or {}).get("breakdown") or {}).get("worst")
        rows = worst_rows(kept, limit=1 if result.get("passed") else 2, hint=breakdown)
        if rows:
            picture = comparison_picture(rows, f"{tap['name']} ({mode}): worst sample(s), at their worst channel")
            parts.append(_image(picture.png, picture.width, picture.height, picture.alt))
    return "".join(parts)


def _grid(tap: dict[str, Any], samples: dict, directory: Path) -> str:
    """The patch grid PNG written beside the report (drawn from samples.h5 when the file is missing)."""
    from .figures import grid_path, patch_grid

    path = grid_path(directory, tap["name"])
    if path.exists():
        png = path.read_bytes()
        return _image(png, *_png_size(png), f"patch grid of {tap['name']}")
    kept = samples.get(("propagated", tap["name"])) or samples.get(("isolated", tap["name"]))
    picture = patch_grid(kept, 8) if kept is not None and kept.pictures == "patches" else None
    return "" if picture is None else _image(picture.png, picture.width, picture.height, picture.alt)


def _evidence_split(tap: dict[str, Any], samples: dict) -> str:
    """Interior vs border from the kept samples, for reports whose metrics carry no breakdown."""
    cells = []
    for mode in ("propagated", "isolated"):
        kept = samples.get((mode, tap["name"]))
        if kept is None or kept.index.size == 0 or kept.mismatch:
            continue
        layout = kept.layout if kept.batched else "B" + kept.layout
        split = region_split(kept.reference, kept.candidate, layout)
        if split is None:
            continue
        cells.append(f"<tr><td>{mode}</td>" + "".join(
            f"<td class='num'>{split[r]['max_abs_error']:.2e}</td><td class='num'>{split[r]['max_rel']:.2e}</td>"
            for r in ("interior", "border")) + f"<td class='num'>{split['border_width']}</td></tr>")
    if not cells:
        return ""
    return ("<h4>Interior vs border (from the kept samples; the comparator's breakdown is not in this report)</h4>"
            "<table><tr><th>mode</th><th>interior max |a−b|</th><th>interior rel.</th><th>border max |a−b|</th>"
            "<th>border rel.</th><th>border width</th></tr>" + "".join(cells) + "</table>")


def _tap_section(index: int, tap: dict[str, Any], first: str | None, samples: dict, stats: dict,
                 directory: Path) -> str:
    name = tap["name"]
    classes = f"tap {_state(tap)}" + (" first" if name == first else "")
    mark = '<span class="firstmark">◀ first divergence</span>' if name == first else ""
    inputs = ", ".join(_link(i) if i else "" for i in tap.get("inputs", [])) or "-"
    shape = "x".join(str(d) for d in tap.get("shape", [])) or "()"
    head = (f'<section class="{classes}" id="{escape(tap_anchor(name))}"><h3>#{index} <code>{escape(name)}</code> '
            f"{verdict_badge(tap.get('passed'), tap.get('status'))}{mark}</h3><p class='meta'>stage <code>{escape(str(tap.get('stage')))}"
            f"</code> · inputs {inputs} · {escape(tap.get('layout', ''))} {shape} {escape(tap.get('dtype', ''))} "
            f"({escape(tap.get('kind', ''))})</p>")
    why = why_not_compared(tap)
    left = [f'<p class="note">not judged: {escape(why)}</p>' if why else "", metrics_table(tap)]
    modes = tap.get("modes", {})
    spatial = spatial_axes(tap.get("layout", "")) is not None
    if any("breakdown" in ((modes[m] or {}).get("metrics") or {}) for m in modes):
        left.append(breakdown_block(tap))
    elif spatial:
        left.append(_evidence_split(tap, samples))
    left.append(diagnoses_block(tap))
    left.append(patch_stats_table(stats.get(name)) if spatial else values_table(tap, samples))
    right = _pictures(tap, samples) if spatial else ""
    body = [head, f"<div class='pair'><div class='left'>{''.join(left)}</div>"
                  f"<div class='right'>{right}</div></div>", _grid(tap, samples, directory)]
    return "".join(body) + "</section>"


def _assembly_cell(value: Any) -> str:
    from .html_parts import fmt

    if isinstance(value, list) and value and isinstance(value[0], list):  # the first offsets, (dx, dy) pairs
        return " ".join(fmt(pair, 4) for pair in value)
    return fmt(value, 6)


def _assembly(directory: Path) -> str:
    """``canvas.json`` and ``offsets.json`` as tables, one column per backend (and mode)."""
    parts = []
    for file in ("canvas.json", "offsets.json"):
        document = read_json(directory / file)
        if document is None:
            continue
        sides = [key for key, value in document.items() if isinstance(value, dict)]
        shared = {key: value for key, value in document.items()
                  if not isinstance(value, dict) and key not in ("schema", "schema_version")}
        keys = sorted({key for side in sides for key in document[side]})
        rows = "".join(f"<tr><th>{escape(key)}</th>" + "".join(
            f"<td class='num'>{escape(_assembly_cell(document[side].get(key)))}</td>" for side in sides) + "</tr>"
            for key in keys)
        meta = " · ".join(f"{escape(key)}: <code>{escape(_assembly_cell(value))}</code>"
                          for key, value in shared.items())
        header = "".join(f"<th>{escape(side)}</th>" for side in sides)
        parts.append(f"<div><h4><code>{file}</code></h4><p class='meta'>{meta}</p>"
                     f"<table><tr><th></th>{header}</tr>{rows}</table></div>")
    return "<h2>Assembly</h2><div class='cols'>" + "".join(parts) + "</div>" if parts else ""


def _header(document: dict[str, Any]) -> str:
    case = document.get("case", {})
    described = [f"pipeline <b>{escape(str(document.get('pipeline', '')))}</b>",
                 f"dtype {escape(str(document.get('config', {}).get('dtype')))}",
                 f"reference <b>{escape(str(document.get('reference', {}).get('name') or '-'))}</b> vs candidate "
                 f"<b>{escape(str(document.get('candidate', {}).get('name') or '-'))}</b> "
                 f"on {escape(str(document.get('device') or '-'))}",
                 escape(str(document.get("provenance", {}).get("timestamp", ""))),
                 f"schema {escape(str(document.get('schema_version')))}"]
    return (f"<h1>{escape(str(case.get('name', '?')))} {verdict_badge(document.get('passed'))}</h1>"
            f"<p class='meta'>{escape(str(case.get('description', '')))}<br>{' · '.join(described)}</p>")


def _details(document: dict[str, Any]) -> str:
    import json

    blocks = {"configuration": document.get("config"), "audits": document.get("audits"),
              "provenance and timing": {key: document.get(key) for key in ("provenance", "timing", "reference",
                                                                          "candidate")}}
    return "<h2>Configuration, audits, provenance</h2>" + "".join(
        f"<details><summary>{name}</summary><pre>{escape(json.dumps(value, indent=1, default=str))}</pre></details>"
        for name, value in blocks.items())


def render_html(document: dict[str, Any], directory: str | Path) -> str:
    """The page for one ``report.json`` document, drawn from the evidence files in ``directory``."""
    directory = Path(directory)
    samples = load_samples(directory / "samples.h5")
    stats = (read_json(directory / "patch_stats.json") or {}).get("taps", {})
    first = (document.get("first_divergence") or {}).get("tap")
    title = f"{document.get('case', {}).get('name', '?')}: {'PASS' if document.get('passed') else 'FAIL'}"
    sections = [_tap_section(index, tap, first, samples, stats, directory)
                for index, tap in enumerate(document.get("taps", []))]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><main>"
            + _header(document) + _summary(document) + _depth_plot(document) + _overview(document)
            + "<h2>Taps</h2>" + "".join(sections) + _assembly(directory) + _details(document)
            + "</main></body></html>\n")


def write_html(document: dict[str, Any], directory: Path) -> Path:
    """``report.html`` beside ``report.json``, written through a temporary file and a rename."""
    from .report import write_text_atomic

    return write_text_atomic(Path(directory) / "report.html", render_html(document, directory))
