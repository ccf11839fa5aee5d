"""``stellardb query``: read-only SQL on the database, written as a file or returned for a terminal."""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from stellardb.catalog import db
from stellardb.errors import UserError

FORMATS = ("table", "line", "csv", "json", "parquet", "votable", "fits", "ecsv")


class SqlError(UserError):
    """DuckDB refused the SQL: its full message, with the LINE/caret context and candidate names."""


#: Formats the command line shows on the terminal: the library returns their first rows.
PREVIEW_FORMATS = ("table", "line")


@dataclass
class Preview:
    """The first rows of a result, for a terminal (``--format table`` or ``line``)."""

    columns: list[str]
    rows: list[tuple]
    more: bool  # the result has more rows than shown


def run_query(db_path, sql: str, fmt: str = "table", output: str | None = None, max_rows: int = 50,
              connect=None):
    """Run ``sql`` on a read-only connection; write the result, or return its first rows.

    Parameters
    ----------
    db_path : path
    sql : str
        Any DuckDB SQL; the stellardb views (``stars``, ``features``,
        ``stars_with_predictions``, ...) are available.
    fmt : str
        ``table`` and ``line`` return a :class:`Preview` of at most ``max_rows`` rows
        (the command line prints it); ``csv``, ``json`` (JSON lines), ``parquet``,
        ``votable``, ``fits`` and ``ecsv`` write every row to ``output`` (stdout for
        csv/json/ecsv when None), with units, UCDs and descriptions in the last three
        (:mod:`stellardb.catalog.export`).
    output : path, optional
    connect : callable, optional
        Returns the read-only connection to use instead of the database's (a release's:
        stellardb.release.reader.connect); ``db_path`` is then not opened.

    Raises
    ------
    SqlError
        DuckDB's own message, in full.
    UserError
        A file format without --output, or an output folder that does not exist.
    """
    from stellardb.catalog import export

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    export.require_output(fmt, output)
    export.check_output_path(output)
    _check_output_protected(output, db_path)
    con = connect() if connect is not None else db.connect(db_path, read_only=True)
    try:
        _check_statement(con, sql)
        try:
            rel = con.sql(sql)
        except duckdb.Error as exc:
            raise SqlError(_sql_error(exc, con, sql)) from None
        if rel is None:
            return None
        try:
            if fmt in PREVIEW_FORMATS:
                columns = rel.columns  # before fetching: the relation is spent afterwards
                rows = rel.limit(max_rows + 1).fetchall()
                return Preview(columns, rows[:max_rows], more=len(rows) > max_rows)
            return export.export(con, rel, fmt, output, sql)
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise SqlError(_sql_error(exc, sql=sql)) from None
    finally:
        con.close()


def _check_output_protected(output, db_path) -> None:
    """--output never replaces the database (or its WAL) nor writes into a release (immutable)."""
    if output is None:
        return
    from pathlib import Path

    target = Path(output).absolute().resolve()
    database = Path(db_path).absolute().resolve() if db_path else None
    if database is not None and target in (database, database.with_name(database.name + ".wal")):
        raise UserError(f"--output {output} is the database file itself; write the result to another file.")
    for folder in target.parents:
        # a stellardb release: its manifest and its catalogue collection (stellardb/release/layout.py)
        if (folder / "manifest.json").is_file() and (folder / "catalogue" / "collection.properties").is_file():
            raise UserError(f"--output {output} is inside release {folder.name}, and releases are never changed; "
                            "write the result elsewhere.")


#: What `stellardb query` runs: reading statements.  The connection is read-only with
#: file access and configuration changes off (stellardb.catalog.db.READ_ONLY_SETTINGS); this
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
