"""The ``stellardb`` command line: a thin layer over the library.

Each command parses its options and calls one library function; errors a user
can fix are :class:`stellardb.errors.UserError` and are printed as one line.
TensorFlow is never imported here, so ``stellardb --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

from .errors import user_errors

# TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines, oneDNN notes)
# would bury the progress bars; users can still ask for it by setting the variable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")




@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stellardb")
@click.option(
    "--db", "db_path", envvar="STELLARDB_DB", default="stellardb.duckdb", show_default=True,
    type=click.Path(dir_okay=False), help="The stellardb DuckDB file (env STELLARDB_DB).",
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


@cli.command()
@click.argument("table", type=click.Choice(["gaia", "skymapper", "distances", "sos"]))
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
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

    TABLE is gaia (Gaia DR3 gaia_source), skymapper (SkyMapper master),
    distances (Bailer-Jones 2021) or sos (spectroscopic labels of any survey).
    Files may be the Gaia archive's ECSV .csv.gz, CSV (gzipped or not), FITS,
    VOTable or Parquet; the format is detected from the content.  Each row gets
    its nested HEALPix order-12 index; the crossmatch tables are refreshed.  A
    file already ingested (same sha256) is skipped; any error leaves the
    database exactly as it was.

    Example:

        stellardb ingest gaia GaiaSource_000000-003111.csv.gz

        stellardb ingest distances gedr3dis.fits --preset bailer-jones-vizier

        stellardb ingest sos pastel.fits --preset pastel

        stellardb ingest sos SWEETCAT_Dataframe.csv --preset sweetcat --keep SWFlag
    """
    from . import ingest as ingest_lib
    from .progress import progress_bar

    with progress_bar(f"ingest {table}", total=len(files), disable=quiet) as advance:
        result = ingest_lib.run(
            ctx.obj["db"], table, list(files), preset=preset, renames=ingest_lib.parse_renames(renames),
            survey=survey, progress=advance, on_duplicate=on_duplicate, keep=keep, epoch=epoch, hdu=hdu,
        )
    if not quiet:
        from .report import print_ingest_summary

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
    from . import forget as forget_lib
    from .report import print_ingests

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
    from . import forget as forget_lib

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
        click.echo(f"xmatch now holds {result.xmatch_pairs:,} Gaia-SkyMapper pairs.")
    if i.table == "sos":
        click.echo("Models trained on these labels are unchanged until you retrain them (`stellardb train`).")


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
    from .db import connect
    from .doctor import diagnose
    from .score import models_root

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
@click.option("--radius-arcsec", type=float, default=None, help="Match radius in arcsec (stored; default 1.0).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: separations of the pairs, and the matched fraction per SkyMapper r_psf.")
@click.pass_context
@user_errors
def xmatch(ctx, radius_arcsec, plot):
    """Crossmatch Gaia with SkyMapper (and position-only labels with Gaia).

    For each SkyMapper source, the nearest Gaia source within the radius after
    moving Gaia along its proper motion to that row's mean_epoch; a Gaia source
    keeps only its nearest SkyMapper partner.  The logic is the SQL view
    sql/crossmatch/xm_gaia_skymapper.sql; this materialises it as table xmatch.

    Example:

        stellardb xmatch --radius-arcsec 1.0 --plot xmatch.png
    """
    from . import query as query_lib

    stats = query_lib.run_xmatch(ctx.obj["db"], radius_arcsec, plot)
    click.echo(
        f"xmatch: {stats['pairs']:,} Gaia-SkyMapper pairs within {stats['radius_arcsec']:g} arcsec "
        f"({stats['gaia_rows']:,} Gaia, {stats['skymapper_rows']:,} SkyMapper; median separation "
        f"{(stats['median_sep_arcsec'] or 0):.3f} arcsec; {stats['ambiguous']:,} with more than one candidate; "
        f"{stats['label_matches']:,} position-only labels matched) in {stats['seconds']:.2f} s"
    )
    skipped = {"Gaia": stats["gaia_skipped"], "SkyMapper": stats["skymapper_skipped"]}
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
@click.pass_context
@user_errors
def query(ctx, sql, fmt, output, max_rows):
    """Run SQL on the database (read-only).

    Tables: gaia, skymapper, distances, sos, xmatch, predictions, ingests, model_runs, column_metadata.

    Views: stars, features, scoring_set, training_set, why_not_scored, stars_with_predictions.

    Example:

        stellardb query "select count(*) from stars_with_predictions where feh < -1 and logg < 3"

        stellardb query "select * from stars_with_predictions where model = 'demo'" --format votable -o demo.vot

        stellardb query "select reason, count(*) from why_not_scored group by reason"
    """
    from . import query as query_lib

    query_lib.run_query(ctx.obj["db"], sql, fmt=fmt, output=output, max_rows=max_rows)


@cli.command()
def presets():
    """List the column-spelling presets that `stellardb ingest --preset` knows.

    Example:

        stellardb presets
    """
    from .presets import PRESETS

    for p in PRESETS.values():
        click.echo(f"{p.name:22s} {p.table:10s} {p.description}")


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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@user_errors
def simulate(outdir, stars, seed, fmt, overwrite, truth, quiet):
    """Write a simulated southern sky to OUTDIR in the surveys' own formats.

    Four files describe the same simulated stars: gaia_source.csv.gz (Gaia
    archive bulk ECSV, DR3 columns), skymapper_master.csv (SkyMapper master
    columns, positions at each row's mean_epoch), bailer_jones_distances.csv and
    sos_spectro.csv (reference labels for about 5 per cent of the stars).  The
    model is documented in the stellardb.simulate modules.

    Example:

        stellardb simulate data/sky --stars 200000 --seed 42
    """
    from . import simulate as sim
    from .progress import progress_bar

    sim.check_arguments(outdir, stars, seed, fmt, overwrite)
    with progress_bar("simulating stars", total=stars, disable=quiet) as advance:
        summary = sim.simulate(outdir, stars=stars, seed=seed, fmt=fmt, overwrite=overwrite, truth=truth, progress=advance)
    if not quiet:
        from .report import print_simulation_summary

        print_simulation_summary(summary)


def _add_ml_commands():
    """train and score live in cli_ml (they import TensorFlow only when they run)."""
    from .cli_ml import score, train

    cli.add_command(train)
    cli.add_command(score)


_add_ml_commands()


def main():  # pragma: no cover - entry point for python -m stellardb
    cli(prog_name="stellardb")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
