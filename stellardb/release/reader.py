"""Read a release with DuckDB, without the database file: ``stellardb query --release``.

An in-memory DuckDB gets one view per catalogue of the release, over its Parquet files,
named as in the release (``gaia``, ``skymapper``, ``distances``, ``labels``, ``xmatch``,
``predictions``, ``catalogue``), and the views of ``sql/`` that read them (``stars``,
``stars_with_predictions``, ``best_labels``, ``features``), so the SQL that runs on the
database runs here and returns the same rows.

Cone searches: ``select * from gaia_cone(ra_deg, dec_deg, radius_arcsec)`` (also
``catalogue_cone``, ``skymapper_cone``).  Each adds ``_healpix_29`` ranges covering the
cone (cdshealpix) to the distance test; DuckDB folds them to constants and skips every row
group outside them by its statistics, so a small cone reads one or two row groups of one
or two partitions instead of the whole release.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import duckdb
import numpy as np

from stellardb.catalog import db
from stellardb.catalog.schema import sql_dir, sql_files
from stellardb.errors import UserError
from stellardb.release import layout
from stellardb.release.partition import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER

#: release catalogue -> the *_src view of the database that the views of sql/ read
SOURCE_VIEWS = {"gaia": "gaia_src", "skymapper": "skymapper_src", "distances": "distances_src",
                "xmatch": "xmatch_src", "predictions": "predictions_src"}
#: views of sql/ that a release can answer (they read only the views above and ``labels``)
MART_FILES = ("40_marts/best_labels.sql", "40_marts/stars.sql", "40_marts/stars_with_predictions.sql",
              "40_marts/features.sql")
#: catalogues with positions, and their columns, for the *_cone table macros
CONE_TABLES = {"gaia": ("ra", "dec"), "catalogue": ("ra", "dec"), "skymapper": ("raj2000", "dej2000")}
#: columns the marts read that releases made by older versions lack (read as NULL there)
ADDED_COLUMNS = {"predictions": {"feature_set": "varchar"}}
#: at most this many _healpix_29 ranges per cone (unused ones are empty)
CONE_RANGES = 8


def connect(release: Path, setup=None, memory_limit: str | None = None,
            catalog_file: Path | None = None, spill_limit: str | None = None,
            spill_dir: Path | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only, in-memory DuckDB over the release folder ``release``.

    ``setup(con)``, when given, runs just before the connection is locked down (the service
    adds its schemas and TAP_SCHEMA there); ``memory_limit`` overrides STELLARDB_MEMORY_LIMIT.
    ``catalog_file``: build the views in this new DuckDB file instead of in memory, then reopen
    it read-only, so that not even SQL that reached DuckDB could create, replace or attach
    anything (the service; an in-memory database cannot be read-only).  ``spill_limit``: the most
    disk DuckDB may spill to (default: DuckDB's, 90 % of the free space); ``spill_dir``: an empty
    folder for it, which the caller removes (default: a new one, removed when the process ends).
    ``threads``: DuckDB's threads (default: the machine's cores); 1 runs every query in the thread
    that asks (the service's asynchronous jobs, in threads of lower priority).

    Raises
    ------
    UserError
        The release is damaged: its manifest or a catalogue's files are missing or unreadable.
    """
    release = Path(release)
    try:
        return _connect(release, setup, memory_limit, catalog_file, spill_limit, spill_dir, threads)
    except (OSError, ValueError, KeyError, TypeError, duckdb.IOException, duckdb.InvalidInputException) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise UserError(f"Release {release.name} is damaged ({type(exc).__name__}: "
                        f"{detail.replace(str(release.parent), '...')}); make a new release.") from None


