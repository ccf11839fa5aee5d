"""``stellardb release``: the database as an immutable release of HATS catalogues.

DuckDB writes every Parquet file; hats writes and checks the HATS metadata.  Per table:

1. one sorted pass: the rows with ``_healpix_29`` (computed from the positions, NESTED,
   order 29), ordered by it, into a scratch Parquet file with small row groups.  The
   tables keyed by a Gaia ``source_id`` take the ``_healpix_29`` of their Gaia source, so
   they are cut exactly like ``gaia`` (co-partitioned: a join never crosses partitions);
2. the partitions: hats's adaptive alignment over an order-10 histogram (``gaia``,
   ``skymapper``), or gaia's partitions (the others);
3. one ``COPY`` per partition: a range of ``_healpix_29`` of the sorted file, which
   DuckDB finds from row-group statistics without reading the rest, so the whole write
   reads each table about twice and holds one row group at a time, whatever its size;
4. margin caches (``gaia``, ``catalogue``): the rows just outside each partition
   (hats-import's rule), joined once against hats's border pixels;
5. ``partition_info.csv``, ``hats.properties``, ``_metadata``/``_common_metadata`` (hats),
   with each column's unit, UCD and description as a VO-Parquet header.

The release is written in a hidden folder beside its final place and renamed when
complete (stellardb/release/layout.py); anything that stops it removes the folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from stellardb.catalog import db
from stellardb.catalog.healpix import radec_to_healpix
from stellardb.errors import UserError
from stellardb.release import layout
from stellardb.release.partition import SPATIAL_INDEX_COLUMN, Pixel, PartitionTooDense, covering, margin_order, \
    margin_pairs, plan

#: hats-import's default partition size
DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MARGIN_ARCSEC = 10.0
#: Rows per Parquet row group: small enough that a 1 arcmin cone reads a few thousand rows of
#: a sorted file, large enough that the footers stay small (bench/bench_release.py)
ROW_GROUP_ROWS = 20_000
#: Gaia: source_id = healpix_12 * 2**35 + n; a source missing from gaia is placed in its order-12 pixel
_GAIA_ID_TO_29 = "((({key}) >> 35) << 34)"
#: source_id / 2**35 is an order-12 pixel: below 12 * 4**12
_GAIA_ID_LIMIT = 12 * 4**12 * 2**35


@dataclass(frozen=True)
class ReleaseTable:
    name: str
    #: the rows (``{model}``: the release's model, a quoted literal)
    sql: str
    #: the table's own position columns; None: it carries its Gaia source's ra, dec
    ra: str | None
    dec: str | None
    #: the Gaia source_id column of a table co-partitioned with gaia; None: cut by its own positions
    gaia_key: str | None
    order_by: str
    margin: bool = False
    #: the SQL whose tables describe the columns (stellardb.catalog.db.column_metadata)
    metadata_sql: str = ""
    description: str = ""
    #: write the joined rows to a file before sorting them: a wide join's hash tables and the sort
    #: of its rows at once ran DuckDB out of 3 GB (catalogue, 10 M stars, two models scored; the
    #: rows joined, then sorted, stay within it)
    join_then_sort: bool = False


TABLES = (
    ReleaseTable("gaia", "select * from gaia_src", "ra", "dec", None, "source_id", margin=True,
                 metadata_sql="select * from gaia", description="Gaia DR3 gaia_source, every ingested column"),
    ReleaseTable("skymapper", "select * from skymapper_src", "raj2000", "dej2000", None, "object_id",
                 metadata_sql="select * from skymapper", description="SkyMapper DR4 master table"),
    ReleaseTable("distances", "select * from distances_src", None, None, "source_id", "source_id",
                 metadata_sql="select * from distances", description="Bailer-Jones et al. (2021) distances"),
    ReleaseTable("labels", "select * from labels", None, None, "source_id", "source_id, survey",
                 metadata_sql="select * from labels", description="Spectroscopic reference labels per Gaia source"),
    ReleaseTable("xmatch", "select * from xmatch_src", None, None, "gaia_source_id",
                 "gaia_source_id, skymapper_object_id", metadata_sql="select * from xmatch",
                 description="Gaia DR3 x SkyMapper crossmatch"),
    ReleaseTable("predictions", "select * from predictions_src where model = {model}", None, None, "source_id",
                 "source_id", metadata_sql="select * from predictions",
                 description="stellardb predictions of Teff, log g and [Fe/H]"),
    ReleaseTable("catalogue", "select * from catalogue_of_model({model})", "ra", "dec", "source_id", "source_id",
                 margin=True, metadata_sql="select * from stars_with_predictions", join_then_sort=True,
                 description="One row per Gaia source: astrometry, photometry, distance, SkyMapper, label, predictions"),
)
TABLE_NAMES = tuple(t.name for t in TABLES)

_EXTRA_METADATA = {
    SPATIAL_INDEX_COLUMN: {"unit": None, "ucd": "pos.healpix", "description":
                           "HATS spatial index: NESTED HEALPix pixel of the position at order 29"},
    "ra": {"unit": "deg", "ucd": "pos.eq.ra;meta.main",
           "description": "Right ascension of the Gaia DR3 source (ICRS, epoch J2016.0)"},
    "dec": {"unit": "deg", "ucd": "pos.eq.dec;meta.main",
            "description": "Declination of the Gaia DR3 source (ICRS, epoch J2016.0)"},
}


@dataclass
class CatalogueResult:
    rows: int
    partitions: list[Pixel]
    margin_rows: int | None = None
    margin_partitions: int | None = None
    seconds: float = 0.0  # writing this catalogue and its margin


@dataclass
class ReleaseResult:
    name: str
    path: Path
    model: str
    catalogues: dict[str, CatalogueResult] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_release(db_path, name: str, model: str | None = None, out=None, max_rows: int = DEFAULT_MAX_ROWS,
                  margin_arcsec: float = DEFAULT_MARGIN_ARCSEC, progress=None) -> ReleaseResult:
    """Write release ``name`` of the database at ``db_path``; return what it holds.

    Parameters
    ----------
    model : str, optional
        The model whose predictions the release carries (default: the one scored last).
    out : path, optional
        The folder of releases (default ``releases/`` beside the database).
    max_rows : int
        At most this many rows per partition (``gaia`` and ``skymapper`` are cut adaptively).
    margin_arcsec : float
        Width of the margin caches of ``gaia`` and ``catalogue``.
    progress : callable, optional
        ``progress(done, total, stage)`` per partition written.

    Raises
    ------
    UserError
        A bad or existing name, nothing scored, an empty database, a write that fails;
        nothing is left behind and ``latest`` is unchanged.
    """
    started = time.perf_counter()
    layout.check_name(name)
    if not isinstance(max_rows, int) or max_rows < 1:
        raise UserError(f"--max-rows-per-partition must be a positive whole number, got {max_rows!r}.")
    if not (0 < margin_arcsec <= 3600):
        raise UserError(f"--margin-arcsec must be above 0 and at most 3600 (1 degree), got {margin_arcsec!r}.")
    root = Path(out).absolute() if out is not None else layout.default_root(db_path)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file, not a folder of releases.")
    final = root / name
    if final.exists() or final.is_symlink():
        raise UserError(f"Release {name} already exists in {root}; releases are never overwritten: choose another name.")
    inside = layout.release_holding(root)
    if inside is not None:
        what = f"--out {root}" if out is not None else f"The releases folder {root}"
        raise UserError(f"{what} is inside release {inside.name}, and releases are never changed; give a "
                        "folder of releases outside it (--out DIR).")
    latest = root / layout.LATEST
    if (latest.exists() or latest.is_symlink()) and not latest.is_symlink():
        raise UserError(f"{latest} is not the link stellardb keeps to the newest release (a copied folder?); rename "
                        "or remove it, then release again.")

    con = db.connect(db_path, read_only=False)
    partial = None
    try:
        model = _check_database(con, model)
        _cap_memory(con)
        root.mkdir(parents=True, exist_ok=True)
        layout.sweep_partials(root)
        partial = layout.partial_dir(root, name)
        partial.mkdir()
        work = partial / "_scratch"
        work.mkdir()
        _register_healpix(con)
        result = ReleaseResult(name, final, model)
        literal = db.quote_literal(model)
        gaia_plan: list[Pixel] = []
        for spec in TABLES:
            sql = spec.sql.format(model=literal)
            done = _write_table(con, spec, sql, partial, work, gaia_plan, max_rows, margin_arcsec, progress)
            if done is None:
                result.skipped.append(spec.name)
                continue
            result.catalogues[spec.name] = done
            if spec.name == "gaia":
                gaia_plan = done.partitions
        shutil.rmtree(work)
        _write_manifest(con, db_path, partial, result, max_rows, margin_arcsec)
        layout.publish(partial, final)
        partial = None
        try:
            layout.point_latest(root, name)
        except OSError as exc:
            raise UserError(f"Release {name} is published in {final}, but {root / layout.LATEST} could not be "
                            f"switched to it ({exc.strerror or exc}); query it by name.") from None
    except (duckdb.IOException, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise UserError(f"Cannot write release {name} in {root}: {reason}; nothing was published (free some "
                        "space or fix the folder's permissions, or give --out elsewhere).") from None
    finally:
        con.close()
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _check_database(con, model: str | None) -> str:
    gaia_rows = con.execute("select count(*) from gaia_src").fetchone()[0]
    if not gaia_rows:
        raise UserError("The database holds no Gaia sources; a release needs them: stellardb ingest gaia FILE, "
                        "then xmatch, train and score.")
    bad = con.execute("select count(*) from gaia_src where ra is null or dec is null or not isfinite(ra) "
                      "or not isfinite(dec) or dec < -90 or dec > 90").fetchone()[0]
    if bad:
        raise UserError(f"{bad:,} Gaia rows have no usable position (ra, dec), which a HEALPix partition needs; "
                        "forget their file (stellardb ingests, stellardb forget) or fix it and ingest it again.")
    scored = [r[0] for r in con.execute(
        "select model from predictions_src group by model order by max(scored_at) desc").fetchall()]
    if model is None:
        if not scored:
            raise UserError("Nothing is scored yet, and a release carries predictions: run stellardb score --model M "
                            "(after stellardb train --model M), then release again.")
        return scored[0]
    if model not in scored:
        hint = f"scored models: {', '.join(scored)}" if scored else "nothing is scored yet"
        raise UserError(f"Model {model!r} has no predictions in this database ({hint}); run stellardb score "
                        f"--model {model} first, or pick one of those with --model.")
    return model


_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
          "TIB": 2**40}


def _cap_memory(con) -> None:
    """DuckDB gets three quarters of STELLARDB_MEMORY_LIMIT, so that the whole process (Python,
    Arrow, hats) stays under it: the sorts spill to disk instead (bench/bench_release.py
    measured 4.6 GB peak at 10 M stars with DuckDB at the full 4 GB)."""
    import re

    limit = con.execute("select current_setting('memory_limit')").fetchone()[0]  # e.g. '3.7 GiB'
    match = re.fullmatch(r"([\d.]+)\s*([KMGT]?i?B)", limit.strip(), re.IGNORECASE)
    if match:
        size = float(match[1]) * _UNITS[match[2].upper()]
        con.execute("set memory_limit = $m", {"m": f"{int(size * 0.75) // 2**20}MiB"})


def _register_healpix(con) -> None:
    import pyarrow as pa

    def healpix_29(ra, dec):
        return pa.array(radec_to_healpix(ra.to_numpy(zero_copy_only=False), dec.to_numpy(zero_copy_only=False), 29))

    con.create_function("healpix_29", healpix_29, ["DOUBLE", "DOUBLE"], "BIGINT", type="arrow",
                        null_handling="special")


def _write_table(con, spec: ReleaseTable, sql: str, partial: Path, work: Path, gaia_plan: list[Pixel],
                 max_rows: int, margin_arcsec: float, progress) -> CatalogueResult | None:
    started = time.perf_counter()
    sorted_file = work / f"{spec.name}.parquet"
    if spec.gaia_key is None:
        rows = f"select healpix_29({spec.ra}, {spec.dec}) as {SPATIAL_INDEX_COLUMN}, * from ({sql})"
    else:
        bad = con.execute(f"select count(*) from ({sql}) where {spec.gaia_key} < 0 or {spec.gaia_key} >= "
                          f"{_GAIA_ID_LIMIT}").fetchone()[0]
        if bad:
            raise UserError(f"{spec.name}: {bad:,} rows have a {spec.gaia_key} that is not a Gaia DR3 source_id "
                            f"(0 <= source_id < {_GAIA_ID_LIMIT:,}), so no sky position; forget their file "
                            "(stellardb ingests, stellardb forget) or fix it and ingest it again.")
        gaia = db.quote_literal(work / "gaia.parquet")
        carried = "" if spec.ra else ", g.ra, g.dec"
        rows = (f"select coalesce(g.{SPATIAL_INDEX_COLUMN}, {_GAIA_ID_TO_29.format(key='t.' + spec.gaia_key)}) "
                f"as {SPATIAL_INDEX_COLUMN}, t.*{carried} from ({sql}) as t left join "
                f"(select source_id, {SPATIAL_INDEX_COLUMN}, ra, dec from read_parquet({gaia})) as g "
                f"on g.source_id = t.{spec.gaia_key}")
    if spec.join_then_sort:
        joined_file = work / f"{spec.name}_joined.parquet"
        con.execute(f"copy ({rows}) to {db.quote_literal(joined_file)} (format parquet, compression lz4_raw, "
                    f"row_group_size {ROW_GROUP_ROWS})")
        rows = f"select * from read_parquet({db.quote_literal(joined_file)})"
    expected = con.execute(
        f"copy (select * from ({rows}) order by {SPATIAL_INDEX_COLUMN}, {spec.order_by}) to "
        f"{db.quote_literal(sorted_file)} (format parquet, compression lz4_raw, row_group_size {ROW_GROUP_ROWS})"
    ).fetchone()[0]
    if spec.join_then_sort:
        joined_file.unlink()
    if not expected:
        return None
    source = f"read_parquet({db.quote_literal(sorted_file)})"

    try:
        if spec.gaia_key is None:
            counts = con.execute(f"select {SPATIAL_INDEX_COLUMN} >> 38 as pixel, count(*) as n from {source} "
                                 "group by 1").fetchnumpy()
            partitions = plan(counts["pixel"], counts["n"], max_rows)
        else:
            partitions = _co_partitions(con, source, gaia_plan, max_rows)
    except PartitionTooDense as exc:
        raise UserError(f"{spec.name}: {exc}; raise --max-rows-per-partition.") from None

    order = None
    if spec.margin:  # refused before any partition is written
        try:
            order = margin_order(partitions, margin_arcsec)
        except ValueError as exc:
            advice = "" if "narrow" in str(exc) else "; use a smaller --margin-arcsec or a larger --max-rows-per-partition"
            raise UserError(f"{spec.name}: {exc}{advice}.") from None
    collection = partial / spec.name
    catalogue = collection / spec.name
    widths = text_widths(con, source)
    header = vo_header(con, spec, source, widths)
    written = _copy_partitions(con, source, catalogue, partitions, header, spec.name, progress, widths=widths)
    if written != expected:  # a defect, never the user's input: refuse to publish it
        raise RuntimeError(f"release {spec.name}: wrote {written} rows of {expected}")
    finish_catalogue(catalogue, spec, partitions, written, max_rows, header, widths)
    result = CatalogueResult(written, partitions)
    margins = []
    if spec.margin:
        margin_name = f"{spec.name}_{margin_arcsec:g}arcs"
        result.margin_rows, result.margin_partitions = _write_margin(
            con, spec, source, work, collection / margin_name, partitions, order, margin_arcsec, header, widths,
            progress)
        if result.margin_rows:
            margins.append(margin_name)
    finish_collection(collection, spec.name, margins)
    result.seconds = time.perf_counter() - started
    return result


def _co_partitions(con, source: str, base: list[Pixel], max_rows: int) -> list[Pixel]:
    """gaia's partitions that hold rows of this table, and pixels for rows outside all of them."""
    import pyarrow as pa

    ranges = pa.table({"idx": pa.array(range(len(base)), pa.int32()),
                       "lo": pa.array([p.lo for p in base], pa.int64()),
                       "hi": pa.array([p.hi for p in base], pa.int64())})
    con.register("_release_ranges", ranges)
    try:
        # ASOF: the range with the largest lo <= _healpix_29; the row is in it when below its hi.
        # One pass: a row per gaia partition used, and per order-10 pixel of the rows outside all
        outside = f"(r.idx is null or t.{SPATIAL_INDEX_COLUMN} >= r.hi)"
        found = con.execute(
            f"select case when {outside} then null else r.idx end as idx, "
            f"case when {outside} then t.{SPATIAL_INDEX_COLUMN} >> 38 end as pixel, count(*) as n "
            f"from {source} as t asof left join _release_ranges as r on t.{SPATIAL_INDEX_COLUMN} >= r.lo "
            "group by all").fetchall()
    finally:
        con.unregister("_release_ranges")
    used = [base[idx] for idx, _, _ in found if idx is not None]
    pixels = np.array([pixel for idx, pixel, _ in found if idx is None], dtype=np.int64)
    counts = np.array([n for idx, _, n in found if idx is None], dtype=np.int64)
    return sorted(used + covering(base, pixels, counts, max_rows), key=lambda p: (p.lo, p.order))


