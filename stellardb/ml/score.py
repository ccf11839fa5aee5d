"""``stellardb score``: predictions for every star that passes the feature cuts.

Scoring does not run Keras: the model's ``scorer.npz`` is evaluated by
:class:`stellardb.ml.scorer.NumpyScorer`, with extrapolation flags from
:class:`stellardb.ml.scorer.RangeFlags`.

Rows stream from the ``scoring_set`` view in Arrow record batches, so memory is
bounded by the batch size, and are written to ``predictions`` inside one
transaction: an interrupted run leaves the previous predictions of the model
intact, and a finished one replaces them all at once.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np

from stellardb.catalog import db as catalog_db
from stellardb.errors import UserError
from stellardb.ml.doctor import check_recorded
from stellardb.ml.features import PARAMETERS, database_features
from stellardb.ml.model_store import load_scorer, models_root, record_run
from stellardb.ml.scorer import NumpyScorer, RangeFlags

# Rows per Arrow batch read from DuckDB (memory: about 27 x 8 bytes per row).
BATCH_ROWS = 131_072


@dataclass
class ScoreSummary:
    model: str
    rows: int
    seconds: float
    scored_at: dt.datetime
    # stars whose prediction lies outside the training labels' range, per parameter, and
    # stars with at least one input outside the training range ("inputs"); None without ranges
    outside_training: dict | None = None


def run(db, model: str = "default", models_dir=None, batch_rows: int = BATCH_ROWS, progress=None) -> ScoreSummary:
    """Predict Teff, log g and [Fe/H] for every row of ``scoring_set`` and store them.

    Parameters
    ----------
    db : path
        The stellardb database file (opened for writing).
    model : str
        Folder name under the models directory.
    models_dir : path or None
        Models directory; default $STELLARDB_MODELS, else models/ beside the database file.
    batch_rows : int
        Rows per Arrow batch (bounds memory).
    progress : callable, optional
        ``progress(done, total)`` after each batch (stars scored so far, of all).

    Returns
    -------
    ScoreSummary

    Raises
    ------
    UserError
        Unknown or corrupt model, or a model whose features do not match the
        database.  Nothing is written in that case.
    """
    if batch_rows < 1:
        raise UserError(f"batch_rows must be positive, got {batch_rows}.")
    card, folded = load_scorer(model, models_dir, db)
    features = list(card["features"])
    con = catalog_db.connect(db, read_only=False)
    try:
        check_recorded(con, model, models_root(models_dir, db) / model)
        db_features = database_features(con)
        if set(db_features) != set(features):
            missing = sorted(set(features) - set(db_features))
            extra = sorted(set(db_features) - set(features))
            raise UserError(
                f'Model "{model}" was trained on features that do not match the database '
                f"(missing in the database: {', '.join(missing) or 'none'}; not in the model: {', '.join(extra) or 'none'}); "
                f"retrain it with `stellardb train --model {model}`."
            )
        scorer = NumpyScorer(folded)
        try:
            flags = RangeFlags.from_card(card)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{models_root(models_dir, db) / model / 'card.json'} has unreadable training_ranges ({exc.__class__.__name__}); "
                            f"retrain with `stellardb train --model {model}`.") from None
        total = con.execute("select count(*) from scoring_set").fetchone()[0]
        if total == 0:
            raise UserError(f"No star passes the feature cuts, so there is nothing to score ("
                            f"{catalog_db.why_not_scored_summary(con)}); `stellardb query \"select * from why_not_scored\"` "
                            "gives the reason per star.")
        scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        from stellardb.ml.versions import library_versions

        versions = library_versions()  # for model_runs; read before the timed loop (0.1 s, metadata scan)
        columns = ", ".join(catalog_db.quote_identifier(f) for f in features)
        t0 = time.perf_counter()
        reader = con.cursor()
        writer = con.cursor()
        done = 0
        flagged = np.zeros(len(PARAMETERS) + 1, np.int64)  # per parameter outside the label range, then any input outside
        try:
            # Ctrl-C included, the previous predictions stay as they were unless the commit happened
            with catalog_db.transaction(writer, lambda: f"scoring with model {model} ({done:,} stars)"):
                writer.execute("delete from predictions where model = $model", {"model": model})
                stream = reader.sql(f"select source_id, {columns} from scoring_set").to_arrow_reader(batch_rows)
                for batch in stream:
                    flagged += _write_batch(writer, batch, features, scorer, model, scored_at, flags)
                    done += batch.num_rows
                    if progress is not None:
                        progress(done, total)
                record_run(writer, "score", model, scored_at, done, models_root(models_dir, db) / model, card, versions)
        finally:
            reader.close()
        seconds = time.perf_counter() - t0
        writer.close()
    finally:
        con.close()
    outside = None if flags is None else {p: int(flagged[i]) for i, p in enumerate(PARAMETERS)} | {"inputs": int(flagged[-1])}
    return ScoreSummary(model=model, rows=done, seconds=seconds, scored_at=scored_at, outside_training=outside)


def batch_to_matrix(batch, features) -> np.ndarray:
    """Arrow batch -> float32 matrix (n, len(features)); NULL becomes NaN."""
    from stellardb.catalog.arrow import to_float64

    x = np.empty((batch.num_rows, len(features)), np.float32)
    for j, name in enumerate(features):
        x[:, j] = to_float64(batch.column(name))
    return x


def _write_batch(writer, batch, features, scorer, model, scored_at, flags=None) -> np.ndarray:
    """Score one Arrow batch and insert it; returns the flag counts (see ``run``)."""
    import pyarrow as pa

    from stellardb.catalog.arrow import to_arrow

    x = batch_to_matrix(batch, features)
    pred = scorer.predict(x)
    n = batch.num_rows
    counts = np.zeros(len(PARAMETERS) + 1, np.int64)
    arrays = {"source_id": batch.column("source_id")}
    for i, p in enumerate(PARAMETERS):
        value, error = pred[p]
        arrays[p] = to_arrow(value.astype(np.float64))
        arrays[f"{p}_err"] = to_arrow(error.astype(np.float64))
        if flags is None:
            arrays[f"{p}_outside_training"] = pa.nulls(n, pa.bool_())
        else:
            outside = flags.outside_label_range(p, value)
            counts[i] = int(outside.sum())
            arrays[f"{p}_outside_training"] = to_arrow(outside)
    if flags is None:
        arrays["inputs_outside_training"] = pa.nulls(n, pa.int16())
    else:
        inputs_outside = flags.inputs_outside(x)
        counts[-1] = int(np.count_nonzero(inputs_outside))
        arrays["inputs_outside_training"] = to_arrow(inputs_outside)
    table = pa.table(arrays)
    writer.register("_stellardb_scored", table)
    try:
        writer.execute(
            "insert into predictions (source_id, teff, teff_err, logg, logg_err, feh, feh_err, model, scored_at, "
            "teff_outside_training, logg_outside_training, feh_outside_training, inputs_outside_training) "
            "select source_id, teff, teff_err, logg, logg_err, feh, feh_err, $model, $scored_at, "
            "teff_outside_training, logg_outside_training, feh_outside_training, inputs_outside_training from _stellardb_scored",
            {"model": model, "scored_at": scored_at},
        )
    finally:
        writer.unregister("_stellardb_scored")
    return counts
