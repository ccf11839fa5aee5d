"""``stellardb train``: one MLP (or small deep ensemble) per stellar parameter, trained on the ``training_set`` view.

The pipeline, in order:

1. Check the database: the ``features`` view must carry exactly
   :data:`stellardb.ml.features.FEATURES`; ``training_set`` must hold enough labelled
   stars.  Nothing is written before these checks pass.
2. Split the labelled stars 80/10/10 by a hash of ``source_id``
   (:func:`split_bucket`), so a star keeps its split across runs and database
   rebuilds.  The split is stored in the ``training_split`` table.
3. Standardise the inputs (log10 of long-tailed columns, plus colours) with the
   training-split mean and standard deviation (missing values become 0 after
   standardising, plus an is-missing flag) and train each network with a cosine
   learning-rate decay and early stopping on the validation split (watched from
   half the maximum epochs, except with ``--quick``), once per dropout rate of
   :func:`dropouts_for`, keeping the network with the smaller validation MAD.  A
   parameter with several :data:`ENSEMBLE_MEMBERS` trains them together in one
   model whose output is their mean and mixture sigma; Teff also tries two
   (:data:`ENSEMBLE_TRIAL_MEMBERS`), kept only where validation says they pay
   (:func:`fit_with_trials`).  The ranges of the
   training labels and inputs go into ``card.json`` for ``score``'s
   extrapolation flags.
4. Calibrate the per-star error on the validation split, then report on the test
   split: ML minus reference and, on the same stars, GSP-Phot minus reference.
5. Write ``models/NAME/{teff,logg,feh}.keras``, ``card.json`` and ``plots/``
   into a temporary folder that replaces ``models/NAME`` only when complete,
   and the metrics into the ``model_metrics`` table, in the transaction that
   deletes the earlier ``predictions`` rows of that model name (they came from
   the networks being replaced).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stellardb.catalog import db as catalog_db
from stellardb.config import get as get_setting
from stellardb.config import quiet_tensorflow_logs
from stellardb.errors import InterruptedAfterCommit, UserError
from stellardb.ml.doctor import diagnose
from stellardb.ml.metrics import calibration_factor, residual_stats
from stellardb.ml.features import (FEATURES, GSPPHOT, PARAMETERS, UNITS, check_features, colour_names, colour_pairs_for,
                                   input_names, log_mask_for, prepare_inputs)
from stellardb.ml import feature_sets
from stellardb.ml.feature_sets import SEED
from stellardb.ml.model_store import check_model_name, fold_model, models_root, record_run, save_atomically
from stellardb.ml.scorer import NumpyScorer

# Before Keras pulls in TensorFlow: its C++ start-up chatter would bury the
# one-line messages users need.
quiet_tensorflow_logs()

# ---------------------------------------------------------------- the split rule

SPLIT_RULE = (
    "bucket = splitmix64(source_id as uint64) % 100 "
    "(splitmix64: z += 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; "
    "z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^= z >> 31; all mod 2^64); "
    "bucket 0-79 train, 80-89 validation, 90-99 test"
)
SPLITS = ("train", "validation", "test")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Fewer labelled stars than this per parameter cannot fill three splits usefully.
MIN_LABELLED_STARS = 100
MIN_SPLIT_STARS = 5


# Hyper-parameters chosen on a simulated 1 M-star sky; the experiments are in docs/decisions.md.
HIDDEN_UNITS = (64, 64)
DROPOUT = 0.02
# Full training trains each network once per dropout rate and keeps the one with the
# smaller validation MAD.  0.02 suits the large training sets (tens of thousands of stars
# for a few inputs); 0.1 suited Gaia + 2MASS + AllWISE + PS1 (39 inputs, 18k stars), where
# 0.02 over-fitted Teff, and made the large sets worse (docs/decisions.md).  --quick, and
# training sets of DROPOUT_TRIAL_MAX_TRAIN stars or more, train only the first: there the
# first is what validation chose for every set, and a second trial would double a training
# that the sample budget already makes long.
DROPOUT_CANDIDATES = (DROPOUT, 0.1)
DROPOUT_TRIAL_MAX_TRAIN = 200_000
LEARNING_RATE = 3e-3
HUBER_DELTA = 1.0  # standardised units (smaller deltas gave larger MADs: docs/decisions.md)
PATIENCE_EPOCHS = 25
# Full training watches the validation loss for early stopping only from this fraction of
# the maximum epochs: at the high learning rates of the schedule's first half the loss is
# noisy, and runs stopped there (best epoch 18-59 of 120 on the 1 M-star sky) kept a lucky
# early epoch and never trained at a small learning rate (docs/decisions.md).
WATCH_FROM_FRACTION = 0.5
QUICK_PATIENCE_EPOCHS = 10
QUICK_MAX_EPOCHS = 40
# Samples each network may see (epochs x training rows): on large training sets this,
# not --epochs, limits the epochs, so 600k labelled stars train in minutes.
SAMPLE_BUDGET = 24_000_000
# Networks per parameter: a deep ensemble (stellardb.ml.mlp.build_mlp, members=) of
# networks trained together from different initial weights; their mean is the
# prediction and their mixture sigma the error.  Three for log g, whose single network
# varied more between seeds than its lead over LightGBM; one elsewhere, since each
# network costs the scorer about a sixth of its speed (docs/decisions.md).
ENSEMBLE_MEMBERS = {"teff": 1, "logg": 3, "feh": 1}
# After the dropout choice, full training also tries Teff as a two-network ensemble (at the
# rate chosen) and keeps it only where it lowers the validation MAD by ENSEMBLE_MIN_GAIN or
# more: on Gaia + 2MASS + AllWISE + PS1 (50 inputs, 14k training stars) a single Teff
# network varied between seeds by more than its lead over LightGBM, and two cut the
# validation MAD by 5 per cent; on sets where a second network buys little it would only
# cost the scorer (docs/decisions.md).  Same thresholds as the dropout trials: not with
# --quick, not for DROPOUT_TRIAL_MAX_TRAIN training stars or more, and not for a parameter
# whose members the caller set.
ENSEMBLE_TRIAL_MEMBERS = {"teff": 2}
ENSEMBLE_MIN_GAIN = 0.02


def epochs_for(n_train: int, epochs: int) -> int:
    """Maximum epochs: ``epochs``, capped by :data:`SAMPLE_BUDGET` (but at least 10)."""
    return int(min(epochs, max(10, SAMPLE_BUDGET // max(n_train, 1))))


def split_bucket(source_id) -> np.ndarray:
    """``splitmix64(source_id) % 100`` for an array of Gaia source_ids (int64).

    splitmix64 (Steele, Lea & Flood 2014) mixes every bit of the id, so
    neighbouring source_ids (neighbouring HEALPix pixels) land in unrelated
    buckets.
    """
    z = np.asarray(source_id, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(100)).astype(np.int16)


def assign_split(source_id) -> np.ndarray:
    """Split name per star: ``"train"``, ``"validation"`` or ``"test"`` (see :data:`SPLIT_RULE`)."""
    bucket = split_bucket(source_id)
    return np.where(bucket < 80, "train", np.where(bucket < 90, "validation", "test"))


TRAINING_QUERY = "select source_id, {features}, teff, e_teff, logg, e_logg, feh, e_feh from training_set order by source_id"
# every feature set but the seed's: its stars are those of labelled_features that pass its cuts
SET_QUERY = ("select source_id, {features}, teff, e_teff, logg, e_logg, feh, e_feh from labelled_features "
             "where {where} order by source_id")
# validation MAD of each parameter in these units, averaged, ranks feature sets (stellardb.ml.selection)
SELECTION_UNITS = {"teff": 100.0, "logg": 0.1, "feh": 0.1}

@dataclass
class LabelledData:
    source_id: np.ndarray
    x: np.ndarray  # (n, n_features) float32, NaN where missing
    labels: dict  # parameter -> float64 array, NaN where missing
    split: np.ndarray  # "train" | "validation" | "test"
    fingerprint: str = ""


def training_query(features, feature_set: str = SEED) -> str:
    """The SQL that reads the labelled stars of ``feature_set`` with ``features``."""
    columns = ", ".join(catalog_db.quote_identifier(f) for f in features)
    if feature_set == SEED:
        return TRAINING_QUERY.format(features=columns)
    return SET_QUERY.format(features=columns, where=feature_sets.parse(feature_set).where)


def load_training_set(con, features, feature_set: str = SEED) -> LabelledData:
    """Read the labelled stars of ``feature_set`` (the seed's: ``training_set``) into memory, split them,
    and fingerprint them (sha256 of ids, inputs and labels)."""

    sql = training_query(features, feature_set)
    try:
        table = con.sql(sql).to_arrow_table()
    except Exception as exc:
        raise UserError(f"Cannot read the training_set view ({str(exc).splitlines()[0]}); run `stellardb ingest` with reference labels first.") from None
    source_id = table.column("source_id").to_numpy(zero_copy_only=False).astype(np.int64)
    x = np.empty((table.num_rows, len(features)), np.float32)
    for j, name in enumerate(features):
        x[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    labels = {p: table.column(p).to_numpy(zero_copy_only=False).astype(np.float64) for p in PARAMETERS}
    digest = hashlib.sha256()
    digest.update(source_id.tobytes())
    digest.update(np.ascontiguousarray(x).tobytes())
    for p in PARAMETERS:
        digest.update(labels[p].tobytes())
    return LabelledData(source_id, x, labels, assign_split(source_id), digest.hexdigest())


def why_no_training_stars(con) -> str:
    """What is missing when ``training_set`` is empty, naming the input and the command that supplies it."""

    n_scored = con.execute("select count(*) from scoring_set").fetchone()[0]
    if n_scored == 0:
        return f"no star passes the feature cuts ({catalog_db.why_not_scored_summary(con)})"
    n_labels = catalog_db.row_count(con, "sos")
    if n_labels == 0:
        return (f"{n_scored:,} stars pass the feature cuts but no reference labels are stored; "
                "ingest some (e.g. `stellardb ingest sos sos_spectro.csv`)")
    n_matched = con.execute("select count(*) from best_labels").fetchone()[0]
    if n_matched == 0:
        return (f"none of the {n_labels:,} stored label rows belongs to an ingested Gaia source (by source_id, or by "
                "position for labels without one); check that the labels and the Gaia files cover the same sky")
    return (f"{n_matched:,} Gaia sources have a reference label but none of them passes the feature cuts "
            "(`stellardb query \"select reason, count(*) from why_not_scored join best_labels using (source_id) "
            "group by reason\"` says why)")


def check_enough_labels(data: LabelledData) -> None:
    """Raise UserError when a parameter has too few labelled stars in any split."""

    if data.source_id.size == 0:
        raise UserError(
            "training_set is empty: no star that passes the feature cuts has a reference label. "
            "Ingest labels (e.g. `stellardb ingest sos sos_spectro.csv`) and crossmatch first."
        )
    for p in PARAMETERS:
        ok = np.isfinite(data.labels[p])
        counts = {s: int(np.sum(ok & (data.split == s))) for s in SPLITS}
        if ok.sum() < MIN_LABELLED_STARS or min(counts.values()) < MIN_SPLIT_STARS:
            raise UserError(
                f"Too few stars with a {p} label to train: {int(ok.sum())} "
                f"(train/validation/test {counts['train']}/{counts['validation']}/{counts['test']}); "
                f"at least {MIN_LABELLED_STARS}, and {MIN_SPLIT_STARS} per split, are needed. Ingest more reference labels."
            )


def check_set_features(con, features) -> None:
    """Raise UserError unless view ``all_features`` has every column of ``features``."""
    try:
        have = {d[0].lower() for d in con.execute("select * from all_features limit 0").description}
    except Exception as exc:  # duckdb.CatalogException and friends
        raise UserError(f"The database has no usable all_features view ({str(exc).splitlines()[0]}); open it for "
                        "writing once with this version (`stellardb migrate`).") from None
    missing = [f for f in features if f.lower() not in have]
    if missing:
        raise UserError(f"The all_features view lacks {', '.join(missing)}; rebuild the views with this version of "
                        "stellardb (`stellardb migrate`).")


def why_no_set_stars(con, fs) -> str:
    """Which of a feature set's inputs the labelled stars lack, and the command that adds it."""
    counts = con.execute(
        "select count(*), " + ", ".join(f"count_if({c})" for c in fs.passes_columns) + " from labelled_features"
    ).fetchone()
    if counts[0] == 0:
        return "no star with a reference label has a Gaia row (ingest labels with `stellardb ingest sos FILE`)"
    parts = []
    for column, n in zip(fs.passes_columns, counts[1:]):
        if column == "passes_gaia_cuts":
            if n < counts[0]:
                parts.append(f"{counts[0] - n:,} lack Gaia BP/RP or a Bailer-Jones distance "
                             "(`stellardb ingest distances FILE`)")
        elif n == 0:
            survey = column.removeprefix("passes_").removesuffix("_cuts")
            parts.append(f"none has {survey} photometry (`stellardb ingest {survey} FILE`, then `stellardb xmatch`)")
    return f"of {counts[0]:,} labelled stars, " + ("; ".join(parts) or "none passes every cut")


def validation_scores(data: "LabelledData", predictions: dict) -> dict:
    """Validation-split accuracy, what feature sets are ranked by: per parameter the MAD of ML minus
    reference, and ``score`` = the mean over parameters of MAD / :data:`SELECTION_UNITS`."""
    val = data.split == "validation"
    mad = {}
    for p in PARAMETERS:
        ok = val & np.isfinite(data.labels[p]) & np.isfinite(predictions[p][0])
        r = predictions[p][0][ok] - data.labels[p][ok]
        mad[p] = float(np.median(np.abs(r - np.median(r)))) if r.size else None
        mad[p + "_n"] = int(r.size)
    known = [mad[p] / SELECTION_UNITS[p] for p in PARAMETERS if mad[p] is not None]
    return {"validation_mad": mad, "units": SELECTION_UNITS,
            "score": float(np.mean(known)) if len(known) == len(PARAMETERS) else None}


def feature_scaling(x_train: np.ndarray):
    """Mean and standard deviation of each input over its finite training values (1 where constant or empty)."""
    x = np.where(np.isfinite(x_train), x_train, np.nan).astype(np.float64)
    with warnings.catch_warnings():
        # An input with no finite training value (all-NaN column) is allowed; it gets 0 and 1.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        scale = np.nanstd(x, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return mean, scale


def finite_range(values) -> list | None:
    """``[min, max]`` of the finite values (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return [float(v.min()), float(v.max())] if v.size else None


def training_ranges(data: "LabelledData", prepared_train: np.ndarray, input_names) -> dict:
    """The training split's label range per parameter and range of every network input.

    ``score`` flags predictions outside the label range and counts the inputs
    outside the input range (``stellardb.ml.scorer.RangeFlags``).  ``prepared_train``
    holds the network inputs of the training rows (log10 columns, then colours),
    named by ``input_names``.
    """

    train_rows = data.split == "train"
    return {
        "rule": "min and max over the finite values of the training split; inputs in the units the network sees "
                "(log10 for log_features, colours appended)",
        "labels": {p: finite_range(data.labels[p][train_rows]) for p in PARAMETERS},
        "inputs": {name: finite_range(prepared_train[:, j]) for j, name in enumerate(input_names)},
    }


# ---------------------------------------------------------------- training


@dataclass
class TrainSummary:
    model: str
    folder: Path
    card: dict
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    predictions_deleted: int = 0  # earlier `predictions` rows of this model name, deleted with the new metrics
    repairs: list = field(default_factory=list)  # stellardb.ml.doctor findings repaired before training


def batch_size_for(n_train: int) -> int:
    """Mini-batch size: about 200 steps per epoch, a power of two in [64, 2048]."""
    return int(np.clip(2 ** np.round(np.log2(max(n_train, 1) / 200)), 64, 2048))


def watch_from_epoch(max_epochs: int, quick: bool) -> int:
    """The first epoch early stopping watches (0: all; ``--quick`` watches every epoch)."""
    return 0 if quick else int(max_epochs * WATCH_FROM_FRACTION)


def dropouts_for(quick: bool, dropouts=None, n_train: int = 0) -> tuple:
    """The dropout rates each network is trained with: ``dropouts`` where given, else
    :data:`DROPOUT_CANDIDATES` (the first alone with ``--quick`` or ``n_train`` training stars
    of :data:`DROPOUT_TRIAL_MAX_TRAIN` or more)."""
    if dropouts is None:
        dropouts = DROPOUT_CANDIDATES[:1] if quick or n_train >= DROPOUT_TRIAL_MAX_TRAIN else DROPOUT_CANDIDATES
    dropouts = tuple(float(d) for d in dropouts)
    if not dropouts or not all(0.0 <= d < 1.0 for d in dropouts):
        raise UserError(f"dropout rates must be at least 0 and below 1, got {dropouts!r}.")
    return dropouts


def ensemble_trial_for(parameter: str, quick: bool, members_given=(), n_train: int = 0):
    """The ensemble size full training also tries for ``parameter`` (:data:`ENSEMBLE_TRIAL_MEMBERS`),
    or None: with ``quick``, at :data:`DROPOUT_TRIAL_MAX_TRAIN` training stars or more, or when the
    caller set this parameter's members (``members_given``)."""
    if quick or parameter in members_given or n_train >= DROPOUT_TRIAL_MAX_TRAIN:
        return None
    return ENSEMBLE_TRIAL_MEMBERS.get(parameter)


def fit_with_trials(parameter, x, y, split, feature_mean, feature_scale, seed, epochs, patience,
                    hidden_units=HIDDEN_UNITS, progress=None, log_mask=None, colour_pairs=None, members=1,
                    watch_from=0, dropouts=(DROPOUT,), trial_members=None):
    """Train one network per dropout rate (same seed and data) and keep the one with the smallest
    validation MAD (ties to the earlier rate); with ``trial_members``, then train that many
    networks together at the rate kept and keep them instead only if their validation MAD is at
    least :data:`ENSEMBLE_MIN_GAIN` smaller.  Returns (model, info); info lists every trial
    (``dropout_trials``, and ``member_trials`` when an ensemble was tried).

    ``progress(done, total, label)`` is called after each epoch of each trial (label:
    ``"dropout 0.1"``, ``"2 networks, dropout 0.1"``)."""
    model, info = _fit_choosing_dropout(parameter, x, y, split, feature_mean, feature_scale, seed, epochs, patience,
                                        hidden_units, progress, log_mask, colour_pairs, members, watch_from, dropouts)
    if trial_members is None or trial_members <= members or info["validation_mad"] is None:
        return model, info
    d = info["dropout"]
    label = f"{trial_members} networks, dropout {d:g}"
    step = None if progress is None else (lambda done, total: progress(done, total, label))
    ensemble, ensemble_info = fit_parameter(parameter, x, y, split, feature_mean, feature_scale, seed, epochs, patience,
                                            hidden_units, step, log_mask, colour_pairs, trial_members, watch_from,
                                            dropout=d)
    mad = ensemble_info["validation_mad"]
    trials = [{"members": int(members), "validation_mad": info["validation_mad"]},
              {"members": int(trial_members), "validation_mad": mad if np.isfinite(mad) else None,
               "best_epoch": ensemble_info["best_epoch"], "epochs_run": ensemble_info["epochs_run"]}]
    # NaN compares False: a diverged ensemble is never kept
    if mad <= (1.0 - ENSEMBLE_MIN_GAIN) * info["validation_mad"]:
        ensemble_info["dropout_trials"] = info["dropout_trials"]
        model, info = ensemble, ensemble_info
    info["member_trials"] = trials
    return model, info


def _fit_choosing_dropout(parameter, x, y, split, feature_mean, feature_scale, seed, epochs, patience,
                          hidden_units=HIDDEN_UNITS, progress=None, log_mask=None, colour_pairs=None, members=1,
                          watch_from=0, dropouts=(DROPOUT,)):
    """The dropout trials of :func:`fit_with_trials`."""
    best = None
    trials = []
    for d in dropouts:
        step = None if progress is None else (lambda done, total, d=d: progress(done, total, f"dropout {d:g}"))
        model, info = fit_parameter(parameter, x, y, split, feature_mean, feature_scale, seed, epochs, patience,
                                    hidden_units, step, log_mask, colour_pairs, members, watch_from, dropout=d)
        mad = info["validation_mad"]
        # a diverged network (NaN MAD) loses to any finite one
        trials.append({"dropout": d, "validation_mad": mad if np.isfinite(mad) else None,
                       "best_epoch": info["best_epoch"], "epochs_run": info["epochs_run"]})
        mad = mad if np.isfinite(mad) else np.inf
        if best is None or mad < best[2]:
            best = (model, info, mad)
    model, info, _ = best
    if not np.isfinite(info["validation_mad"]):
        info["validation_mad"] = None  # card.json is JSON: no NaN
    info["dropout_trials"] = trials
    return model, info


def fit_parameter(parameter, x, y, split, feature_mean, feature_scale, seed, epochs, patience, hidden_units=HIDDEN_UNITS,
                  progress=None, log_mask=None, colour_pairs=None, members=1, watch_from=0, dropout=DROPOUT):
    """Train the network (or deep ensemble) for one parameter; return (inference model, history dict).

    Parameters
    ----------
    parameter : str
        ``teff``, ``logg`` or ``feh`` (the model's name).
    x : ndarray (n, n_features)
        Raw inputs of the labelled stars; ``y`` their labels (finite).
    split : ndarray of str
        Split of each row.
    seed : int
        Seeds Keras, NumPy and the backend (weights, dropout, shuffling).
    epochs, patience : int
        Maximum epochs and early-stopping patience (on the validation Huber loss).
    watch_from : int
        Epochs before early stopping watches the loss (and may keep an epoch's weights).
    dropout : float
        Dropout rate after each hidden layer.
    progress : callable(done, total) or None
        Called after each epoch.
    log_mask : sequence of bool or None
        Inputs that enter as log10 (``feature_mean``/``feature_scale`` are of the log).
    colour_pairs : sequence of (int, int) or None
        Input differences appended as extra inputs (``feature_mean`` covers them).
    members : int
        Networks in the deep ensemble, trained together (one model, the sum of
        their losses, each with its own initial weights and dropout); early
        stopping watches the Huber loss of their mean prediction.
    """
    import keras

    from stellardb.ml.mlp import build_mlp, heteroscedastic_loss, training_head, value_loss

    keras.utils.set_random_seed(seed)
    tr, va = split == "train", split == "validation"
    y_mean, y_scale = float(np.mean(y[tr])), float(np.std(y[tr]) or 1.0)
    model = build_mlp(
        x.shape[1], hidden_units, dropout, feature_mean, feature_scale, y_mean, y_scale, name=parameter, log_mask=log_mask,
        colour_pairs=colour_pairs, members=members,
    )
    head = training_head(model)
    batch_size = batch_size_for(int(tr.sum()))
    steps_per_epoch = int(np.ceil(tr.sum() / batch_size))
    # Cosine decay to 2 per cent over the maximum epochs: every run ends at a small
    # learning rate, so seeds agree (docs/decisions.md).
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=epochs * steps_per_epoch, alpha=0.02)
    head.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=heteroscedastic_loss(HUBER_DELTA),
        metrics=[value_loss(HUBER_DELTA)],
    )

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if progress is not None:
                progress(epoch + 1, epochs)

    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_huber", mode="min", patience=patience, restore_best_weights=True,
                                      start_from_epoch=watch_from),
        _Progress(),
    ]
    z = ((y - y_mean) / y_scale).astype(np.float32)
    history = head.fit(
        x[tr], z[tr],
        validation_data=(x[va], z[va]),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    if progress is not None:
        progress(epochs, epochs)
    val = model.predict(x[va], batch_size=8192, verbose=0)
    factor = calibration_factor(val[:, 0], y[va], val[:, 1])
    # Rebuild with the calibration factor in the config, so the saved file carries it.
    calibrated = build_mlp(
        x.shape[1], hidden_units, dropout, feature_mean, feature_scale, y_mean, y_scale, name=parameter, log_mask=log_mask,
        colour_pairs=colour_pairs, members=members,
    )
    calibrated.get_layer("target_scaling").error_factor = factor
    calibrated.set_weights(model.get_weights())
    val_huber = history.history["val_huber"]
    val_r = val[:, 0].astype(np.float64) - y[va]
    info = {
        "dropout": float(dropout),
        # MAD (median |r - median r|) of prediction minus label on the validation rows
        "validation_mad": float(np.median(np.abs(val_r - np.median(val_r)))),
        "target_mean": y_mean,
        "target_scale": y_scale,
        "error_factor": factor,
        "members": int(members),
        "batch_size": batch_size,
        "epochs_run": len(val_huber),
        # the epoch whose weights were kept: the best of those early stopping watched
        "best_epoch": watch_from + int(np.argmin(val_huber[watch_from:])) + 1,
        "best_val_huber": float(np.min(val_huber[watch_from:])),
        "n_train": int(tr.sum()),
        "n_validation": int(va.sum()),
        "n_test": int((split == "test").sum()),
    }
    return calibrated, info


def evaluate(data: LabelledData, predictions: dict, features) -> dict:
    """Test-split statistics: ML on all test stars, and ML vs GSP-Phot on the test stars that have both."""

    test = data.split == "test"
    out = {}
    for p in PARAMETERS:
        value, error = predictions[p]
        ref = data.labels[p]
        gsp = data.x[:, list(features).index(GSPPHOT[p])].astype(np.float64)
        gsp_err = data.x[:, list(features).index(GSPPHOT[p] + "_err")].astype(np.float64)
        labelled = test & np.isfinite(ref)
        both = labelled & np.isfinite(gsp)
        out[p] = {
            "mlp": residual_stats(value[both], ref[both], error[both]),
            "gspphot": residual_stats(gsp[both], ref[both], gsp_err[both]),
            "mlp_all_test": residual_stats(value[labelled], ref[labelled], error[labelled]),
        }
    return out


def library_versions() -> dict:
    """Versions of the libraries that train (card.json ``versions``), Keras's backend included."""
    import keras

    from stellardb.ml.versions import library_versions as versions

    return versions(ml=True) | {"keras_backend": keras.backend.backend()}


def import_keras_quietly() -> None:
    """Load Keras/TensorFlow with stderr silenced at the file-descriptor level.

    TensorFlow's C++ start-up lines (absl's "log messages before InitializeLog",
    oneDNN notes, CUDA probing on CPU-only machines) bypass TF_CPP_MIN_LOG_LEVEL
    and would bury progress bars and one-line errors.  Set
    STELLARDB_TF_VERBOSE=1 to see them.
    """
    quiet_tensorflow_logs()
    if get_setting("tf_verbose"):
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
            # training one model per feature set retraces predict functions; TensorFlow's warning
            # about it is advice to its own users, not to ours
            tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run(
    db,
    model: str = "default",
    epochs: int = 120,
    seed: int = 42,
    quick: bool = False,
    models_dir=None,
    progress=None,
    plots: bool = True,
    hidden_units=HIDDEN_UNITS,
    members=None,
    feature_set: str = SEED,
    family: str | None = None,
    dropouts=None,
) -> TrainSummary:
    """Train, evaluate and save the three models; see the module docstring.

    Parameters
    ----------
    db : path
        DuckDB database with the stellardb views.
    model : str
        Model folder name under the models directory (letters, digits, ``._-``),
        checked by :func:`stellardb.ml.model_store.check_model_name` as ``score`` does.
        An existing folder of that name is replaced once the new one is complete.
    epochs : int
        Maximum epochs per network (early stopping usually ends sooner).
    seed : int
        Random seed (weights, dropout, shuffling); the split does not depend on it.
    quick : bool
        At most 40 epochs and a shorter patience (for demos and tests).
    models_dir : path or None
        Default $STELLARDB_MODELS, else models/ beside the database file.
    progress : callable, optional
        ``progress(done, total, stage=...)`` after each epoch; ``stage`` names the
        network being trained (``"training teff (epochs)"``).
    plots : bool
        Write the PNG plots.
    hidden_units : sequence of int
        Hidden layer widths.
    members : dict or None
        Networks per parameter (deep-ensemble members); default :data:`ENSEMBLE_MEMBERS`,
        with Teff's ensemble trial (:func:`ensemble_trial_for`); a parameter named here
        gets exactly that many networks and no trial.
    feature_set : str
        The inputs (:mod:`stellardb.ml.feature_sets`): the seed's ``gaia-skymapper`` (view
        ``training_set``), or e.g. ``gaia``, ``gaia-tmass-allwise`` (view ``labelled_features``
        restricted to the stars with that set's inputs).
    family : str or None
        The family this model belongs to (:func:`run_family`), recorded in its card.
    dropouts : sequence of float or None
        Dropout rates tried per network, the smallest validation MAD kept; default
        :func:`dropouts_for` (:data:`DROPOUT_CANDIDATES`, their first alone with ``quick`` or
        :data:`DROPOUT_TRIAL_MAX_TRAIN` or more of the parameter's labelled training stars).

    Returns
    -------
    TrainSummary

    Raises
    ------
    UserError
        Bad arguments, a database without the expected views or columns, or too
        few labelled stars.  Nothing is written in that case.
    """
    name = check_model_name(model)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise UserError(f"--epochs must be a positive whole number, got {epochs!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}.")
    root = models_root(models_dir, db)
    if root.exists() and not root.is_dir():
        raise UserError(f"Models directory {root} is not a directory; set STELLARDB_MODELS to another path.")
    members_given = tuple(members or ())  # parameters whose ensemble size the caller chose: no ensemble trial
    members = {**ENSEMBLE_MEMBERS, **(members or {})}
    if sorted(members) != sorted(PARAMETERS) or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in members.values()):
        raise UserError(f"members must give a positive whole number for each of {', '.join(PARAMETERS)}, got {members!r}.")
    try:
        fs = feature_sets.parse(feature_set)
    except ValueError as exc:
        raise UserError(f"--feature-set: {exc}.") from None
    features = list(fs.features)
    max_epochs = min(epochs, QUICK_MAX_EPOCHS) if quick else epochs
    patience = QUICK_PATIENCE_EPOCHS if quick else PATIENCE_EPOCHS
    dropouts_for(quick, dropouts)  # refuse bad rates before any work

    t0 = time.perf_counter()
    con = catalog_db.connect(db, read_only=False)
    try:
        # what an interrupted train left (stellardb doctor): the recorded model back, scratch gone
        repairs = diagnose(con, root, repair=True)
        if fs.name == SEED:
            check_features(con, features)
        else:
            check_set_features(con, features)
        data = load_training_set(con, features, fs.name)
        if data.source_id.size == 0:
            if fs.name == SEED:
                raise UserError(f"training_set is empty: {why_no_training_stars(con)}.")
            raise UserError(f"No labelled star has the inputs of feature set {fs.name}: "
                            f"{why_no_set_stars(con, fs)}.")
        check_enough_labels(data)
        train_rows = data.split == "train"
        log_mask, colour_pairs = log_mask_for(features), colour_pairs_for(features)
        prepared_train = prepare_inputs(data.x[train_rows], log_mask, colour_pairs)
        feature_mean, feature_scale = feature_scaling(prepared_train)
        ranges = training_ranges(data, prepared_train, input_names(features))
        del prepared_train

        models, infos = {}, {}
        max_epochs = epochs_for(int(np.sum(train_rows)), max_epochs)
        tried = set()  # every rate a network tried
        for k, p in enumerate(PARAMETERS):
            ok = np.isfinite(data.labels[p])
            # the rule of cross_validate: this parameter's labelled training stars decide
            n_train = int(np.sum(ok & train_rows))
            rates = dropouts_for(quick, dropouts, n_train)
            trial_members = ensemble_trial_for(p, quick, members_given, n_train)
            tried.update(rates)
            advance = None if progress is None else (
                lambda done, total, label, p=p, single=len(rates) == 1 and trial_members is None: progress(
                    done, total, stage=f"training {p} (epochs)" if single else f"training {p}, {label} (epochs)"))
            models[p], infos[p] = fit_with_trials(
                p, data.x[ok], data.labels[p][ok], data.split[ok], feature_mean, feature_scale,
                seed + k, max_epochs, patience, hidden_units, advance, log_mask, colour_pairs, members[p],
                watch_from_epoch(max_epochs, quick), rates, trial_members,
            )
            members[p] = infos[p]["members"]
        scorer_parts = {p: fold_model(models[p]) for p in PARAMETERS}
        scorer = NumpyScorer(scorer_parts)
        predictions = scorer.predict(data.x)
        metrics = evaluate(data, predictions, features)
        selection = validation_scores(data, predictions)
        trained_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        card = {
            "name": name,
            "trained_at": trained_at.isoformat() + "Z",
            "parameters": list(PARAMETERS),
            "units": {p: UNITS[p] for p in PARAMETERS},
            "source_view": "training_set" if fs.name == SEED else "labelled_features",
            "query": training_query(features, fs.name).replace('"', ""),
            "features": features,
            "feature_set": fs.name,
            "surveys": list(fs.surveys),
            "eligible_when": "passes_feature_cuts" if fs.name == SEED else fs.where,
            "family": family,
            "selection": selection,
            "scaling": {
                "rule": "x -> log10(x) for log_features (non-positive -> missing); z = (x - mean) / scale over the finite "
                        "training-split values; missing (non-finite) -> z = 0 plus an is-missing flag",
                "log_features": [f for f, m in zip(features, log_mask) if m],
                "colours": colour_names(features),
                "inputs": "features, then colours (derived inputs a - k b); feature_mean/feature_scale cover both",
                "feature_mean": [float(v) for v in feature_mean],
                "feature_scale": [float(v) for v in feature_scale],
                "targets": {p: {"mean": infos[p]["target_mean"], "scale": infos[p]["target_scale"]} for p in PARAMETERS},
            },
            "architecture": {
                "hidden_units": list(hidden_units),
                # per parameter: the candidate with the smallest validation MAD (training.per_parameter
                # lists each trial)
                "dropout": {p: infos[p]["dropout"] for p in PARAMETERS},
                "dropout_candidates": sorted(tried),
                "layer": "Dense (no bias) -> BatchNormalization -> ReLU -> Dropout",
                "head": "Dense(2): prediction and log sigma in standardised units",
                # per parameter; where an ensemble was tried, training.per_parameter.*.member_trials
                "members": {p: int(members[p]) for p in PARAMETERS},
                "ensemble_min_gain": ENSEMBLE_MIN_GAIN,
                "ensemble": "a parameter with members > 1 is a deep ensemble inside its one .keras file: that many copies "
                            "of the hidden layers and head (layers member{k}_dense_{i}, ...), from different initial "
                            "weights, trained together on the sum of their losses; value = mean of the members' "
                            "predictions, error = sqrt(mean(sigma_k^2) + var(mu_k)) (the mixture's sigma) times error_factor",
                "loss": f"Huber(delta={HUBER_DELTA}) on the prediction + Gaussian NLL of sigma with the prediction held fixed",
                "uncertainty": "heteroscedastic sigma head (the members' mixture sigma for an ensemble), scaled by "
                               "error_factor so that 68.27% of validation stars have |r| < error",
            },
            "training": {
                "optimizer": "Adam, cosine decay of the learning rate to 2% over max_epochs",
                "learning_rate": LEARNING_RATE,
                "max_epochs": max_epochs,
                "sample_budget": SAMPLE_BUDGET,
                "patience_epochs": patience,
                # 1-based, as best_epoch: the first epoch whose weights early stopping may keep
                "early_stopping_watches_from_epoch": watch_from_epoch(max_epochs, quick) + 1,
                "quick": bool(quick),
                "per_parameter": infos,
            },
            "training_ranges": ranges,
            "split_rule": SPLIT_RULE,
            "split_counts": {s: int(np.sum(data.split == s)) for s in SPLITS},
            "seed": int(seed),
            "epochs": int(epochs),
            "data_fingerprint": {"sha256": data.fingerprint, "rows": int(data.source_id.size),
                                 "of": "source_id, features (float32) and teff/logg/feh of training_set ordered by source_id"},
            "versions": library_versions(),
            "metrics_definitions": "r = predicted - reference; sigma = std(r); MAD = median(|r - median(r)|) (unscaled); "
                                   "mad_scaled = 1.4826 MAD; calibration_68 = fraction of stars with |r| < error",
            "metrics": metrics,
        }
        g_mag = None
        if plots:
            from stellardb.ml.plots import g_magnitudes

            g_mag = g_magnitudes(con, data.source_id)  # Gaia G is no model input: read it for the calibration plot
        folder, previous = save_atomically(root, name, models, card, data, predictions, plots, scorer_parts, g_mag)
        try:
            deleted = _store_tables(con, name, data, metrics, trained_at, folder, card)
        except InterruptedAfterCommit:
            raise  # the tables committed: the new folder is the model now
        except BaseException:
            # the tables did not change: put the previous model of this name back
            shutil.rmtree(folder, ignore_errors=True)
            if previous is not None:
                os.replace(previous / name, folder)
            raise
        finally:
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
    finally:
        con.close()
    return TrainSummary(model=name, folder=folder, card=card, metrics=metrics, seconds=time.perf_counter() - t0,
                        predictions_deleted=deleted, repairs=repairs)


