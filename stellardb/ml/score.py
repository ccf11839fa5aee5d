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
        feature_set = card.get("feature_set", "gaia-skymapper")
        source = "scoring_set"
        if feature_set != "gaia-skymapper":
            # a member of a family scored on its own: the stars with its inputs
            from stellardb.ml.feature_sets import parse

            source = f"all_features where {parse(feature_set).where}"
            db_features = features if all(f.lower() in {d[0].lower() for d in con.execute(
                "select * from all_features limit 0").description} for f in features) else []
        else:
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
        total = con.execute(f"select count(*) from {source}").fetchone()[0]
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
                stream = reader.sql(f"select source_id, {columns} from {source}").to_arrow_reader(batch_rows)
                for batch in stream:
                    flagged += _write_batch(writer, batch, features, scorer, model, scored_at, flags, feature_set)
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


def predict_batch(batch, features, scorer, flags=None) -> tuple[dict, np.ndarray]:
    """Predictions of one Arrow batch as Arrow arrays (source_id, each parameter and its error,
    the outside-training flags) and the flag counts (see ``run``); shared by ``score`` and the
    cluster scorer (stellardb.cluster.score), so both give the same numbers."""
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
    return arrays, counts


def _write_batch(writer, batch, features, scorer, model, scored_at, flags=None, feature_set=None) -> np.ndarray:
    """Score one Arrow batch and insert it; returns the flag counts (see ``run``)."""
    import pyarrow as pa

    arrays, counts = predict_batch(batch, features, scorer, flags)
    table = pa.table(arrays)
    writer.register("_stellardb_scored", table)
    try:
        writer.execute(
            "insert into predictions (source_id, teff, teff_err, logg, logg_err, feh, feh_err, model, scored_at, "
            "teff_outside_training, logg_outside_training, feh_outside_training, inputs_outside_training, feature_set) "
            "select source_id, teff, teff_err, logg, logg_err, feh, feh_err, $model, $scored_at, "
            "teff_outside_training, logg_outside_training, feh_outside_training, inputs_outside_training, $feature_set "
            "from _stellardb_scored",
            {"model": model, "scored_at": scored_at, "feature_set": feature_set},
        )
    finally:
        writer.unregister("_stellardb_scored")
    return counts


# ---------------------------------------------------------------- a family: the best model per star


@dataclass
class FamilyScoreSummary:
    model: str
    rows: int
    seconds: float
    scored_at: dt.datetime
    by_feature_set: dict  # feature set -> stars it predicted
    not_scored: dict  # reason -> stars that got no prediction
    outside_training: dict | None = None


#: why a Gaia source gets no prediction from any member (all_features), first match wins
NOT_SCORED_REASONS = (
    ("phot_bp_mean_mag is null or phot_rp_mean_mag is null", "no Gaia BP or RP magnitude"),
    ("phot_g_mean_mag is null", "no Gaia G magnitude"),
    ("r_med_geo is null", "no Bailer-Jones distance (r_med_geo): `stellardb ingest distances FILE`"),
)


def load_family(model: str, models_dir=None, db=None) -> tuple:
    """Family ``model``'s models folder, its card and ``{feature set: (card, folded networks)}`` of
    its members, each checked to be the member the family card names (not retrained on its own)."""
    from stellardb.ml import selection

    root = models_root(models_dir, db)
    family = selection.read_family(root, model)
    if family is None:
        raise UserError(f'Unknown model family "{model}"; train it with `stellardb train --model {model}`.')
    members = family["members"]
    loaded = {}
    for m in members:
        card, folded = load_scorer(m["model"], models_dir, db)
        import hashlib

        sha = hashlib.sha256((root / m["model"] / "card.json").read_bytes()).hexdigest()
        if card.get("feature_set") != m["feature_set"] or card.get("family") != model or \
                (m.get("card_sha256") and m["card_sha256"] != sha):
            raise UserError(f'{root / m["model"]} is not the {m["feature_set"]} member of family "{model}" (it was '
                            f"retrained on its own); retrain the family with `stellardb train --model {model}`.")
        loaded[m["feature_set"]] = (card, folded)
    return root, family, loaded