def _connect(release: Path, setup, memory_limit: str | None, catalog_file: Path | None,
             spill_limit: str | None, spill_dir: Path | None, threads: int | None) -> duckdb.DuckDBPyConnection:
    import atexit
    import shutil
    import tempfile

    manifest = json.loads((release / layout.MANIFEST).read_text())
    # DuckDB adds its spill folder to the readable ones: make it an empty one of its own,
    # removed when the process ends
    if spill_dir is not None:
        spill = str(spill_dir)
    else:
        spill = tempfile.mkdtemp(prefix="stellardb-release-")
        atexit.register(shutil.rmtree, spill, True)
    con = duckdb.connect(str(catalog_file) if catalog_file else ":memory:")
    try:
        _configure(con, spill, memory_limit, spill_limit, threads)
        for path in sql_files():  # dependency-sorted
            if path.parent.name == "10_macros":
                con.execute(path.read_text())
        _register_cone_functions(con)
        present = list(manifest["catalogues"])
        for name in present:
            files = "[" + ", ".join(db.quote_literal(f) for f in layout.data_files(release, name)) + "]"
            con.execute(f"create view {name} as select * from read_parquet({files}, hive_partitioning = false)")
            if name in SOURCE_VIEWS:
                # a release made before a column existed reads it as NULL (releases are never rewritten)
                have = {d[0].lower() for d in con.execute(f"select * from {name} limit 0").description}
                added = "".join(f", null::{kind} as {column}" for column, kind in ADDED_COLUMNS.get(name, {}).items()
                                if column not in have)
                con.execute(f"create view {SOURCE_VIEWS[name]} as select * exclude ({SPATIAL_INDEX_COLUMN}"
                            f"{', ra, dec' if name in ('distances', 'xmatch', 'predictions') else ''}){added} from {name}")
        missing = sorted(set(SOURCE_VIEWS) - set(present))
        empty = _empty_sources([SOURCE_VIEWS[name] for name in missing])
        for name in missing:  # a table the database had no rows of: no rows here
            con.execute(f"create view {SOURCE_VIEWS[name]} as select * from ({empty[SOURCE_VIEWS[name]]})")
            extra = ", null::double as ra, null::double as dec" if name in ("distances", "xmatch", "predictions") else ""
            con.execute(f"create view {name} as select null::bigint as {SPATIAL_INDEX_COLUMN}, *{extra} "
                        f"from {SOURCE_VIEWS[name]}")
        if "labels" not in present:
            con.execute(f"create view labels as select null::bigint as {SPATIAL_INDEX_COLUMN}, "
                        "null::varchar as survey, null::bigint as source_id, "
                        "null::double as teff, null::double as e_teff, null::double as logg, null::double as e_logg, "
                        "null::double as feh, null::double as e_feh, null::double as match_sep_arcsec, null::double as ra, "
                        "null::double as dec where false")
        for relative in MART_FILES:
            con.execute((sql_dir() / relative).read_text())
        for name, (ra, dec) in CONE_TABLES.items():
            con.execute(_cone_macro(name, ra, dec))
        _column_metadata_table(con, release, present)
        if setup is not None:
            setup(con)
        if catalog_file:
            con.close()
            con = duckdb.connect(str(catalog_file), read_only=True)
            _configure(con, spill, memory_limit, spill_limit, threads)
            _register_cone_functions(con)
            _column_metadata_table(con, release, present)
        # exactly the data files, not the release's folder: DuckDB's allowed folders may also be
        # written (COPY ... TO a new file there, EXPORT DATABASE), exact paths cannot be created
        files = [f for name in present for f in layout.data_files(release, name)]
        con.execute("set allowed_paths = $p", {"p": sorted({str(f) for f in files} | {str(f.resolve()) for f in files})})
        db._lock_down(con)
    except BaseException:
        con.close()
        raise
    return con


def _configure(con, spill: str, memory_limit: str | None, spill_limit: str | None = None,
               threads: int | None = None) -> None:
    con.execute("set temp_directory = $t", {"t": spill})
    if threads:
        con.execute(f"set threads = {int(threads)}")
    if spill_limit:
        con.execute("set max_temp_directory_size = $s", {"s": spill_limit})
    try:
        con.execute("set memory_limit = $m", {"m": memory_limit or _memory_limit()})
    except duckdb.Error:
        from stellardb import config

        given = f"{memory_limit!r}" if memory_limit else \
            f"{config.setting('memory_limit').envvar}={_memory_limit()!r}"
        raise UserError(f"{given} is not a memory size DuckDB understands; use a value like 4GB or 500MB.") \
            from None
    # a release never changes: keep each file's footer after the first read (a cone then
    # opens no footer again; 18 ms -> 1 ms per query over 12 files, measured).  GLOBAL: a plain
    # SET is local to this connection, and the service queries through cursors (21 -> 6 ms a cone)
    con.execute("set global parquet_metadata_cache = true")


def _memory_limit() -> str:
    from stellardb import config

    return config.get("memory_limit")


