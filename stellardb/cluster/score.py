"""``stellardb score --engine dask``: the NumPy scorer mapped over a release's Gaia partitions.

Each task reads an in-memory DuckDB with the project's whole schema (empty tables, every
view of sql/; a worker thread keeps one from task to task), points the ``*_src`` views at its
partition (``gaia``, ``distances`` and ``xmatch`` are co-partitioned with gaia; the SkyMapper rows
are read from the survey's partitions around it), and reads the same SQL the embedded ``score`` reads
(``all_features`` with the family's choice per star, or ``scoring_set``), in Arrow batches.
The model (its folded networks) is sent to each worker once (``Client.scatter``), and the
predictions are computed by :func:`stellardb.ml.score.predict_batch`, the embedded scorer's
own function.  Each task writes its partition file of a ``predictions`` HATS catalogue
co-partitioned with gaia (columns as a release's ``predictions``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stellardb.catalog import db
from stellardb.cluster import engine, sky
from stellardb.cluster.catalogues import HatsCatalogue
from stellardb.cluster.partition import close_kept, kept_partition
from stellardb.cluster.stats import RowGroupIndex
from stellardb.cluster.xmatch import ROW_GROUP_ROWS, _files_sql, _maybe_die
from stellardb.errors import UserError
from stellardb.release.partition import SPATIAL_INDEX_COLUMN

BATCH_ROWS = 65_536
#: bytes a score task holds outside DuckDB per Gaia row of its partition: the predictions (113 a
#: scored star measured in the files, about 120 in Arrow), twice while they are gathered
PREDICTION_BYTES_PER_ROW = 240


@dataclass
class ClusterScoreResult:
    path: Path
    model: str
    rows: int
    partitions: int
    seconds: float
    by_feature_set: dict
    peak_task_bytes: int
    #: seconds spent inside the tasks, summed (the work, without Dask's overhead)
    task_seconds: float = 0.0


def load_model(model: str, models_dir, db_path) -> dict:
    """What each worker needs to score: every member's features, folded networks and card (for its
    range flags), and the SQL choosing a member per star; the same checks as the embedded ``score``."""
    from stellardb.ml import selection
    from stellardb.ml.feature_sets import parse
    from stellardb.ml.model_store import load_scorer, models_root

    root = models_root(models_dir, db_path)
    if selection.read_family(root, model) is not None:
        from stellardb.ml.score import load_family

        _, family, loaded = load_family(model, models_dir, db_path)
        members = {fs: (list(card["features"]), folded, card) for fs, (card, folded) in loaded.items()}
        union = sorted({f for features, _, _ in members.values() for f in features}, key=str.lower)
        columns = ", ".join(db.quote_identifier(f) for f in union)
        chosen = selection.chosen_sql(family["members"], family["choices"])
        source = (f"select * from (select source_id, {columns}, {chosen} as _feature_set from all_features) "
                  "where _feature_set is not null")
    else:
        card, folded = load_scorer(model, models_dir, db_path)
        feature_set = card.get("feature_set", "gaia-skymapper")
        members = {feature_set: (list(card["features"]), folded, card)}
        columns = ", ".join(db.quote_identifier(f) for f in card["features"])
        table = "scoring_set" if feature_set == "gaia-skymapper" else f"all_features where {parse(feature_set).where}"
        source = f"select source_id, {columns}, {db.quote_literal(feature_set)} as _feature_set from {table}"
    from stellardb.release.writer import model_card

    # the card (a family's, or the model's) the predictions come from: a release made of them checks it
    card_sha256 = model_card(model, db_path)[1] if models_dir is None else None
    return {"name": model, "members": members, "source": source, "card_sha256": card_sha256}


def _check_surveys(payload: dict, have: set) -> None:
    """Refuse a model with a member whose inputs the release cannot give (a release carries SkyMapper
    only): its stars would silently get another member's prediction, or none."""
    from stellardb.ml.feature_sets import parse

    for feature_set in payload["members"]:
        missing = [s for s in parse(feature_set).surveys if s not in have]
        if missing:
            raise UserError(f"Model {payload['name']} has a {feature_set} member, but the release has no {missing[0]} "
                            "crossmatch (releases carry SkyMapper only); score it embedded (`stellardb score`), or "
                            "train a family of the sets a release holds (`--feature-set gaia --feature-set "
                            "gaia-skymapper`).")


