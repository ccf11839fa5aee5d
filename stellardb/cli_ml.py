"""``stellardb train`` and ``stellardb score``: thin click wrappers over train.run and score.run.

Register them on the main group with ``cli.add_command(train)`` and
``cli.add_command(score)``; they read the database path from the group's
``--db`` option (``ctx.obj["db"]``).  TensorFlow is imported only when a
command runs, so ``stellardb --help`` stays fast.
"""

from __future__ import annotations

import os

import click

from .errors import user_errors





def _db_path() -> str:
    """The group's --db value; else $STELLARDB_DB; else ./stellardb.duckdb."""
    ctx = click.get_current_context()
    obj = ctx.find_object(dict)
    if obj and obj.get("db"):
        return str(obj["db"])
    from .db import default_path

    return default_path()


def _quiet_tensorflow():
    """Load Keras/TensorFlow with stderr silenced at the file-descriptor level.

    TensorFlow's C++ start-up lines (absl's "log messages before InitializeLog",
    oneDNN notes, CUDA probing on CPU-only machines) bypass TF_CPP_MIN_LOG_LEVEL
    and would bury our progress bars and one-line errors.  Set
    STELLARDB_TF_VERBOSE=1 to see them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("STELLARDB_TF_VERBOSE"):
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401  (imports the backend)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # the device probe prints at first use
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@click.command()
@click.option("--epochs", default=120, show_default=True, type=int, help="Maximum epochs per network; early stopping on the validation split usually ends sooner.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed for weights, dropout and shuffling (the split depends only on source_id).")
@click.option("--name", default="default", show_default=True, help="Model folder under the models directory ($STELLARDB_MODELS, else models/ beside the database); replaced when training succeeds.")
@click.option("--quick", is_flag=True, help="At most 40 epochs and a shorter patience: for demos and smoke tests.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or metrics table.")
@user_errors
def train(epochs, seed, name, quick, no_plots, quiet):
    """Train one MLP per parameter (log g: a small deep ensemble) on the training_set view.

    Stars are split 80/10/10 (train/validation/test) by a hash of source_id,
    stored in the training_split table.  Writes models/NAME/ beside the database
    ({teff,logg,feh}.keras; scorer.npz, the networks as arrays that `score` reads
    without Keras; card.json with features, scaling, split rule, seed, data
    fingerprint, library versions and metrics; plots/), prints ML and GSP-Phot minus reference on the test
    split, and stores those numbers in the model_metrics table.  Earlier rows
    of the predictions table for model NAME are deleted in the same
    transaction (they came from the replaced networks); score again.

    Example:

        stellardb --db sky.duckdb train --quick --name demo
    """
    from .errors import require_ml

    require_ml("stellardb train")
    _quiet_tensorflow()
    from . import train as train_lib

    summary = train_lib.run(_db_path(), name=name, epochs=epochs, seed=seed, quick=quick, progress=not quiet, plots=not no_plots)
    for finding in summary.repairs:  # said even with --quiet: folders changed
        click.echo(f"repaired first: {finding.problem}: {finding.action}.")
    if not quiet:
        from rich.console import Console

        from .metrics import comparison_table

        # the seed-style table needs ~100 columns; a narrow or piped terminal would truncate it
        import shutil

        console = Console(width=max(104, shutil.get_terminal_size((104, 24)).columns))
        console.print(comparison_table(summary.metrics, title=f"Model {summary.name}: test split, predicted - reference (same stars)"))
        console.print(f"Saved {summary.folder} in {summary.seconds:.0f} s.")
    if summary.predictions_deleted:
        # said even with --quiet: rows of the predictions table are gone
        click.echo(
            f"Deleted {summary.predictions_deleted:,} earlier predictions of model {summary.name} (made by the networks just "
            f"replaced); run `stellardb score --model {summary.name}` to predict with the new ones."
        )


@click.command()
@click.option("--model", "model", default="default", show_default=True, help="Model folder under the models directory ($STELLARDB_MODELS, else models/ beside the database).")
@click.option("--batch-rows", default=131_072, show_default=True, type=int, help="Rows per batch read from DuckDB (bounds memory).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: a Kiel diagram (Teff vs log g coloured by [Fe/H]) of the scored stars next to "
                   "GSP-Phot's for the same stars.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@user_errors
def score(model, batch_rows, plot, quiet):
    """Predict Teff, log g and [Fe/H] with errors for every star in scoring_set.

    Every star that passes the feature cuts is scored, labelled or not.  The
    model's rows of the predictions table are replaced in one transaction, so an
    interrupted run leaves the previous predictions intact.  Each row flags
    extrapolation: teff/logg/feh_outside_training (prediction outside the
    training labels' range) and inputs_outside_training (how many inputs lie
    outside the training range).

    Example:

        stellardb --db sky.duckdb score --model demo

        stellardb --db sky.duckdb score --model demo --plot kiel.png
    """
    if plot is not None:
        from pathlib import Path

        from .errors import require_ml
        from .query import _check_plot_path

        _check_plot_path(Path(plot))  # a non-.png or unwritable path is refused before scoring
        require_ml("score --plot", modules=("matplotlib",))
    from . import score as score_lib

    summary = score_lib.run(_db_path(), model=model, batch_rows=batch_rows, progress=not quiet)
    if not quiet:
        rate = summary.rows / summary.seconds if summary.seconds > 0 else float("inf")
        click.echo(f"Scored {summary.rows:,} stars with model {summary.model} in {summary.seconds:.1f} s ({rate:,.0f} stars/s).")
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
        from .db import connect
        from .score_plots import write_score_plots

        con = connect(_db_path())  # read-only; score.run has closed its connection
        try:
            drawn = write_score_plots(con, summary.model, plot)
        finally:
            con.close()
        click.echo(f"plot: {plot} (Kiel diagram of {drawn['n_scored']:,} scored stars, ML and GSP-Phot)")