def text_widths(con, source: str) -> dict[str, int]:
    """The widest value (bytes) of each text column: the VO-Parquet header's arraysize, and
    astropy's ``table::len::`` key (without it astropy cannot read a text column with NULLs)."""
    rel = con.sql(f"select * from {source} limit 0")
    text = [c for c, t in zip(rel.columns, rel.types) if str(t) == "VARCHAR"]
    if not text:
        return {}
    row = con.execute("select " + ", ".join(f'coalesce(max(strlen("{c}")), 0)' for c in text)
                      + f" from {source}").fetchone()
    return {c: max(1, int(n)) for c, n in zip(text, row)}


def vo_header(con, spec: ReleaseTable, source: str, widths: dict[str, int]) -> str:
    """The VO-Parquet header (a VOTable with FIELDs, no DATA) of the table's columns."""
    from stellardb.catalog.export import to_astropy, votable_xml

    rel = con.sql(f"select * from {source} limit 0")
    types = dict(zip(rel.columns, (str(t) for t in rel.types)))
    metadata = db.column_metadata(con, rel.columns, spec.metadata_sql, types)
    for name, meta in _EXTRA_METADATA.items():
        if name in types and (name == SPATIAL_INDEX_COLUMN or spec.ra is None):
            metadata[name] = meta
    # timestamps are written as ISO text in VOTable (YYYY-MM-DDTHH:MM:SS.ffffff)
    stamps = {c: 26 for c, t in types.items() if t.startswith("TIMESTAMP")}
    return votable_xml(to_astropy(rel.to_arrow_table(), metadata), description=spec.description, with_data=False,
                       char_widths={**widths, **stamps})


