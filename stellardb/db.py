"""The stellardb database: one DuckDB file, its tables and the SQL views of ``sql/``.

``sql/`` holds one object per file: ``tables/`` (stored tables, ``create table if not
exists``), ``macros/``, ``crossmatch/``, ``marts/`` and ``quality/`` (views, ``create or
replace``).  :func:`connect` applies them to every read-write connection, so the
views are stored in the file itself and anyone who opens it (the duckdb CLI,
SQLAlchemy) sees the same ``stars``, ``features`` and ``training_set``.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import duckdb

from .errors import UserError

DEFAULT_DB = "stellardb.duckdb"
DB_ENVVAR = "STELLARDB_DB"
#: DuckDB memory limit; queries beyond it spill to disk instead of failing.
MEMORY_LIMIT_ENVVAR = "STELLARDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "4GB"

#: Folders of sql/ in the order they are applied (a view may use anything before it).
SQL_LAYERS = ("tables", "macros", "crossmatch", "marts", "quality")


def default_path() -> str:
    """The database path used when none is given: ``$STELLARDB_DB`` or ./stellardb.duckdb."""
    return os.environ.get(DB_ENVVAR) or DEFAULT_DB


def sql_dir() -> Path:
    """The ``sql/`` folder: shipped inside the wheel, or the repository's own in a checkout."""
    packaged = resources.files("stellardb").joinpath("sql")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "sql"


def sql_files() -> list[Path]:
    """Every ``.sql`` file, layer by layer, alphabetical within a layer."""
    root = sql_dir()
    files = []
    for layer in SQL_LAYERS:
        files.extend(sorted((root / layer).glob("*.sql")))
    return files


def object_name(path: Path) -> str:
    """The view/table a file defines: its file name (STYLE.md: file name = view name)."""
    return path.stem


def apply_sql(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables, macros and views of ``sql/`` on ``con`` (idempotent).

    Views inside one layer may use each other, so files that fail because
    something they use is not there yet are retried until no more succeed.
    """
    pending = sql_files()
    while pending:
        failed = []
        last_error = None
        for path in pending:
            try:
                con.execute(path.read_text())
            except duckdb.CatalogException as exc:
                failed.append(path)
                last_error = (path, exc)
        if len(failed) == len(pending):
            path, exc = last_error
            raise RuntimeError(f"{path.name}: {exc}") from exc
        pending = failed


def _open(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    config = {"memory_limit": os.environ.get(MEMORY_LIMIT_ENVVAR, DEFAULT_MEMORY_LIMIT)}
    try:
        return duckdb.connect(path, read_only=read_only, config=config)
    except duckdb.IOException as exc:
        message = str(exc)
        if "lock" in message.lower():
            pid = re.search(r"PID (\d+)", message)
            holder = f" (process {pid.group(1)})" if pid else ""
            raise UserError(
                f"Database {path} is in use by another process{holder}; wait for it to finish, or close it, then retry."
            ) from None
        raise UserError(f"Cannot open database {path}: {message.splitlines()[0]}") from None


def connect(path: str | os.PathLike | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the stellardb database with all tables and views of ``sql/``.

    Parameters
    ----------
    path : path, optional
        The DuckDB file (default ``$STELLARDB_DB`` or ./stellardb.duckdb);
        ``":memory:"`` for a throw-away database.
    read_only : bool
        Open read-only (``stellardb query``): the file must exist and is never written.

    Raises
    ------
    UserError
        The file is missing (read-only) or locked by another writing process.
    """
    path = str(path if path is not None else default_path())
    if read_only:
        if path != ":memory:" and not Path(path).is_file():
            raise UserError(f"No stellardb database at {path}. Create one with `stellardb ingest`, or pass --db PATH.")
        con = _open(path, read_only=True)
        if not _has_views(con):
            raise UserError(f"{path} has no stellardb views; open it once for writing (e.g. `stellardb xmatch`) to create them.")
        if not _is_current(con):
            con.close()
            raise UserError(f"{path} was written by an older stellardb (predictions lack the extrapolation flags); "
                            f"open it once for writing (e.g. `stellardb xmatch`) to update it.")
        return con
    con = _open(path, read_only=False)
    apply_sql(con)
    return con


def _has_views(con) -> bool:
    names = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    return {"stars", "features", "training_set"} <= names


def _is_current(con) -> bool:
    """Whether the file has the columns that the current sql/ adds to older databases
    (the ``alter table ... add column if not exists`` lines run only when writing)."""
    return "inputs_outside_training" in {name for name, _ in table_columns(con, "predictions")}


def table_columns(con, table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of each column of ``table``, in order."""
    rows = con.execute(
        "select column_name, data_type from information_schema.columns where table_name = $t order by ordinal_position",
        {"t": table},
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def quote_identifier(name: str) -> str:
    """Quote an identifier for DuckDB (the one place names are put into SQL text)."""
    return '"' + str(name).replace('"', '""') + '"'


def row_count(con, table: str) -> int:
    return con.execute(f"select count(*) from {quote_identifier(table)}").fetchone()[0]


def get_setting(con, name: str) -> float:
    return con.execute("select value from settings where name = $n", {"n": name}).fetchone()[0]


def set_setting(con, name: str, value: float) -> None:
    con.execute("update settings set value = $v where name = $n", {"v": float(value), "n": name})


# ---------------------------------------------------------------- crossmatch upkeep


def refresh_xmatch(con) -> int:
    """Materialise the view ``xm_gaia_skymapper`` as table ``xmatch``; returns pairs."""
    con.execute("delete from xmatch")
    con.execute("insert into xmatch select * from xm_gaia_skymapper")
    return row_count(con, "xmatch")


def refresh_label_match(con) -> int:
    """Materialise the view ``xm_labels_gaia`` as table ``xmatch_labels``; returns pairs."""
    con.execute("delete from xmatch_labels")
    con.execute("insert into xmatch_labels select * from xm_labels_gaia")
    return row_count(con, "xmatch_labels")
