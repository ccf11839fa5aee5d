"""The release being served, and the switch to a new one without a restart.

A :class:`Served` release is one DuckDB over the release's Parquet files
(:func:`stellardb.release.reader.connect`): its views live in a private DuckDB file opened
read-only (nothing can be created, replaced or attached) and it is locked down (no file
access outside the release, no SET, no INSTALL/LOAD), with

* the release's catalogues also in a schema named after the release (``demo_1.gaia``), as
  TAP wants every table in a schema, and the unqualified names kept;
* ``TAP_SCHEMA`` (schemas, tables, columns, keys, key_columns) built from the release's
  column metadata (:mod:`stellardb.service.metadata`);
* a pool of cursors: each query runs on a cursor of its own (DuckDB connections are not
  shared between threads) and can be cancelled by :meth:`Served.execute`'s timer.

:class:`Holder` hands out the release to each request.  When it follows ``latest`` it looks
at the pointer at most every :data:`CHECK_EVERY_S` and, on a change, opens the new release
in a background thread; requests keep getting the old one until the new one is ready, and
the old one is closed only when its last query has finished.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stellardb.catalog.db import quote_literal
from stellardb.errors import UserError
from stellardb.release import layout, reader
from stellardb.service import metadata

#: how often a service following ``latest`` looks at the pointer (a readlink: microseconds)
CHECK_EVERY_S = 0.25
#: how long a ``latest`` that could not be opened is left before it is tried again
RETRY_S = 10.0

#: the most disk the service's queries may spill to together (beyond: the query fails, not the disk)
SPILL_LIMIT = "10GB"

#: the hidden column of each served table naming the file a row came from (service.adql prunes on it)
FILE_COLUMN = "_stellardb_file"

#: the catalogues the service publishes (the views of sql/ stay internal)
SERVED_TABLES = ("gaia", "skymapper", "distances", "labels", "xmatch", "predictions", "catalogue")


class QueryTimeout(Exception):
    """The query ran past the time limit and was cancelled."""


class NotOneSelect(Exception):
    """The SQL is not exactly one SELECT statement."""


def schema_name(release_name: str) -> str:
    """The ADQL schema of a release: its name as a regular identifier (``demo-1`` -> ``demo_1``;
    a name starting with a digit gets an ``r``: ``2026-12a`` -> ``r2026_12a``)."""
    name = re.sub(r"[^a-z0-9_]", "_", release_name.lower())
    return name if name[:1].isalpha() else "r" + name


@dataclass
class Served:
    name: str
    path: Path
    schema: str
    manifest: dict
    con: object
    #: ADQL tables (stellardb.service.adql.Table) the queries may read, TAP_SCHEMA's included
    tables: tuple
    #: table -> [metadata.Column], for VOSI tables and the FIELDs of results
    columns: dict
    #: the private folder of its DuckDB file, removed when it closes
    private: str | None = None
    _cursors: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _active: int = 0
    _retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _row_groups: object = None
    _column_index: dict | None = None
    #: the mapped Arrow copies of its files for cones (stellardb.service.mirror.Mirror), or None
    mirror: object = None

    def row_groups(self):
        """The index of this release's row groups for reading a few rows without DuckDB
        (stellardb.service.rowgroups: the star page), made at its first use."""
        with self._lock:
            if self._row_groups is None:
                from stellardb.service.rowgroups import ReleaseRowGroups

                self._row_groups = ReleaseRowGroups(self)
            return self._row_groups

    def column(self, table: str, name: str):
        """The metadata.Column of ``table.name``, or None."""
        index = self._column_index
        if index is None:  # made once (a star page asks ~200 times, a cone once per column)
            index = self._column_index = {(t, c.name): c for t, found in self.columns.items()
                                          for c in reversed(found)}
        return index.get((table, name))

    # -- queries -------------------------------------------------------------------------------
    @contextmanager
    def lease(self):
        """Hold the release open while a request uses it (a retired release closes after the last);
        a retired release cannot be leased any more (Holder.lease then takes the new one)."""
        if not self._acquire():
            raise RuntimeError(f"release {self.name} is retired")
        try:
            yield self
        finally:
            self._release()

    def _acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._active += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._active -= 1
            close = self._retired and self._active == 0
        if close:
            self._close()

    def execute(self, sql: str, timeout_s: float, should_stop=None, tables: dict | None = None):
        """Run ``sql`` on a cursor of its own; the Arrow result.  Past ``timeout_s``, or once
        ``should_stop()`` is true (an aborted job), the query is interrupted and QueryTimeout
        raised.  Anything but one SELECT statement raises NotOneSelect (the translator makes only
        those: this is defence in depth).  ``tables`` (name -> Arrow table: a request's uploads)
        are visible to this query only: registered on its cursor, and dropped after."""
        import duckdb

        try:
            cursor = self._cursors.get_nowait()
        except queue.Empty:
            cursor = self.con.cursor()
        statements = cursor.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            self._cursors.put(cursor)
            raise NotOneSelect()
        fired, done = threading.Event(), threading.Event()

        def cancel():
            # DuckDB drops an interrupt that arrives before the query runs (while it binds):
            # repeat it until the query is over
            if should_stop is None:
                stopped = done.wait(timeout_s)
            else:  # a job: look at its abort flag a few times a second
                deadline = time.monotonic() + timeout_s
                while not (stopped := done.wait(min(0.2, max(0.0, deadline - time.monotonic())))):
                    if time.monotonic() >= deadline or should_stop():
                        break
            if not stopped:
                fired.set()
                while not done.is_set():
                    cursor.interrupt()
                    done.wait(0.05)

        watchdog = threading.Thread(target=cancel, daemon=True, name="stellardb-query-timeout")
        watchdog.start()
        try:
            with warnings.catch_warnings():
                # DuckDB notes that Arrow from execute() copies the rows; cursor.sql() binds the query
                # twice instead (17 -> 12.5 ms a cone, measured): the copy is the cheaper
                warnings.simplefilter("ignore", UserWarning)
                for name, table in (tables or {}).items():
                    cursor.register(name, table)
                return cursor.execute(sql).to_arrow_table()
        except Exception:
            if fired.is_set():
                raise QueryTimeout() from None
            raise
        finally:
            done.set()
            watchdog.join()
            if fired.is_set() or tables:  # an interrupt may land after the query; uploads stay with
                cursor.close()          # their cursor: never reuse either
            else:
                self._cursors.put(cursor)

    def retire(self) -> None:
        """No new requests get this release; it closes when the running ones finish."""
        with self._lock:
            self._retired = True
            close = self._active == 0
        if self.mirror is not None:
            self.mirror.stop()  # copies no more; what is mapped stays readable for running requests
        if close:
            self._close()

    def _close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()  # its maps go now, not when the garbage collector gets to them
        while True:
            try:
                self._cursors.get_nowait().close()
            except queue.Empty:
                break
        self.con.close()
        if self.private:
            import shutil

            shutil.rmtree(self.private, ignore_errors=True)


def open_release(path: Path, memory_limit: str | None = None, threads: int | None = None) -> Served:
    """A :class:`Served` over the release folder ``path``: its views and TAP_SCHEMA are built in a
    private DuckDB file, reopened read-only (nothing can be created, replaced or attached)."""
    import atexit
    import shutil
    import tempfile

    from stellardb.service import adql

    path = Path(path).resolve()
    manifest = json.loads((path / layout.MANIFEST).read_text())
    name = manifest.get("name", path.name)
    schema = schema_name(name)
    built: dict = {}
    # each table's files with the _healpix_29 range of their pixel: the views read them, and the
    # translator names the ones a spatial test needs (the same strings, so they match)
    partitions_of = {table: tuple((first, last, str(f)) for first, last, f in layout.partitions(path, table))
                     for table in SERVED_TABLES if table in manifest["catalogues"]}
    # outside the folders DuckDB may touch (the release and its spill folder)
    private = tempfile.mkdtemp(prefix="stellardb-serve-")
    atexit.register(shutil.rmtree, private, True)

    def setup(con):
        con.execute(f"create schema {schema}")
        for table in SERVED_TABLES:
            if table in partitions_of:
                # the release's files with each row's file name, which the spatial tests name (service.adql)
                files = "[" + ", ".join(quote_literal(f) for _, _, f in partitions_of[table]) + "]"
                con.execute(f"create view {schema}.{table} as select * from read_parquet({files}, "
                            f"hive_partitioning = false, filename = '{FILE_COLUMN}')")
            else:  # a table the database had no rows of: the release reader's empty view
                con.execute(f"create view {schema}.{table} as select * from main.{table}")
        built["columns"] = metadata.release_columns(con, SERVED_TABLES)
        built["tap"] = metadata.create_tap_schema(con, schema, name, manifest, built["columns"])

    try:
        (Path(private) / "catalog").mkdir()
        (Path(private) / "spill").mkdir()
        con = reader.connect(path, setup=setup, memory_limit=memory_limit,
                             catalog_file=Path(private) / "catalog" / "service.duckdb", spill_limit=SPILL_LIMIT,
                             spill_dir=Path(private) / "spill", threads=threads)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    columns = built["columns"]
    tables = []
    for table in SERVED_TABLES:
        names = tuple(c.name for c in columns[table])
        position = reader.CONE_TABLES.get(table, ("ra", "dec"))
        partitions = partitions_of.get(table, ())
        tables.append(adql.Table(schema, table, f'"{schema}"."{table}"', names,
                                 position=position if set(position) <= set(names) else None,
                                 healpix_column="_healpix_29" if "_healpix_29" in names else None,
                                 partitions=partitions, file_column=FILE_COLUMN if partitions else None))
    for table, names in built["tap"].items():
        tables.append(adql.Table("tap_schema", table, f'"tap_schema"."{table}"', names))
        columns[f"tap_schema.{table}"] = metadata.tap_schema_columns()[table]
    return Served(name, path, schema, manifest, con, tuple(tables), columns, private=private)


class Holder:
    """Gives each request the release to answer it; follows ``latest`` when asked to.

    Parameters
    ----------
    root : Path
        The folder of releases.
    which : str
        A release name, ``latest``, or a release folder.
    """

    def __init__(self, root: Path, which: str, memory_limit: str | None = None, threads: int | None = None,
                 cache: Path | None = None, cache_tables: tuple[str, ...] = ("catalogue",)):
        self.root = Path(root)
        #: where the tables ``cache_tables`` of each release served are copied for cones (mirror.py);
        #: None: not copied
        self._cache, self._cache_tables = cache, tuple(cache_tables)
        self.which = which
        self.follows_latest = which == layout.LATEST
        self._memory_limit = memory_limit
        self._threads = threads
        #: holders closed with this one (serve's second, for asynchronous jobs)
        self.companions: list[Holder] = []
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._loading: str | None = None
        self._failed: str | None = None
        self._failed_at = 0.0
        self._switching: threading.Thread | None = None
        self.load_error: str | None = None
        folder = layout.resolve(self.root, which)
        self._target = os.path.realpath(folder)
        self.current = self._copied(open_release(folder, memory_limit, threads))

    @contextmanager
    def lease(self):
        """The release to answer a request with, held open until the request is done.  Taken and
        held in one step: a switch between picking a release and using it would close it under the
        request."""
        while True:
            served = self.get()
            if served._acquire():
                break  # else it was retired just now: self.current is already the new one
        try:
            yield served
        finally:
            served._release()

    def get(self) -> Served:
        """The release to use now (checks ``latest`` at most every CHECK_EVERY_S)."""
        if self.follows_latest and time.monotonic() - self._checked_at > CHECK_EVERY_S:
            self._checked_at = time.monotonic()
            self._maybe_switch()
        return self.current

    def _maybe_switch(self) -> None:
        try:
            target = os.path.realpath(self.root / layout.LATEST)
        except OSError:
            return
        with self._lock:
            if target == self._target or target == self._loading or (
                    target == self._failed and time.monotonic() - self._failed_at < RETRY_S):
                return
            self._loading = target
        self._switching = threading.Thread(target=self._switch, args=(target,), daemon=True,
                                           name="stellardb-release-switch")
        self._switching.start()

    def _switch(self, target: str) -> None:
        try:
            new = self._copied(open_release(Path(target), self._memory_limit, self._threads))
        except (UserError, OSError, ValueError, KeyError) as exc:
            # a damaged, half-copied or removed release: keep serving the old one, say why on
            # /tap/availability, and try it again after RETRY_S (not on every request)
            with self._lock:
                self._loading = None
                self._failed, self._failed_at = target, time.monotonic()
            self.load_error = str(exc).replace(str(self.root), "...")
            return
        with self._lock:
            old, self.current = self.current, new
            self._target, self._loading = target, None
            self.load_error = None
        old.retire()

    def _copied(self, served: Served) -> Served:
        """``served``, its cone tables being copied in the background (when a cache is set)."""
        if self._cache is not None:
            from stellardb.service.mirror import Mirror

            files = {t.name: [f for _, _, f in t.partitions] for t in served.tables
                     if t.schema == served.schema and t.name in self._cache_tables and t.partitions}
            if files:
                try:
                    served.mirror = Mirror(self._cache, served.path, files).start()
                except RuntimeError:  # no thread to copy with: cones read Parquet
                    served.mirror = None
        return served

    def stop_copying(self, wait_s: float = 5.0) -> None:
        """Stop the cone cache's copying of the release served (the service is stopping): a copy being
        written is abandoned and its temporary file removed, within ``wait_s``."""
        mirror = self.current.mirror
        if mirror is not None:
            mirror.stop()
            mirror.join(wait_s)

    def close(self) -> None:
        """Retire the release served (idempotent), after a release being opened is ready: a DuckDB
        opened while the interpreter shuts down can abort the process."""
        if self._switching is not None:
            self._switching.join(60)
        self.stop_copying()
        if not self.current._retired:
            self.current.retire()
        for other in self.companions:
            other.close()


class LazyHolder:
    """A Holder made at its first use (serve's second one, for asynchronous jobs)."""

    def __init__(self, make):
        self._make = make
        self._held: Holder | None = None
        self._lock = threading.Lock()

    def _holder(self) -> Holder:
        with self._lock:
            if self._held is None:
                self._held = self._make()
            return self._held

    def get(self) -> Served:
        return self._holder().get()

    def lease(self):
        return self._holder().lease()

    @property
    def current(self) -> Served:
        return self._holder().current

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.close()