def file_metadata(header: str, widths: dict[str, int]) -> dict[str, str]:
    """Key-value metadata of every file: the VO-Parquet header and astropy's text widths."""
    return {"IVOA.VOTable-Parquet.version": "1.0", "IVOA.VOTable-Parquet.content": header,
            **{f"table::len::{c}": str(n) for c, n in widths.items()}}


def kv_metadata(header: str, widths: dict[str, int]) -> str:
    return "{" + ", ".join(f"{db.quote_literal(k)}: {db.quote_literal(v)}"
                           for k, v in file_metadata(header, widths).items()) + "}"


def _copy_partitions(con, source: str, catalogue: Path, partitions: list[Pixel], header: str, stage: str,
                     progress, where: str = "", widths: dict | None = None) -> int:
    written = 0
    kv = kv_metadata(header, widths or {})
    for i, pixel in enumerate(partitions):
        target = catalogue / "dataset" / pixel.path()
        target.parent.mkdir(parents=True, exist_ok=True)
        condition = where.format(order=pixel.order, pixel=pixel.pixel) if where else \
            f"{SPATIAL_INDEX_COLUMN} >= {pixel.lo} and {SPATIAL_INDEX_COLUMN} < {pixel.hi}"
        columns = "* exclude (_margin_norder, _margin_npix)" if where else "*"
        written += con.execute(
            f"copy (select {columns} from {source} where {condition}) to {db.quote_literal(target)} "
            f"(format parquet, compression snappy, row_group_size {ROW_GROUP_ROWS}, kv_metadata {kv})").fetchone()[0]
        if progress:
            progress(i + 1, len(partitions), stage)
    return written


