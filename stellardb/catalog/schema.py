"""The schema of a stellardb database: the SQL of ``sql/``, applied in a known order, and migrations.

``sql/`` is the only place a table, macro or view is defined, one object per file named
like the file, in layers applied in the order of their folder names::

    00_tables/     stored tables (made when missing, never replaced)
    10_macros/     SQL macros (sky vectors, zones, epochs)
    20_sources/    <table>_src views: the only readers of the stored tables
    30_crossmatch/ the crossmatch views
    40_marts/      stars, features, labels, stars_with_predictions
    50_ml/         scoring_set, training_set, why_not_scored
    migrations/    NNNN_name.sql: changes to tables that already exist in older files

Inside a layer, a file comes after every file of that layer whose object it mentions
(a dependency sort on names, so adding a view never means renaming files), and the
first file that fails is reported with its path and DuckDB's message.

A table change is a numbered migration; ``schema_migrations`` stores which ones a file
has had.  Opening for writing runs the missing ones in order, in the same transaction as
the rest of ``sql/``, so a failure leaves the file as it was.  A file from before
schema_migrations existed is version 0.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

from stellardb.errors import UserError

#: Folders of sql/ applied on every read-write open, in this order.
SQL_LAYERS = ("00_tables", "10_macros", "20_sources", "30_crossmatch", "40_marts", "50_ml")
MIGRATIONS = "migrations"
#: Views of this layer are the only ones that may read stored tables (tests/catalog/test_schema.py).
SOURCE_LAYER = "20_sources"
#: A stored table of parameters, not of data, that views may read directly.
PARAMETER_TABLES = ("settings",)


class SchemaError(RuntimeError):
    """A file of sql/ failed: a defect of the package, not of the user's input."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    #: SQL giving true when a file without this migration cannot be read correctly (from
    #: the file's ``-- readers need it when:`` line); None: readers always need it
    readers_need_it_when: str | None = None


_READERS_LINE = re.compile(r"^--\s*readers need it when:\s*(.+)$", re.MULTILINE | re.IGNORECASE)


def sql_dir() -> Path:
    """The ``sql/`` folder: shipped inside the wheel, or the repository's own in a checkout."""
    packaged = resources.files("stellardb").joinpath("sql")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "sql"


def object_name(path: Path) -> str:
    """The table, macro or view a file defines: its file name (one object per file)."""
    return path.stem


#: what names nothing in SQL text, scanned left to right so that `--` inside a string or a
#: quote inside a comment is read as SQL reads it: string literals, line and block comments
_NOT_NAMES = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.DOTALL)


#: a view named in a string: xm_gaia_survey('tmass_positions', ...) reads it through query_table
_NAMED_IN_STRING = re.compile(r"\b(?:xm_gaia_survey|xm_nearest_gaia|query_table)\s*\(\s*'([a-z_][a-z0-9_]*)'", re.IGNORECASE)


def _mentioned_names(text: str) -> set[str]:
    """Identifiers in SQL text (string literals and comments left out), and views named in
    the string argument of query_table or xm_gaia_survey."""
    names = set(re.findall(r"[a-z_][a-z0-9_]*", _NOT_NAMES.sub(" ", text).lower()))
    return names | {m.lower() for m in _NAMED_IN_STRING.findall(_strip_comments(text))}


def _strip_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", " ", text)


def _ordered(paths: list[Path]) -> list[Path]:
    """``paths`` with each file after the files (of this list) whose object it mentions."""
    by_name = {object_name(p): p for p in paths}
    needs = {name: (_mentioned_names(p.read_text()) & set(by_name)) - {name} for name, p in by_name.items()}
    ordered, done = [], set()
    while len(done) < len(by_name):
        ready = sorted(n for n in by_name if n not in done and needs[n] <= done)
        if not ready:
            stuck = {n for n in by_name if n not in done}
            # leave out the files that only wait for the cycle: what no stuck file needs, repeatedly
            while True:
                needed = set().union(*(needs[n] & stuck for n in stuck))
                if needed >= stuck:
                    break
                stuck &= needed
            raise SchemaError(f"sql/: these files mention each other in a cycle: {', '.join(sorted(stuck))}")
        for n in ready:
            ordered.append(by_name[n])
            done.add(n)
    return ordered


def sql_files() -> list[Path]:
    """Every object file of sql/, layer by layer, each after what it uses in its layer."""
    root = sql_dir()
    files = []
    for layer in SQL_LAYERS:
        files.extend(_ordered(sorted((root / layer).glob("*.sql"))))
    return files


