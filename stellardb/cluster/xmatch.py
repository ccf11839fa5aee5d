"""``stellardb xmatch --engine dask``: Gaia x a photometric survey, partition by partition.

The rules are the embedded crossmatch's (sql/30_crossmatch/xm_gaia_survey.sql), run in two
maps of the same SQL:

1. **nearest** (``xm_nearest_gaia``), one task per Gaia partition (cut into sub-pixels
   where its rows would not fit the worker's memory budget): the survey rows inside the
   pixel, and the Gaia rows of the partition plus its **margin cache**, which must be at
   least radius + the largest proper motion x the largest epoch difference wide (checked
   before any work: then every Gaia source that can be a survey row's partner is in that
   row's task, and its nearest Gaia source is exact).  Survey rows in sky that no Gaia
   partition covers get tasks of their own, which read the Gaia partitions around them.
   Each task writes its pairs into pieces, one per Gaia partition that the pair's Gaia
   source lies in.
2. **keep nearest** (``xm_gaia_keeps_nearest``), one task per Gaia partition: every piece
   written for it (from its own task and its neighbours', for pairs that straddle a
   border), so each Gaia source keeps its nearest survey row; written as the partition's
   file of a HATS catalogue co-partitioned with gaia.

Both maps write files named after their partition (a retried task rewrites the same
file), so the catalogue holds each pair exactly once whatever Dask retried.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stellardb.catalog import db
from stellardb.catalog.schema import sql_dir, sql_files
from stellardb.catalog.surveys import SURVEYS, Survey
from stellardb.cluster import engine, sky
from stellardb.cluster.catalogues import HatsCatalogue
from stellardb.cluster.stats import RowGroupIndex, column_ranges
from stellardb.errors import UserError
from stellardb.release.partition import SPATIAL_INDEX_COLUMN, Pixel

#: bytes a nearest task holds per input row (Gaia or survey), with 2x headroom: a whole 10 M-star
#: partition of 947 k Gaia + 943 k SkyMapper rows raised a worker's peak (VmHWM) by 275 MiB, about
#: 150 bytes a row (DuckDB's zone-cell hash join, its window and the Arrow result)
BYTES_PER_ROW = 300
#: row groups of the output files (the release writer's)
ROW_GROUP_ROWS = 20_000
#: SQL files a nearest task runs, in order (besides 10_macros/)
NEAREST_SQL = ("30_crossmatch/gaia_motion.sql", "30_crossmatch/gaia_search_cells.sql",
               "30_crossmatch/xm_nearest_gaia.sql")


@dataclass
class XmatchPlan:
    survey: Survey
    radius_arcsec: float
    reach_arcsec: float  # radius + largest proper motion x largest epoch difference
    margin_arcsec: float | None
    nearest: dict = field(default_factory=dict)  # task key -> task
    rows: dict = field(default_factory=dict)  # task key -> its input rows (row-group statistics), largest run first
    gaia_partitions: list[Pixel] = field(default_factory=list)
    orphan_tasks: int = 0
    split_partitions: int = 0


@dataclass
class XmatchResult:
    path: Path
    survey: str
    pairs: int
    partitions: int
    nearest_tasks: int
    seconds: float
    reach_arcsec: float
    margin_arcsec: float | None
    peak_task_bytes: int  # the largest peak resident memory a worker reported
    #: seconds spent inside the tasks of each map, summed over tasks (the work, without Dask's overhead)
    task_seconds: dict = field(default_factory=dict)
    plan_seconds: float = 0.0


def _sql(relative: str) -> str:
    return (sql_dir() / relative).read_text()


def _create_macros(con) -> None:
    for path in sql_files():  # dependency-sorted
        if path.parent.name == "10_macros":
            con.execute(path.read_text())


def _files_sql(files) -> str:
    return "[" + ", ".join(db.quote_literal(str(f)) for f in files) + "]"


def _motion_bounds(gaia: HatsCatalogue, survey: Survey, survey_cat: HatsCatalogue, budget: engine.Budget):
    """(largest Gaia proper motion in arcsec/yr, Gaia reference epochs, survey epochs), by the
    project's own views (gaia_motion, <survey>_positions) over every file, DuckDB reading the
    few columns they need."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stellardb-bounds-") as spill:
        con = engine.task_connection(budget.duckdb_limit, max(1, os.cpu_count() or 1), spill)
        try:
            _create_macros(con)
            _create_source(con, "gaia_src", [p.file for p in gaia.partitions])
            _create_source(con, f"{survey.name}_src", [p.file for p in survey_cat.partitions])
            con.execute(_sql("30_crossmatch/gaia_motion.sql"))
            con.execute(_sql(f"30_crossmatch/{survey.positions_view}.sql"))
            pm, ref_lo, ref_hi = con.execute(
                "select max(degrees(sqrt(vx * vx + vy * vy + vz * vz)) * 3600.0), min(ref_epoch_yr), max(ref_epoch_yr) "
                "from gaia_motion").fetchone()
            ep_lo, ep_hi = con.execute(f"select min(epoch_yr), max(epoch_yr) from {survey.positions_view}").fetchone()
        finally:
            con.close()
    return pm or 0.0, (ref_lo, ref_hi), (ep_lo, ep_hi)


