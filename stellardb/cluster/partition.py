"""One Gaia partition as a database: an in-memory DuckDB with the project's whole schema (empty
tables, every view of sql/) whose ``*_src`` views read the partition's files instead, so the
embedded SQL (``all_features``, ``catalogue_of_model``, ...) runs on it unchanged."""

from __future__ import annotations

import contextlib
import functools
import threading

from stellardb.catalog import db
from stellardb.cluster.xmatch import _create_source
from stellardb.release.partition import SPATIAL_INDEX_COLUMN


def open_partition(task: dict, views: dict):
    """The partition database of ``task`` (its ``gaia`` file, ``threads``, ``limit``, ``spill``,
    ``survey_files``); ``views`` maps a source view (``distances_src``, ``xmatch_src``,
    ``predictions_src``, ``labels``) to the partition's file of that catalogue, or None (no rows).
    SkyMapper rows are those paired with the partition's Gaia sources, read from the survey
    partitions around it by a semi-join (a coarse partition's border is too many HEALPix ranges
    for one condition)."""
    con = db.connect(":memory:")
    try:
        _point_at(con, task, views)
    except BaseException:
        con.close()
        raise
    return con


#: each thread's idle partition database between tasks (thread ident -> (connection, spill folder,
#: run)); a database in a task is not here, so close_kept never closes one in use
_kept: dict = {}
#: runs that have ended: a task of one still running (cancelled when another task failed; Dask
#: cannot stop a running task) closes its database instead of keeping it
_ended: set = set()
_kept_lock = threading.Lock()


@contextlib.contextmanager
def kept_partition(task: dict, views: dict):
    """:func:`open_partition`'s database, kept for the calling thread's next task (a Dask worker
    runs one task per thread at a time) with its views pointed at the new task's files.

    Applying the schema (77 files of sql/) takes 0.12 s, 5-7 % of a score task of 947 k Gaia rows
    (2026-12-08).  Only for tasks that read: one that creates or replaces views of its own would
    leave them to the next.  An exception inside the block closes the database, so the next task
    starts clean; so does another spill folder (DuckDB cannot move its temporary files once used).
    An idle database keeps what DuckDB's allocator holds (up to its query's peak, within DuckDB's
    share of the budget) until :func:`close_kept`, which a run (``task["run"]``) calls on every
    worker at its end, failed or not."""
    ident = threading.get_ident()
    with _kept_lock:
        con, spill, _ = _kept.pop(ident, (None, None, None))
    if con is not None and spill != task["spill"]:
        con.close()
        con = None
    try:
        if con is None:
            con = db.connect(":memory:")
        _point_at(con, task, views)
        yield con
    except BaseException:
        if con is not None:
            con.close()
        raise
    with _kept_lock:
        older = _kept.pop(ident, (None, None, None))[0]  # a nested use's: one database a thread
        ended = task["run"] in _ended
        if not ended:
            _kept[ident] = (con, task["spill"], task["run"])
    for done in (older, con if ended else None):
        if done is not None:
            done.close()


def close_kept(run: str) -> int:
    """At the end of ``run``, close this process's idle partition databases of it, returning their
    memory and letting go of its spill folder (the workers of a ``--scheduler`` cluster outlive
    the run); a task of it that ends later closes its own.  Returns how many were closed."""
    with _kept_lock:
        _ended.add(run)
        idle = [ident for ident, (_, _, of) in _kept.items() if of == run]
        closing = [_kept.pop(ident)[0] for ident in idle]
    for con in closing:
        con.close()
    return len(closing)


@functools.lru_cache(maxsize=1)
def _default_views() -> dict:
    """The schema's own definition of each view a partition database may point elsewhere."""
    from stellardb.catalog.schema import object_name, sql_files

    names = {"gaia_src", "distances_src", "xmatch_src", "predictions_src", "labels", "skymapper_src"}
    return {object_name(p): p.read_text() for p in sql_files() if object_name(p) in names}


def _point_at(con, task: dict, views: dict) -> None:
    """Set the task's limits and point ``gaia_src``, the ``views`` given a file and ``skymapper_src``
    at its files.  Every other view a partition database may point elsewhere gets the schema's own
    definition back (its empty table), and the ``*_part`` views the task does not make are dropped,
    whatever an earlier task of a kept database set."""
    con.execute(f"set threads = {int(task['threads'])}")
    con.execute("set memory_limit = $m", {"m": task["limit"]})
    con.execute("set temp_directory = $t", {"t": task["spill"]})
    defaults = _default_views()
    pointed = {"gaia_src": "gaia_part"}  # view -> the view of the task's files it reads
    _create_source(con, "gaia_part", [task["gaia"]])
    con.execute(f"create or replace view gaia_src as select * exclude ({SPATIAL_INDEX_COLUMN}) from gaia_part")
    for view, file in views.items():
        if view not in defaults:
            raise ValueError(f"a partition database cannot point view {view} at a file")
        if file:
            # the co-partitioned catalogues carry their Gaia source's ra, dec besides the table's columns
            _create_source(con, f"{view}_part", [file])
            con.execute(f"create or replace view {view} as select * exclude ({SPATIAL_INDEX_COLUMN}, ra, dec) "
                        f"from {view}_part")
            pointed[view] = f"{view}_part"
    if task["survey_files"] and views.get("xmatch_src"):
        _create_source(con, "skymapper_part", task["survey_files"],
                       "object_id in (select skymapper_object_id from xmatch_src_part)")
        con.execute(f"create or replace view skymapper_src as select * exclude ({SPATIAL_INDEX_COLUMN}) "
                    "from skymapper_part")
        pointed["skymapper_src"] = "skymapper_part"
    for view, definition in defaults.items():
        if view not in pointed:
            con.execute(definition)
    made = set(pointed.values())
    for part in sorted(({"skymapper_part"} | {f"{v}_part" for v in defaults}) - made):
        con.execute(f"drop view if exists {part}")
