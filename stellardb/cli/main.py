"""The ``stellardb`` command line: a thin layer over the library.

Each command parses its options and calls one library function; errors a user
can fix are :class:`stellardb.errors.UserError` and are printed as one line.
TensorFlow is never imported here, so ``stellardb --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from stellardb import config
from stellardb.cli.errors import user_errors
from stellardb.cli.cluster import cluster_options, refuse_cluster_options_without_dask
from stellardb.errors import UserError

# TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines, oneDNN notes)
# would bury the progress bars; users can still ask for it (STELLARDB_TF_VERBOSE=1).
config.quiet_tensorflow_logs()




def _settings_epilog() -> str:
    """The environment variables of stellardb/config.py, for `stellardb --help`."""
    lines = ["\b", "Environment:"]
    for s in config.SETTINGS:
        lines.append(f"  {s.envvar:24s} {s.help}" + (f" [default: {s.default}]" if s.default else ""))
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_settings_epilog())
@click.version_option(package_name="stellardb")
@click.option(
    "--db", "db_path", envvar=config.setting("db").envvar, default=config.setting("db").default, show_default=True,
    type=click.Path(dir_okay=False), help=f"{config.setting('db').help} (env {config.setting('db').envvar})",
)
@click.pass_context
def cli(ctx, db_path):
    """stellardb: Gaia DR3, SkyMapper, Bailer-Jones distances and spectroscopic
    labels in DuckDB, and better Teff, log g and [Fe/H] for every star."""
    ctx.ensure_object(dict)
    if db_path == ":memory:":
        raise click.BadParameter("an in-memory database would be lost when the command ends; give a file path.",
                                 param_hint="--db")
    ctx.obj["db"] = db_path
    _exit_cleanly_on_sigterm()


def _exit_cleanly_on_sigterm() -> None:
    """`kill` (SIGTERM) ends a command like Ctrl-C does: the transaction is rolled back,
    a database this command created and scratch copies are removed, then exit 143."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


#: the photometric surveys (stellardb.catalog.surveys.SURVEYS, spelled out so that --help needs no import)
_SURVEY_NAMES = ("skymapper", "tmass", "allwise", "ps1", "sdss")


@cli.command()
@click.argument("table", type=click.Choice(["gaia", *_SURVEY_NAMES, "distances", "sos"]))
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--preset", default=None, help="Column spellings of the source (default: detected). See `stellardb presets`.")
@click.option("--rename", "renames", multiple=True, metavar="OLD=NEW", help="Store file column OLD as stellardb column NEW (OLD= leaves it out); repeatable.")
@click.option("--survey", default=None, help="sos only: survey name for label files without a survey column.")
@click.option(
    "--on-duplicate", type=click.Choice(["error", "skip"]), default="error", show_default=True,
    help="A key repeated in a file or already stored: refuse the ingest, or keep the first row and report the rest.",
)
@click.option("--epoch", type=float, default=None, metavar="YEAR",
              help="sos only: Julian year of the label positions when the file has no ref_epoch column "
                   "(default: the preset's, else 2000.0; the report says which was used).")
@click.option("--hdu", default=None, metavar="N|NAME",
              help="Which table of a FITS file (extension number or EXTNAME) or VOTable (0, 1, ...) to read; needed "
                   "when a file holds several.")
@click.option("--keep", "keep", multiple=True, metavar="COL",
              help="Also store file column COL, which no stellardb column takes (e.g. SWEET-Cat's SWFlag), as a new "
                   "column of TABLE; repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary.")
@click.pass_context
@user_errors
def ingest(ctx, table, files, preset, renames, survey, on_duplicate, epoch, hdu, keep, quiet):
    """Load catalogue FILES into TABLE, in one transaction.

    TABLE is gaia (Gaia DR3 gaia_source), a photometric survey: skymapper
    (SkyMapper master), tmass (2MASS PSC), allwise (AllWISE), ps1 (Pan-STARRS1 DR2
    mean photometry), sdss (SDSS DR17 PhotoObj), or distances (Bailer-Jones 2021)
    or sos (spectroscopic labels of any survey).  `stellardb surveys` lists each
    survey's columns, epoch, missing-value convention and extinction coefficients.
    Files may be the Gaia archive's ECSV .csv.gz, CSV (gzipped or not), FITS,
    VOTable or Parquet, or HATS catalogue folders (hats-import's, a release's, Gaia
    DR3's); the format is detected from the content.  Each row gets
    its nested HEALPix order-12 index; the crossmatch tables are refreshed.  A
    file already ingested (same sha256) is skipped; any error leaves the
    database exactly as it was.

    Example:

        stellardb ingest gaia GaiaSource_000000-003111.csv.gz

        stellardb ingest distances gedr3dis.fits --preset bailer-jones-vizier

        stellardb ingest sos pastel.fits --preset pastel

        stellardb ingest sos SWEETCAT_Dataframe.csv --preset sweetcat --keep SWFlag

        stellardb ingest tmass fp_psc_query.csv

        stellardb ingest ps1 ps1_dr2_mean.csv       (MAST's -999 becomes NULL)

        stellardb ingest gaia gaia_dr3_hats/
    """
    from stellardb.ingest import pipeline as ingest_lib
    from stellardb.cli.progress import progress_bar

    with progress_bar(f"ingest {table}", total=len(files), disable=quiet) as advance:
        result = ingest_lib.run(
            ctx.obj["db"], table, list(files), preset=preset, renames=ingest_lib.parse_renames(renames),
            survey=survey, progress=advance, on_duplicate=on_duplicate, keep=keep, epoch=epoch, hdu=hdu,
        )
    if not quiet:
        from stellardb.cli.report import print_ingest_summary

        print_ingest_summary(result)