def run_family(db, model: str, models_dir=None, batch_rows: int = BATCH_ROWS, progress=None) -> FamilyScoreSummary:
    """Predict every star that has the inputs of some member of family ``model``, each with the
    member chosen for its inputs (:mod:`stellardb.ml.selection`); predictions.model is the family's
    name and predictions.feature_set the member's set.  One transaction, as :func:`run`."""
    import pyarrow as pa  # noqa: F401  (the writer's)

    from stellardb.ml import selection

    if batch_rows < 1:
        raise UserError(f"batch_rows must be positive, got {batch_rows}.")
    root, family, loaded = load_family(model, models_dir, db)
    members = family["members"]
    chosen = selection.chosen_sql(members, family["choices"])
    con = catalog_db.connect(db, read_only=False)
    try:
        for m in members:
            check_recorded(con, m["model"], root / m["model"])
        counts = dict(con.execute(f"select {chosen} as fs, count(*) from all_features group by fs").fetchall())
        total = sum(v for k, v in counts.items() if k is not None)
        reasons = " ".join(f"when {cond} then '{why}'" for cond, why in NOT_SCORED_REASONS)
        not_scored = dict(con.execute(
            f"select case {reasons} else 'no trained feature set fits its inputs (sets: "
            f"{', '.join(m['feature_set'] for m in members)})' end as why, count(*) "
            f"from all_features where ({chosen}) is null group by why order by count(*) desc").fetchall())
        if total == 0:
            raise UserError("No star has the inputs of any model of family "
                            f'"{model}" ({"; ".join(f"{n:,} {why}" for why, n in not_scored.items()) or "no Gaia rows"}); '
                            "ingest what is missing and run `stellardb xmatch`.")
        scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        from stellardb.ml.versions import library_versions

        versions = library_versions()
        t0 = time.perf_counter()
        reader, writer = con.cursor(), con.cursor()
        done = 0
        flagged = np.zeros(len(PARAMETERS) + 1, np.int64)
        try:
            with catalog_db.transaction(writer, lambda: f"scoring with model family {model} ({done:,} stars)"):
                writer.execute("delete from predictions where model = $model", {"model": model})
                # one pass over all_features: each batch is split by the chosen member
                scorers = {m["feature_set"]: (list(loaded[m["feature_set"]][0]["features"]),
                                              NumpyScorer(loaded[m["feature_set"]][1]),
                                              RangeFlags.from_card(loaded[m["feature_set"]][0])) for m in members}
                union = sorted({f for features, _, _ in scorers.values() for f in features}, key=str.lower)
                columns = ", ".join(catalog_db.quote_identifier(f) for f in union)
                stream = reader.sql(f"select * from (select source_id, {columns}, {chosen} as _feature_set "
                                    "from all_features) where _feature_set is not null").to_arrow_reader(batch_rows)
                by_set = {m["feature_set"]: 0 for m in members}
                import pyarrow.compute as pc

                for batch in stream:
                    chosen_of = batch.column("_feature_set")
                    for name, (features, scorer, flags) in scorers.items():
                        part = batch.filter(pc.equal(chosen_of, name))
                        if part.num_rows == 0:
                            continue
                        flagged += _write_batch(writer, part, features, scorer, model, scored_at, flags, name)
                        by_set[name] += part.num_rows
                    done += batch.num_rows
                    if progress is not None:
                        progress(done, total)
                for m in members:
                    record_run(writer, "score", m["model"], scored_at, by_set[m["feature_set"]], root / m["model"],
                               loaded[m["feature_set"]][0], versions)
        finally:
            reader.close()
        seconds = time.perf_counter() - t0
        writer.close()
    finally:
        con.close()
    outside = {p: int(flagged[i]) for i, p in enumerate(PARAMETERS)} | {"inputs": int(flagged[-1])}
    return FamilyScoreSummary(model=model, rows=done, seconds=seconds, scored_at=scored_at, by_feature_set=by_set,
                              not_scored=not_scored, outside_training=outside)