def score_task(task: dict, model: dict) -> dict:
    """Predictions for one Gaia partition, written as its file; returns counts per feature set.

    The features stream from DuckDB unsorted; the partition's predictions (about 120 bytes a star in
    Arrow, against 250 for the features) are sorted once at the end by (_healpix_29, source_id), the
    order of a release's files.  An ORDER BY on the features sorted every input column: 0.25 to
    0.45 s of a 2.7 s task of 588 k stars (2026-12-07)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from stellardb.ml.score import predict_batch
    from stellardb.ml.scorer import NumpyScorer, RangeFlags

    _maybe_die(task["key"])
    started = time.perf_counter()
    engine.task_folder(task["spill"], task["spill"])
    # the worker's threads, as its DuckDB: a scorer of one thread per core would oversubscribe the
    # machine's cores with one worker per core
    scorers = {fs: (features, NumpyScorer(folded, threads=task["threads"]), RangeFlags.from_card(card))
               for fs, (features, folded, card) in model["members"].items()}
    counts = {fs: 0 for fs in scorers}
    final = Path(task["out"])
    engine.task_folder(final.parent, task["spill"])
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    schema = pa.schema(task["schema"], metadata=task["metadata"])
    gaia = _GaiaRows(task["gaia"], threads=task["threads"])
    pieces = []
    with kept_partition(task, {"distances_src": task["distances"], "xmatch_src": task["xmatch"]}) as con:
        for batch in con.sql(model["source"]).to_arrow_reader(BATCH_ROWS):
            chosen = batch.column("_feature_set")
            for name, (features, scorer, flags) in scorers.items():
                part = batch.filter(pc.equal(chosen, name))
                if part.num_rows == 0:
                    continue
                arrays, _ = predict_batch(part, features, scorer, flags)
                n = part.num_rows
                rows = gaia.rows_of(part.column("source_id"))
                pieces.append(_columns_in_release_order(pa.table({
                    SPATIAL_INDEX_COLUMN: gaia.healpix.take(rows), **arrays,
                    # one value repeated: pa.repeat (a Python list of n strings took 0.25 s per 588 k stars)
                    "model": pa.repeat(pa.scalar(model["name"], pa.string()), n),
                    "scored_at": pa.repeat(pa.scalar(task["scored_at"], pa.timestamp("us")), n),
                    "feature_set": pa.repeat(pa.scalar(name, pa.string()), n),
                    "ra": gaia.ra.take(rows), "dec": gaia.dec.take(rows)})).cast(schema))
                counts[name] += n
    del gaia  # 48 bytes a Gaia row, freed before the predictions are copied (_check_memory counts on it)
    # one copy of the predictions (about 120 bytes a star; the pieces are freed), then the sorted
    # file a row group at a time: a take from chunks is 7x slower (30 row groups of 588 k stars)
    table = pa.concat_tables(pieces).combine_chunks() if pieces else schema.empty_table()
    pieces.clear()
    order = np.lexsort((table.column("source_id").to_numpy(), table.column(SPATIAL_INDEX_COLUMN).to_numpy()))
    try:
        with pq.ParquetWriter(tmp, schema, compression="snappy",
                              use_dictionary=engine.dictionary_columns(schema)) as writer:
            if not table.num_rows:  # no star of this partition can be scored: an empty partition file
                writer.write_table(table)
            for start in range(0, table.num_rows, ROW_GROUP_ROWS):
                writer.write_table(table.take(pa.array(order[start:start + ROW_GROUP_ROWS])))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"by_feature_set": counts, "peak_rss": engine.peak_rss_bytes(), "seconds": time.perf_counter() - started}


class _GaiaRows:
    """The partition's ``_healpix_29``, ``ra`` and ``dec`` found by source_id, for the predictions.

    Joining them in the feature query built DuckDB's hash table on the features (it estimated
    189 k of 588 k rows): 0.17 s of a 2.3 s task, where reading the four columns and a binary
    search take 0.06-0.1 s (2026-12-08).  A release's files are sorted by
    (_healpix_29, source_id), and a Gaia source_id begins with its HEALPix level-12 pixel, so the
    argsort runs over nearly sorted ids."""

    def __init__(self, path: str, threads: int = 1):
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["source_id", SPATIAL_INDEX_COLUMN, "ra", "dec"],
                              use_threads=threads > 1)
        ids = table.column("source_id").to_numpy()
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        self.healpix, self.ra, self.dec = (table.column(c).combine_chunks()
                                           for c in (SPATIAL_INDEX_COLUMN, "ra", "dec"))

    def rows_of(self, source_ids):
        """Row numbers in the partition file of ``source_ids`` (every one must be there)."""
        import pyarrow as pa

        wanted = source_ids.to_numpy()
        at = np.searchsorted(self._sorted_ids, wanted)
        found = at < len(self._sorted_ids)
        if not (found.all() and (self._sorted_ids[at] == wanted).all()):
            # the feature views read gaia_src, which is this file: a source missing here is a bug
            raise RuntimeError("a scored source_id is not in its Gaia partition file")
        return pa.array(self._order[at])


def _columns_in_release_order(table):
    order = [SPATIAL_INDEX_COLUMN, "source_id", "teff", "teff_err", "logg", "logg_err", "feh", "feh_err", "model",
             "scored_at", "teff_outside_training", "logg_outside_training", "feh_outside_training",
             "inputs_outside_training", "feature_set", "ra", "dec"]
    return table.select(order)


def run(gaia: HatsCatalogue, distances: HatsCatalogue | None, xmatch: HatsCatalogue | None,
        skymapper: HatsCatalogue | None, model: str, out: Path, models_dir=None, db_path=None,
        scheduler: str | None = None, workers: int | None = None, memory_per_worker: str | None = None,
        threads: int = 1, progress=None, provenance: dict | None = None,
        xmatch_provenance: dict | None = None) -> ClusterScoreResult:
    """Score every star of ``gaia`` with model (or family) ``model``; the predictions become the
    HATS collection ``out/predictions`` (co-partitioned with gaia), written in a hidden folder first."""

    from stellardb.release import writer

    budget = engine.Budget(engine.parse_bytes(memory_per_worker or engine.DEFAULT_BUDGET))
    for name, cat in (("distances", distances), ("xmatch", xmatch)):
        # a release puts rows whose Gaia source it lacks (a distance of a star outside the Gaia
        # files) in partitions of their own outside gaia's: nothing there is scored
        extra = set(cat.pixels) - set(gaia.pixels) if cat is not None else set()
        if sky.overlapping(sorted(extra, key=lambda p: p.lo), [(g.lo, g.hi) for g in gaia.pixels]):
            raise UserError(f"The {name} catalogue ({cat.path}) is not co-partitioned with gaia (its partitions cut "
                            "gaia's); use catalogues of one release, or `stellardb xmatch --engine dask` output.")
    import uuid

    payload = load_model(model, models_dir, db_path)
    card_sha256 = payload.get("card_sha256")
    have = {"skymapper"} if skymapper is not None and xmatch is not None else set()
    _check_surveys(payload, have)
    # Gaia rows per partition (row-group statistics, no row read): the memory check, and the
    # largest partitions are scored first
    gaia_rows = RowGroupIndex.of(gaia.path, [p.file for p in gaia.partitions])
    sizes = {f"{p.pixel.order}_{p.pixel.pixel}": gaia_rows.rows_in(p.pixel.lo, p.pixel.hi) for p in gaia.partitions}
    _check_memory(sizes, budget)
    final = Path(out) / "predictions"
    if final.exists():
        raise UserError(f"{final} already exists; the cluster never overwrites a result: remove it or give another --out.")
    partial = Path(out) / f".predictions.partial-{os.getpid()}"
    work = Path(out) / f".predictions.work-{os.getpid()}"
    t0 = time.perf_counter()
    border = _survey_border(gaia, xmatch, skymapper, budget) if skymapper is not None and xmatch is not None else None
    spec = writer.ReleaseTable("predictions", "", None, None, "source_id", "source_id",
                               metadata_sql="select * from predictions",
                               description=f"stellardb predictions of Teff, log g and [Fe/H] (model {model}, Dask)")
    header, metadata, schema = _header(spec, model, payload)
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    distances_files = {p.pixel: p.file for p in distances.partitions} if distances else {}
    xmatch_files = {p.pixel: p.file for p in xmatch.partitions} if xmatch else {}
    run_id = uuid.uuid4().hex  # the workers' partition databases of this run (partition.close_kept)
    tasks = {}
    for part in gaia.partitions:
        g = part.pixel
        near = [(g.lo, g.hi)] + (sky.border_ranges(g, border) if border else [])
        survey_files = [skymapper.file_of(p) for p in sky.overlapping(skymapper.pixels, near)] \
            if skymapper is not None and g in xmatch_files else []
        key = f"{g.order}_{g.pixel}"
        tasks[key] = {"key": key, "gaia": part.file, "distances": distances_files.get(g), "xmatch": xmatch_files.get(g),
                      "survey_files": survey_files,
                      "out": str(partial / "predictions" / "dataset" / g.path()), "metadata": metadata,
                      "schema": schema, "scored_at": scored_at, "limit": budget.duckdb_limit,
                      "threads": threads, "spill": str(work / "spill"), "run": run_id}
    with engine.output_folder(out):  # after every refusal above
        engine.scratch_folder(partial), engine.scratch_folder(work)
        try:
            with engine.client(scheduler, workers, budget, str(work / "dask")) as dask_client:
                try:
                    # the model goes to each worker once, not with every task
                    done = engine.run_tasks(dask_client, score_task, tasks, "score", progress, shared=(payload,),
                                            sizes=sizes)
                finally:
                    # the workers' idle partition databases hold memory and this run's spill folder;
                    # a --scheduler cluster's workers outlive the run (a dead worker has none to close,
                    # and a scheduler that is gone must not hide the run's own error)
                    if dask_client.status == "running":  # not a 30 s wait for a scheduler that is gone
                        with contextlib.suppress(Exception):
                            dask_client.run(close_kept, run_id, on_error="ignore")
            by_set: dict = {}
            for r in done.values():
                for k, v in r["by_feature_set"].items():
                    by_set[k] = by_set.get(k, 0) + v
            rows = sum(by_set.values())
            widths = {"model": max(1, len(model)), "feature_set": max([1] + [len(k) for k in by_set])}
            writer.finish_catalogue(partial / "predictions", spec, gaia.pixels, rows, None, header, widths)
            writer.finish_collection(partial, "predictions", [])
            (partial / engine.MARKER).unlink()
            (partial / "cluster_run.json").write_text(json.dumps({
                "run_id": run_id, "release": provenance, "xmatch": xmatch_provenance,
                "card_sha256": card_sha256, "model": model, "members": sorted(payload["members"]), "scored_at_utc": scored_at.isoformat(),
                "gaia": gaia.path.name, "memory_per_worker_bytes": budget.worker_bytes,
                "by_feature_set": by_set}, indent=2) + "\n")
            os.rename(partial, final)
        finally:
            engine.remove_run_folders(work, partial)
    return ClusterScoreResult(path=final, model=model, rows=rows, partitions=len(gaia.pixels),
                              seconds=time.perf_counter() - t0, by_feature_set=by_set,
                              peak_task_bytes=max([r["peak_rss"] for r in done.values()] or [0]),
                              task_seconds=sum(r["seconds"] for r in done.values()))


def _check_memory(sizes: dict, budget) -> None:
    """Refuse, before any task or file (only the model and the ``_metadata`` statistics are read), a
    partition whose predictions would not fit beside DuckDB's share of the worker's budget and the
    worker itself: a task holds them all to write them sorted, where DuckDB would spill.
    DuckDB's whole share is counted: its query has ended when the predictions are copied, but the
    worker's idle database keeps what DuckDB's allocator holds until the next task (measured peaks:
    599-629 MiB on 947 k-row partitions, 2 GB budget, 2026-12-08).  The partition's source_id,
    _healpix_29, ra, dec and their search index (48 bytes a Gaia row) are held only while the
    predictions are still at most half the count."""
    if not sizes:
        return
    key = max(sizes, key=sizes.get)
    predictions = PREDICTION_BYTES_PER_ROW * sizes[key]
    need = engine.WORKER_BASE_BYTES + budget.duckdb_bytes + predictions
    if need <= budget.worker_bytes:
        return
    enough = int(-(-2 * (engine.WORKER_BASE_BYTES + predictions) // 10**9))  # DuckDB takes half of it
    fits = (budget.worker_bytes - budget.duckdb_bytes - engine.WORKER_BASE_BYTES) // PREDICTION_BYTES_PER_ROW
    smaller = (f", or make the release with partitions of at most {fits // 1000 * 1000:,} rows "
               f"(`stellardb release NAME --max-rows-per-partition {fits // 1000 * 1000}`)") if fits >= 1000 else ""
    raise UserError(f"Gaia partition {key} has {sizes[key]:,} rows: scoring it needs about {need / 1e9:.2f} GB per "
                    f"worker (predictions {predictions / 1e9:.1f} GB, DuckDB's half of the budget "
                    f"{budget.duckdb_bytes / 1e9:.1f} GB, the worker itself {engine.WORKER_BASE_BYTES / 1e9:.1f} GB), "
                    f"more than the {budget.worker_bytes / 1e9:.1f} GB budget; give --memory-per-worker {enough}GB"
                    f"{smaller}.")


def _survey_border(gaia: HatsCatalogue, xmatch: HatsCatalogue, skymapper: HatsCatalogue, budget) -> int:
    """The order of the border pixels holding every SkyMapper row paired with a Gaia source of a
    partition: wider than the largest pair separation plus the largest Gaia proper motion times
    the largest epoch difference of a pair.  From the catalogues' row-group statistics (a bound,
    no row read), else, or before refusing, from a scan of the columns."""
    bounds = _statistics_reach(gaia, xmatch)
    if bounds is not None:
        order = sky.order_wider_than(bounds)
        if order > max(p.order for p in gaia.pixels):
            return order
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stellardb-bounds-") as spill:
        con = engine.task_connection(budget.duckdb_limit, max(1, os.cpu_count() or 1), spill)
        try:
            sep, dt_yr = con.execute(
                f"select max(sep_arcsec), max(abs(dt_yr)) from read_parquet({_files_sql([p.file for p in xmatch.partitions])})"
            ).fetchone()
            pm = con.execute(
                "select max(sqrt(coalesce(pmra, 0) ^ 2 + coalesce(pmdec, 0) ^ 2)) / 1000.0 from "
                f"read_parquet({_files_sql([p.file for p in gaia.partitions])}) "
                "where abs(coalesce(pmra, 0)) <= 100000 and abs(coalesce(pmdec, 0)) <= 100000").fetchone()[0]
        finally:
            con.close()
    reach = (sep or 0.0) + (pm or 0.0) * (dt_yr or 0.0) + 0.01
    order = sky.order_wider_than(reach)
    deepest = max(p.order for p in gaia.pixels)
    if order <= deepest:
        raise UserError(f"Gaia partitions of order {deepest} are narrower than the pairs' reach ({reach:.1f} arcsec); "
                        "make the release with larger partitions (`--max-rows-per-partition`).")
    return order


def _statistics_reach(gaia: HatsCatalogue, xmatch: HatsCatalogue) -> float | None:
    """An upper bound of the pairs' reach (arcsec) from ``_metadata`` statistics, or None."""
    import math

    from stellardb.cluster.stats import column_ranges

    x = column_ranges(xmatch.path, ["sep_arcsec", "dt_yr"])
    g = column_ranges(gaia.path, ["pmra", "pmdec"])
    if x is None or g is None or x["sep_arcsec"][1] is None:
        return None
    largest = [max(abs(g[c][0] or 0.0), abs(g[c][1] or 0.0)) for c in ("pmra", "pmdec")]
    if max(largest) > 100_000:  # absurd rows the scan leaves out
        return None
    dt_yr = max(abs(x["dt_yr"][0] or 0.0), abs(x["dt_yr"][1] or 0.0))
    return x["sep_arcsec"][1] + math.hypot(*largest) / 1000.0 * dt_yr + 0.01


def _header(spec, model: str, payload: dict):
    """VO-Parquet header and file metadata of the predictions, and the Arrow schema of every file."""
    import pyarrow as pa

    from stellardb.release import writer

    memory = db.connect(":memory:")
    try:
        source = (f"(select null::bigint as {SPATIAL_INDEX_COLUMN}, * exclude (feature_set), feature_set, "
                  "null::double as ra, null::double as dec from predictions where false)")
        widths = {"model": max(1, len(model)), "feature_set": max(len(k) for k in payload["members"])}
        header = writer.vo_header(memory, spec, source, widths)
        schema = memory.sql(f"select * from {source}").to_arrow_table().schema
    finally:
        memory.close()
    empty = pa.schema([f.with_nullable(True) for f in schema]).remove_metadata()
    return header, writer.file_metadata(header, widths), empty