def _store_tables(con, name: str, data: LabelledData, metrics: dict, trained_at, folder: Path, card: dict) -> int:
    """Replace the stored split and this model's metrics, and delete this model's predictions, in one transaction.

    The predictions came from the networks this training replaces; keeping them
    would show numbers no saved model produces.  Returns the rows deleted.
    """
    import pyarrow as pa


    split_rows = pa.table({"source_id": data.source_id, "bucket": split_bucket(data.source_id), "split": data.split.astype(str)})
    rows = []
    for p, by_method in metrics.items():
        for key, method, sample in (("mlp", "mlp", "test_with_gspphot"), ("gspphot", "gspphot", "test_with_gspphot"), ("mlp_all_test", "mlp", "test")):
            s = by_method[key]
            rows.append({"model": name, "parameter": p, "method": method, "sample": sample, "unit": UNITS[p], **s, "trained_at": trained_at})
    metric_rows = pa.Table.from_pylist(rows)
    try:
        with catalog_db.transaction(con, f"model {name} (its folder and its metrics)"):
            con.register("_stellardb_split", split_rows)
            con.register("_stellardb_metrics", metric_rows)
            # the split is a function of source_id, so models of other feature sets agree on every star
            # they share: keep theirs, replace this one's
            con.execute("delete from training_split where source_id in (select source_id from _stellardb_split)")
            con.execute("insert into training_split select source_id, bucket, split from _stellardb_split")
            deleted = con.execute("delete from predictions where model = $model", {"model": name}).fetchone()[0]
            con.execute("delete from model_metrics where model = $model", {"model": name})
            con.execute(
                "insert into model_metrics select model, parameter, method, sample, unit, n, mean, median, sigma, mad, "
                "mad_scaled, rmse, calibration_68, trained_at from _stellardb_metrics"
            )
            record_run(con, "train", name, trained_at, int(data.source_id.size), folder, card, card["versions"])
    finally:
        con.unregister("_stellardb_split")
        con.unregister("_stellardb_metrics")
    return int(deleted)


