"""``stellardb release NAME --from-release BASE --xmatch DIR --predictions DIR``: a release whose
crossmatch and predictions come from a cluster run, servable like any other.

The new release holds the base release's catalogues (hard links where the file system allows,
copies otherwise: releases are immutable, so sharing files is safe), the cluster's ``xmatch``
and ``predictions`` collections in their place, and a ``catalogue`` rebuilt from them partition
by partition on Dask: each task runs ``catalogue_of_model`` (sql/40_marts/catalogue_of_model.sql,
the SQL the embedded ``release`` runs) on its partition's files, and a second map writes the
catalogue's margin cache (the catalogue rows of the Gaia sources in gaia's margin cache).
Written in a hidden folder and renamed, as every release (stellardb.release.layout).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from stellardb.catalog import db
from stellardb.catalog.schema import sql_dir
from stellardb.cluster import engine, sky
from stellardb.cluster.catalogues import HatsCatalogue, cluster_output, release_catalogue
from stellardb.cluster.score import _survey_border
from stellardb.cluster.partition import open_partition
from stellardb.cluster.xmatch import _create_source, _maybe_die, write_partition
from stellardb.errors import UserError
from stellardb.release import layout
from stellardb.release.partition import SPATIAL_INDEX_COLUMN

#: the release reader's marts (stellardb.release.reader.MART_FILES), which catalogue_of_model reads
MARTS = ("40_marts/best_labels.sql", "40_marts/stars.sql", "40_marts/stars_with_predictions.sql",
         "40_marts/catalogue_of_model.sql")


@dataclass
class ClusterRelease:
    name: str
    path: Path
    model: str
    rows: int
    margin_rows: int
    seconds: float


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder as hard links (a release never changes a file), or as copies across devices."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def _collection_of(catalogue: HatsCatalogue) -> Path:
    parent = catalogue.path.parent
    return parent if (parent / "collection.properties").is_file() else catalogue.path


def _model_of(predictions: HatsCatalogue) -> str:
    run = _collection_of(predictions) / "cluster_run.json"
    if run.is_file():
        return json.loads(run.read_text())["model"]
    import duckdb

    found = duckdb.sql(f"select distinct model from read_parquet({[p.file for p in predictions.partitions]!r})").fetchall()
    if len(found) != 1:
        raise UserError(f"The predictions catalogue ({predictions.path}) holds {len(found)} models; a release carries one.")
    return found[0][0]


def catalogue_task(task: dict) -> dict:
    """One partition of ``catalogue``: catalogue_of_model over the partition's files."""
    _maybe_die(task["key"])
    engine.task_folder(task["spill"], task["spill"])
    con = open_partition(task, {"distances_src": task["distances"], "xmatch_src": task["xmatch"],
                                "predictions_src": task["predictions"], "labels": task["labels"]})
    try:
        for relative in MARTS:
            con.execute((sql_dir() / relative).read_text())
        table = con.sql(
            f"select g.{SPATIAL_INDEX_COLUMN}, c.* from catalogue_of_model({db.quote_literal(task['model'])}) as c "
            f"join gaia_part as g using (source_id) order by g.{SPATIAL_INDEX_COLUMN}, c.source_id").to_arrow_table()
    finally:
        con.close()
    import pyarrow as pa

    table = table.cast(pa.schema(task["schema"]))
    return {"rows": write_partition(table, Path(task["out"]), task["metadata"], task["spill"]),
            "peak_rss": engine.peak_rss_bytes()}


def margin_task(task: dict) -> dict:
    """One partition of the catalogue's margin cache: the catalogue rows of gaia's margin rows."""
    import pyarrow as pa

    _maybe_die(task["key"])
    con = engine.task_connection(task["limit"], task["threads"], task["spill"])
    try:
        _create_source(con, "gaia_margin", [task["gaia_margin"]])
        _create_source(con, "catalogue_near", task["catalogue_files"])
        table = con.sql("select * from catalogue_near where source_id in (select source_id from gaia_margin) "
                        f"order by {SPATIAL_INDEX_COLUMN}, source_id").to_arrow_table()
    finally:
        con.close()
    table = table.cast(pa.schema(task["schema"]))
    return {"rows": write_partition(table, Path(task["out"]), task["metadata"], task["spill"])}