@cli.command()
@click.pass_context
@user_errors
def ingests(ctx):
    """List the ingested files: id, table, rows stored and still there, format, preset, when, path.

    `stellardb forget ID` removes one of them.

    Example:

        stellardb ingests
    """
    from stellardb.ingest import forget as forget_lib
    from stellardb.cli.report import print_ingests

    print_ingests(forget_lib.list_ingests(ctx.obj["db"]))


@cli.command()
@click.argument("target")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@user_errors
def forget(ctx, target, yes):
    """Undo an ingest: remove the rows of one ingested file and what was derived from them.

    TARGET is an ingest id (see `stellardb ingests`) or the ingested file.  In one
    transaction: the file's rows are deleted, the crossmatches are rebuilt from
    what remains, the predictions made from those rows (of its Gaia sources, or
    of stars whose SkyMapper photometry or distance it gave) are deleted, and the
    file is dropped from `ingests` (so it can be ingested again).

    Example:

        stellardb forget 3

        stellardb forget GaiaSource_000000-003111.csv.gz --yes
    """
    from stellardb.ingest import forget as forget_lib

    plan = forget_lib.plan_forget(ctx.obj["db"], target)
    i = plan.ingest
    what = f"ingest {i.ingest_id}: {plan.rows:,} rows of {i.table} from {i.file}"
    also = []
    if plan.predictions:
        also.append(f"{plan.predictions:,} predictions made from those rows")
    if plan.xmatch_pairs:
        also.append(f"{plan.xmatch_pairs:,} crossmatch pairs (the crossmatch is rebuilt)")
    if not yes:
        click.confirm(f"Forget {what}{'; also ' + ', '.join(also) if also else ''}?", abort=True, err=True)
    result = forget_lib.forget(ctx.obj["db"], str(i.ingest_id))
    click.echo(f"Forgot {what}" + (f"; deleted {', '.join(also)}" if also else "") + ".")
    if result.xmatch_pairs is not None:
        click.echo(f"The crossmatch{'es' if i.table == 'gaia' else ''} rebuilt now hold{'' if i.table == 'gaia' else 's'} "
                   f"{result.xmatch_pairs:,} pairs.")
    if i.table == "sos":
        click.echo("Models trained on these labels are unchanged until you retrain them (`stellardb train`).")


@cli.command()
@click.pass_context
@user_errors
def migrate(ctx):
    """Bring a database written by an older stellardb to this version's schema.

    Runs, in one transaction, the numbered migrations of sql/migrations/ that the file
    has not had (every command that writes does this too); nothing stored is lost.
    Read-only commands (query, library connections) refuse an older file until then.

    Example:

        stellardb --db old.duckdb migrate
    """
    from stellardb.catalog import db

    before, after, run = db.migrate(ctx.obj["db"])
    if not run and before == after:
        click.echo(f"{ctx.obj['db']} is at schema version {after}, the latest; nothing to do.")
        return
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in run) or "none needed (tables already current)"
    click.echo(f"Migrated {ctx.obj['db']} from schema version {before} to {after} (migrations run: {names}).")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be repaired.")
@click.pass_context
@user_errors
def doctor(ctx, dry_run):
    """Find and repair what an interrupted train left: a model folder the database never
    recorded (the recorded one is put back from where train parked it) and scratch folders.

    `score` refuses a model folder that differs from the one the database recorded;
    this puts the recorded one back when it is still there.

    Example:

        stellardb doctor --dry-run
    """
    from stellardb.catalog.db import connect
    from stellardb.ml.doctor import diagnose
    from stellardb.ml.model_store import models_root

    con = connect(ctx.obj["db"], read_only=True)
    try:
        findings = diagnose(con, models_root(None, ctx.obj["db"]), repair=not dry_run)
    finally:
        con.close()
    if not findings:
        click.echo(f"Nothing to repair in {models_root(None, ctx.obj['db'])}.")
    for f in findings:
        click.echo(f"{f.model}: {f.problem}: {f.action}.")


