"""One Gaia partition as a database: an in-memory DuckDB with the project's whole schema (empty
tables, every view of sql/) whose ``*_src`` views read the partition's files instead, so the
embedded SQL (``all_features``, ``catalogue_of_model``, ...) runs on it unchanged."""

from __future__ import annotations

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
        con.execute(f"set threads = {int(task['threads'])}")
        con.execute("set memory_limit = $m", {"m": task["limit"]})
        con.execute("set temp_directory = $t", {"t": task["spill"]})
        _create_source(con, "gaia_part", [task["gaia"]])
        con.execute(f"create or replace view gaia_src as select * exclude ({SPATIAL_INDEX_COLUMN}) from gaia_part")
        for view, file in views.items():
            if file:
                # the co-partitioned catalogues carry their Gaia source's ra, dec besides the table's columns
                _create_source(con, f"{view}_part", [file])
                con.execute(f"create or replace view {view} as select * exclude ({SPATIAL_INDEX_COLUMN}, ra, dec) "
                            f"from {view}_part")
        if task["survey_files"] and views.get("xmatch_src"):
            _create_source(con, "skymapper_part", task["survey_files"],
                           "object_id in (select skymapper_object_id from xmatch_src_part)")
            con.execute(f"create or replace view skymapper_src as select * exclude ({SPATIAL_INDEX_COLUMN}) "
                        "from skymapper_part")
    except BaseException:
        con.close()
        raise
    return con