def _write_margin(con, spec: ReleaseTable, source: str, work: Path, margin_dir: Path, partitions: list[Pixel],
                  order: int, margin_arcsec: float, header: str, widths: dict, progress) -> tuple[int, int]:
    """The margin cache: for each partition, the rows whose order-``order`` pixel borders it."""
    con.register("_release_margin_pairs", margin_pairs(partitions, order))
    margin_file = work / f"{spec.name}_margin.parquet"
    try:
        con.execute(
            f"copy (select m.norder as _margin_norder, m.npix as _margin_npix, t.* from {source} as t "
            f"join _release_margin_pairs as m on (t.{SPATIAL_INDEX_COLUMN} >> {2 * (29 - order)}) = m.margin_pixel "
            f"order by m.norder, m.npix, t.{SPATIAL_INDEX_COLUMN}, t.{spec.order_by.split(',')[0]}) "
            f"to {db.quote_literal(margin_file)} (format parquet, compression lz4_raw, row_group_size {ROW_GROUP_ROWS})")
    finally:
        con.unregister("_release_margin_pairs")
    margin_source = f"read_parquet({db.quote_literal(margin_file)})"
    pixels = [Pixel(int(k), int(n)) for k, n in con.execute(
        f"select distinct _margin_norder, _margin_npix from {margin_source} order by 1, 2").fetchall()]
    if not pixels:  # no row lies near a partition border (a small field, one partition): no margin cache
        return 0, 0
    rows = _copy_partitions(con, margin_source, margin_dir, pixels, header, f"{spec.name} margin", progress,
                            where="_margin_norder = {order} and _margin_npix = {pixel}", widths=widths)
    finish_catalogue(margin_dir, spec, pixels, rows, None, header, widths, margin_of=spec.name,
                      margin_arcsec=margin_arcsec, margin_order=order)
    return rows, len(pixels)