# ---------------------------------------------------------------- one model per feature set


@dataclass
class FamilySummary:
    model: str
    members: list  # TrainSummary of each member, in training order
    skipped: dict  # feature set -> why it was not trained
    card: dict
    path: Path
    seconds: float
    predictions_deleted: int = 0


def labelled_counts(con, sets) -> dict:
    """Labelled stars with each feature set's inputs (the seed's: rows of training_set)."""
    out = {}
    for name in sets:
        fs = feature_sets.parse(name)
        sql = ("select count(*) from training_set" if fs.name == SEED
               else f"select count(*) from labelled_features where {fs.where}")
        out[name] = int(con.execute(sql).fetchall()[0][0])
    return out


def run_family(db, model: str = "default", feature_set_names=None, min_labels=None, models_dir=None, progress=None,
               on_member=None, cv_folds: int | None = None, **kwargs) -> FamilySummary:
    """Train one model per feature set with enough labelled stars, then choose which predicts each star.

    Members are ordinary models named ``MODEL.FEATURE_SET`` (:func:`run`); the family card
    ``MODEL.family.json`` records them, their validation scores and, per pattern of available
    inputs, the member chosen (:mod:`stellardb.ml.selection`).

    Parameters
    ----------
    feature_set_names : list of str or None
        Feature sets to train (default :data:`stellardb.ml.feature_sets.DEFAULT_SETS`, each
        where it has enough labels; named ones must all have enough).
    min_labels : int or None
        Labelled stars a set needs; default the ``min_labels_per_feature_set`` setting (200).
    on_member : callable(feature_set, index, total) or None
        Called before each member is trained.
    cv_folds : int or None
        Also cross-validate each member with this many folds (:func:`cross_validate`); the
        pooled out-of-fold statistics go into the family card (``members[].cv``) and
        ``models/MODEL.SET/plots/cv.png``.
    kwargs
        Passed to :func:`run` (epochs, seed, quick, plots, hidden_units, members, dropouts).
    """
    if cv_folds is not None and (isinstance(cv_folds, bool) or not isinstance(cv_folds, (int, np.integer))
                                 or not 3 <= cv_folds <= 10):
        raise UserError(f"--cv must be a whole number of folds from 3 to 10, got {cv_folds!r}.")
    from stellardb.ml import selection

    name = check_model_name(model)
    if "." in name:
        raise UserError(f"Model name {name!r}: a family's name has no '.' (its models are named FAMILY.SET, e.g. "
                        f"{name.replace('.', '_')}.gaia); choose another.")
    explicit = bool(feature_set_names)
    names = list(dict.fromkeys(feature_set_names or feature_sets.DEFAULT_SETS))
    try:
        names = [feature_sets.parse(n).name for n in names]
    except ValueError as exc:
        raise UserError(f"--feature-set: {exc}.") from None
    for n in names:
        check_model_name(selection.member_name(name, n))
    t0 = time.perf_counter()
    root = models_root(models_dir, db)
    con = catalog_db.connect(db, read_only=False)
    try:
        for n in names:  # before any training: a view that cannot serve a set fails now, not after an hour
            fs = feature_sets.parse(n)
            if fs.name == SEED:
                check_features(con, list(fs.features))
            else:
                check_set_features(con, list(fs.features))
        if min_labels is None:
            min_labels = int(catalog_db.get_setting(con, "min_labels_per_feature_set"))
        if isinstance(min_labels, bool) or not isinstance(min_labels, (int, np.integer)) or min_labels < MIN_LABELLED_STARS:
            raise UserError(f"min_labels_per_feature_set must be a whole number of at least {MIN_LABELLED_STARS}, "
                            f"got {min_labels!r}.")
        counts = labelled_counts(con, names)
        too_few = {n: c for n, c in counts.items() if c < min_labels}
        short = {}
        if explicit and too_few:
            n, c = next(iter(too_few.items()))
            raise UserError(f"Feature set {n} has {c:,} labelled stars with its inputs, fewer than the {min_labels:,} a "
                            f"model needs ({why_no_set_stars(con, feature_sets.parse(n)) if c == 0 else 'ingest more labels'}"
                            f"; the setting min_labels_per_feature_set sets the threshold).")
        # every parameter of every set checked before anything is trained or deleted: a set that
        # would fail part-way through the family is skipped (or, when named, refused) now
        for n in [n for n in names if n not in too_few]:
            fs = feature_sets.parse(n)
            cur = con.cursor()  # (the connection may hold an unfinished result of a count above)
            try:
                check_enough_labels(load_training_set(cur, list(fs.features), fs.name))
            except UserError as exc:
                if explicit:
                    raise UserError(f"Feature set {n}: {exc}") from None
                too_few[n] = counts[n]
                short[n] = str(exc).split(";")[0]
            finally:
                cur.close()
        chosen = [n for n in names if n not in too_few]
        if not chosen:
            best = max(counts.items(), key=lambda kv: kv[1])
            raise UserError(
                f"No feature set has the {min_labels:,} labelled stars a model needs (most: {best[0]} with {best[1]:,}; "
                f"{why_no_set_stars(con, feature_sets.parse('gaia'))}); ingest reference labels "
                "(`stellardb ingest sos FILE`) for stars with Gaia BP/RP and a distance.")
        # the family's predictions and card go before its members change: an interrupted train then
        # leaves no family (score says to train it), never new networks under the old choices
        with catalog_db.transaction(con, f"deleting the earlier predictions of model family {name}"):
            deleted = con.execute("delete from predictions where model = $m", {"m": name}).fetchone()[0]
        selection.family_path(root, name).unlink(missing_ok=True)
    finally:
        con.close()
    skipped = {n: short.get(n) or f"{c:,} labelled stars with its inputs (needs {min_labels:,})"
               for n, c in too_few.items()}
    members = []
    for k, n in enumerate(chosen):
        if on_member is not None:
            on_member(n, k, len(chosen))
        members.append(run(db, selection.member_name(name, n), models_dir=models_dir, progress=progress,
                           feature_set=n, family=name, **kwargs))
    card = _family_card(db, name, members, skipped, min_labels, root)
    if cv_folds is not None:
        cv_kwargs = {k: v for k, v in kwargs.items() if k in ("epochs", "seed", "quick", "hidden_units", "members", "dropouts")}
        for k, (info, m) in enumerate(zip(card["members"], members)):
            if on_member is not None:
                on_member(f"{info['feature_set']} ({cv_folds}-fold cross-validation)", k, len(members))
            plot = root / m.model / "plots" / "cv.png" if kwargs.get("plots", True) else None
            info["cv"] = cross_validate(db, info["feature_set"], cv_folds, plot=plot, **cv_kwargs)
    path = selection.write_family(root, card)
    return FamilySummary(model=name, members=members, skipped=skipped, card=card, path=path,
                         seconds=time.perf_counter() - t0, predictions_deleted=int(deleted))


