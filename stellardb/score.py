"""``stellardb score``: predictions for every star that passes the feature cuts.

Scoring does not run Keras.  :func:`fold_model` exports each trained network to
plain float32 matrices - the input standardisation and every BatchNormalization
folded into the adjacent Dense layer - and :class:`NumpyScorer` evaluates the
three networks together with batched matrix products (the three first layers
are one product).  Its output equals ``model.predict`` within float32 rounding
(tests/test_models.py) and it is several times faster (bench/bench_score.py).

Rows stream from the ``scoring_set`` view in Arrow record batches, so memory is
bounded by the batch size, and are written to ``predictions`` inside one
transaction: an interrupted run leaves the previous predictions of the model
intact, and a finished one replaces them all at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

# Before Keras pulls in TensorFlow: its C++ start-up chatter would bury the
# one-line messages users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .mlp import PARAMETERS  # noqa: E402

# Rows per matrix product: small enough that a layer's activations stay in the
# L2/L3 cache (8192 x 192 float32 = 6 MB), large enough to amortise Python overhead.
CHUNK_ROWS = 8192
# Rows per Arrow batch read from DuckDB (memory: about 27 x 8 bytes per row).
BATCH_ROWS = 131_072


@dataclass
class FoldedMLP:
    """One network as float32 arrays; the input is ``[x with NaN -> 0, isfinite(x)]``."""

    first_weight: np.ndarray  # (2 * n_features, units)
    first_bias: np.ndarray  # (units,)
    hidden: list = field(default_factory=list)  # [(weight, bias), ...] after the first layer
    head_weight: np.ndarray = None  # (units, 2)
    head_bias: np.ndarray = None  # (2,)
    target_mean: float = 0.0
    target_scale: float = 1.0
    error_factor: float = 1.0
    log_mask: list = field(default_factory=list)  # raw inputs that enter as log10
    colour_pairs: list = field(default_factory=list)  # appended input differences


def _batchnorm_fold(layer):
    gamma, beta, moving_mean, moving_var = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
    k = gamma / np.sqrt(moving_var + layer.epsilon)
    return k, beta - moving_mean * k


def fold_model(model) -> FoldedMLP:
    """Export a :func:`stellardb.mlp.build_mlp` model to :class:`FoldedMLP`.

    Dense (no bias) followed by BatchNormalization is ``x @ (W * k) + (beta - mu * k)``
    with ``k = gamma / sqrt(var + eps)``.  The input scaling folds into the first
    layer: with ``x0 = x`` where finite else 0 and ``f = isfinite(x)``, the
    standardised input is ``x0 / s - f * m / s`` and the missing flag is ``1 - f``,
    so the first layer is ``[x0, f] @ [Wz / s; -(m / s) Wz - Wf] + (b + sum(Wf))``.
    Dropout is the identity at inference.
    """
    scaling = model.get_layer("scaling")
    mean = np.asarray(scaling.mean, dtype=np.float64)
    scale = np.asarray(scaling.scale, dtype=np.float64)
    n = mean.size
    layers = []
    i = 0
    while True:
        try:
            dense = model.get_layer(f"dense_{i}")
        except ValueError:
            break
        (w,) = (np.asarray(a, dtype=np.float64) for a in dense.get_weights())
        k, b = _batchnorm_fold(model.get_layer(f"batchnorm_{i}"))
        layers.append((w * k, b))
        i += 1
    if not layers:
        raise ValueError("model has no dense_0 layer; was it built by stellardb.mlp.build_mlp?")
    w, b = layers[0]
    wz, wf = w[:n], w[n:]
    first_weight = np.concatenate([wz / scale[:, None], -(mean / scale)[:, None] * wz - wf], axis=0)
    first_bias = b + wf.sum(axis=0)
    head_w, head_b = (np.asarray(a, dtype=np.float64) for a in model.get_layer("head").get_weights())
    target = model.get_layer("target_scaling")
    f32 = np.float32
    return FoldedMLP(
        first_weight=first_weight.astype(f32),
        first_bias=first_bias.astype(f32),
        hidden=[(w.astype(f32), b.astype(f32)) for w, b in layers[1:]],
        head_weight=head_w.astype(f32),
        head_bias=head_b.astype(f32),
        target_mean=target.mean,
        target_scale=target.scale,
        error_factor=target.error_factor,
        log_mask=list(scaling.log_mask),
        colour_pairs=[list(p) for p in scaling.colour_pairs],
    )


class NumpyScorer:
    """Evaluate several folded networks on the same raw inputs with batched NumPy.

    Parameters
    ----------
    folded : dict
        ``{parameter: FoldedMLP}``, all with the same inputs.
    """

    def __init__(self, folded: dict):
        from .mlp import LOG_SIGMA_MAX, LOG_SIGMA_MIN

        self.parameters = tuple(folded)
        nets = [folded[p] for p in self.parameters]
        # Network inputs: the raw features, then the colours appended to them.
        self.n_inputs = nets[0].first_weight.shape[0] // 2
        self.colour_pairs = [(int(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else 1.0) for p in nets[0].colour_pairs]
        self.n_features = self.n_inputs - len(self.colour_pairs)
        # One product for all first layers: the input matrix is read once.
        self.first_weight = np.ascontiguousarray(np.concatenate([f.first_weight for f in nets], axis=1))
        self.first_bias = np.concatenate([f.first_bias for f in nets])
        edges = np.cumsum([0] + [f.first_bias.size for f in nets])
        self.slices = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        self.nets = nets
        masks = {(tuple(f.log_mask), tuple(map(tuple, f.colour_pairs))) for f in nets}
        if len(masks) != 1:
            raise ValueError("all networks of a NumpyScorer must transform their inputs the same way")
        self.log_columns = np.flatnonzero(nets[0].log_mask or [False] * self.n_features)
        self.log_sigma_range = (LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def predict(self, x: np.ndarray) -> dict:
        """Predictions for raw inputs ``x`` (n, n_features); NaN or inf means missing.

        Returns
        -------
        dict
            ``{parameter: (value, error)}``, float32 arrays of length n, physical units.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected inputs of shape (n, {self.n_features}), got {x.shape}")
        n = x.shape[0]
        out = {p: (np.empty(n, np.float32), np.empty(n, np.float32)) for p in self.parameters}
        # Column-major: the per-column log10, colours and masks below touch
        # contiguous memory, and BLAS takes either layout at the same speed.
        buf = np.empty((min(n, CHUNK_ROWS), 2 * self.n_inputs), np.float32, order="F")
        for lo in range(0, n, CHUNK_ROWS):
            hi = min(n, lo + CHUNK_ROWS)
            self._predict_chunk(x[lo:hi], buf[: hi - lo], out, lo, hi)
        return out

    def _predict_chunk(self, x, inp, out, lo, hi):
        nf, ni = self.n_features, self.n_inputs
        xin = inp[:, :ni]
        xin[:, :nf] = x
        with np.errstate(divide="ignore", invalid="ignore"):
            for j in self.log_columns:
                # log10 of a negative value is NaN and of 0 is -inf: both non-finite,
                # so missing, as the Keras layer treats non-positive values.
                np.log10(xin[:, j], out=xin[:, j])
            for c, (i, j, k) in enumerate(self.colour_pairs):
                col = xin[:, nf + c]
                if k == 1.0:
                    np.subtract(xin[:, i], xin[:, j], out=col)
                else:
                    np.multiply(xin[:, j], -k, out=col)
                    col += xin[:, i]
        finite = np.isfinite(xin)
        np.copyto(xin, 0.0, where=~finite)
        inp[:, ni:] = finite
        h = inp @ self.first_weight
        h += self.first_bias
        np.maximum(h, 0.0, out=h)
        for net, cols, p in zip(self.nets, self.slices, self.parameters):
            a = h[:, cols]
            for w, b in net.hidden:
                a = a @ w
                a += b
                np.maximum(a, 0.0, out=a)
            head = a @ net.head_weight
            head += net.head_bias
            value, error = out[p]
            np.multiply(head[:, 0], net.target_scale, out=value[lo:hi])
            value[lo:hi] += net.target_mean
            log_sigma = np.clip(head[:, 1], *self.log_sigma_range)
            np.exp(log_sigma, out=error[lo:hi])
            error[lo:hi] *= net.target_scale * net.error_factor


