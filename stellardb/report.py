"""Human-readable summaries printed by the CLI."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table


def _size(path) -> str:
    n = os.path.getsize(path)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return ""


def print_simulation_summary(summary, console: Console | None = None) -> None:
    """Table of the files ``stellardb simulate`` wrote, their rows and sizes."""
    console = console or Console()
    table = Table(title=f"Simulated sky: {summary.stars:,} stars, seed {summary.seed} -> {summary.outdir}")
    table.add_column("catalogue")
    table.add_column("file")
    table.add_column("rows", justify="right")
    table.add_column("size", justify="right")
    for key, path in summary.files.items():
        rows = summary.rows.get(key)
        table.add_row(key, path.name, f"{rows:,}" if rows is not None else "-", _size(path))
    console.print(table)
    s = summary.stats
    n = max(summary.stars, 1)
    console.print(
        f"G <= 18: {s['g_le_18'] / n:.1%} of Gaia sources;  GSP-Phot published: {s['gsp_phot'] / n:.1%};  "
        f"reference labels: {summary.rows.get('sos', 0) / n:.1%};  "
        f"SkyMapper rows per Gaia source: {summary.rows.get('skymapper', 0) / n:.3f};  "
        f"southernmost dec: {s['sky_dec_min']:.2f} deg"
    )
