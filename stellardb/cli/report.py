"""Human-readable summaries printed by the CLI."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _size(path) -> str:
    return _bytes(os.path.getsize(path))


def _bytes(n: float) -> str:
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


def print_ingest_summary(result, console: Console | None = None) -> None:
    """Table of the files ``stellardb ingest`` loaded: rows, speed, preset, what was skipped."""
    console = console or Console(stderr=True, width=max(110, Console(stderr=True).width))
    table = Table(title="ingest")
    for col in ("file", "table", "format", "preset", "rows", "rows/s", "note"):
        table.add_column(col, justify="right" if col in ("rows", "rows/s") else "left")
    for f in result.files:
        rate = f"{f.rows / f.seconds:,.0f}" if f.rows and f.seconds > 0 else "-"
        notes = list(getattr(f, "notes", []))
        if f.dropped_columns:
            notes.append(f"{len(f.dropped_columns)} columns not stored")
        note = f.skipped or "; ".join(notes)
        table.add_row(f.path.name, f.table, f.format, f.preset or "-", f"{f.rows:,}", rate, note)
    console.print(table)
    extra = []
    from stellardb.catalog.surveys import SURVEYS

    for name, pairs in result.survey_pairs.items():
        extra.append(f"{SURVEYS[name].xmatch_table} refreshed: {pairs:,} Gaia-{name} pairs")
    if result.label_matches is not None:
        extra.append(f"position-only labels matched to Gaia: {result.label_matches:,}")
    extra.append(f"{result.seconds:.1f} s in all")
    console.print(";  ".join(extra))
    for f in result.files:
        if f.dropped_columns and f.skipped is None:
            # named, so a user sees what did not come in and can keep it
            console.print(Text(f"{f.path.name}: not stored ({len(f.dropped_columns)}): {', '.join(f.dropped_columns)}; "
                               "store one with --keep COL"))


def print_ingests(ingests, console: Console | None = None) -> None:
    """Table of ``stellardb ingests``: one row per ingested file."""
    console = console or Console(width=max(120, Console().width))
    if not ingests:
        console.print("No file has been ingested yet; `stellardb ingest TABLE FILE` loads one.")
        return
    table = Table(title="ingested files")
    for col in ("id", "table", "rows", "rows now", "format", "preset", "ingested (UTC)", "file"):
        # the path folds rather than being cut short: `stellardb forget FILE` takes it
        table.add_column(col, justify="right" if col in ("id", "rows", "rows now") else "left",
                         overflow="fold" if col == "file" else "ellipsis")
    for i in ingests:
        table.add_row(str(i.ingest_id), i.table, f"{i.rows:,}", f"{i.rows_now:,}", i.format or "-", i.preset or "-",
                      f"{i.ingested_at:%Y-%m-%d %H:%M:%S}", Text(i.file))
    console.print(table)


def print_release_summary(result, console: Console | None = None) -> None:
    """What ``stellardb release`` wrote: rows and partitions per catalogue."""
    console = console or Console()
    table = Table(title=f"release {result.name} (model {result.model}) in {result.seconds:.1f} s")
    for col in ("catalogue", "rows", "partitions", "HEALPix orders", "margin rows"):
        table.add_column(col, justify="left" if col == "catalogue" else "right")
    for name, c in result.catalogues.items():
        orders = sorted({p.order for p in c.partitions})
        table.add_row(name, f"{c.rows:,}", f"{len(c.partitions):,}",
                      f"{orders[0]}-{orders[-1]}" if len(orders) > 1 else str(orders[0]),
                      "-" if c.margin_rows is None else f"{c.margin_rows:,}")
    console.print(table)
    if result.skipped:
        console.print(f"left out (no rows in the database): {', '.join(result.skipped)}")
    console.print(f"{result.path} (latest)")


def print_releases(found, console: Console | None = None) -> None:
    """Table of ``stellardb releases``."""
    console = console or Console(width=max(100, Console().width))
    table = Table(title=f"releases in {found[0].path.parent}")
    for col in ("name", "created (UTC)", "stars", "model", "size"):
        table.add_column(col, justify="right" if col in ("stars", "size") else "left")
    for r in found:
        m = r.manifest
        if r.damaged:
            table.add_row(r.name + (" *" if r.latest else ""), f"damaged: {r.damaged}", "-", "-", _bytes(r.size_bytes))
            continue
        table.add_row(r.name + (" *" if r.latest else ""), str(m.get("created_utc", "?")).replace("T", " ")[:19],
                      f"{m.get('catalogues', {}).get('catalogue', {}).get('rows', 0):,}",
                      (m.get("model") or {}).get("name", "-"), _bytes(r.size_bytes))
    console.print(table)
    latest = found[0].path.parent / "latest"
    if any(r.latest for r in found):
        console.print("* latest")
    elif latest.exists() and not latest.is_symlink():
        console.print(f"{latest} is not the link stellardb keeps (a copied folder?): rename or remove it, then "
                      "`release` sets it again")
    else:
        console.print("no `latest` link: the next `release` sets it")