def from_cluster(base: Path, name: str, root: Path, xmatch_dir=None, predictions_dir=None, models_dir=None,
                 db_path=None, scheduler=None, workers=None, memory_per_worker=None, progress=None,
                 model: str | None = None) -> ClusterRelease:
    import pyarrow.parquet as pq

    from stellardb.release import writer

    t0 = time.perf_counter()
    layout.check_name(name)
    if xmatch_dir is None and predictions_dir is None:
        raise UserError("--from-release needs --xmatch DIR and/or --predictions DIR (the output of "
                        "`stellardb xmatch/score --engine dask`); otherwise make the release from the database.")
    base_manifest = json.loads((base / layout.MANIFEST).read_text())
    gaia = release_catalogue(base, "gaia")
    xmatch = cluster_output(xmatch_dir, "xmatch", "--xmatch") if xmatch_dir else release_catalogue(base, "xmatch")
    predictions = cluster_output(predictions_dir, "predictions", "--predictions") if predictions_dir else \
        release_catalogue(base, "predictions")
    _check_provenance(base, xmatch if xmatch_dir else None, predictions if predictions_dir else None, db_path)
    for what, cat in (("--xmatch", xmatch), ("--predictions", predictions)):
        if set(cat.pixels) - set(gaia.pixels):
            raise UserError(f"{what} ({cat.path}) is not co-partitioned with the release's gaia; make it from this "
                            f"release (`--engine dask --release {base.name}`).")
    found = _model_of(predictions)
    if model is not None and model != found:
        raise UserError(f"The predictions ({predictions.path}) are of model {found}, not {model}; leave out --model "
                        "or give the predictions of that model.")
    model = found
    final = root / name
    if final.exists() or final.is_symlink():
        raise UserError(f"Release {name} already exists in {root}; releases are never overwritten: choose another name.")
    budget = engine.Budget(engine.parse_bytes(memory_per_worker or engine.DEFAULT_BUDGET))
    root.mkdir(parents=True, exist_ok=True)
    layout.sweep_partials(root)
    partial = layout.partial_dir(root, name)
    work = partial / "_work"  # inside: removed with the half-written release if this process dies
    try:
        partial.mkdir()
        replaced = {"xmatch": _collection_of(xmatch) if xmatch_dir else None,
                    "predictions": _collection_of(predictions) if predictions_dir else None}
        for entry in sorted(base.iterdir()):
            if not entry.is_dir() or entry.name == "catalogue":
                continue
            _link_tree(replaced.get(entry.name) or entry, partial / entry.name)
            (partial / entry.name / "cluster_run.json").unlink(missing_ok=True)
        for table, source in replaced.items():
            if source is not None and not (partial / table).exists():
                _link_tree(source, partial / table)
                (partial / table / "cluster_run.json").unlink(missing_ok=True)
        # the catalogue: its columns and header as the base release's, text widths widened for the model
        base_schema = pq.read_schema(base / "catalogue" / "catalogue" / "dataset" / "_common_metadata")
        meta = {k.decode(): v.decode() for k, v in (base_schema.metadata or {}).items()}
        widths = {k[len("table::len::"):]: int(v) for k, v in meta.items() if k.startswith("table::len::")}
        widths["model"] = max(widths.get("model", 1), len(model))
        spec = next(t for t in writer.TABLES if t.name == "catalogue")
        memory = db.connect(":memory:")
        try:
            header = writer.vo_header(memory, spec, f"(select null::bigint as {SPATIAL_INDEX_COLUMN}, * from "
                                                    f"catalogue_of_model('') where false)", widths)
        finally:
            memory.close()
        metadata = writer.file_metadata(header, widths)
        schema = [f.with_nullable(True) for f in base_schema]
        files = {name_: {p.pixel: p.file for p in release_catalogue(partial, name_).partitions}
                 for name_ in ("distances", "labels") if (partial / name_).is_dir()}
        xmatch_files = {p.pixel: p.file for p in release_catalogue(partial, "xmatch").partitions}
        prediction_files = {p.pixel: p.file for p in release_catalogue(partial, "predictions").partitions}
        skymapper = release_catalogue(partial, "skymapper") if (partial / "skymapper").is_dir() else None
        border = _survey_border(gaia, release_catalogue(partial, "xmatch"), skymapper, budget) \
            if skymapper is not None else 0
        catalogue = partial / "catalogue" / "catalogue"
        tasks = {}
        for part in gaia.partitions:
            g = part.pixel
            near = [(g.lo, g.hi)] + (sky.border_ranges(g, border) if border > g.order else [])
            key = f"{g.order}_{g.pixel}"
            tasks[key] = {"key": key, "gaia": str(partial / "gaia" / "gaia" / "dataset" / g.path()),
                          "distances": files.get("distances", {}).get(g), "labels": files.get("labels", {}).get(g),
                          "xmatch": xmatch_files.get(g), "predictions": prediction_files.get(g),
                          "survey_files": [skymapper.file_of(p) for p in sky.overlapping(skymapper.pixels, near)]
                          if skymapper is not None else [],
                          "model": model, "out": str(catalogue / "dataset" / g.path()), "schema": schema,
                          "metadata": metadata, "limit": budget.duckdb_limit, "threads": 1,
                          "spill": str(work / "spill")}
        gaia_margin = release_catalogue(partial, "gaia")
        margin_tasks = {}
        margin_dir = None
        if gaia_margin.margin_files:
            margin_dir = partial / "catalogue" / gaia_margin.margin_path.name.replace("gaia_", "catalogue_")
            margin_order = int(_properties(gaia_margin.margin_path)["hats_margin_order"])
            for p, margin_file in gaia_margin.margin_files.items():
                around = sky.overlapping(gaia.pixels, sky.border_ranges(p, margin_order))
                key = f"{p.order}_{p.pixel}"
                margin_tasks[key] = {"key": key, "gaia_margin": margin_file,
                                     "catalogue_files": [str(catalogue / "dataset" / q.path()) for q in around],
                                     "out": str(margin_dir / "dataset" / p.path()), "schema": schema,
                                     "metadata": metadata, "limit": budget.duckdb_limit, "threads": 1,
                                     "spill": str(work / "spill")}
        work.mkdir(exist_ok=True)  # the tasks make their folders only while it is there (engine.task_folder)
        with engine.client(scheduler, workers, budget, str(work / "dask")) as dask_client:
            done = engine.run_tasks(dask_client, catalogue_task, tasks, "catalogue", progress)
            margins = engine.run_tasks(dask_client, margin_task, margin_tasks, "catalogue margin", progress) \
                if margin_tasks else {}
        rows = sum(r["rows"] for r in done.values())
        margin_rows = sum(r["rows"] for r in margins.values())
        writer.finish_catalogue(catalogue, spec, gaia.pixels, rows, None, header, widths)
        margin_names = []
        if margin_dir is not None and margin_rows:
            margin_pixels = sorted(gaia_margin.margin_files)
            writer.finish_catalogue(margin_dir, spec, margin_pixels, margin_rows, None, header, widths,
                                    margin_of="catalogue", margin_arcsec=gaia_margin.margin_arcsec,
                                    margin_order=margin_order)
            margin_names.append(margin_dir.name)
        writer.finish_collection(partial / "catalogue", "catalogue", margin_names)
        engine.remove_run_folders(work)
        _write_manifest(partial, base, base_manifest, name, model, models_dir, db_path, replaced, rows, margin_rows,
                        {"xmatch": xmatch, "predictions": predictions})
        layout.publish(partial, final)
        partial = None
        layout.point_latest(root, name)
    finally:
        engine.remove_run_folders(work, *([partial] if partial is not None else []))
    return ClusterRelease(name=name, path=final, model=model, rows=rows, margin_rows=margin_rows,
                          seconds=time.perf_counter() - t0)


