"""Tables on the terminal: query results (elided like DuckDB's shell) and model metrics (the seed's layout)."""

from __future__ import annotations

import shutil

import click
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from stellardb.ml.features import PARAMETERS, UNITS
from stellardb.ml.metrics import LABELS


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _fit_columns(names: list[str], cells: list[list[str]], width: int) -> list[int | None]:
    """Indices of the columns to show, first and last alternately, with None where the elided ones are.

    As DuckDB's shell: every column when they fit, else as many from both ends as
    the width allows, around a single "..." column.
    """
    need = [max([len(names[j])] + [len(row[j]) for row in cells]) + 3 for j in range(len(names))]
    if sum(need) + 1 <= width:
        return list(range(len(names)))
    left, right, used = [], [], 1 + 6  # the border and the "..." column
    lo, hi = 0, len(names) - 1
    while lo <= hi:
        take = lo if len(left) <= len(right) else hi
        if used + need[take] > width:
            break
        used += need[take]
        if take == lo:
            left.append(lo)
            lo += 1
        else:
            right.insert(0, hi)
            hi -= 1
    if not left:  # at least one column, even if it must wrap
        left = [0]
    return left + [None] + right


def print_table(preview, max_rows: int, width: int | None = None):
    """A query's first rows as a table; columns that do not fit are elided, as DuckDB's shell does."""
    columns = preview.columns
    shown = preview.rows
    cells = [[_cell(v) for v in row] for row in shown]
    width = width or shutil.get_terminal_size((120, 24)).columns
    keep = _fit_columns(columns, cells, width)
    # Text objects: values and names are printed verbatim, never read as rich markup
    table = Table(*[Column(header=Text(columns[j]) if j is not None else Text("…")) for j in keep], header_style="bold")
    for row in cells:
        table.add_row(*[Text(row[j]) if j is not None else Text("…") for j in keep])
    console = Console(width=width, highlight=False)
    console.print(table)
    notes = []
    if preview.more:
        notes.append(f"first {max_rows} rows shown; use --format csv --output FILE for all")
    hidden = len(columns) - sum(j is not None for j in keep)
    if hidden:
        notes.append(f"{hidden} of {len(columns)} columns not shown: use --format line, or select fewer columns")
    if notes:
        console.print(Text(f"({'; '.join(notes)})"))
    return shown


def print_lines(preview, max_rows: int):
    """Each row as ``column = value`` lines, a blank line between rows (DuckDB's ``.mode line``)."""
    columns = preview.columns
    pad = max((len(c) for c in columns), default=0)
    for i, row in enumerate(preview.rows):
        if i:
            click.echo("")
        for name, value in zip(columns, row):
            click.echo(f"{name:>{pad}} = {_cell(value)}")
    if preview.more:
        click.echo(f"\n(first {max_rows} rows shown; use --format csv --output FILE for all)")
    return preview.rows


def _fmt(value, parameter: str) -> str:
    if value is None:
        return "-"
    if parameter == "teff":
        return f"{value:.1f}"
    return f"{value:.4f}" if abs(value) < 0.1 else f"{value:.3f}"


def comparison_table(metrics: dict, title: str = "Test split, predicted - reference"):
    """A rich Table in the seed's layout: rows are statistics, columns are ML and GSP-Phot per parameter.

    Parameters
    ----------
    metrics : dict
        ``metrics[parameter][method]`` -> :func:`stellardb.ml.metrics.residual_stats` dict, with
        methods ``"mlp"`` and ``"gspphot"`` computed on the same stars.
    """
    table = Table(title=title)
    table.add_column("statistic", no_wrap=True)
    params = [p for p in PARAMETERS if p in metrics]
    for p in params:
        table.add_column(f"ML {LABELS[p]}", justify="right")
        table.add_column(f"GSP-Phot {LABELS[p]}", justify="right")
    rows = [
        ("stars", "n"),
        ("mean", "mean"),
        ("median", "median"),
        ("sigma", "sigma"),
        ("MAD", "mad"),
        ("1.4826 MAD", "mad_scaled"),
        ("RMSE", "rmse"),
        ("frac |r| < err", "calibration_68"),
    ]
    for label, key in rows:
        cells = []
        for p in params:
            for method in ("mlp", "gspphot"):
                value = metrics[p].get(method, {}).get(key)
                if key == "n":
                    cells.append("-" if value is None else f"{value:,}")
                elif key == "calibration_68":
                    cells.append("-" if value is None else f"{value:.3f}")
                else:
                    cells.append(_fmt(value, p))
        table.add_row(label, *cells)
    ratio = []
    for p in params:
        ml, gsp = metrics[p].get("mlp", {}).get("mad"), metrics[p].get("gspphot", {}).get("mad")
        ratio.extend([f"{ml / gsp:.2f}" if ml is not None and gsp else "-", ""])
    table.add_row("MAD ML / GSP-Phot", *ratio)
    table.caption = (
        "r = predicted - reference; MAD = median(|r - median(r)|); frac |r| < err should be about 0.68. "
        f"Units: {', '.join(f'{p} {UNITS[p]}' for p in params)}."
    )
    return table


def family_table(card: dict, members: list | None = None):
    """One row per feature set of a model family: labelled stars, and per parameter the test-split MAD of
    ML minus reference (in brackets ML/GSP-Phot on the stars GSP-Phot has), the fraction of stars with
    |r| < error, and the member's validation score (what ranks the sets)."""
    metrics = {m.card["feature_set"]: m.metrics for m in (members or [])}
    table = Table(title=f"Model {card['name']}: one model per feature set; test split, MAD of predicted - reference "
                        "(ML/GSP-Phot on the stars GSP-Phot has), RMSE; cal = fraction with |r| < error (0.68 ideal)")
    table.add_column("feature set", no_wrap=True)
    table.add_column("labelled", justify="right", no_wrap=True)
    for p in PARAMETERS:
        table.add_column(f"{LABELS[p]}", justify="right", no_wrap=True)
    table.add_column("RMSE T/g/Fe", justify="right", no_wrap=True)
    table.add_column("cal T/g/Fe", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    for m in card["members"]:
        cells = [m["feature_set"], f"{m['labelled_stars']:,}"]
        for p in PARAMETERS:
            t = m["test"][p]
            ml, gsp = t["mlp_mad"], t["gspphot_mad"]
            ratio = f" ({ml / gsp:.2f})" if ml is not None and gsp else ""
            cells.append(f"{_fmt(t.get('mlp_all_mad', ml), p)}{ratio}")
        mt = metrics.get(m["feature_set"])
        rmse = [mt[p]["mlp_all_test"].get("rmse") if mt else None for p in PARAMETERS]
        cells.append("/".join("-" if v is None else (f"{v:.0f}" if p == "teff" else f"{v:.2f}")
                              for v, p in zip(rmse, PARAMETERS)))
        cal = [mt[p]["mlp_all_test"].get("calibration_68") if mt else None for p in PARAMETERS]
        cells.append("/".join("-" if c is None else f"{c:.2f}" for c in cal))
        cells.append("-" if m["score"] is None else f"{m['score']:.3f}")
        table.add_row(*cells)
    return table
