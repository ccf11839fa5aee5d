"""``stellardb query`` and ``stellardb xmatch``: SQL on the database, and the crossmatch."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import duckdb

from . import db
from .errors import UserError

FORMATS = ("table", "csv", "json", "parquet")


def run_query(db_path, sql: str, fmt: str = "table", output: str | None = None, max_rows: int = 50):
    """Run ``sql`` on a read-only connection and write the result.

    Parameters
    ----------
    db_path : path
    sql : str
        Any DuckDB SQL; the stellardb views (``stars``, ``features``,
        ``stars_with_predictions``, ...) are available.
    fmt : {"table", "csv", "json", "parquet"}
        ``table`` prints at most ``max_rows`` rows to the terminal; the others write
        every row to ``output`` (stdout for csv/json when None).
    output : path, optional

    Raises
    ------
    UserError
        A SQL error (DuckDB's own message, no traceback), or parquet without --output.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if fmt == "parquet" and not output:
        raise UserError("--format parquet writes a file; give --output FILE.parquet.")
    if output and not Path(output).resolve().parent.is_dir():
        raise UserError(f"Cannot write {output}: folder {Path(output).resolve().parent} does not exist; create it first.")
    con = db.connect(db_path, read_only=True)
    try:
        try:
            rel = con.sql(sql)
        except duckdb.Error as exc:
            raise UserError(_sql_error(exc)) from None
        if rel is None:
            return None
        try:
            if fmt == "table":
                return _print_table(rel, max_rows)
            if fmt == "parquet":
                rel.write_parquet(str(output))
                return None
            if fmt == "csv":
                df = rel.df()
                df.to_csv(output if output else sys.stdout, index=False)
                return None
            df = rel.df()
            text = df.to_json(orient="records", lines=True, double_precision=15)
            if output:
                Path(output).write_text(text)
            else:
                sys.stdout.write(text)
            return None
        except duckdb.Error as exc:
            raise UserError(_sql_error(exc)) from None
    finally:
        con.close()


def _sql_error(exc: duckdb.Error) -> str:
    """DuckDB's message on one line (its LINE/caret context dropped)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _print_table(rel, max_rows: int):
    from rich.console import Console
    from rich.table import Table

    columns = rel.columns
    rows = rel.limit(max_rows + 1).fetchall()
    table = Table(*columns, show_lines=False, header_style="bold")
    for row in rows[:max_rows]:
        table.add_row(*(_fmt(v) for v in row))
    console = Console(width=max(100, min(250, 14 * len(columns))))
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"(first {max_rows} rows shown; use --format csv --output FILE for all)")
    return rows[:max_rows]


def _fmt(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _check_plot_path(path: Path) -> None:
    """Refuse a --plot path that cannot take a PNG before anything is computed or changed."""
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG: give a file name ending in .png, not {path.name!r}.")
    folder = next((p for p in path.absolute().parents if p.exists()), None)
    if path.is_dir() or folder is None or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"--plot {path}: cannot write a file there; choose a writable path.")


def run_xmatch(db_path, radius_arcsec: float | None = None, plot=None) -> dict:
    """Materialise the Gaia x SkyMapper crossmatch (table ``xmatch``) in one transaction.

    Parameters
    ----------
    radius_arcsec : float, optional
        Match radius; stored in ``settings`` (default 1.0 arcsec).  Must be positive
        and at most 30 arcsec: beyond that a nearest-neighbour match stops meaning
        "the same star" at Gaia's depth.
    plot : path, optional
        Also write the separation / match-fraction PNG there
        (:func:`stellardb.xmatch_plot.write_xmatch_plot`).
    """
    if plot is not None:
        _check_plot_path(Path(plot))
        from .errors import require_ml

        require_ml("xmatch --plot", modules=("matplotlib",))
    if radius_arcsec is not None and not (0 < radius_arcsec <= 30):
        raise UserError(f"--radius-arcsec must be in (0, 30] arcsec, got {radius_arcsec}.")
    con = db.connect(db_path, read_only=False)
    try:
        if db.row_count(con, "gaia") == 0 or db.row_count(con, "skymapper") == 0:
            raise UserError("Crossmatch needs both tables: ingest gaia and skymapper files first (`stellardb ingest ...`).")
        t0 = time.perf_counter()
        con.begin()
        try:
            if radius_arcsec is not None:
                db.set_setting(con, "xmatch_radius_arcsec", radius_arcsec)
            pairs = db.refresh_xmatch(con)
            labels = db.refresh_label_match(con)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        stats = con.execute(
            "select count(*), median(sep_arcsec), coalesce(count_if(n_candidates > 1), 0) from xmatch"
        ).fetchone()
        if plot is not None:
            from .xmatch_plot import write_xmatch_plot

            try:
                write_xmatch_plot(con, plot, db.get_setting(con, "xmatch_radius_arcsec"))
            except OSError as exc:
                raise UserError(f"Cannot write the plot {plot} ({exc.strerror or exc}); the crossmatch itself is "
                                "stored (table xmatch): choose a writable path and run again.") from None
        return {
            "pairs": pairs,
            "label_matches": labels,
            "median_sep_arcsec": stats[1],
            "ambiguous": stats[2],
            "radius_arcsec": db.get_setting(con, "xmatch_radius_arcsec"),
            "skymapper_rows": db.row_count(con, "skymapper"),
            "gaia_rows": db.row_count(con, "gaia"),
            "seconds": time.perf_counter() - t0,
        }
    finally:
        con.close()
