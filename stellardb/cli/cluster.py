"""The ``--engine dask`` side of ``stellardb xmatch`` and ``stellardb score`` (stellardb.cluster)."""

from __future__ import annotations

from pathlib import Path

import click

from stellardb.errors import UserError


def cluster_options(command):
    """Options every cluster run takes."""
    options = [
        click.option("--engine", type=click.Choice(["duckdb", "dask"]), default="duckdb", show_default=True,
                     help="duckdb: the database file, embedded.  dask: a release's HATS partitions on a Dask "
                          "cluster (docs/cluster.md)."),
        click.option("--release", "release_name", default=None,
                     help="With --engine dask: the release to read (a name under releases/, latest, or a folder)."),
        click.option("--out", "out", type=click.Path(file_okay=False), default=None,
                     help="With --engine dask: the folder the result goes in (a HATS collection).  "
                          "[default: cluster/RELEASE/ beside the database]"),
        click.option("--scheduler", default=None,
                     help="With --engine dask: a Dask scheduler's address (tcp://host:8786); default: a local cluster."),
        click.option("--workers", type=int, default=None,
                     help="With --engine dask and no --scheduler: local worker processes, one thread each.  "
                          "[default: usable cores]"),
        click.option("--memory-per-worker", default=None,
                     help="With --engine dask: each worker's memory budget (e.g. 2GB); partitions are cut to fit it.  "
                          "[default: 2GB]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def refuse_cluster_options_without_dask(engine: str, **given) -> None:
    used = [name for name, value in given.items() if value is not None]
    if engine != "dask" and used:
        raise UserError(f"--{used[0].replace('_', '-')} needs --engine dask; add it, or leave the option out.")


def _release_and_out(db_path, release_name: str | None, out: str | None) -> tuple[Path, Path]:
    from stellardb.release import layout

    if not release_name:
        raise UserError("--engine dask reads a release: give --release NAME (`stellardb releases` lists them; "
                        "`stellardb release NAME` makes one).")
    folder = layout.resolve(layout.default_root(db_path), release_name)
    # absolute: the workers of a --scheduler cluster may have another working directory
    target = Path(out).absolute() if out else Path(db_path).absolute().parent / "cluster" / folder.name
    if layout.release_holding(target.absolute()) is not None:
        raise UserError(f"--out {target} lies inside a release; releases are immutable: choose a folder outside it.")
    return folder, target


def _check_workers(scheduler, workers) -> None:
    if scheduler and workers is not None:
        raise UserError("--workers starts a local cluster; with --scheduler the scheduler's workers run the tasks: "
                        "give one of them.")


def _radius(db_path, release: Path | None, survey: str, given):
    """The match radius: --radius-arcsec, else the one the release's database used (its settings row,
    from the manifest, or the database itself), else the survey's default."""
    from stellardb.catalog.surveys import SURVEYS
    from stellardb.cluster import catalogues

    if given is not None:
        return given
    setting = SURVEYS[survey].radius_setting
    stored = catalogues.release_settings(release).get(setting) if release is not None else None
    if stored is None and Path(db_path).is_file():
        import duckdb

        from stellardb.catalog import db

        try:
            con = db.connect(db_path)
            try:
                stored = db.get_setting(con, setting)
            finally:
                con.close()
        except (UserError, KeyError, TypeError, duckdb.Error):  # no readable database: the survey's default
            stored = None
    return stored


def xmatch(db_path, survey: str, radius_arcsec, release_name, out, scheduler, workers, memory_per_worker, quiet=False,
           gaia_path=None, survey_path=None):
    from stellardb.cli.progress import staged_progress
    from stellardb.cluster import catalogues, xmatch as cluster_xmatch

    _check_workers(scheduler, workers)
    if gaia_path or survey_path:
        # HATS catalogues given by path (hats-import's, a downloaded survey's): any survey of `stellardb surveys`
        if release_name or not (gaia_path and survey_path):
            raise UserError("Give --gaia-catalogue and --survey-catalogue together, or --release instead of both.")
        from stellardb.catalog.surveys import SURVEYS

        gaia = catalogues.open_catalogue(gaia_path, "--gaia-catalogue")
        survey_cat = catalogues.open_catalogue(survey_path, "--survey-catalogue")
        catalogues.require_columns(gaia, ("source_id", "ra", "dec", "pmra", "pmdec"), "--gaia-catalogue",
                                   "give a Gaia DR3 gaia_source catalogue.")
        catalogues.require_columns(survey_cat, SURVEYS[survey].signature, "--survey-catalogue",
                                   f"give a {survey} catalogue with stellardb's column names (`stellardb surveys`), "
                                   "or name the survey it is with --survey.")
        target = Path(out).absolute() if out else Path(db_path).absolute().parent / "cluster" / gaia.path.name
        from stellardb.release import layout

        if layout.release_holding(target.absolute()) is not None:
            raise UserError(f"--out {target} lies inside a release; releases are immutable: choose a folder outside it.")
        release = None
    else:
        if survey != "skymapper":
            raise UserError(f"--engine dask crossmatches the surveys a release carries, and releases carry SkyMapper "
                            f"only; crossmatch {survey} embedded (`stellardb xmatch --survey {survey}`), or give its "
                            "HATS catalogue (--gaia-catalogue, --survey-catalogue).")
        release, target = _release_and_out(db_path, release_name, out)
        gaia = catalogues.release_catalogue(release, "gaia")
        survey_cat = catalogues.release_catalogue(release, survey)
    radius_arcsec = _radius(db_path, release, survey, radius_arcsec)
    provenance = catalogues.release_identity(release) if release is not None else None
    with staged_progress("nearest", disable=quiet) as progress:
        result = cluster_xmatch.run(gaia, survey_cat, survey, target, radius_arcsec, scheduler=scheduler,
                                    workers=workers, memory_per_worker=memory_per_worker, progress=progress,
                                    provenance=provenance)
    click.echo(f"xmatch {survey} (dask): {result.pairs:,} Gaia-{survey} pairs in {result.partitions} partitions "
               f"({result.nearest_tasks} nearest tasks; reach {result.reach_arcsec:.2f} arcsec within the "
               f"{result.margin_arcsec if result.margin_arcsec is not None else 0:g} arcsec margin) in "
               f"{result.seconds:.1f} s; peak worker memory {result.peak_task_bytes / 2**20:,.0f} MiB.")
    click.echo(f"catalogue: {result.path}")


def score(db_path, model: str, release_name, out, xmatch_dir, scheduler, workers, memory_per_worker, quiet=False):
    from stellardb.cli.progress import staged_progress
    from stellardb.cluster import catalogues, score as cluster_score

    _check_workers(scheduler, workers)
    release, target = _release_and_out(db_path, release_name, out)
    gaia = catalogues.release_catalogue(release, "gaia")

    def optional(table):
        return catalogues.release_catalogue(release, table) if (release / table).is_dir() else None

    provenance = catalogues.release_identity(release)
    if xmatch_dir:
        xmatch = catalogues.cluster_output(xmatch_dir, "xmatch", "--xmatch")
        record = catalogues.run_record(xmatch)
        if record is None or record.get("release") != provenance:
            raise UserError(f"--xmatch {xmatch_dir} was not made from release {release.name} by `stellardb xmatch "
                            f"--engine dask --release {release.name}`; make it so, or leave out --xmatch.")
        xmatch_provenance = {"run_id": record["run_id"]}
    else:
        xmatch, xmatch_provenance = optional("xmatch"), {"source": "release"}
    with staged_progress("score", disable=quiet) as progress:
        result = cluster_score.run(gaia, optional("distances"), xmatch, optional("skymapper"), model, target,
                                   db_path=db_path, scheduler=scheduler, workers=workers,
                                   memory_per_worker=memory_per_worker, progress=progress, provenance=provenance,
                                   xmatch_provenance=xmatch_provenance)
    rate = result.rows / result.seconds if result.seconds else float("inf")
    click.echo(f"Scored {result.rows:,} stars with model {model} (dask) in {result.partitions} partitions in "
               f"{result.seconds:.1f} s ({rate:,.0f} stars/s); peak worker memory {result.peak_task_bytes / 2**20:,.0f} MiB.")
    if result.by_feature_set:
        click.echo("By feature set: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.by_feature_set.items())) + ".")
    click.echo(f"catalogue: {result.path}")


def release(db_path, name, base_name, out, model, xmatch_dir, predictions_dir, scheduler, workers, memory_per_worker,
            quiet=False):
    from stellardb.cli.progress import staged_progress
    from stellardb.cluster import release as cluster_release
    from stellardb.release import layout

    _check_workers(scheduler, workers)
    root = Path(out).absolute() if out else layout.default_root(db_path)
    # the base: among the releases of --out first, then beside the database
    try:
        base = layout.resolve(root, base_name)
    except UserError:
        base = layout.resolve(layout.default_root(db_path), base_name)
    with staged_progress("catalogue", disable=quiet) as progress:
        result = cluster_release.from_cluster(base, name, root, xmatch_dir, predictions_dir, db_path=db_path,
                                              scheduler=scheduler, workers=workers,
                                              memory_per_worker=memory_per_worker, progress=progress, model=model)
    click.echo(f"Release {result.name} (from {base.name}, model {result.model}): catalogue of {result.rows:,} stars "
               f"({result.margin_rows:,} margin rows) rebuilt on Dask in {result.seconds:.1f} s; {result.path}")