@cli.command()
@click.option("--survey", "surveys", multiple=True, type=click.Choice(list(_SURVEY_NAMES)),
              help="Crossmatch only this survey (repeatable); default every survey with rows.")
@click.option("--radius-arcsec", type=float, default=None,
              help="Match radius in arcsec of the surveys crossmatched (stored; defaults: `stellardb surveys`).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: separations of the SkyMapper pairs, and the matched fraction per r_psf.")
@cluster_options
@click.option("--gaia-catalogue", "gaia_path", type=click.Path(file_okay=False), default=None,
              help="With --engine dask and no --release: a Gaia DR3 HATS catalogue (or collection, with its margin).")
@click.option("--survey-catalogue", "survey_path", type=click.Path(file_okay=False), default=None,
              help="With --engine dask and no --release: the survey's HATS catalogue.")
@click.pass_context
@user_errors
def xmatch(ctx, surveys, radius_arcsec, plot, engine, release_name, out, scheduler, workers, memory_per_worker,
           gaia_path, survey_path):
    """Crossmatch Gaia with each photometric survey (and position-only labels with Gaia).

    For each survey source, the nearest Gaia source within the survey's radius after
    moving Gaia along its proper motion to that row's own epoch (SkyMapper's
    mean_epoch, 2MASS's jdate, ...); a Gaia source keeps only its nearest partner.
    The logic is one SQL macro for every survey, sql/30_crossmatch/xm_gaia_survey.sql;
    this materialises it as tables xmatch (SkyMapper), xmatch_tmass, xmatch_allwise,
    xmatch_ps1 and xmatch_sdss.  With --engine dask, the same SQL runs per HATS partition
    of a release on a Dask cluster, and the pairs become a HATS catalogue under --out
    (docs/cluster.md).

    Example:

        stellardb xmatch --plot xmatch.png

        stellardb xmatch --survey tmass --radius-arcsec 1.5

        stellardb xmatch --engine dask --release 2026-12a --workers 2
    """
    from stellardb.catalog import xmatch as xmatch_lib

    refuse_cluster_options_without_dask(engine, release=release_name, out=out, scheduler=scheduler, workers=workers,
                                        memory_per_worker=memory_per_worker, gaia_catalogue=gaia_path,
                                        survey_catalogue=survey_path)
    if engine == "dask":
        if plot:
            raise UserError("--plot is drawn from the database: run `stellardb xmatch --plot` without --engine dask.")
        if len(surveys) > 1:
            raise UserError("--engine dask crossmatches one survey per run: give one --survey.")
        from stellardb.cli import cluster as cluster_cli

        cluster_cli.xmatch(ctx.obj["db"], surveys[0] if surveys else "skymapper", radius_arcsec, release_name, out,
                           scheduler, workers, memory_per_worker, gaia_path=gaia_path, survey_path=survey_path)
        return

    stats = xmatch_lib.run(ctx.obj["db"], radius_arcsec, plot, surveys=list(surveys) or None)
    for name, one in stats["surveys"].items():
        click.echo(
            f"xmatch {name}: {one['pairs']:,} Gaia-{name} pairs within {one['radius_arcsec']:g} arcsec "
            f"({stats['gaia_rows']:,} Gaia, {one['rows']:,} {name}; median separation "
            f"{(one['median_sep_arcsec'] or 0):.3f} arcsec; {one['ambiguous']:,} with more than one candidate) "
            f"in {one['seconds']:.2f} s"
        )
    click.echo(f"position-only labels matched to Gaia: {stats['label_matches']:,}; total {stats['seconds']:.2f} s")
    skipped = {"Gaia": stats["gaia_skipped"], **{name: one["skipped"] for name, one in stats["surveys"].items()}}
    if any(skipped.values()):
        click.echo("left out, unusable for a crossmatch (position off the sphere, non-finite or absurd proper motion "
                   "or epoch): " + ", ".join(f"{n:,} {name} rows" for name, n in skipped.items() if n)
                   + "; `stellardb forget` their file, or fix and ingest it again.")
    if plot:
        click.echo(f"plot: {plot}")