def finish_catalogue(catalogue: Path, spec: ReleaseTable, partitions: list[Pixel], rows: int, max_rows,
                      header: str, widths: dict, margin_of: str | None = None, margin_arcsec=None, margin_order=None) -> None:
    """hats's files: partition_info.csv, _metadata and _common_metadata (with the VO-Parquet
    header), hats.properties."""
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel

    import stellardb

    (catalogue / "dataset").mkdir(parents=True, exist_ok=True)
    PartitionInfo.from_healpix([HealpixPixel(p.order, p.pixel) for p in partitions]).write_to_file(
        catalog_path=catalogue)
    _write_parquet_metadata(catalogue / "dataset", partitions, header, widths)
    properties = {
        "catalog_name": catalogue.name,
        "catalog_type": "margin" if margin_of else "object",
        "total_rows": rows,
        "ra_column": spec.ra or "ra",
        "dec_column": spec.dec or "dec",
        "healpix_column": SPATIAL_INDEX_COLUMN,
        "healpix_order": 29,
        "hats_builder": f"stellardb v{stellardb.__version__}, hats v{hats.__version__}",
        "hats_creation_date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M%Z"),
        "hats_estsize": sum(f.stat().st_size for f in (catalogue / "dataset").rglob("*.parquet")) // 1024,
        "hats_order": max((p.order for p in partitions), default=0),
        "obs_title": spec.description,
    }
    if max_rows and spec.gaia_key is None:  # co-partitioned tables follow gaia's partitions instead
        properties["hats_max_rows"] = max_rows
    if margin_of:
        properties |= {"primary_catalog": margin_of, "margin_threshold": margin_arcsec,
                       "hats_margin_order": margin_order}
    TableProperties(**properties).to_properties_file(catalogue)