def _family_card(db, name: str, members: list, skipped: dict, min_labels: int, root: Path) -> dict:
    """Validation predictions of every member on every validation star, and the choice per pattern."""
    from stellardb.ml import selection
    from stellardb.ml.model_store import load_scorer

    sets = [feature_sets.parse(m.card["feature_set"]) for m in members]
    columns = sorted({c for fs in sets for c in fs.features} | {c for fs in sets for c in fs.passes_columns},
                     key=str.lower)
    con = catalog_db.connect(db, read_only=True)
    try:
        sql = (f"select source_id, {', '.join(catalog_db.quote_identifier(c) for c in columns)}, teff, logg, feh "
               "from labelled_features where passes_gaia_cuts order by source_id")
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    source_id = table.column("source_id").to_numpy(zero_copy_only=False).astype(np.int64)
    val = assign_split(source_id) == "validation"
    labels = {p: table.column(p).to_numpy(zero_copy_only=False).astype(np.float64)[val] for p in PARAMETERS}
    n = int(val.sum())
    eligible = np.zeros((n, len(sets)), bool)
    predictions = []
    for j, (fs, m) in enumerate(zip(sets, members)):
        ok = np.ones(n, bool)
        for c in fs.passes_columns:
            ok &= table.column(c).to_numpy(zero_copy_only=False).astype(bool)[val]
        eligible[:, j] = ok
        x = np.empty((n, len(fs.features)), np.float32)
        for i, c in enumerate(fs.features):
            x[:, i] = table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)[val]
        card, folded = load_scorer(m.model, root)
        pred = NumpyScorer(folded).predict(x[ok]) if ok.any() else {p: (np.empty(0), np.empty(0)) for p in PARAMETERS}
        full = {}
        for p in PARAMETERS:
            full[p] = np.full(n, np.nan)
            full[p][ok] = pred[p][0]
        predictions.append(full)
    import hashlib as _hashlib

    info = [{"feature_set": fs.name, "model": m.model, "surveys": list(fs.surveys), "score": m.card["selection"]["score"],
             "card_sha256": _hashlib.sha256((m.folder / "card.json").read_bytes()).hexdigest(),
             "validation_mad": m.card["selection"]["validation_mad"], "labelled_stars": int(m.card["data_fingerprint"]["rows"]),
             "test": {p: {"mlp_mad": m.metrics[p]["mlp"]["mad"], "gspphot_mad": m.metrics[p]["gspphot"]["mad"],
                          "n": m.metrics[p]["mlp"]["n"], "mlp_all_mad": m.metrics[p]["mlp_all_test"]["mad"],
                          "n_all": m.metrics[p]["mlp_all_test"]["n"]} for p in PARAMETERS}}
            for fs, m in zip(sets, members)]
    choices = selection.choose(info, eligible, predictions, labels, SELECTION_UNITS)
    return {
        "name": name,
        "kind": "family",
        "trained_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z",
        "rule": selection.__doc__.split("\n\n")[1].strip(),
        "selection_units": SELECTION_UNITS,
        "min_labels_per_feature_set": min_labels,
        "members": info,
        "fallback_order": selection.fallback_order(info),
        "choices": choices,
        "skipped": skipped,
        "validation_stars": n,
    }


