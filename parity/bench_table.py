"""The terminal tables of ``parity bench`` (one per section), from its JSON document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.text import Text
from rich.table import Table


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    return table


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _speed_rows(table: Table, rows: list[dict]) -> None:
    for row in rows:
        table.add_row(row["pipeline"], str(row["batch"]), row["device"], row["variant"], _ms(row["median_s"]),
                      f"{row['patterns_per_s']:,.0f}", str(row["repeats"]))


def render(document: Mapping[str, Any], console: Console) -> None:
    info = document.get("machine", {})
    console.print(Text("parity bench", style="bold"), f" {info.get('cpu_model', info.get('machine', '?'))}, "
                  f"{info.get('cpus_usable', info.get('cpu_count'))} usable CPUs"
                  f"{', GPU ' + info['gpu'] if info.get('gpu') else ', no GPU'}; PARITY_THREADS="
                  f"{info.get('PARITY_THREADS')}; load average {document.get('load_average_start')} -> "
                  f"{document.get('load_average_end')}; config {document.get('options', {}).get('knobs') or 'defaults'}")
    if "throughput" in document:
        table = _table("(a) forward throughput (median of interleaved runs)", "pipeline", "batch", "device",
                       "variant", "ms", "patterns/s", "runs")
        _speed_rows(table, document["throughput"])
        console.print(table)
        ratios = _table("(a) ratios (time / time)", "pipeline", "batch", "ratio", "value")
        for row in document.get("throughput_ratios", []):
            ratios.add_row(row["pipeline"], str(row["batch"]), row["ratio"], f"{row['value']:.2f}x")
        console.print(ratios)
    if "scaling" in document:
        table = _table("(a) physics scaling with batch", "pipeline", "batch", "device", "variant", "ms",
                       "patterns/s", "runs")
        _speed_rows(table, document["scaling"]["rows"])
        console.print(table)
        ratios = _table("(a) linear in batch: time ratio vs batch ratio", "variant", "device", "batches",
                        "batch ratio", "time ratio")
        for row in document["scaling"]["ratios"]:
            ratios.add_row(row["variant"], row["device"], " -> ".join(map(str, row["batches"])),
                           f"{row['batch_ratio']:.1f}x", f"{row['time_ratio']:.2f}x")
        for row in document["scaling"]["tf_over_torch"]:
            ratios.add_row("tf reference / torch (cpu)", "cpu", str(row["batch"]), "", f"{row['value']:.2f}x")
        console.print(ratios)
    if "overhead" in document:
        table = _table("(b) harness overhead on the Torch candidate", "pipeline", "batch", "device", "what", "ms",
                       "x forward", "runs")
        for row in document["overhead"]:
            table.add_row(row["pipeline"], str(row["batch"]), row["device"], row["variant"], _ms(row["median_s"]),
                          f"{row['ratio_to_forward']:.2f}x", str(row["repeats"]))
        console.print(table)
    for key, title in (("memory", "(c) peak memory of whole commands"), ("startup", "(d) start-up per command")):
        if key not in document:
            continue
        table = _table(title, "command", "exit", "wall s", "peak RSS MiB", "import tensorflow s", "import torch s")
        for row in document[key]:
            what = row["what"] + (f" ({row['size']}, taps {row['reference_tap_mib']:.0f} MiB)" if "size" in row else "")
            table.add_row(what, str(row["returncode"]), f"{row['wall_s']:.1f}", f"{row['max_rss_mib']:.0f}",
                          f"{row['import_s']['tensorflow']:.2f}", f"{row['import_s']['torch']:.2f}")
        console.print(table)
    for note in document.get("notes", []):
        console.print(f"note: {note}")