def _write_parquet_metadata(dataset: Path, partitions: list[Pixel], header: str, widths: dict) -> None:
    """``_metadata`` (every file's row-group footers, with its path) and ``_common_metadata``
    (the schema, with the VO-Parquet header), as pyarrow writes them.

    Why not hats's ``write_parquet_metadata``: it rebuilds the Parquet schema from the Arrow
    one, whose INT64 lacks the INT_64 annotation DuckDB writes, and the footers then refuse
    to combine ("AppendRowGroups requires equal schemas"); here the first footer is the base.
    """
    import pyarrow.parquet as pq

    combined = None
    for pixel in sorted(partitions):
        footer = pq.read_metadata(dataset / pixel.path())
        footer.set_file_path(pixel.path())
        if combined is None:
            combined = footer
        else:
            combined.append_row_groups(footer)
    combined.write_metadata_file(str(dataset / "_metadata"))
    schema = pq.read_schema(dataset / partitions[0].path())
    extra = {k.encode(): v.encode() for k, v in file_metadata(header, widths).items()}
    pq.write_metadata(schema.with_metadata({**(schema.metadata or {}), **extra}), dataset / "_common_metadata")


def finish_collection(collection: Path, name: str, margins: list[str]) -> None:
    from hats.catalog.dataset.collection_properties import CollectionProperties

    fields = {"name": name, "hats_primary_table_url": name}
    if margins:
        fields |= {"all_margins": margins, "default_margin": margins[0]}
    CollectionProperties(**fields).to_properties_file(collection)