def _empty_sources(views: list[str]) -> dict[str, str]:
    """For each source view, SQL with its columns and no rows (a release of a database without,
    say, skymapper), from a throw-away database with every view of sql/."""
    if not views:
        return {}
    memory = db.connect(":memory:")
    try:
        found = {}
        for view in views:
            columns = memory.execute("select column_name, data_type from duckdb_columns() where table_name = $t "
                                     "order by column_index", {"t": view}).fetchall()
            found[view] = "select " + ", ".join(f"null::{t} as {c}" for c, t in columns) + " where false"
        return found
    finally:
        memory.close()


def cone_ranges(ra_deg: float, dec_deg: float, radius_arcsec: float) -> list[tuple[int, int]]:
    """At most CONE_RANGES ``[lo, hi]`` ranges of ``_healpix_29`` that cover the cone.

    cdshealpix's cone coverage (every cell the cone touches, possibly a few more) at the
    deepest order whose cells, merged where consecutive, give at most CONE_RANGES ranges.
    The search starts near the order whose cells are as large as the cone (about two
    cdshealpix calls instead of twenty: the service computes this for every query).
    """
    import math

    if not (np.isfinite(ra_deg) and np.isfinite(dec_deg) and np.isfinite(radius_arcsec)) or radius_arcsec <= 0 \
            or abs(dec_deg) > 90:
        return []
    whole = [(0, 12 * 4**SPATIAL_INDEX_ORDER - 1)]
    if radius_arcsec >= 180 * 3600:
        return whole
    # cells of order d are about 58.6 / 2**d degrees across
    depth = int(min(19, max(0, math.floor(math.log2(58.6 * 3600 / radius_arcsec)))))
    found = _cone_cell_ranges(ra_deg, dec_deg, radius_arcsec, depth)
    if len(found) > CONE_RANGES:
        while depth > 0 and len(found) > CONE_RANGES:
            depth -= 1
            found = _cone_cell_ranges(ra_deg, dec_deg, radius_arcsec, depth)
        return found if len(found) <= CONE_RANGES else whole
    while depth < 19:
        deeper = _cone_cell_ranges(ra_deg, dec_deg, radius_arcsec, depth + 1)
        if len(deeper) > CONE_RANGES:
            break
        found, depth = deeper, depth + 1
    return found


def _cone_cell_ranges(ra_deg: float, dec_deg: float, radius_arcsec: float, depth: int) -> list[tuple[int, int]]:
    """cdshealpix's cone coverage at ``depth``, as merged ``_healpix_29`` ranges."""
    ipix = _cone_cells(ra_deg, dec_deg, radius_arcsec, depth)
    shift = 2 * (SPATIAL_INDEX_ORDER - depth)
    cells = np.unique(np.asarray(ipix, dtype=np.int64))
    starts = np.flatnonzero(np.diff(cells, prepend=-2) != 1)
    stops = np.append(starts[1:], cells.size) - 1
    return [(int(cells[a]) << shift, ((int(cells[b]) + 1) << shift) - 1) for a, b in zip(starts, stops)]


def _cone_cells(ra_deg: float, dec_deg: float, radius_arcsec: float, depth: int):
    """The cells of ``cdshealpix.nested.cone_search(Longitude(ra_deg % 360, u.deg), Latitude(dec_deg,
    u.deg), radius_arcsec * u.arcsec, depth=depth, flat=True)``, by the function that one calls with
    the same radians (astropy's Longitude, Latitude and Quantity took 0.4 of its 0.45 ms; the
    service asks this for every cone); cdshealpix's own call where that function differs."""
    native = _native_cone_search()
    if native is not None:
        to_rad, arcsec_to_rad = native[1]
        lon = ra_deg % 360
        if lon >= 360:  # Longitude wraps at 360: a tiny negative ra % 360 rounds to 360.0
            lon -= 360
        ipix, _, _ = native[0](np.uint8(depth), np.uint8(_CONE_DEPTH_DELTA), np.float64(lon * to_rad),
                               np.float64(dec_deg * to_rad), np.float64(radius_arcsec * arcsec_to_rad), True)
        return ipix
    return _cone_cells_astropy(ra_deg, dec_deg, radius_arcsec, depth)