@cli.command()
@click.argument("sql")
@click.option(
    "--format", "fmt", default="table", show_default=True,
    type=click.Choice(["table", "line", "csv", "json", "parquet", "votable", "fits", "ecsv"]),
    help="table/line: the first rows on the terminal (line: one 'column = value' per line, for wide rows); "
         "csv, json (JSON lines) and ecsv to stdout or --output; parquet, votable (BINARY2) and fits to --output. "
         "VOTable, FITS and ECSV carry each column's unit, UCD and description.",
)
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="Write to FILE instead of the terminal.")
@click.option("--max-rows", default=50, show_default=True, help="Rows shown by --format table or line.")
@click.option("--release", "release_name", default=None, metavar="NAME",
              help="Query release NAME (or `latest`, or a release folder) instead of the database; the database "
                   "file is not opened.")
@click.pass_context
@user_errors
def query(ctx, sql, fmt, output, max_rows, release_name):
    """Run SQL on the database (read-only).

    Tables: gaia, skymapper, distances, sos, xmatch, predictions, ingests, model_runs, column_metadata.

    Views: stars, features, scoring_set, training_set, why_not_scored, stars_with_predictions.

    With --release NAME: tables gaia, skymapper, distances, labels, xmatch, predictions,
    catalogue (each with _healpix_29), views stars, stars_with_predictions, features, and
    cone searches that read only the partitions they need: gaia_cone(ra_deg, dec_deg,
    radius_arcsec), catalogue_cone(...), skymapper_cone(...).  The database is not opened.

    Example:

        stellardb query "select count(*) from stars_with_predictions where feh < -1 and logg < 3"

        stellardb query "select * from stars_with_predictions where model = 'demo'" --format votable -o demo.vot

        stellardb query "select reason, count(*) from why_not_scored group by reason"

        stellardb query --release latest "select * from catalogue_cone(56.75, -24.12, 60)"
    """
    from stellardb.catalog import query as query_lib

    connect = None
    if release_name is not None:
        from stellardb.release import layout, reader

        folder = layout.resolve(layout.default_root(ctx.obj["db"]), release_name)
        connect = lambda: reader.connect(folder)  # noqa: E731
    preview = query_lib.run_query(ctx.obj["db"], sql, fmt=fmt, output=output, max_rows=max_rows, connect=connect)
    if fmt in query_lib.PREVIEW_FORMATS and preview is not None:
        from stellardb.cli.tables import print_lines, print_table

        (print_table if fmt == "table" else print_lines)(preview, max_rows)


@cli.command()
def presets():
    """List the column-spelling presets that `stellardb ingest --preset` knows.

    Example:

        stellardb presets
    """
    from stellardb.ingest.presets import PRESETS

    for p in PRESETS.values():
        click.echo(f"{p.name:22s} {p.table:10s} {p.description}")


@cli.command()
def surveys():
    """List the photometric surveys stellardb knows: key, position and epoch, bands, missing values,
    A_band / E(B-V) with its source, crossmatch radius setting.

    Example:

        stellardb surveys
    """
    from stellardb.catalog.surveys import SURVEYS

    for s in SURVEYS.values():
        epoch = (f"{s.epoch_column} ({s.epoch_unit.upper()})" if s.epoch_column else "none") + (
            f", else J{s.epoch_default_yr}" if s.epoch_default_yr else "")
        click.echo(f"{s.name} - {s.title}; footprint: {s.footprint}")
        click.echo(f"  key {s.key}; position {s.position[0]}, {s.position[1]} (deg, ICRS) at epoch {epoch}")
        click.echo("  bands: " + ", ".join(f"{b.mag} +- {b.err} ({b.system}, A/E(B-V) {b.r_ebv:g})" for b in s.bands))
        click.echo(f"  extinction: {s.extinction_source}")
        click.echo(f"  missing values: {s.missing}")
        click.echo(f"  crossmatch: table {s.xmatch_table}, radius {s.radius_arcsec:g} arcsec (settings row "
                   f"{s.radius_setting}); a model uses it with at least {s.min_bands} of its {len(s.bands)} bands")