def _check_provenance(base: Path, xmatch, predictions, db_path) -> None:
    """Refuse cluster outputs that were not made from ``base``, predictions scored from another
    crossmatch than the one the release will carry, and a model retrained since it scored."""
    from stellardb.cluster.catalogues import release_identity, run_record
    from stellardb.release.writer import model_card

    identity = release_identity(base)
    runs = {}
    for what, cat in (("--xmatch", xmatch), ("--predictions", predictions)):
        if cat is None:
            continue
        record = run_record(cat)
        if record is None or record.get("release") != identity:
            raise UserError(f"{what} ({cat.path}) was not made from release {base.name} (its cluster_run.json names "
                            f"{(record or {}).get('release') or 'no release'}); run the cluster command with "
                            f"--release {base.name}.")
        runs[what] = record
    if xmatch is not None and predictions is None:
        raise UserError(f"The predictions of release {base.name} were scored from its own crossmatch; score with the "
                        "new one (`stellardb score --engine dask --xmatch DIR`) and give --predictions too.")
    if predictions is not None:
        used = runs["--predictions"].get("xmatch") or {}
        want = {"run_id": runs["--xmatch"]["run_id"]} if xmatch is not None else {"source": "release"}
        if used != want:
            raise UserError("--predictions were scored from another crossmatch than the release will carry ("
                            + ("the --xmatch given" if xmatch is not None else f"release {base.name}'s own")
                            + "); score again with the matching --xmatch.")
        sha = runs["--predictions"].get("card_sha256")
        now = model_card(runs["--predictions"]["model"], db_path)[1] if db_path else None
        if sha and now and sha != now:
            raise UserError(f"Model {runs['--predictions']['model']} was retrained after these predictions were "
                            "scored; score it again with `stellardb score --engine dask`.")


