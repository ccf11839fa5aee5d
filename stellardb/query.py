"""``stellardb query`` and ``stellardb xmatch``: SQL on the database, and the crossmatch."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import duckdb

from . import db
from .errors import UserError

FORMATS = ("table", "line", "csv", "json", "parquet", "votable", "fits", "ecsv")


class SqlError(UserError):
    """DuckDB refused the SQL: its full message, with the LINE/caret context and candidate names."""


def run_query(db_path, sql: str, fmt: str = "table", output: str | None = None, max_rows: int = 50,
              width: int | None = None):
    """Run ``sql`` on a read-only connection and write the result.

    Parameters
    ----------
    db_path : path
    sql : str
        Any DuckDB SQL; the stellardb views (``stars``, ``features``,
        ``stars_with_predictions``, ...) are available.
    fmt : str
        ``table`` prints at most ``max_rows`` rows to the terminal (columns that do
        not fit are elided, as DuckDB's own shell does); ``line`` prints each of those
        rows as ``column = value`` lines; ``csv``, ``json`` (JSON lines), ``parquet``,
        ``votable``, ``fits`` and ``ecsv`` write every row to ``output`` (stdout for
        csv/json/ecsv when None), with units, UCDs and descriptions in the last three
        (:mod:`stellardb.export`).
    output : path, optional
    width : int, optional
        Terminal width for ``table`` (default: the terminal's).

    Raises
    ------
    SqlError
        DuckDB's own message, in full.
    UserError
        A file format without --output, or an output folder that does not exist.
    """
    from . import export

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    export.require_output(fmt, output)
    export.check_output_path(output)
    con = db.connect(db_path, read_only=True)
    try:
        _check_statement(con, sql)
        try:
            rel = con.sql(sql)
        except duckdb.Error as exc:
            raise SqlError(_sql_error(exc, con, sql)) from None
        if rel is None:
            return None
        try:
            if fmt == "table":
                return _print_table(rel, max_rows, width)
            if fmt == "line":
                return _print_lines(rel, max_rows)
            return export.export(con, rel, fmt, output, sql)
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise SqlError(_sql_error(exc, sql=sql)) from None
    finally:
        con.close()


#: What `stellardb query` runs: reading statements.  The connection is read-only with
#: file access and configuration changes off (stellardb.db.READ_ONLY_SETTINGS); this
#: refuses the rest before DuckDB sees it, with a message that says what to use instead.
READ_STATEMENTS = ("SELECT", "EXPLAIN")


def _check_statement(con, sql: str) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        # DuckDB's parser text with its LINE and caret comes from running it; it cannot
        # parse, so nothing runs
        try:
            con.execute(sql)
        except duckdb.Error as again:
            exc = again
        raise SqlError(_sql_error(exc, sql=sql)) from None
    if not statements:
        raise UserError("No SQL given; write a SELECT, e.g. stellardb query \"select count(*) from stars\".")
    if len(statements) != 1:
        raise UserError(f"stellardb query is read-only and runs one statement at a time; this SQL holds "
                        f"{len(statements)}.")
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs the statement it explains: that one must be a SELECT too
        inner = re.sub(r"^\s*explain(\s+analy[sz]e)?\s+", "", sql, flags=re.IGNORECASE)
        try:
            explained = con.extract_statements(inner)
            kind = explained[0].type.name if len(explained) == 1 else "MULTI"
        except duckdb.Error:
            pass
    if kind not in READ_STATEMENTS:
        raise UserError(
            f"stellardb query is read-only (SELECT, EXPLAIN of a SELECT); this is a {kind} statement. Change the "
            "database with "
            "stellardb ingest, forget, xmatch, train or score; write results with --format/--output; for PRAGMA "
            "information use its table function (select * from pragma_table_info('gaia'))."
        )


def _sql_error(exc: duckdb.Error, con=None, sql: str | None = None) -> str:
    """DuckDB's message as its shell prints it: the error, candidate names, ``LINE n:`` and the caret.

    The relation API leaves the LINE/caret context out of binder errors, so a SELECT
    that fails to bind (``con`` and ``sql`` given) is prepared once more as the user
    wrote it for DuckDB's own text: it fails again at once, before reading any row.
    An error raised while rows are produced is not re-run (that could take as long
    as the query); its LINE context counts lines of the SQL stellardb wrapped around
    the user's (LIMIT, COPY), so it is renumbered to the user's line
    (:func:`_renumber_lines`).
    """
    message = str(exc)
    if con is None:
        message = _renumber_lines(message, sql)
    if con is not None and sql is not None:
        try:
            statements = con.extract_statements(sql)
            if len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT:
                con.execute(sql)
        except duckdb.Error as again:
            if str(again).splitlines()[:1] == message.splitlines()[:1]:
                message = str(again)
    lines = [line.rstrip() for line in message.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) if lines else type(exc).__name__


def _renumber_lines(message: str, sql: str | None) -> str:
    """``LINE n:`` of a message about SQL that wraps the user's: the number of the user's line
    that holds the quoted text (and the caret moved with it); without one, the context is dropped."""
    lines = message.splitlines()
    at = next((i for i, line in enumerate(lines) if re.match(r"LINE \d+: ", line)), None)
    if at is None:
        return message
    prefix, _, quoted = lines[at].partition(": ")
    user = (sql or "").splitlines()
    matches = [k for k, line in enumerate(user, start=1) if line.rstrip() == quoted.rstrip()]
    if len(matches) != 1:
        return "\n".join(lines[:at]).rstrip()
    new_prefix = f"LINE {matches[0]}"
    shift = len(new_prefix) - len(prefix)
    lines[at] = f"{new_prefix}: {quoted}"
    if at + 1 < len(lines) and lines[at + 1].strip().startswith("^"):
        caret = lines[at + 1]
        lines[at + 1] = (" " * shift + caret) if shift >= 0 else caret[-shift:]
    return "\n".join(lines)


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


def _print_table(rel, max_rows: int, width: int | None = None):
    import shutil

    from rich.console import Console
    from rich.table import Column, Table
    from rich.text import Text

    columns = rel.columns
    rows = rel.limit(max_rows + 1).fetchall()
    shown = rows[:max_rows]
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
    if len(rows) > max_rows:
        notes.append(f"first {max_rows} rows shown; use --format csv --output FILE for all")
    hidden = len(columns) - sum(j is not None for j in keep)
    if hidden:
        notes.append(f"{hidden} of {len(columns)} columns not shown: use --format line, or select fewer columns")
    if notes:
        console.print(Text(f"({'; '.join(notes)})"))
    return shown


def _print_lines(rel, max_rows: int):
    """Each row as ``column = value`` lines, a blank line between rows (DuckDB's ``.mode line``)."""
    import click

    columns = rel.columns
    rows = rel.limit(max_rows + 1).fetchall()
    pad = max((len(c) for c in columns), default=0)
    for i, row in enumerate(rows[:max_rows]):
        if i:
            click.echo("")
        for name, value in zip(columns, row):
            click.echo(f"{name:>{pad}} = {_cell(value)}")
    if len(rows) > max_rows:
        click.echo(f"\n(first {max_rows} rows shown; use --format csv --output FILE for all)")
    return rows[:max_rows]


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
        except BaseException as exc:
            db.undo_or_report(con, exc, "the crossmatch (table xmatch)")
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
            # rows the crossmatch cannot use (bad positions, motions or epochs), left out
            "gaia_skipped": db.row_count(con, "gaia") - db.row_count(con, "gaia_motion"),
            "skymapper_skipped": db.row_count(con, "skymapper") - db.row_count(con, "skymapper_positions"),
            "seconds": time.perf_counter() - t0,
        }
    finally:
        con.close()