# ---------------------------------------------------------------- k-fold cross-validation


def cross_validate(db, feature_set: str = "gaia", folds: int = 5, epochs: int = 120, seed: int = 42, quick: bool = False,
                   hidden_units=HIDDEN_UNITS, members=None, plot=None, dropouts=None) -> dict:
    """K-fold cross-validation of one feature set on every labelled star with its inputs.

    Fold k is ``split_bucket(source_id) * folds // 100 == k`` (the split hash, so a star's fold never
    changes); each fold is predicted by networks trained on the others, with fold k + 1 as the
    early-stopping validation set, which also chooses each network's dropout, and Teff's
    ensemble size, as in :func:`run`.
    Returns, per parameter, the statistics of the pooled out-of-fold predictions minus reference on
    every star (``mlp_all``), and ML and GSP-Phot on the stars GSP-Phot has (``mlp``, ``gspphot``),
    the rates tried (``dropout_candidates``) and kept (``dropout_per_fold``), and the networks kept
    (``members_per_fold``); writes a
    predicted-vs-reference PNG to ``plot`` when given.
    Meant for small real label sets, where one 10 % test split holds a few dozen stars.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 3 <= folds <= 10:
        raise UserError(f"--cv must be a whole number of folds from 3 to 10, got {folds!r}.")
    fs = feature_sets.parse(feature_set)
    features = list(fs.features)
    con = catalog_db.connect(db, read_only=True)
    try:
        data = load_training_set(con, features, fs.name)
    finally:
        con.close()
    members_given = tuple(members or ())
    members = {**ENSEMBLE_MEMBERS, **(members or {})}
    fold = split_bucket(data.source_id).astype(np.int64) * folds // 100
    log_mask, colour_pairs = log_mask_for(features), colour_pairs_for(features)
    max_epochs = min(epochs, QUICK_MAX_EPOCHS) if quick else epochs
    patience = QUICK_PATIENCE_EPOCHS if quick else PATIENCE_EPOCHS
    dropouts_for(quick, dropouts)  # refuse bad rates before any work
    n = data.source_id.size
    oof = {p: (np.full(n, np.nan), np.full(n, np.nan)) for p in PARAMETERS}
    chosen = {p: [] for p in PARAMETERS}  # each fold's dropout, per parameter
    networks = {p: [] for p in PARAMETERS}  # each fold's ensemble size, per parameter
    used = set()  # every rate a fold tried
    for k in range(folds):
        split = np.where(fold == k, "test", np.where(fold == (k + 1) % folds, "validation", "train"))
        train_rows = split == "train"
        prepared = prepare_inputs(data.x[train_rows], log_mask, colour_pairs)
        mean, scale = feature_scaling(prepared)
        parts = {}
        for j, p in enumerate(PARAMETERS):
            ok = np.isfinite(data.labels[p])
            if min(int(np.sum(ok & (split == s))) for s in SPLITS) < MIN_SPLIT_STARS:
                raise UserError(f"Too few stars with a {p} label for {folds}-fold cross-validation of {fs.name} "
                                f"({int(ok.sum())}); use fewer folds or ingest more labels.")
            fold_epochs = epochs_for(int(np.sum(ok & train_rows)), max_epochs)
            n_train = int(np.sum(ok & train_rows))
            rates = dropouts_for(quick, dropouts, n_train)
            used.update(rates)
            model, info = fit_with_trials(p, data.x[ok], data.labels[p][ok], split[ok], mean, scale,
                                          seed + 10 * k + j, fold_epochs, patience, hidden_units, None, log_mask,
                                          colour_pairs, members[p], watch_from_epoch(fold_epochs, quick), rates,
                                          ensemble_trial_for(p, quick, members_given, n_train))
            chosen[p].append(info["dropout"])
            networks[p].append(info["members"])
            parts[p] = fold_model(model)
        test = split == "test"
        pred = NumpyScorer(parts).predict(data.x[test])
        for p in PARAMETERS:
            oof[p][0][test], oof[p][1][test] = pred[p]
    out = {"feature_set": fs.name, "folds": folds, "stars": int(n),
           "fold_rule": f"split_bucket(source_id) * {folds} // 100",
           "dropout_candidates": sorted(used),
           "dropout_per_fold": chosen, "members_per_fold": networks, "parameters": {}}
    for p in PARAMETERS:
        ref = data.labels[p]
        value, error = oof[p]
        gsp = data.x[:, features.index(GSPPHOT[p])].astype(np.float64)
        gsp_err = data.x[:, features.index(GSPPHOT[p] + "_err")].astype(np.float64)
        labelled = np.isfinite(ref) & np.isfinite(value)
        both = labelled & np.isfinite(gsp)
        out["parameters"][p] = {
            "mlp_all": residual_stats(value[labelled], ref[labelled], error[labelled]),
            "mlp": residual_stats(value[both], ref[both], error[both]),
            "gspphot": residual_stats(gsp[both], ref[both], gsp_err[both]),
        }
    if plot is not None:
        from stellardb.ml.plots import cv_figure

        fig = cv_figure({p: (data.labels[p], oof[p][0]) for p in PARAMETERS}, fs.name, folds)
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=100)
        import matplotlib.pyplot as plt

        plt.close(fig)
        out["plot"] = str(plot)
    return out