def _properties(path: Path) -> dict:
    found = {}
    for line in (path / "hats.properties").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            found[k.strip()] = v.strip()
    return found


def _write_manifest(partial: Path, base: Path, base_manifest: dict, name: str, model: str, models_dir, db_path,
                    replaced: dict, rows: int, margin_rows: int, cats: dict) -> None:
    from stellardb.release.writer import model_card

    manifest = dict(base_manifest)
    manifest["name"] = name
    manifest["created_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    runs = {table: json.loads((s / "cluster_run.json").read_text()) for table, s in replaced.items()
            if s is not None and (s / "cluster_run.json").is_file()}
    if replaced.get("predictions") is not None:
        card, sha = model_card(model, db_path) if db_path else (None, None)
        earlier = (base_manifest.get("model") or {}).get("runs", []) if (base_manifest.get("model") or {}).get(
            "name") == model else []
        score_run = runs.get("predictions", {})
        manifest["model"] = {"name": model, "card": card, "card_sha256": sha, "runs": earlier + [
            {"command": "score --engine dask", "run_at_utc": score_run.get("scored_at_utc"),
             "stars": sum((score_run.get("by_feature_set") or {}).values()), "card_sha256": score_run.get("card_sha256")}]}
    if "xmatch" in runs:
        # the radius the crossmatch used is the release's setting (a cluster run over it repeats it)
        from stellardb.catalog.surveys import SURVEYS

        survey = SURVEYS[runs["xmatch"]["survey"]]
        manifest["settings"] = dict(manifest.get("settings") or {}) | {survey.radius_setting: runs["xmatch"]["radius_arcsec"]}
    catalogues = dict(manifest.get("catalogues", {}))
    for table, source in replaced.items():
        if source is not None:
            cat = cats[table]
            catalogues[table] = {"rows": sum(pq_rows(p.file) for p in cat.partitions), "partitions": len(cat.pixels),
                                 "orders": sorted({p.order for p in cat.pixels})}
    entry = dict(catalogues.get("catalogue", {}))
    entry.update({"rows": rows, "margin_rows": margin_rows})
    catalogues["catalogue"] = entry
    manifest["catalogues"] = catalogues
    manifest["derived_from"] = {
        "release": base.name, "replaced": sorted(t for t, s in replaced.items() if s is not None),
        "cluster_runs": runs}
    (partial / layout.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def pq_rows(file: str) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(file).num_rows