# ---------------------------------------------------------------- model folders


def models_root(models_dir=None) -> Path:
    """The models directory: ``models_dir``, else $STELLARDB_MODELS, else ./models."""
    return Path(models_dir if models_dir is not None else os.environ.get("STELLARDB_MODELS", "models"))


def available_models(root: Path) -> list[str]:
    """Names of the model folders under ``root`` that hold a card.json."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "card.json").is_file())


def load_model_folder(name: str, models_dir=None):
    """Read ``models/NAME``: its card and the three Keras models.

    Returns
    -------
    (dict, dict)
        The card and ``{parameter: keras.Model}``.

    Raises
    ------
    UserError
        Unknown name, or a missing or corrupt card or model file.
    """
    root = models_root(models_dir)
    folder = root / name
    if not (folder / "card.json").is_file():
        known = available_models(root)
        hint = f"Known models in {root}: {', '.join(known)}." if known else f"No models in {root}; run `stellardb train` first."
        raise UserError(f'Unknown model "{name}". {hint}')
    try:
        card = json.loads((folder / "card.json").read_text())
        parameters = list(card["parameters"])
        features = list(card["features"])
        if not all(isinstance(f, str) for f in features):
            raise TypeError("features must be column names")
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{folder / 'card.json'} is corrupt ({exc.__class__.__name__}); retrain with `stellardb train --name {name}`.") from None
    if parameters != list(PARAMETERS):
        raise UserError(
            f"{folder / 'card.json'} lists parameters {parameters}, but stellardb predicts {list(PARAMETERS)}; "
            f"retrain with `stellardb train --name {name}`."
        )
    import keras

    from . import mlp  # noqa: F401  registers the custom layers with Keras

    models = {}
    for p in parameters:
        path = folder / f"{p}.keras"
        if not path.is_file():
            raise UserError(f"{path} is missing; retrain with `stellardb train --name {name}`.")
        try:
            model = keras.saving.load_model(path, compile=False)
            if tuple(model.input_shape) != (None, len(features)):
                raise ValueError("input shape does not match card.json")
            # build_mlp names each network after its parameter: a teff.keras copied over
            # feh.keras would otherwise write Teff values into the feh column
            if model.name != p:
                raise ValueError(f"this file holds the {model.name!r} network, not {p!r}")
        except Exception as exc:  # keras raises many types for a damaged zip/h5/json
            reason = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
            raise UserError(f"{path} is corrupt or not a stellardb model ({reason}); retrain with `stellardb train --name {name}`.") from None
        models[p] = model
    return card, models


# ---------------------------------------------------------------- scoring


@dataclass
class ScoreSummary:
    model: str
    rows: int
    seconds: float
    scored_at: dt.datetime


def run(db, model: str = "default", models_dir=None, batch_rows: int = BATCH_ROWS, progress: bool = True) -> ScoreSummary:
    """Predict Teff, log g and [Fe/H] for every row of ``scoring_set`` and store them.

    Parameters
    ----------
    db : path
        DuckDB database (see :func:`stellardb.train.connect_db`).
    model : str
        Folder name under the models directory.
    models_dir : path or None
        Models directory; default $STELLARDB_MODELS or ./models.
    batch_rows : int
        Rows per Arrow batch (bounds memory).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    ScoreSummary

    Raises
    ------
    UserError
        Unknown or corrupt model, or a model whose features do not match the
        database.  Nothing is written in that case.
    """
    from .progress import progress_bar
    from .train import connect_db, database_features, quote_identifier

    if batch_rows < 1:
        raise UserError(f"batch_rows must be positive, got {batch_rows}.")
    card, models = load_model_folder(model, models_dir)
    features = list(card["features"])
    con = connect_db(db)
    try:
        db_features = database_features(con)
        if set(db_features) != set(features):
            missing = sorted(set(features) - set(db_features))
            extra = sorted(set(db_features) - set(features))
            raise UserError(
                f'Model "{model}" was trained on features that do not match the database '
                f"(missing in the database: {', '.join(missing) or 'none'}; not in the model: {', '.join(extra) or 'none'}); "
                f"retrain it with `stellardb train --name {model}`."
            )
        scorer = NumpyScorer({p: fold_model(models[p]) for p in card["parameters"]})
        total = con.execute("select count(*) from scoring_set").fetchone()[0]
        scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        columns = ", ".join(quote_identifier(f) for f in features)
        t0 = time.perf_counter()
        reader = con.cursor()
        writer = con.cursor()
        done = 0
        writer.execute("begin transaction")
        try:
            writer.execute("delete from predictions where model = $model", {"model": model})
            stream = reader.sql(f"select source_id, {columns} from scoring_set").to_arrow_reader(batch_rows)
            with progress_bar(f"scoring with {model}", total=total, disable=not progress) as advance:
                for batch in stream:
                    _write_batch(writer, batch, features, scorer, model, scored_at)
                    done += batch.num_rows
                    advance(done, total)
            writer.execute("commit")
        except BaseException:
            # KeyboardInterrupt included: the previous predictions stay as they were.
            writer.execute("rollback")
            raise
        finally:
            reader.close()
        seconds = time.perf_counter() - t0
        writer.close()
    finally:
        con.close()
    return ScoreSummary(model=model, rows=done, seconds=seconds, scored_at=scored_at)


def batch_to_matrix(batch, features) -> np.ndarray:
    """Arrow batch -> float32 matrix (n, len(features)); NULL becomes NaN."""
    x = np.empty((batch.num_rows, len(features)), np.float32)
    for j, name in enumerate(features):
        col = batch.column(name)
        x[:, j] = col.to_numpy(zero_copy_only=False)
    return x


def _write_batch(writer, batch, features, scorer, model, scored_at):
    import pyarrow as pa

    x = batch_to_matrix(batch, features)
    pred = scorer.predict(x)
    arrays = {"source_id": batch.column("source_id")}
    for p in PARAMETERS:
        value, error = pred[p]
        arrays[p] = pa.array(value.astype(np.float64))
        arrays[f"{p}_err"] = pa.array(error.astype(np.float64))
    table = pa.table(arrays)
    writer.register("_stellardb_scored", table)
    try:
        writer.execute(
            "insert into predictions (source_id, teff, teff_err, logg, logg_err, feh, feh_err, model, scored_at) "
            "select source_id, teff, teff_err, logg, logg_err, feh, feh_err, $model, $scored_at from _stellardb_scored",
            {"model": model, "scored_at": scored_at},
        )
    finally:
        writer.unregister("_stellardb_scored")
