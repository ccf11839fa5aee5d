"""The stellardb database: one DuckDB file, opened read-only, read-write or in memory.

:func:`connect` applies the SQL of ``sql/`` (:mod:`stellardb.catalog.schema`) to every
read-write connection, so the views are stored in the file itself and anyone who opens
it (the duckdb CLI, SQLAlchemy) sees the same ``stars``, ``features`` and
``training_set``.  Also here: the transaction helpers every writing command uses, and
the column metadata (units, UCDs) exports carry.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from pathlib import Path

import duckdb

from stellardb import config
from stellardb.catalog.schema import apply_sql, check_not_newer, latest_version, needed_by_readers, schema_version
from stellardb.errors import UserError



def default_path() -> str:
    """The database path used when none is given: ``$STELLARDB_DB`` or ./stellardb.duckdb."""
    return config.get("db")


#: The DuckDB major version whose file format stellardb writes (pyproject pins it): a file
#: made here opens in DuckDB 2.x (CLI or Python), not in 1.x; a file from a later major
#: version is refused with a clear message (:func:`check_file_format`).
DUCKDB_MAJOR = 2
# DuckDB's main header: 8-byte checksum, b"DUCK", uint64 storage version, four uint64
# flags, then the version of the DuckDB library that created the file (32 bytes).
_HEADER = struct.Struct("<8x4sQ32x32s")


def engine_config() -> dict:
    """The configuration duckdb-engine opens a file with.

    DuckDB refuses a second connection to a file already open in the same process
    with another configuration ("Can't open a connection to same database file with a
    different configuration"), so stellardb opens with exactly what SQLAlchemy's
    ``duckdb:///`` engine passes (its user agent) and sets the memory limit with
    ``SET`` afterwards: then ``stellardb.connect`` and SQLAlchemy work side by side.
    """
    # The versions from the installed metadata: importing duckdb_engine and SQLAlchemy
    # themselves would cost every command 0.3 s (measured).
    from importlib import metadata

    try:
        engine, alchemy = metadata.version("duckdb-engine"), metadata.version("sqlalchemy")
    except metadata.PackageNotFoundError:  # pragma: no cover - both are dependencies
        return {}
    return {"custom_user_agent": f"duckdb_engine/{engine}(sqlalchemy/{alchemy})"}


def file_creator(path) -> str | None:
    """The DuckDB version that created a database file (``"v2.0.1"``), from its header; None if unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
    except OSError:
        return None
    if len(head) < _HEADER.size:
        return None
    magic, _storage, creator = _HEADER.unpack(head)
    if magic != b"DUCK":
        return None
    return creator.split(b"\0", 1)[0].decode("ascii", "replace") or None


def check_file_format(path) -> None:
    """Refuse, in one line, a database file written by a newer major version of DuckDB than stellardb uses."""
    creator = file_creator(path)
    found = re.match(r"v?(\d+)\.", creator or "")
    if found and int(found.group(1)) > int(duckdb.__version__.split(".")[0]):
        raise UserError(
            f"{path} was written by DuckDB {creator}, a newer file format than this stellardb's DuckDB "
            f"{duckdb.__version__} reads; upgrade stellardb (and duckdb) to open it."
        )


def check_database_path(path) -> None:
    """Refuse, in one line, a path that is not a DuckDB file or a new path for one.

    A CSV or gzip file named by mistake would otherwise be opened by DuckDB as an
    (empty) database and every command would report work it did not keep; ``md:`` and
    other ``scheme:`` paths make DuckDB load a network extension.
    """
    text = str(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", text):
        raise UserError(f"--db {text}: DuckDB reads 'name:' as a cloud or extension path; stellardb databases are "
                        f"local files: write ./{text} for a file of that name (e.g. demo/stellardb.duckdb).")
    if text.endswith(("/", os.sep)):
        raise UserError(f"--db {text} names a folder; give the database file (e.g. {text.rstrip('/')}/stellardb.duckdb).")
    p = Path(text)
    if p.exists() and not p.is_file():
        raise UserError(f"--db {text} is a {'folder' if p.is_dir() else 'special file'}, not a DuckDB database file.")
    if p.is_file():
        try:
            with open(p, "rb") as fh:
                head = fh.read(12)
        except OSError as exc:
            raise UserError(f"Cannot read database {text}: {exc.strerror or exc}.") from None
        if head[8:12] != b"DUCK":  # (DuckDB 2 refuses an empty file too)
            what = ("a gzip file" if head[:2] == b"\x1f\x8b" else "a Parquet file" if head[:4] == b"PAR1"
                    else "a FITS file" if head.startswith(b"SIMPLE") else "an empty file (delete it, or give a new path)"
                    if not head else "a text file" if head.isascii() else "a file of another kind")
            raise UserError(f"--db {text} is {what}, not a DuckDB database; --db names the stellardb database file "
                            "(e.g. demo/stellardb.duckdb) and catalogue files go after the command.")


def _open(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    if path != ":memory:":
        check_file_format(path)
    try:
        con = duckdb.connect(path, read_only=read_only, config=engine_config())
    except duckdb.Error as exc:
        message = str(exc)
        if "lock" in message.lower():
            pid = re.search(r"PID (\d+)", message)
            holder = f" (process {pid.group(1)})" if pid else ""
            raise UserError(
                f"Database {path} is in use by another process{holder}; wait for it to finish, or close it, then retry."
            ) from None
        if "different configuration" in message:
            raise UserError(
                f"Database {path} is already open in this process with another configuration: stellardb opens files "
                "as SQLAlchemy's duckdb-engine does, so a plain duckdb.connect() to the same file (use "
                "duckdb.connect(path, read_only=..., config=stellardb.catalog.db.engine_config())) or the other read_only "
                "setting cannot share it; close the other connection (engine.dispose() for SQLAlchemy) or open both "
                "the same way."
            ) from None
        raise UserError(f"Cannot open database {path}: {message.splitlines()[0]}") from None
    if con.execute("select current_setting('lock_configuration')").fetchone()[0]:
        return con  # a read-only instance another connection of this process locked down already
    memory_limit = config.get("memory_limit")
    try:
        con.execute("set memory_limit = $limit", {"limit": memory_limit})
        con.execute("select 1").fetchall()
    except duckdb.Error as exc:
        con.close()
        reason = "is too small to run anything" if isinstance(exc, duckdb.OutOfMemoryException) else \
            "is not a memory size DuckDB understands"
        raise UserError(f"{config.setting('memory_limit').envvar}={memory_limit!r} {reason}; use a value like 4GB or 500MB.") from None
    if read_only:
        _lock_down(con)
    return con


#: Settings of a read-only database: it reads its own tables and nothing else.  No file
#: access (COPY ... TO, EXPORT DATABASE, ATTACH, read_csv of other files, INSTALL), no
#: extension downloads or loads, and the configuration locked so SQL cannot undo any
#: of it (SET, PRAGMA).  They hold for every connection to the file in this process
#: (DuckDB keeps one instance per file), SQLAlchemy's included.
READ_ONLY_SETTINGS = (
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
    ("enable_external_access", False),
    ("lock_configuration", True),
)


def _lock_down(con) -> None:
    for name, value in READ_ONLY_SETTINGS:
        con.execute(f"set {name} = {str(value).lower()}")


def connect(path: str | os.PathLike | None = None, read_only: bool = True, *,
            create: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the stellardb database with all tables and views of ``sql/``.

    Read-only by default, so that several readers (notebooks, scripts, `stellardb
    query`) can open the catalogue at once.  DuckDB lets one process write a file or
    many read it, never both: while any reader holds it open, ``ingest``, ``train``
    and ``score`` wait for it to close (they say which process holds it).  Writing
    is explicit: ``read_only=False``.

    Parameters
    ----------
    path : path, optional
        The DuckDB file (default ``$STELLARDB_DB`` or ./stellardb.duckdb); it must
        exist (``create=True`` makes a new one).  ``":memory:"`` gives a throw-away
        database with every table and view, always writable.
    read_only : bool
        Open read-only (default); the file is never written.
    create : bool
        Create the file if it does not exist (``stellardb ingest``); implies writing.

    Raises
    ------
    UserError
        The file is missing, from a newer DuckDB, locked by another writing process,
        or (read-only) lacks the stellardb views or needs a migration to be read correctly
        (`stellardb migrate`); a table of the user's holds the name of a stellardb view.
    """
    path = str(path if path is not None else default_path())
    if path == ":memory:":
        con = _open(path, read_only=False)
        apply_sql(con)
        return con
    check_database_path(path)
    if not Path(path).is_file() and not create:
        raise UserError(f"No stellardb database at {Path(path).absolute()}. Create one with `stellardb ingest`, "
                        "or pass --db PATH (env STELLARDB_DB).")
    if read_only and not create:
        con = _open(path, read_only=True)
        if not _has_views(con):
            con.close()
            raise UserError(f"{path} has no stellardb views; open it once for writing (e.g. `stellardb xmatch`) to create them.")
        try:
            version = check_not_newer(con, path)
            # an older file is read as it is unless a migration it lacks changes what readers see
            needed = needed_by_readers(con, version) if version < latest_version() else []
        except BaseException:
            con.close()
            raise
        if needed:
            con.close()
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in needed)
            raise UserError(f"{path} has schema version {version}, written by an older stellardb, and needs {names} "
                            f"to be read correctly; run `stellardb --db {path} migrate` once (nothing is lost), then "
                            "open it again.")
        return con
    con = _open(path, read_only=False)
    try:
        apply_sql(con, path)
    except BaseException:
        con.close()
        raise
    return con


def migrate(path) -> tuple[int, int, list]:
    """Bring the file at ``path`` to this version's schema (opening it for writing does):
    returns (version before, version after, the migrations run)."""
    path = str(path)
    check_database_path(path)
    if not Path(path).is_file():
        raise UserError(f"No stellardb database at {Path(path).absolute()}; pass --db PATH (env STELLARDB_DB).")
    con = _open(path, read_only=False)  # one open: the version before, then what apply_sql ran
    try:
        before = schema_version(con)
        run = apply_sql(con, path)
        return before, schema_version(con), run
    finally:
        con.close()


def _has_views(con) -> bool:
    names = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    return {"stars", "features", "training_set"} <= names


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


def quote_literal(text) -> str:
    """A string (or path) as a DuckDB string literal, for statements that take no parameters
    (COPY ... TO, a view's read_parquet)."""
    return "'" + str(text).replace("'", "''") + "'"


def row_count(con, table: str) -> int:
    return con.execute(f"select count(*) from {quote_identifier(table)}").fetchone()[0]


def get_setting(con, name: str) -> float:
    return con.execute("select value from settings where name = $n", {"n": name}).fetchone()[0]


def set_setting(con, name: str, value: float) -> None:
    con.execute("update settings set value = $v where name = $n", {"v": float(value), "n": name})


# ---------------------------------------------------------------- saying why


def why_not_scored_summary(con, limit: int = 3) -> str:
    """The commonest reasons (view ``why_not_scored``) that stars miss the feature cuts, as one phrase:
    ``"40,000 no SkyMapper counterpart: ...; 12 fainter than G = 18 mag ..."``."""
    rows = con.execute(
        "select reason, count(*) as n from why_not_scored where reason is not null "
        "group by reason order by n desc, reason limit $k", {"k": limit}
    ).fetchall()
    n_gaia = row_count(con, "gaia_src")
    if n_gaia == 0:
        return "the gaia table is empty: `stellardb ingest gaia FILE` first"
    return "; ".join(f"{n:,} of {n_gaia:,} Gaia sources: {reason}" for reason, n in rows)


# ---------------------------------------------------------------- column metadata

#: Where an output column's unit, UCD and description are looked up when the query names
#: none of the tables that have it, most specific first.
_METADATA_ORDER = ("predictions", "stars", "features", "why_not_scored", "gaia", "skymapper", "distances", "sos",
                   "xmatch", "xmatch_labels")
#: Views, and the tables whose entries their columns take, in order of preference.
_VIEW_SOURCES = {
    "stars_with_predictions": ("predictions", "stars", "gaia", "distances", "skymapper", "xmatch"),
    "catalogue_of_model": ("predictions", "stars", "gaia", "distances", "skymapper", "xmatch"),
    # a release's cone searches (stellardb/release/reader.py)
    "gaia_cone": ("gaia",),
    "catalogue_cone": ("catalogue",),
    "skymapper_cone": ("skymapper",),
    "stars": ("stars", "gaia", "distances", "skymapper", "xmatch"),
    "features": ("features", "gaia", "distances", "skymapper"),
    "scoring_set": ("features", "gaia", "distances", "skymapper"),
    "training_set": ("sos", "features", "gaia", "distances", "skymapper"),
    "why_not_scored": ("why_not_scored", "gaia"),
    "labels": ("labels", "sos"),
    "best_labels": ("labels", "sos"),
}


def _type_family(type_name: str) -> str:
    """bool / number / text / time / other, for telling a column of a table from a computed one."""
    t = type_name.upper()
    if t == "BOOLEAN":
        return "bool"
    if t in ("VARCHAR", "UUID") or t.startswith("VARCHAR"):
        return "text"
    if t.startswith(("TIMESTAMP", "DATE", "TIME")):
        return "time"
    if t.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                     "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")):
        return "number"
    return "other"


def column_metadata(con, names, sql: str | None = None, types: dict | None = None) -> dict[str, dict]:
    """Unit, UCD and description (table ``column_metadata``) for each of ``names`` that has them.

    A result column does not say which table it came from, so each name is looked up
    in the tables and views that ``sql`` reads (``teff`` of ``sos`` is a reference
    label, of ``predictions`` a prediction); without ``sql``, in all of them.  With
    ``types`` (name -> DuckDB type of the result column), an entry whose column is of
    another kind is passed over: ``select true as b from gaia`` is not Galactic latitude.

    Returns
    -------
    dict
        ``{name: {"unit": str | None, "ucd": str | None, "description": str | None}}``.
    """
    try:
        rows = con.execute("select table_name, column_name, unit, ucd, description from column_metadata").fetchall()
    except duckdb.Error:  # a database from before the table: no metadata, not an error
        return {}
    if sql:
        try:
            read = {name.lower() for name in duckdb.get_table_names(sql)}
        except duckdb.Error:
            read = set()
        order: list[str] = []
        # a source view (gaia_src) describes its table's columns
        read = {name.removesuffix("_src") for name in read}
        # table macros (catalogue_of_model('m')) are calls, not table names, to DuckDB's parser
        read |= {name.lower() for name in re.findall(r"\b(\w+)\s*\(", sql)} & set(_VIEW_SOURCES)
        for name in sorted(read, key=lambda n: (n not in _VIEW_SOURCES, n)):
            order.extend(t for t in _VIEW_SOURCES.get(name, (name,)) if t not in order)
    else:
        order = list(_METADATA_ORDER)
    rank = {t: i for i, t in enumerate(order)}
    family = {}
    if types:
        family = {(t.lower(), c.lower()): _type_family(d) for t, c, d in con.execute(
            "select table_name, column_name, data_type from duckdb_columns()").fetchall()}
    candidates: dict[str, list] = {}
    for table, column, unit, ucd, description in sorted(rows, key=lambda r: rank.get(r[0], len(rank))):
        if table in rank:
            candidates.setdefault(column.lower(), []).append((table, unit, ucd, description))
    out = {}
    for name in names:
        for table, unit, ucd, description in candidates.get(str(name).lower(), ()):
            source = family.get((table, str(name).lower()))
            if types and name in types and source is not None and source != _type_family(types[name]):
                continue
            out[name] = {"unit": unit, "ucd": ucd, "description": description}
            break
    return out


# ---------------------------------------------------------------- ending transactions


def rollback(con) -> bool:
    """Roll back the open transaction; False if there was none (it had committed).

    Ctrl-C or SIGTERM raises in Python only between statements, so it can arrive just
    after a commit returned; the caller's clean-up then finds nothing to roll back,
    and must report the work as done (:func:`undo_or_report`).
    """
    try:
        con.execute("rollback")
    except duckdb.TransactionException:
        return False
    return True


def undo_or_report(con, exc: BaseException, what: str, begun: bool = True) -> None:
    """In a command's ``except BaseException`` around its transaction: roll back, or, if the
    transaction had committed before an interrupt, raise InterruptedAfterCommit saying ``what`` is stored.

    ``begun``: whether the transaction had been started (an interrupt before ``begin``
    finds nothing to roll back either, and nothing was stored).
    """
    from stellardb.errors import InterruptedAfterCommit, is_interrupt

    if not begun:
        return
    if not rollback(con) and is_interrupt(exc):
        raise InterruptedAfterCommit(f"Interrupted after the commit: {what} is stored and complete.") from None


@contextlib.contextmanager
def transaction(con, what):
    """``with transaction(con, "the crossmatch (table xmatch)"):`` one transaction around the
    block: committed when the block ends, rolled back when anything (Ctrl-C included) escapes it,
    and reported as stored when an interrupt arrives just after the commit (:func:`undo_or_report`).

    ``what`` names the work for that report: a string, or a function giving it at that moment
    (``lambda: f"{done:,} stars"``)."""
    begun = False
    try:
        con.begin()
        begun = True
        yield con
        con.execute("commit")  # not con.commit(), which does nothing when no transaction is open
    except BaseException as exc:
        undo_or_report(con, exc, what() if callable(what) else what, begun)
        raise