@cli.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--stars", default=200_000, show_default=True, type=int, help="Number of Gaia sources to simulate.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed; the same seed gives identical files.")
@click.option(
    "--format", "fmt", default="csv", show_default=True, type=click.Choice(["csv", "parquet"]),
    help="Format of the SkyMapper, distance and label files (Gaia is always the archive's csv.gz).",
)
@click.option("--overwrite", is_flag=True, help="Replace the files of an existing, non-empty OUTDIR.")
@click.option("--truth", is_flag=True, help="Also write truth.parquet (true parameters, for validation only).")
@click.option("--sky", default="south", show_default=True, type=click.Choice(["south", "all"]),
              help="Stars south of dec +2 deg (SkyMapper's sky), or the whole sky (Pan-STARRS1 and SDSS reach the north).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@user_errors
def simulate(outdir, stars, seed, fmt, overwrite, truth, sky, quiet):
    """Write a simulated sky to OUTDIR in the surveys' own formats.

    The files describe the same simulated stars: gaia_source.csv.gz (Gaia
    archive bulk ECSV, DR3 columns), skymapper_master.csv (SkyMapper master
    columns, positions at each row's mean_epoch), tmass_psc.csv (2MASS PSC, IRSA
    columns, positions at jdate, upper limits as 2MASS writes them),
    allwise_source.csv (AllWISE), ps1_dr2_mean.csv (Pan-STARRS1 DR2 mean
    photometry, -999 for missing), sdss_dr17_photoobj.csv (SDSS PhotoObj,
    -9999 for missing), bailer_jones_distances.csv and sos_spectro.csv
    (reference labels for about 5 per cent of the stars).  The model is
    documented in the stellardb.simulate modules.

    Example:

        stellardb simulate data/sky --stars 200000 --seed 42

        stellardb simulate data/allsky --stars 500000 --sky all
    """
    from stellardb import simulate as sim
    from stellardb.cli.progress import progress_bar

    sim.check_arguments(outdir, stars, seed, fmt, overwrite, sky)
    with progress_bar("simulating stars", total=stars, disable=quiet) as advance:
        summary = sim.simulate(outdir, stars=stars, seed=seed, fmt=fmt, overwrite=overwrite, truth=truth,
                               progress=advance, sky=sky)
    if not quiet:
        from stellardb.cli.report import print_simulation_summary

        print_simulation_summary(summary)


def _db_path() -> str:
    """The group's --db value; else $STELLARDB_DB; else ./stellardb.duckdb."""
    ctx = click.get_current_context()
    obj = ctx.find_object(dict)
    if obj and obj.get("db"):
        return str(obj["db"])
    from stellardb.catalog.db import default_path

    return default_path()


@cli.command()
@click.option("--epochs", default=120, show_default=True, type=int, help="Maximum epochs per network; early stopping on the validation split usually ends sooner.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed for weights, dropout and shuffling (the split depends only on source_id).")
@click.option("--model", "model", default=None, help="Model folder under the models directory ($STELLARDB_MODELS, else models/ beside the database); replaced when training succeeds.  [default: default]")
@click.option("--name", "name", default=None, hidden=True, help="Old spelling of --model.")
@click.option("--quick", is_flag=True, help="At most 40 epochs, a shorter patience, one dropout rate (not two) and no Teff ensemble trial: for demos and smoke tests.")
@click.option("--feature-set", "feature_set_names", multiple=True, metavar="SET",
              help="Train this feature set (gaia, gaia-skymapper, gaia-tmass-allwise, ...; repeatable).  Default: "
                   "every standard set that has enough labelled stars (setting min_labels_per_feature_set).")
@click.option("--min-labels", type=int, default=None, metavar="N",
              help="Labelled stars a feature set needs for a model (at least 100).  [default: the database's setting "
                   "min_labels_per_feature_set, 200]")
@click.option("--cv", "cv_folds", type=int, default=None, metavar="K",
              help="Also K-fold cross-validate each feature set (3-10 folds; for small real label sets): pooled "
                   "out-of-fold statistics, ML and GSP-Phot on the same stars, and plots/cv.png per model.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or metrics table.")
@user_errors
def train(epochs, seed, model, name, quick, feature_set_names, min_labels, cv_folds, no_plots, quiet):
    """Train a model per feature set: Gaia alone, and Gaia with each photometric survey.

    A feature set is Gaia's G, BP, RP, GSP-Phot and the Bailer-Jones distance, plus
    zero or more surveys' bands (the seed's gaia-skymapper keeps its 27 inputs).
    Each set with enough labelled stars gets one MLP per parameter (log g: a small
    deep ensemble; Teff: two networks where they beat one on the validation split
    by 2 per cent), named MODEL.SET: stars are split 80/10/10 (train/validation/
    test) by a hash of source_id (table training_split); each writes models/MODEL.SET/
    beside the database ({teff,logg,feh}.keras; scorer.npz, the networks as arrays
    that `score` reads without Keras; card.json with features, scaling, split rule,
    seed, data fingerprint, library versions and metrics; plots/) and its test-split
    numbers, ML and GSP-Phot minus reference on the same stars, into model_metrics.
    MODEL.family.json records the members and which one predicts each star: for
    each combination of available inputs, the member most accurate on the
    validation stars that have them.  Earlier predictions of MODEL are deleted
    (they came from the replaced networks); score again.

    Example:

        stellardb --db sky.duckdb train --quick --model demo

        stellardb --db real.duckdb train --model real --feature-set gaia --cv 5
    """
    from stellardb.errors import require_ml

    if model is not None and name is not None and model != name:
        raise click.UsageError(f"--model {model} and --name {name} name different models; give one (--name is the old "
                               "spelling of --model).")
    model = model if model is not None else name if name is not None else "default"
    require_ml("stellardb train")
    from stellardb.ml import train as train_lib

    train_lib.import_keras_quietly()

    from stellardb.cli.progress import staged_progress

    with staged_progress("training", disable=quiet) as progress:  # one bar per network, as each starts
        def on_member(feature_set, k, total):
            if not quiet:
                click.echo(f"feature set {k + 1}/{total}: {feature_set}")

        summary = train_lib.run_family(_db_path(), model=model, feature_set_names=list(feature_set_names) or None,
                                       epochs=epochs, seed=seed, quick=quick, progress=progress, plots=not no_plots,
                                       on_member=on_member, cv_folds=cv_folds, min_labels=min_labels)
    for member in summary.members:
        for finding in member.repairs:  # said even with --quiet: folders changed
            click.echo(f"repaired first: {finding.problem}: {finding.action}.")
    if not quiet:
        from rich.console import Console

        from stellardb.cli.tables import family_table

        # the table needs ~110 columns; a narrow or piped terminal would truncate it
        import shutil

        console = Console(width=max(150, shutil.get_terminal_size((150, 24)).columns))
        console.print(family_table(summary.card, summary.members))
        for info in summary.card["members"]:
            if "cv" in info:
                from stellardb.cli.tables import comparison_table

                cv = info["cv"]
                if cv["parameters"]["teff"]["gspphot"]["n"]:
                    console.print(comparison_table(
                        cv["parameters"], title=f"{info['feature_set']}: {cv['folds']}-fold cross-validation, "
                                                f"out-of-fold predicted - reference, ML and GSP-Phot on the stars "
                                                "GSP-Phot has"))
                console.print(f"{info['feature_set']}, {cv['folds']}-fold cross-validation, ML on all {cv['stars']:,} "
                              "stars (out of fold): " + ", ".join(
                    f"{p} MAD {cv['parameters'][p]['mlp_all']['mad']:.3g} RMSE {cv['parameters'][p]['mlp_all']['rmse']:.3g}"
                    for p in ("teff", "logg", "feh")) + (f"; plot {cv['plot']}" if cv.get("plot") else ""))
        for feature_set, why in summary.skipped.items():
            console.print(f"not trained: {feature_set}: {why}")
        console.print(f"Saved {len(summary.members)} models ({', '.join(m.model for m in summary.members)}) and "
                      f"{summary.path} in {summary.seconds:.0f} s.")
    if summary.predictions_deleted:
        # said even with --quiet: rows of the predictions table are gone
        click.echo(
            f"Deleted {summary.predictions_deleted:,} earlier predictions of model {summary.model} (made by the networks just "
            f"replaced); run `stellardb score --model {summary.model}` to predict with the new ones."
        )


@cli.command()
@click.option("--model", "model", default="default", show_default=True, help="Model folder under the models directory ($STELLARDB_MODELS, else models/ beside the database).")
@click.option("--batch-rows", default=131_072, show_default=True, type=int, help="Rows per batch read from DuckDB (bounds memory).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: a Kiel diagram (Teff vs log g coloured by [Fe/H]) of the scored stars next to "
                   "GSP-Phot's for the same stars.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@cluster_options
@click.option("--xmatch", "xmatch_dir", type=click.Path(file_okay=False), default=None,
              help="With --engine dask: a crossmatch made by `stellardb xmatch --engine dask` (its folder) to use "
                   "instead of the release's.")
@user_errors
def score(model, batch_rows, plot, quiet, engine, release_name, out, scheduler, workers, memory_per_worker, xmatch_dir):
    """Predict Teff, log g and [Fe/H] with errors for every star whose inputs a model has.

    MODEL is a family (`stellardb train --model MODEL`): every star with Gaia BP, RP
    and a distance gets the prediction of the member chosen for the inputs it has,
    and predictions.feature_set says which; stars without a prediction are counted
    by reason.  (A single model, e.g. MODEL.gaia, scores the stars with its inputs.)
    Every star is scored, labelled or not.  The
    model's rows of the predictions table are replaced in one transaction, so an
    interrupted run leaves the previous predictions intact.  Each row flags
    extrapolation: teff/logg/feh_outside_training (prediction outside the
    training labels' range) and inputs_outside_training (how many inputs lie
    outside the training range).

    With --engine dask, the same scorer runs per HATS partition of a release on a Dask
    cluster, and the predictions become a HATS catalogue under --out (docs/cluster.md).

    Example:

        stellardb --db sky.duckdb score --model demo

        stellardb --db sky.duckdb score --model demo --plot kiel.png

        stellardb score --engine dask --release 2026-12a --model demo --workers 2
    """
    refuse_cluster_options_without_dask(engine, release=release_name, out=out, scheduler=scheduler, workers=workers,
                                        memory_per_worker=memory_per_worker, xmatch=xmatch_dir)
    if engine == "dask":
        if plot is not None:
            raise UserError("--plot is drawn from the database: run `stellardb score --plot` without --engine dask.")
        from stellardb.cli import cluster as cluster_cli

        cluster_cli.score(_db_path(), model, release_name, out, xmatch_dir, scheduler, workers, memory_per_worker, quiet)
        return
    if plot is not None:
        from pathlib import Path

        from stellardb.errors import require_ml
        from stellardb.catalog.export import check_plot_path

        check_plot_path(Path(plot))  # a non-.png or unwritable path is refused before scoring
        require_ml("score --plot", modules=("matplotlib",))
    from stellardb.ml import score as score_lib

    from stellardb.cli.progress import staged_progress

    # the bar appears at the first batch: a model or database refused before leaves no empty bar
    from stellardb.ml.model_store import check_model_name, models_root
    from stellardb.ml.selection import family_path

    family = family_path(models_root(None, _db_path()), check_model_name(model)).is_file()
    with staged_progress(f"scoring with {model}", disable=quiet) as progress:
        if family:
            summary = score_lib.run_family(_db_path(), model=model, batch_rows=batch_rows, progress=progress)
        else:
            summary = score_lib.run(_db_path(), model=model, batch_rows=batch_rows, progress=progress)
    if not quiet:
        rate = summary.rows / summary.seconds if summary.seconds > 0 else float("inf")
        click.echo(f"Scored {summary.rows:,} stars with model {summary.model} in {summary.seconds:.1f} s ({rate:,.0f} stars/s).")
        if family:
            click.echo("By feature set (predictions.feature_set): "
                       + ", ".join(f"{name} {n:,}" for name, n in summary.by_feature_set.items()) + ".")
            if summary.not_scored:
                click.echo("Not scored: " + "; ".join(f"{n:,} {why}" for why, n in summary.not_scored.items()) + ".")
        out = summary.outside_training
        if out is None:
            click.echo("No extrapolation flags: this model's card.json has no training_ranges (retrain it to get them).")
        else:
            click.echo(
                "Outside the training labels' range (flagged in *_outside_training): "
                + ", ".join(f"{p} {out[p]:,}" for p in ("teff", "logg", "feh"))
                + f"; stars with an input outside the training range (inputs_outside_training > 0): {out['inputs']:,}."
            )
    if plot is not None:
        from stellardb.catalog.db import connect
        from stellardb.ml.score_plots import write_score_plots

        con = connect(_db_path())  # read-only; score.run has closed its connection
        try:
            drawn = write_score_plots(con, summary.model, plot)
        finally:
            con.close()
        click.echo(f"plot: {plot} (Kiel diagram of {drawn['n_scored']:,} scored stars, ML and GSP-Phot)")


@cli.command()
@click.argument("name")
@click.option("--model", "model", default=None,
              help="The model whose predictions the release carries.  [default: the one scored last]")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of releases.  [default: releases/ beside the database]")
@click.option("--max-rows-per-partition", "max_rows", default=1_000_000, show_default=True, type=int,
              help="At most this many rows per partition of gaia and skymapper (dense sky gets smaller HEALPix "
                   "pixels); the tables keyed by Gaia source follow gaia's partitions.")
@click.option("--margin-arcsec", default=10.0, show_default=True, type=float,
              help="Width of the margin caches of gaia and catalogue (rows just outside each partition).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@click.option("--from-release", "from_release", default=None,
              help="Make the release from release BASE with a cluster run's --xmatch and/or --predictions in place "
                   "of its own (docs/cluster.md); the catalogue is rebuilt from them on Dask.")
@click.option("--xmatch", "xmatch_dir", type=click.Path(file_okay=False), default=None,
              help="With --from-release: the folder `stellardb xmatch --engine dask` wrote (its xmatch collection).")
@click.option("--predictions", "predictions_dir", type=click.Path(file_okay=False), default=None,
              help="With --from-release: the folder `stellardb score --engine dask` wrote (its predictions collection).")
@click.option("--scheduler", default=None, help="With --from-release: a Dask scheduler's address; default: a local cluster.")
@click.option("--workers", type=int, default=None, help="With --from-release and no --scheduler: local workers.")
@click.option("--memory-per-worker", default=None, help="With --from-release: each worker's memory budget (e.g. 2GB).")
@click.pass_context
@user_errors
def release(ctx, name, model, out, max_rows, margin_arcsec, quiet, from_release, xmatch_dir, predictions_dir, scheduler,
            workers, memory_per_worker):
    """Publish the database as release NAME: immutable HATS catalogues (HEALPix-partitioned
    Parquet) that DuckDB, hats and lsdb read.

    Catalogues: gaia, skymapper, distances, labels, xmatch, predictions (one model) and
    catalogue (one row per star with everything, the table to start from).  Tables keyed by
    Gaia source_id are partitioned exactly like gaia.  The release appears complete or not
    at all, `latest` then points to it, and an existing release is never replaced.
    lsdb opens its catalogues: lsdb.open_catalog("releases/2026-12a/catalogue").
    With --from-release BASE, the release is BASE with a Dask run's crossmatch and
    predictions (`xmatch`/`score --engine dask`) in place of its own (docs/cluster.md).

    Example:

        stellardb release 2026-12a --model demo

        stellardb release 2026-12b --out /data/releases --max-rows-per-partition 500000

        stellardb release 2026-12c --from-release 2026-12a --xmatch cluster/2026-12a --predictions cluster/2026-12a
    """
    from stellardb.cli.progress import staged_progress
    from stellardb.release.writer import write_release

    if from_release is None and any(v is not None for v in (xmatch_dir, predictions_dir, scheduler, workers,
                                                             memory_per_worker)):
        raise UserError("--xmatch, --predictions, --scheduler, --workers and --memory-per-worker need --from-release "
                        "BASE; add it, or leave them out.")
    if from_release is not None:
        from stellardb.cli import cluster as cluster_cli

        if max_rows != 1_000_000 or margin_arcsec != 10.0:
            raise UserError("--from-release keeps the base release's partitions and margins: leave out "
                            "--max-rows-per-partition and --margin-arcsec.")

        cluster_cli.release(ctx.obj["db"], name, from_release, out, model, xmatch_dir, predictions_dir, scheduler,
                            workers, memory_per_worker, quiet)
        return
    with staged_progress(f"release {name}", disable=quiet) as progress:
        result = write_release(ctx.obj["db"], name, model=model, out=out, max_rows=max_rows,
                               margin_arcsec=margin_arcsec, progress=progress)
    if not quiet:
        from stellardb.cli.report import print_release_summary

        print_release_summary(result)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of releases.  [default: releases/ beside the database]")
@click.pass_context
@user_errors
def releases(ctx, out):
    """List the releases: name, when, stars, model, size; * marks `latest`.

    Example:

        stellardb releases
    """
    from pathlib import Path

    from stellardb.cli.report import print_releases
    from stellardb.release import layout

    root = Path(out) if out else layout.default_root(ctx.obj["db"])
    layout.sweep_partials(root)  # what a killed `release` left (its process is gone)
    found = layout.list_releases(root)
    if not found:
        raise click.ClickException(f"No releases in {root}; make one with `stellardb release NAME`.")
    print_releases(found)


@cli.command()
@click.option("--release", "release_name", default=None, metavar="NAME",
              help="Release to serve: a name, `latest` (follows each new release without a restart) or a folder.  "
                   f"[env {config.setting('serve_release').envvar}; default: latest]")
@click.option("--releases", "releases_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of releases.  [default: releases/ beside the database]")
@click.option("--host", default=None, help=f"Address to listen on.  [env {config.setting('serve_host').envvar}; "
                                           "default: 127.0.0.1, this machine only]")
@click.option("--port", default=None, type=int, help=f"TCP port.  [env {config.setting('serve_port').envvar}; "
                                                     "default: 8000]")
@click.option("--workers", default=None, type=int,
              help=f"Processes answering requests, each with its own DuckDB on the release (one per core for more "
                   f"queries a second).  [env {config.setting('serve_workers').envvar}; default: 1]")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
@click.pass_context
@user_errors
def serve(ctx, release_name, releases_dir, host, port, workers, access_log):
    """Serve a release to VO clients: IVOA TAP (ADQL) at /tap, Simple Cone Search at /scs,
    and a page at /.

    TOPCAT: File > Load Table > TAP, paste the TAP URL.  pyvo: pyvo.dal.TAPService(url).
    Queries run on the release (never the database file), each with a time limit, a row
    limit and a memory limit; see the serve settings below `stellardb --help`.
    With `latest`, a new release is picked up within a second; running queries finish on
    the old one.

    Example:

        stellardb serve

        stellardb serve --release 2026-12a --host 0.0.0.0 --port 8080
    """
    from pathlib import Path

    from stellardb.service.server import run_server

    root = Path(releases_dir) if releases_dir else None
    run_server(ctx.obj["db"], release_name, root, host, port, access_log, workers, echo=click.echo)


def main():  # pragma: no cover - entry point for python -m stellardb
    cli(prog_name="stellardb")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