def _write_manifest(con, db_path, partial: Path, result: ReleaseResult, max_rows: int, margin_arcsec: float) -> None:
    import hats

    import stellardb
    from stellardb.catalog.schema import schema_version

    ingests = [
        {"ingest_id": i, "table": t, "file": Path(f).name, "sha256": s, "format": fmt, "preset": p, "rows": n,
         "ingested_at_utc": at.isoformat() if at else None}
        for i, t, f, s, fmt, p, n, at in con.execute(
            "select ingest_id, table_name, file, sha256, format, preset, rows, ingested_at from ingests "
            "order by ingest_id").fetchall()
    ]
    runs = [
        {"command": c, "run_at_utc": at.isoformat(), "stars": n, "card_sha256": sha, "versions": json.loads(v)}
        for c, at, n, sha, v in con.execute(
            # a family's runs are its members' (MODEL.SET)
            "select command, run_at, stars, card_sha256, versions from model_runs "
            "where model = $m or starts_with(model, $m || '.') order by run_at",
            {"m": result.model}).fetchall()
    ]
    card, card_sha256 = model_card(result.model, db_path)
    manifest = {
        "name": result.name,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "format": "HATS (hats.properties, partition_info.csv, dataset/Norder=k/Dir=d/Npix=n.parquet)",
        "stellardb_version": stellardb.__version__,
        "hats_version": hats.__version__,
        "duckdb_version": duckdb.__version__,
        "database": {"file": Path(db_path).name, "schema_version": schema_version(con)},
        "parameters": {"max_rows_per_partition": max_rows, "margin_arcsec": margin_arcsec},
        # what a cluster run over the release repeats (match radii: stellardb.cluster)
        "settings": {name: value for name, value in con.execute("select name, value from settings order by name").fetchall()},
        "model": {"name": result.model, "card": card, "card_sha256": card_sha256, "runs": runs},
        "ingests": ingests,
        "catalogues": {
            name: {"rows": c.rows, "partitions": len(c.partitions), "seconds": round(c.seconds, 2),
                   "orders": sorted({p.order for p in c.partitions}),
                   **({"margin_rows": c.margin_rows, "margin_partitions": c.margin_partitions,
                       "margin_arcsec": margin_arcsec} if c.margin_rows is not None else {})}
            for name, c in result.catalogues.items()
        },
        "left_out": {name: "no rows in the database" for name in result.skipped},
    }
    (partial / layout.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def model_card(model: str, db_path) -> tuple[dict | None, str | None]:
    from stellardb.ml.model_store import read_card, read_family_card

    try:
        family = read_family_card(model, db=db_path)
    except UserError:
        family = None
    if family is not None:
        # a family: its card, with each member's (the page explains each prediction with its member's)
        path, card = family
        return card, hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        folder, card = read_card(model, db=db_path)
    except UserError:
        return None, None  # the model folder is gone; model_runs still has the card's sha256
    return card, hashlib.sha256((folder / "card.json").read_bytes()).hexdigest()