def _statistics_bounds(gaia: HatsCatalogue, survey: Survey, survey_cat: HatsCatalogue):
    """The same bounds as :func:`_motion_bounds`, or looser, from the row-group statistics in the
    catalogues' ``_metadata`` (no row read: a DR3-sized catalogue would take minutes to scan on the
    driver); None where a statistic is missing, or covers values the views leave out."""
    g = column_ranges(gaia.path, ["ref_epoch"])
    motion = column_ranges(gaia.path, ["pmra", "pmdec"], per_group=True)
    s = column_ranges(survey_cat.path, [survey.epoch_column]) if survey.epoch_column else None
    if g is None or motion is None or s is None:
        return None
    pm = _pm_bound(motion)
    if pm is None:
        return None  # absurd rows the views leave out: only the scan gives the bound
    ref_lo, ref_hi, ref_nulls = g["ref_epoch"]
    refs = [v for v in (ref_lo, ref_hi) if v is not None] + ([2016.0] if ref_nulls else [])
    ep_lo, ep_hi, ep_nulls = s[survey.epoch_column]
    if ep_nulls or ep_lo is None or not refs:
        return None  # rows the view gives a default epoch to, or leaves out: the scan decides
    to_year = (lambda mjd: 2000.0 + (mjd - 51544.5) / 365.25) if survey.epoch_unit == "mjd" else \
        (lambda jd: 2000.0 + (jd - 2451545.0) / 365.25) if survey.epoch_unit == "jd" else None
    if to_year is None:
        return None
    ep_lo, ep_hi = to_year(float(ep_lo)), to_year(float(ep_hi))
    if not (1900 <= ep_lo <= ep_hi <= 2100) or not (1900 <= min(refs) <= max(refs) <= 2100):
        return None
    return pm, (min(refs), max(refs)), (ep_lo, ep_hi)


def _pm_bound(motion: dict) -> float | None:
    """The largest total proper motion (arcsec/yr) that per-row-group ranges of pmra and pmdec
    (mas/yr; :func:`column_ranges` with ``per_group``) allow: per group, the largest |pmra| and
    |pmdec| together.  The fastest movers in pmra and in pmdec seldom share a row group, so this
    is near the fastest star's motion (3.0705 against 3.0695 arcsec/yr on the 10 M-star
    benchmark sky, where the whole catalogue's largest |pmra| and |pmdec| together gave 3.88).
    An all-NULL column moves nothing (the views' rule); None beyond 100,000 mas/yr, rows the
    views leave out."""
    ends = [v for c in ("pmra", "pmdec") for v in motion[c][0] + motion[c][1] if v is not None]
    if not all(np.isfinite(v) for v in ends):
        return None  # NaN statistics (writers that break the Parquet rule) bound nothing: the scan decides
    fastest = {c: np.array([max(abs(lo or 0.0), abs(hi or 0.0)) for lo, hi in zip(*motion[c][:2])], dtype=float)
               for c in ("pmra", "pmdec")}
    if max((float(v.max()) for v in fastest.values() if v.size), default=0.0) > 100_000.0:
        return None
    return float(np.max(np.hypot(fastest["pmra"], fastest["pmdec"]), initial=0.0)) / 1000.0