def migrations() -> list[Migration]:
    """The numbered migrations of sql/migrations/, in order; numbers are 1, 2, 3, ... without gaps."""
    found = []
    for path in sorted((sql_dir() / MIGRATIONS).glob("*.sql")):
        m = re.fullmatch(r"(\d{4})_([a-z0-9_]+)", path.stem)
        if not m:
            raise SchemaError(f"sql/migrations/{path.name}: name it NNNN_what_it_does.sql")
        when = _READERS_LINE.search(path.read_text())
        found.append(Migration(int(m.group(1)), m.group(2), path, when.group(1).strip() if when else None))
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise SchemaError(f"sql/migrations/ must be numbered 1, 2, 3, ... without gaps; found {numbers}")
    return found


def latest_version() -> int:
    """The schema version this stellardb writes: the number of its last migration."""
    return len(migrations())


def schema_version(con) -> int:
    """The file's schema version: the last migration it has had (0: older than schema_migrations)."""
    has = con.execute(
        "select count(*) from duckdb_tables() where table_name = 'schema_migrations' and schema_name = 'main'"
    ).fetchall()[0][0]
    if not has:
        return 0
    return con.execute("select coalesce(max(version), 0) from schema_migrations").fetchall()[0][0]


def needed_by_readers(con, version: int) -> list[Migration]:
    """The migrations after ``version`` without which a read-only connection would read the file
    wrongly (each says when in its ``-- readers need it when:`` line; no line: always)."""
    needed = []
    for migration in migrations():
        if migration.version <= version:
            continue
        when = migration.readers_need_it_when
        if when is None or con.execute(when).fetchall()[0][0]:
            needed.append(migration)
    return needed


def check_not_newer(con, path) -> int:
    """The file's schema version; a file written by a newer stellardb is refused."""
    version = schema_version(con)
    if version > latest_version():
        raise UserError(f"{path} has schema version {version}, written by a newer stellardb (this one knows up to "
                        f"{latest_version()}); upgrade stellardb (pip install -U stellardb) to open it.")
    return version


#: errors that mean a file of sql/ is wrong; any other (out of memory, a full disk, an
#: interrupt) passes through unchanged, for the command line's own one-line message
_DEFINITION_ERRORS = (duckdb.CatalogException, duckdb.BinderException, duckdb.ParserException)


def _run_file(con, path: Path) -> None:
    try:
        con.execute(path.read_text())
    except _DEFINITION_ERRORS as exc:
        where = f"{path.parent.name}/{path.name}"
        raise SchemaError(f"sql/{where}: {str(exc).splitlines()[0]}") from exc


def _is_new(con) -> bool:
    return con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'main' and table_name <> 'schema_migrations'"
    ).fetchall()[0][0] == 0


def _check_names_free(con, files: list[Path], path) -> None:
    """A table of the user's named like one of stellardb's views would make applying sql/ fail
    with an error that looks like stellardb's fault: say whose it is instead."""
    views = {object_name(p) for p in files if p.parent.name not in ("00_tables", "10_macros")}
    tables = {r[0] for r in con.execute(
        "select table_name from duckdb_tables() where schema_name = 'main'").fetchall()}
    clash = sorted(views & tables)
    if clash:
        raise UserError(f"{path} holds a table named {clash[0]}, a name stellardb uses for a view; rename yours "
                        f"(to my_{clash[0]}, say, with DuckDB) and run again.")


def apply_sql(con: duckdb.DuckDBPyConnection, path="database") -> list[Migration]:
    """Bring ``con`` to this version's schema, in one transaction; return the migrations run.

    A new database gets the tables of 00_tables at the latest version and records every
    migration as applied; an existing one first runs the migrations it lacks (a migration
    alters tables ``if exists``: a table the file lacks is made at the latest version by
    00_tables afterwards).  Then every layer is applied (tables ``if not exists``; macros
    and views ``create or replace``).
    """
    con.begin()
    try:
        check_not_newer(con, path)
        new = _is_new(con)
        version = schema_version(con)
        _run_file(con, sql_dir() / "00_tables" / "schema_migrations.sql")
        run = []
        now_utc = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # UTC, as model_runs and ingests
        for migration in migrations():
            if migration.version <= version:
                continue
            if not new:
                _run_file(con, migration.path)
                run.append(migration)
            con.execute("insert into schema_migrations values ($v, $n, $at)",
                        {"v": migration.version, "n": migration.name, "at": now_utc})
        files = sql_files()
        _check_names_free(con, files, path)
        for sql_path in files:
            _run_file(con, sql_path)
        con.commit()
    except BaseException:
        try:
            con.rollback()
        except duckdb.Error:  # the failure ended the transaction already (e.g. the disk filled at commit)
            pass
        raise
    return run