def _cone_cells_astropy(ra_deg: float, dec_deg: float, radius_arcsec: float, depth: int):
    import cdshealpix
    from astropy import units as u
    from astropy.coordinates import Latitude, Longitude

    ipix, _, _ = cdshealpix.nested.cone_search(Longitude(ra_deg % 360, u.deg), Latitude(dec_deg, u.deg),
                                               radius_arcsec * u.arcsec, depth=depth, flat=True)
    return ipix


#: cdshealpix.nested.cone_search's default depth_delta
_CONE_DEPTH_DELTA = 2


@functools.lru_cache(maxsize=1)
def _native_cone_search():
    """(cdshealpix's compiled cone_search, (deg -> rad, arcsec -> rad) as astropy converts), or None
    where this cdshealpix has another one (tests/release check both give the same cells)."""
    import inspect

    from astropy import units as u

    try:
        from cdshealpix import cdshealpix as compiled
        from cdshealpix.nested import healpix

        source = inspect.getsource(healpix.cone_search)
    except (ImportError, AttributeError, OSError, TypeError):
        return None
    # the wrapper this replaces: its call, with its default depth_delta
    if "cdshealpix.cone_search(" not in source or "depth_delta=2" not in source or \
            not callable(getattr(compiled, "cone_search", None)):
        return None
    return compiled.cone_search, (u.deg.to(u.rad), u.arcsec.to(u.rad))


def _register_cone_functions(con) -> None:
    cache: dict = {}

    def ranges(ra, dec, radius):
        key = (ra, dec, radius)
        if key not in cache:
            cache[key] = cone_ranges(ra, dec, radius)
        return cache[key]

    def lo(ra, dec, radius, i):
        found = ranges(ra, dec, radius)
        return found[i][0] if i < len(found) else 1

    def hi(ra, dec, radius, i):
        found = ranges(ra, dec, radius)
        return found[i][1] if i < len(found) else 0

    types = ["DOUBLE", "DOUBLE", "DOUBLE", "INTEGER"]
    con.create_function("_cone_lo", lo, types, "BIGINT", side_effects=False)
    con.create_function("_cone_hi", hi, types, "BIGINT", side_effects=False)


def _cone_macro(name: str, ra: str, dec: str) -> str:
    terms = " or ".join(
        f"{SPATIAL_INDEX_COLUMN} between _cone_lo(ra_deg, dec_deg, radius_arcsec, {i}) "
        f"and _cone_hi(ra_deg, dec_deg, radius_arcsec, {i})" for i in range(CONE_RANGES))
    return (f"create macro {name}_cone(ra_deg, dec_deg, radius_arcsec) as table "
            f"select * from {name} where ({terms}) "
            f"and vector_sep_arcsec(sky_x({ra}, {dec}), sky_y({ra}, {dec}), sky_z({ra}, {dec}), "
            f"sky_x(ra_deg, dec_deg), sky_y(ra_deg, dec_deg), sky_z(ra_deg, dec_deg)) <= radius_arcsec")


def _column_metadata_table(con, release: Path, present: list[str]) -> None:
    """Table column_metadata (as in the database) from the VO-Parquet headers, so exports of
    a release carry units, UCDs and descriptions.

    The headers are read as plain XML (FIELD name, unit, ucd, DESCRIPTION): astropy's VOTable
    parser spends 0.4 s a release parsing units it does not know, and the service opens a new
    release while it answers queries."""
    from xml.etree import ElementTree

    import pyarrow.parquet as pq

    rows = []
    for name in present:
        common = layout.catalogue_dir(release, name) / "dataset" / "_common_metadata"
        header = (pq.read_schema(common).metadata or {}).get(b"IVOA.VOTable-Parquet.content")
        if not header:
            continue
        fields = [e for e in ElementTree.fromstring(header).iter() if e.tag.rpartition("}")[2] == "FIELD"]
        # the catalogue's columns are those of the view stars (and its predictions)
        for owner in (name, "stars") if name == "catalogue" else (name,):
            for f in fields:
                about = next((c.text for c in f if c.tag.rpartition("}")[2] == "DESCRIPTION"), None)
                rows.append((owner, f.get("name"), f.get("unit"), f.get("ucd"), about))
    import pyarrow as pa

    names = ("table_name", "column_name", "unit", "ucd", "description")
    # an in-memory Arrow table, registered (the database's column_metadata, same columns)
    con.register("column_metadata", pa.table({n: pa.array([r[i] for r in rows], pa.string())
                                              for i, n in enumerate(names)}))