def _create_source(con, view: str, files, where: str = "") -> None:
    con.execute(f"create or replace view {view} as select * from read_parquet({_files_sql(files)}, "
                f"union_by_name = true, hive_partitioning = false){' where ' + where if where else ''}")


def plan(gaia: HatsCatalogue, survey_cat: HatsCatalogue, survey: Survey, radius_arcsec: float, work: Path,
         budget: engine.Budget, threads: int = 1) -> XmatchPlan:
    """The nearest tasks of a crossmatch; refuses (UserError) before any work when the Gaia
    margin cache is narrower than the reach, or a partition is narrower than it."""
    if not (0 < radius_arcsec <= 60):
        raise UserError(f"--radius-arcsec must be above 0 and at most 60, got {radius_arcsec:g}.")
    def reach_of(bounds):
        pm, (ref_lo, ref_hi), (ep_lo, ep_hi) = bounds
        if ep_lo is None or ref_lo is None:
            raise UserError(f"No {'Gaia' if ref_lo is None else survey.name} row has a usable position; nothing to "
                            "crossmatch.")
        # the reach of the SQL (gaia_search_cells): radius + 1 mas + |pm| x the largest epoch difference
        span = max(abs(ep_lo - ref_lo), abs(ep_hi - ref_lo), abs(ep_lo - ref_hi), abs(ep_hi - ref_hi))
        return radius_arcsec + 0.001 + pm * span, pm, span

    # a bound from the files' statistics where they give one (a reach no smaller than the views'),
    # the views' exact one where not, or where the bound would refuse the margin
    bounds = _statistics_bounds(gaia, survey, survey_cat)
    reach, pm, span_yr = reach_of(bounds) if bounds else (None, None, None)
    if bounds is None or (len(gaia.partitions) > 1 and (gaia.margin_arcsec or 0.0) < reach):
        reach, pm, span_yr = reach_of(_motion_bounds(gaia, survey, survey_cat, budget))
    result = XmatchPlan(survey=survey, radius_arcsec=radius_arcsec, reach_arcsec=reach, margin_arcsec=gaia.margin_arcsec,
                        gaia_partitions=gaia.pixels)
    if len(gaia.partitions) > 1 and (gaia.margin_arcsec is None or gaia.margin_arcsec < reach):
        have = "has no margin cache" if gaia.margin_arcsec is None else f"has a {gaia.margin_arcsec:g} arcsec margin cache"
        raise UserError(
            f"The Gaia catalogue {have}, but a {radius_arcsec:g} arcsec crossmatch of stars moving up to "
            f"{pm:.3g} arcsec/yr over {span_yr:.2f} yr between Gaia and {survey.name} needs one of at least "
            f"{reach:.2f} arcsec; make the release with `stellardb release NAME --margin-arcsec {np.ceil(reach):g}` "
            f"(hats-import: margin_threshold={np.ceil(reach):g}).")
    border_order = sky.order_wider_than(reach)
    deepest = max(p.order for p in gaia.pixels + survey_cat.pixels)
    if border_order <= deepest and bounds is not None:  # the statistics' bound may be loose: the views decide
        reach, pm, span_yr = reach_of(_motion_bounds(gaia, survey, survey_cat, budget))
        border_order = sky.order_wider_than(reach)
        result.reach_arcsec = reach
    if border_order <= deepest:
        raise UserError(f"Partitions of order {deepest} are narrower than the crossmatch's reach ({reach:.1f} arcsec); "
                        "make the catalogues with larger partitions (`stellardb release --max-rows-per-partition`).")
    gaia_rows = RowGroupIndex.of(gaia.path, [p.file for p in gaia.partitions])
    margin_rows = RowGroupIndex.of(gaia.margin_path, list(gaia.margin_files.values())) if gaia.margin_files \
        else RowGroupIndex(np.array([], np.int64), np.array([], np.int64), np.array([], np.int64))
    survey_rows = RowGroupIndex.of(survey_cat.path, [p.file for p in survey_cat.partitions])
    max_rows = max(1, budget.duckdb_bytes // BYTES_PER_ROW)
    pieces = work / "pieces"
    common = {"survey": survey.name, "radius": radius_arcsec, "pieces": str(pieces), "limit": budget.duckdb_limit,
              "threads": threads, "spill": str(work / "spill"),
              "gaia_lo": [p.lo for p in gaia.pixels], "gaia_hi": [p.hi for p in gaia.pixels],
              "gaia_label": [f"{p.order}_{p.pixel}" for p in gaia.pixels]}
    for part in gaia.partitions:
        g = part.pixel
        survey_files = [survey_cat.file_of(p) for p in sky.overlapping(survey_cat.pixels, [(g.lo, g.hi)])]
        if not survey_files:
            continue
        gaia_files = [part.file] + ([gaia.margin_files[g]] if g in gaia.margin_files else [])

        def rows(p: Pixel) -> int:
            lo, hi = sky.border_arrays(p, border_order)
            lo, hi = np.r_[p.lo, lo], np.r_[p.hi, hi]
            return gaia_rows.rows_in_arrays(lo, hi) + margin_rows.rows_in_arrays(lo, hi) + survey_rows.rows_in(p.lo, p.hi)

        pixels = _split(g, rows, max_rows, border_order, lambda p: survey_rows.rows_in(p.lo, p.hi) > 0)
        if len(pixels) > 1:
            result.split_partitions += 1
        for p in pixels:
            if survey_rows.rows_in(p.lo, p.hi) == 0:
                continue
            # a sub-pixel reads the Gaia rows of the partition and margin within reach of it
            near = None if p == g else sky.merge([(p.lo, p.hi)] + sky.border_ranges(p, border_order))
            result.nearest[f"{p.order}_{p.pixel}"] = common | {
                "key": f"{p.order}_{p.pixel}", "gaia_files": gaia_files, "gaia_ranges": near,
                "survey_files": survey_files, "survey_ranges": [(p.lo, p.hi)]}
            result.rows[f"{p.order}_{p.pixel}"] = rows(p)
    # survey rows where Gaia has no partition: their partners can only be Gaia rows of the
    # partitions around them; each task reads those within reach of its (sub-)pixel only
    covered = sky.merge([(p.lo, p.hi) for p in gaia.pixels])
    for part in survey_cat.partitions:
        s = part.pixel
        if not any(survey_rows.rows_in(lo, hi) for lo, hi in sky.uncovered(s, covered)):
            continue

        def orphan_rows(p: Pixel) -> int:
            lo, hi = sky.border_arrays(p, border_order)
            return gaia_rows.rows_in_arrays(np.r_[p.lo, lo], np.r_[p.hi, hi]) + survey_rows.rows_in(p.lo, p.hi)

        def has_orphans(p: Pixel) -> bool:
            return any(survey_rows.rows_in(lo, hi) for lo, hi in sky.uncovered(p, covered))

        for p in _split(s, orphan_rows, max_rows, border_order, has_orphans):
            outside = sky.uncovered(p, covered)
            if not any(survey_rows.rows_in(lo, hi) for lo, hi in outside):
                continue
            near = sky.merge([(p.lo, p.hi)] + sky.border_ranges(p, border_order))
            around = sky.overlapping(gaia.pixels, near)
            if not around:
                continue  # no Gaia source within reach of any of them
            key = f"orphan_{p.order}_{p.pixel}"
            result.nearest[key] = common | {"key": key, "gaia_files": [gaia.file_of(q) for q in around],
                                            "gaia_ranges": near, "survey_files": [part.file],
                                            "survey_ranges": outside}
            result.rows[key] = orphan_rows(p)
            result.orphan_tasks += 1
    return result


def _split(pixel: Pixel, rows, max_rows: int, border_order: int, has_survey_rows) -> list[Pixel]:
    """``pixel``, or its descendants holding survey rows, each with at most ``max_rows`` input rows
    (by row-group statistics), as far as the statistics resolve (a row group is the finest
    unit they count) and the border order allows."""
    total = rows(pixel)
    if total <= max_rows or pixel.order + 1 >= border_order:
        return [pixel]
    children = [Pixel(pixel.order + 1, c) for c in range(4 * pixel.pixel, 4 * pixel.pixel + 4)]
    children = [c for c in children if has_survey_rows(c)]
    counts = [rows(c) for c in children]
    if children and max(counts) >= total:  # the statistics cannot tell the children apart
        return [pixel]
    found = []
    for child in children:
        found.extend(_split(child, rows, max_rows, border_order, has_survey_rows))
    return found


# ---------------------------------------------------------------- tasks (run on the workers)


def nearest_task(task: dict) -> dict:
    """Each survey row of the task's pixel (ranges) and its nearest Gaia source, written as pieces
    per Gaia partition; returns counts and this worker's peak memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _maybe_die(task["key"])
    started = time.perf_counter()
    engine.task_folder(task["spill"], task["spill"])
    con = engine.task_connection(task["limit"], task["threads"], task["spill"])
    try:
        _create_macros(con)
        gaia_where = sky.ranges_sql(SPATIAL_INDEX_COLUMN, task["gaia_ranges"]) if task["gaia_ranges"] else ""
        _create_source(con, "gaia_src", task["gaia_files"], gaia_where)
        # exact: a survey row in two tasks' ranges would be matched twice
        _create_source(con, f"{task['survey']}_src", task["survey_files"],
                       sky.ranges_sql(SPATIAL_INDEX_COLUMN, task["survey_ranges"], most=None))
        for relative in NEAREST_SQL:
            con.execute(_sql(relative))
        con.execute(_sql(f"30_crossmatch/{task['survey']}_positions.sql"))
        table = con.sql(
            f"select n.*, g.{SPATIAL_INDEX_COLUMN}, g.ra, g.dec "
            f"from xm_nearest_gaia('{task['survey']}_positions', {float(task['radius'])!r}) as n "
            f"join gaia_src as g on g.source_id = n.gaia_source_id").to_arrow_table()
    finally:
        con.close()
    # every column nullable, as in a partition with no pairs: _metadata combines equal schemas only
    table = table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))
    where = np.asarray(table.column(SPATIAL_INDEX_COLUMN).to_numpy(zero_copy_only=False), np.int64)
    los, his = np.asarray(task["gaia_lo"], np.int64), np.asarray(task["gaia_hi"], np.int64)
    index = np.searchsorted(los, where, side="right") - 1
    if np.any(index < 0) or np.any(where >= his[np.clip(index, 0, None)]):
        raise RuntimeError("a Gaia row lies outside every Gaia partition")  # a damaged catalogue
    written = {}
    for i in np.unique(index):
        label = task["gaia_label"][int(i)]
        folder = engine.task_folder(Path(task["pieces"]) / label, task["spill"])
        final = folder / f"{task['key']}.parquet"
        tmp = folder / f".{task['key']}.parquet.tmp-{os.getpid()}"
        # scratch read back once by the keep-nearest task: neither compressed nor dictionary-encoded
        pq.write_table(table.filter(pa.array(index == i)), tmp, compression="none", use_dictionary=False)
        os.replace(tmp, final)
        written[label] = int(np.count_nonzero(index == i))
    return {"pairs": written, "peak_rss": engine.peak_rss_bytes(), "rss": engine.current_rss_bytes(),
            "seconds": time.perf_counter() - started}


def keep_nearest_task(task: dict) -> dict:
    """A Gaia partition's pairs: every piece written for it, each Gaia source keeping its nearest."""
    _maybe_die(task["key"])
    started = time.perf_counter()
    engine.task_folder(task["spill"], task["spill"])
    con = engine.task_connection(task["limit"], task["threads"], task["spill"])
    try:
        pieces = sorted(str(p) for p in Path(task["pieces"]).glob("*.parquet")) if Path(task["pieces"]).is_dir() else []
        if pieces:
            con.execute(f"create view pairs as select * from read_parquet({_files_sql(pieces)})")
        else:
            con.execute(f"create view pairs as select null::bigint as object_id, null::bigint as gaia_source_id, "
                        f"null::double as sep_arcsec, null::integer as n_candidates, null::double as dt_yr, "
                        f"null::bigint as {SPATIAL_INDEX_COLUMN}, null::double as ra, null::double as dec where false")
        con.execute(_sql("30_crossmatch/xm_gaia_keeps_nearest.sql"))
        table = con.sql(
            f"select {SPATIAL_INDEX_COLUMN}, object_id as {task['key_column']}, gaia_source_id, sep_arcsec, "
            f"n_candidates, dt_yr, ra, dec from xm_gaia_keeps_nearest('pairs') "
            f"order by {SPATIAL_INDEX_COLUMN}, gaia_source_id").to_arrow_table()
    finally:
        con.close()
    rows = write_partition(table, Path(task["out"]), task["metadata"], task["spill"])
    return {"rows": int(rows), "peak_rss": engine.peak_rss_bytes(), "seconds": time.perf_counter() - started}


def write_partition(table, final: Path, metadata: dict, spill: str) -> int:
    """One partition file of an output catalogue, written under a temporary name and renamed, by a
    task whose spill folder is ``spill`` (:func:`engine.task_folder`).

    pyarrow writes it, every column nullable: DuckDB marks a column REQUIRED where the
    statistics it read say it has no NULL, which differs between partitions (an empty one has
    none), and ``_metadata`` can only combine files of one schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([f.with_nullable(True) for f in table.schema], metadata=metadata)
    engine.task_folder(final.parent, spill)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    pq.write_table(table.cast(schema), tmp, row_group_size=ROW_GROUP_ROWS, compression="snappy",
                   use_dictionary=engine.dictionary_columns(schema))
    os.replace(tmp, final)
    return table.num_rows


def _maybe_die(key: str) -> None:
    """Tests only: ``STELLARDB_TEST_KILL_ONCE=FILE`` kills one worker process (as the kernel's
    OOM killer or a lost machine would) when the first task starts, leaving FILE behind so the
    retry runs.  ``STELLARDB_TEST_KILLS=N`` with it kills N: the first N task starts each take
    one of FILE.0 ... FILE.N-1, wait (at most 60 s: a busy CI machine) until all N are taken, then die together,
    so N workers die at once.

    The files are created with O_EXCL: two workers starting their first tasks together once
    both saw no file and both died (CI, a busy machine), taking the scattered model with them."""
    marker = os.environ.get("STELLARDB_TEST_KILL_ONCE")
    if not marker:
        return
    kills = int(os.environ.get("STELLARDB_TEST_KILLS", "0"))
    slots = [marker] if kills < 1 else [f"{marker}.{k}" for k in range(kills)]
    for slot in slots:
        try:
            fd = os.open(slot, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, key.encode())
        os.close(fd)
        deadline = time.monotonic() + 60
        while not all(os.path.exists(s) for s in slots) and time.monotonic() < deadline:
            time.sleep(0.05)
        if kills >= 1:
            time.sleep(0.5)  # the others see every slot taken too
        os._exit(9)


# ---------------------------------------------------------------- the driver


def run(gaia: HatsCatalogue, survey_cat: HatsCatalogue, survey_name: str, out: Path, radius_arcsec: float | None = None,
        scheduler: str | None = None, workers: int | None = None, memory_per_worker: str | None = None,
        threads: int = 1, progress=None, provenance: dict | None = None) -> XmatchResult:
    """Crossmatch Gaia x ``survey_name`` on a Dask cluster; the pairs become the HATS collection
    ``out/<xmatch table>`` (co-partitioned with gaia), written in a hidden folder first.  ``provenance``
    (the release read: name and manifest sha256) goes into its cluster_run.json with a new run id, so
    that a release made from it can check what it was made from."""
    import uuid

    run_id = uuid.uuid4().hex
    from stellardb.release import writer

    if survey_name not in SURVEYS:
        raise UserError(f"Unknown survey {survey_name!r}; surveys: {', '.join(SURVEYS)}.")
    if radius_arcsec is not None and not (0 < float(radius_arcsec) <= 60):
        raise UserError(f"--radius-arcsec must be above 0 and at most 60, got {float(radius_arcsec):g}.")
    survey = SURVEYS[survey_name]
    radius = survey.radius_arcsec if radius_arcsec is None else float(radius_arcsec)
    budget = engine.Budget(engine.parse_bytes(memory_per_worker or engine.DEFAULT_BUDGET))
    name = survey.xmatch_table
    out = Path(out)
    final = out / name
    if final.exists():
        raise UserError(f"{final} already exists; the cluster never overwrites a result: remove it or give another --out.")
    partial = out / f".{name}.partial-{os.getpid()}"
    work = out / f".{name}.work-{os.getpid()}"
    t0 = time.perf_counter()
    the_plan = plan(gaia, survey_cat, survey, radius, work, budget, threads)  # refuses before anything is written
    plan_seconds = time.perf_counter() - t0
    with engine.output_folder(out):
        engine.scratch_folder(partial), engine.scratch_folder(work)
        try:
            spec = writer.ReleaseTable(name, "", None, None, "gaia_source_id", "gaia_source_id",
                                       metadata_sql=f"select * from {survey.xmatch_table}",
                                       description=f"Gaia DR3 x {survey.title} crossmatch (stellardb, Dask)")
            header, metadata = _header(spec, survey)
            catalogue = partial / name
            keep = {f"{p.order}_{p.pixel}": {
                "key": f"{p.order}_{p.pixel}", "pieces": str(work / "pieces" / f"{p.order}_{p.pixel}"),
                "out": str(catalogue / "dataset" / p.path()), "metadata": metadata, "key_column": survey.xmatch_key,
                "limit": budget.duckdb_limit, "threads": threads, "spill": str(work / "spill")} for p in gaia.pixels}
            with engine.client(scheduler, workers, budget, str(work / "dask")) as dask_client:
                near = engine.run_tasks(dask_client, nearest_task, the_plan.nearest, "nearest", progress,
                                        sizes=the_plan.rows)
                # a partition's pairs, from its own task and its neighbours'
                pairs = {key: sum(r["pairs"].get(key, 0) for r in near.values()) for key in keep}
                kept = engine.run_tasks(dask_client, keep_nearest_task, keep, "keep nearest", progress, sizes=pairs)
            rows = sum(r["rows"] for r in kept.values())
            writer.finish_catalogue(catalogue, spec, gaia.pixels, rows, None, header, {})
            writer.finish_collection(partial, name, [])
            (partial / engine.MARKER).unlink()
            (partial / "cluster_run.json").write_text(json.dumps({
                "run_id": run_id, "release": provenance,
                "survey": survey.name, "radius_arcsec": radius, "reach_arcsec": round(the_plan.reach_arcsec, 4),
                "gaia": str(gaia.path.name), "survey_catalogue": str(survey_cat.path.name),
                "gaia_margin_arcsec": gaia.margin_arcsec, "nearest_tasks": len(the_plan.nearest),
                "orphan_tasks": the_plan.orphan_tasks, "split_partitions": the_plan.split_partitions,
                "memory_per_worker_bytes": budget.worker_bytes}, indent=2) + "\n")
            os.rename(partial, final)
        finally:
            engine.remove_run_folders(work, partial)
    peak = max([r["peak_rss"] for r in list(near.values()) + list(kept.values())] or [0])
    return XmatchResult(path=final, survey=survey.name, pairs=rows, partitions=len(gaia.pixels),
                        nearest_tasks=len(the_plan.nearest), seconds=time.perf_counter() - t0,
                        reach_arcsec=the_plan.reach_arcsec, margin_arcsec=gaia.margin_arcsec, peak_task_bytes=peak,
                        task_seconds={"nearest": sum(r["seconds"] for r in near.values()),
                                      "keep_nearest": sum(r["seconds"] for r in kept.values())},
                        plan_seconds=plan_seconds)


def _header(spec, survey: Survey) -> tuple[str, dict]:
    """The VO-Parquet header of the pairs (the release's xmatch columns) and the key-value
    metadata every file carries."""
    from stellardb.release import writer

    memory = db.connect(":memory:")
    try:
        source = (f"(select null::bigint as {SPATIAL_INDEX_COLUMN}, *, null::double as ra, null::double as dec "
                  f"from {survey.xmatch_table} where false)")
        header = writer.vo_header(memory, spec, source, {})
    finally:
        memory.close()
    return header, writer.file_metadata(header, {})
