"""``stellardb score``: predictions for every star that passes the feature cuts.

Scoring does not run Keras.  :func:`fold_model` exports each trained network to
plain float32 matrices - the input standardisation and every BatchNormalization
folded into the adjacent Dense layer - and :class:`NumpyScorer` evaluates the
networks of the three parameters together with batched matrix products (all
first layers, ensemble members included, are one product; an ensemble's
members are combined as :class:`stellardb.mlp.TargetScaling` does).  Its output
equals ``model.predict`` within float32 rounding (tests/test_models.py) and it
is several times faster (bench/bench_score.py).

Each row also gets extrapolation flags (:class:`RangeFlags`): whether each
prediction lies outside the training labels' range, and how many inputs lie
outside the training inputs' range (both ranges are in ``card.json``).

Rows stream from the ``scoring_set`` view in Arrow record batches, so memory is
bounded by the batch size, and are written to ``predictions`` inside one
transaction: an interrupted run leaves the previous predictions of the model
intact, and a finished one replaces them all at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cores import usable_cores
from .errors import UserError

from .features import PARAMETERS

# Rows per matrix product: small enough that a layer's activations stay in the
# L2/L3 cache (8192 x 320 float32 = 10 MB for the five networks of the default
# models), large enough to amortise Python overhead.
CHUNK_ROWS = 8192
# Scorer threads at most (one per core by default).
MAX_THREADS = 8
# Rows per Arrow batch read from DuckDB (memory: about 27 x 8 bytes per row).
BATCH_ROWS = 131_072


@dataclass
class FoldedNet:
    """One network (one ensemble member) as float32 arrays; the input is ``[x with NaN -> 0, isfinite(x)]``."""

    first_weight: np.ndarray  # (2 * n_inputs, units)
    first_bias: np.ndarray  # (units,)
    hidden: list = field(default_factory=list)  # [(weight, bias), ...] after the first layer
    head_weight: np.ndarray = None  # (units, 2)
    head_bias: np.ndarray = None  # (2,)


@dataclass
class FoldedMLP:
    """One parameter's model as float32 arrays: its networks (one, or the ensemble members) and the target scaling."""

    members: list  # [FoldedNet, ...]
    target_mean: float = 0.0
    target_scale: float = 1.0
    error_factor: float = 1.0
    log_mask: list = field(default_factory=list)  # raw inputs that enter as log10
    colour_pairs: list = field(default_factory=list)  # appended input differences

    @property
    def n_inputs(self) -> int:
        """Network inputs (raw features plus colours), before the missing flags."""
        return self.members[0].first_weight.shape[0] // 2


def _batchnorm_fold(layer):
    gamma, beta, moving_mean, moving_var = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
    k = gamma / np.sqrt(moving_var + layer.epsilon)
    return k, beta - moving_mean * k


def _fold_member(model, prefix: str, mean: np.ndarray, scale: np.ndarray) -> FoldedNet:
    layers = []
    i = 0
    while True:
        try:
            dense = model.get_layer(f"{prefix}dense_{i}")
        except ValueError:
            break
        (w,) = (np.asarray(a, dtype=np.float64) for a in dense.get_weights())
        k, b = _batchnorm_fold(model.get_layer(f"{prefix}batchnorm_{i}"))
        layers.append((w * k, b))
        i += 1
    if not layers:
        raise ValueError(f"model has no {prefix}dense_0 layer; was it built by stellardb.mlp.build_mlp?")
    n = mean.size
    w, b = layers[0]
    wz, wf = w[:n], w[n:]
    first_weight = np.concatenate([wz / scale[:, None], -(mean / scale)[:, None] * wz - wf], axis=0)
    first_bias = b + wf.sum(axis=0)
    head_w, head_b = (np.asarray(a, dtype=np.float64) for a in model.get_layer(f"{prefix}head").get_weights())
    f32 = np.float32
    return FoldedNet(
        first_weight=first_weight.astype(f32),
        first_bias=first_bias.astype(f32),
        hidden=[(w.astype(f32), b.astype(f32)) for w, b in layers[1:]],
        head_weight=head_w.astype(f32),
        head_bias=head_b.astype(f32),
    )


def fold_model(model) -> FoldedMLP:
    """Export a :func:`stellardb.mlp.build_mlp` model (one network or an ensemble) to :class:`FoldedMLP`.

    Dense (no bias) followed by BatchNormalization is ``x @ (W * k) + (beta - mu * k)``
    with ``k = gamma / sqrt(var + eps)``.  The input scaling folds into the first
    layer: with ``x0 = x`` where finite else 0 and ``f = isfinite(x)``, the
    standardised input is ``x0 / s - f * m / s`` and the missing flag is ``1 - f``,
    so the first layer is ``[x0, f] @ [Wz / s; -(m / s) Wz - Wf] + (b + sum(Wf))``.
    Dropout is the identity at inference.  Each ensemble member is folded the same way.
    """
    from .mlp import ensemble_members, member_prefix

    scaling = model.get_layer("scaling")
    mean = np.asarray(scaling.mean, dtype=np.float64)
    scale = np.asarray(scaling.scale, dtype=np.float64)
    members = ensemble_members(model)
    target = model.get_layer("target_scaling")
    return FoldedMLP(
        members=[_fold_member(model, member_prefix(k, members), mean, scale) for k in range(members)],
        target_mean=target.mean,
        target_scale=target.scale,
        error_factor=target.error_factor,
        log_mask=list(scaling.log_mask),
        colour_pairs=[list(p) for p in scaling.colour_pairs],
    )


class NumpyScorer:
    """Evaluate several folded models on the same raw inputs with batched NumPy.

    Parameters
    ----------
    folded : dict
        ``{parameter: FoldedMLP}``, all with the same inputs.
    threads : int or None
        Worker threads, each scoring its own chunks of rows; default one per CPU
        core (at most :data:`MAX_THREADS`).
    """

    def __init__(self, folded: dict, threads: int | None = None):
        from .features import LOG_SIGMA_MAX, LOG_SIGMA_MIN

        self.threads = max(1, int(threads if threads is not None else min(usable_cores(), MAX_THREADS)))
        self._blas = None

        self.parameters = tuple(folded)
        models = [folded[p] for p in self.parameters]
        # Network inputs: the raw features, then the colours appended to them.
        self.n_inputs = models[0].n_inputs
        if any(m.n_inputs != self.n_inputs for m in models):
            raise ValueError("all networks of a NumpyScorer must take the same inputs")
        self.colour_pairs = [(int(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else 1.0) for p in models[0].colour_pairs]
        self.n_features = self.n_inputs - len(self.colour_pairs)
        # One product for the first layers of every network (ensemble members
        # included): the input matrix is read once.
        nets = [net for m in models for net in m.members]
        self.first_weight = np.ascontiguousarray(np.concatenate([f.first_weight for f in nets], axis=1))
        self.first_bias = np.concatenate([f.first_bias for f in nets])
        edges = np.cumsum([0] + [f.first_bias.size for f in nets])
        slices = iter([slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])])
        # per parameter: its FoldedMLP and [(columns of the first-layer output, member), ...]
        self.plan = [(p, m, [(next(slices), net) for net in m.members]) for p, m in zip(self.parameters, models)]
        masks = {(tuple(f.log_mask), tuple(map(tuple, f.colour_pairs))) for f in models}
        if len(masks) != 1:
            raise ValueError("all networks of a NumpyScorer must transform their inputs the same way")
        self.log_columns = np.flatnonzero(models[0].log_mask or [False] * self.n_features)
        self.log_sigma_range = (LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        self._first_layers = {}  # missing-flag pattern of a chunk -> its first-layer weights (see _first_layer)

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
        starts = list(range(0, n, CHUNK_ROWS))
        workers = min(self.threads, len(starts))

        def work(k):
            # Column-major: the per-column log10, colours and masks below touch
            # contiguous memory, and BLAS takes either layout at the same speed.
            buf = np.empty((min(n, CHUNK_ROWS), 2 * self.n_inputs), np.float32, order="F")
            for lo in starts[k::workers]:
                hi = min(n, lo + CHUNK_ROWS)
                self._predict_chunk(x[lo:hi], buf[: hi - lo], out, lo, hi)

        # BLAS is single-threaded on every path, one thread or many: a multi-threaded
        # OpenBLAS may split a product differently and change the last bit of a few
        # values (seen: 77 of 30,000 differed by 1 ulp on an AMD EPYC), and a star's
        # prediction must not depend on the thread count.  Chunks are the same rows
        # whatever the thread count, so each thread computes exactly what one thread
        # would.  With one chunk per thread at a time, NumPy releases the GIL in its
        # loops, so the element-wise work (a third of the time) runs on every core
        # too, and BLAS threads do not fight the workers for the cores.
        with self._blas_limit():
            if workers <= 1:
                work(0)
                return out
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(work, range(workers)))
        return out

    def _blas_limit(self):
        """Context: BLAS limited to one thread (a no-op without threadpoolctl)."""
        import contextlib

        if self._blas is None:
            try:
                from threadpoolctl import ThreadpoolController

                self._blas = ThreadpoolController()
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                self._blas = False
        return self._blas.limit(limits=1, user_api="blas") if self._blas else contextlib.nullcontext()

    def _first_layer(self, finite):
        """First-layer weights for a chunk whose is-finite matrix is ``finite``: (weight, bias, flag columns).

        Inputs go missing together (a SkyMapper band takes its absolute magnitudes,
        error and colours with it; GSP-Phot its six columns), so within a chunk
        many flag columns are identical, and some are 1 everywhere.  Identical
        columns f share one column with the sum of their weight rows
        (``f Wi + f Wj = f (Wi + Wj)``) and a column of ones moves into the bias:
        the same result with about a third fewer first-layer products.  The
        merged weights are cached per pattern.
        """
        ni = self.n_inputs
        groups = {}
        for j in range(ni):
            groups.setdefault(finite[:, j].tobytes(), []).append(j)
        key = []
        for cols in groups.values():
            column = finite[:, cols[0]]
            key.append((tuple(cols), 1 if column.all() else 0 if not column.any() else 2))
        key = tuple(key)
        cached = self._first_layers.get(key)
        if cached is None:
            flag_weight = self.first_weight[ni:].astype(np.float64)
            bias = self.first_bias.astype(np.float64)
            rows, flag_columns = [], []
            for cols, kind in key:
                merged = flag_weight[list(cols)].sum(axis=0)
                if kind == 1:  # finite in every row: a constant
                    bias += merged
                elif kind == 2:
                    rows.append(merged)
                    flag_columns.append(cols[0])
            # (no varying flag column at all, e.g. a chunk of one star: an empty block of rows)
            rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), flag_weight.shape[1])
            weight = np.concatenate([self.first_weight[:ni], rows.astype(np.float32)], axis=0)
            cached = (np.ascontiguousarray(weight), bias.astype(np.float32), np.asarray(flag_columns, dtype=np.intp))
            if len(self._first_layers) < 256:
                self._first_layers[key] = cached
        return cached

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
        weight, bias, flag_columns = self._first_layer(finite)
        width = ni + len(flag_columns)
        inp[:, ni:width] = finite[:, flag_columns]
        h = inp[:, :width] @ weight
        h += bias
        np.maximum(h, 0.0, out=h)
        for p, model, members in self.plan:
            heads = []
            for cols, net in members:
                a = h[:, cols]
                for w, b in net.hidden:
                    a = a @ w
                    a += b
                    np.maximum(a, 0.0, out=a)
                head = a @ net.head_weight
                head += net.head_bias
                heads.append(head)
            value, error = out[p]
            if len(heads) == 1:
                mu, log_sigma = heads[0][:, 0], np.clip(heads[0][:, 1], *self.log_sigma_range)
                np.exp(log_sigma, out=error[lo:hi])
            else:
                # the mixture of the members' Gaussians (stellardb.mlp.TargetScaling)
                mus = np.stack([hd[:, 0] for hd in heads], axis=1)
                log_sigmas = np.clip(np.stack([hd[:, 1] for hd in heads], axis=1), *self.log_sigma_range)
                mu = mus.mean(axis=1)
                variance = np.exp(2.0 * log_sigmas).mean(axis=1)
                variance += np.square(mus - mu[:, None]).mean(axis=1)
                np.sqrt(variance, out=error[lo:hi])
            np.multiply(mu, model.target_scale, out=value[lo:hi])
            value[lo:hi] += model.target_mean
            error[lo:hi] *= model.target_scale * model.error_factor


# ---------------------------------------------------------------- extrapolation flags


class RangeFlags:
    """Flags for predictions and inputs outside the training data (card.json ``training_ranges``).

    * ``{parameter}_outside_training``: the prediction is below the smallest or
      above the largest label of the training split;
    * ``inputs_outside_training``: the number of network inputs (features in the
      units the network sees, then colours) whose finite value lies outside the
      training split's range; missing inputs do not count.

    Parameters
    ----------
    ranges : dict
        ``card["training_ranges"]`` (``labels``: parameter -> [min, max];
        ``inputs``: input name -> [min, max], in network-input order).
    features : sequence of str
        The model's raw input columns.
    """

    def __init__(self, ranges: dict, features):
        from .features import colour_pairs_for, input_names, log_mask_for

        self.features = list(features)
        self.log_mask = log_mask_for(self.features)
        self.colour_pairs = colour_pairs_for(self.features)
        names = input_names(self.features)
        inputs = ranges["inputs"]
        if list(inputs) != names:
            raise ValueError(f"training_ranges.inputs names {list(inputs)[:3]}... do not match the model's inputs")
        lo = [(r[0] if r is not None else np.inf) for r in inputs.values()]
        hi = [(r[1] if r is not None else -np.inf) for r in inputs.values()]
        # an input never seen finite in training: any finite value is outside
        self.input_min = np.asarray(lo, dtype=np.float64)
        self.input_max = np.asarray(hi, dtype=np.float64)
        labels = ranges["labels"]
        if set(labels) != set(PARAMETERS):
            raise ValueError(f"training_ranges.labels has {sorted(labels)}, not {list(PARAMETERS)}")
        if any(r is not None and len(r) != 2 for r in labels.values()) or any(
                r is not None and len(r) != 2 for r in inputs.values()):
            raise ValueError("a training range is not a [min, max] pair")
        self.label_range = {p: (tuple(float(v) for v in r) if r is not None else (np.inf, -np.inf)) for p, r in labels.items()}

    @classmethod
    def from_card(cls, card: dict):
        """The flags of a model, or None for a card written before ``training_ranges`` existed."""
        ranges = card.get("training_ranges")
        if not ranges:
            return None
        return cls(ranges, card["features"])

    def inputs_outside(self, x: np.ndarray) -> np.ndarray:
        """Per row of raw inputs ``x``: how many network inputs lie outside the training range (int16).

        Computed in float32 column by column, as training computed the ranges
        (log10, then colours), so a training star at a bound is inside.
        """
        x = np.asarray(x, dtype=np.float32)
        count = np.zeros(x.shape[0], np.int16)
        lo, hi = self.input_min.astype(np.float32), self.input_max.astype(np.float32)
        columns = []
        with np.errstate(divide="ignore", invalid="ignore"):
            for j in range(x.shape[1]):
                column = x[:, j]
                if self.log_mask[j]:
                    column = np.log10(np.where(column > 0, column, np.nan))
                # +-inf is missing for the network, as NaN is; NaN compares False
                column = np.where(np.isinf(column), np.nan, column)
                columns.append(column)
                count += (column < lo[j]) | (column > hi[j])
            for c, (i, j, k) in enumerate(self.colour_pairs):
                colour = columns[i] - columns[j] if k == 1.0 else columns[i] - k * columns[j]
                count += (colour < lo[len(columns) + c]) | (colour > hi[len(columns) + c])
        return count

    def outside_label_range(self, parameter: str, value: np.ndarray) -> np.ndarray:
        """Whether each prediction of ``parameter`` lies outside the training labels' range."""
        lo, hi = self.label_range[parameter]
        value = np.asarray(value, dtype=np.float64)
        return (value < lo) | (value > hi)


# ---------------------------------------------------------------- model folders

#: The exported scorer beside the .keras files: ``score`` needs neither Keras nor TensorFlow.
SCORER_FILE = "scorer.npz"
MODELS_ENVVAR = "STELLARDB_MODELS"


def models_root(models_dir=None, db=None) -> Path:
    """The models directory, absolute: ``models_dir``, else ``$STELLARDB_MODELS``, else
    ``models/`` beside the database file ``db`` (else beside the current directory).

    Models belong to the database whose labels trained them and whose predictions
    they made, so they live beside it, not wherever a command happened to run.
    """
    if models_dir is None:
        models_dir = os.environ.get(MODELS_ENVVAR)
    if models_dir is None:
        base = Path(db).parent if db is not None and str(db) != ":memory:" else Path(".")
        models_dir = base / "models"
    return Path(os.path.abspath(models_dir))


def available_models(root: Path) -> list[str]:
    """Names of the model folders under ``root`` that hold a card.json."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "card.json").is_file())


def save_folded(path: Path, folded: dict) -> str:
    """Write ``{parameter: FoldedMLP}`` as one ``.npz`` of float32 arrays (no pickles); returns its sha256."""
    import hashlib

    arrays = {}
    meta = {}
    for p, m in folded.items():
        meta[p] = {"members": len(m.members), "hidden": [len(net.hidden) for net in m.members],
                   "target_mean": float(m.target_mean), "target_scale": float(m.target_scale),
                   "error_factor": float(m.error_factor), "log_mask": [bool(v) for v in m.log_mask],
                   "colour_pairs": [[int(q[0]), int(q[1]), float(q[2]) if len(q) > 2 else 1.0] for q in m.colour_pairs]}
        for k, net in enumerate(m.members):
            key = f"{p}.{k}"
            arrays[f"{key}.first_weight"], arrays[f"{key}.first_bias"] = net.first_weight, net.first_bias
            arrays[f"{key}.head_weight"], arrays[f"{key}.head_bias"] = net.head_weight, net.head_bias
            for i, (w, b) in enumerate(net.hidden):
                arrays[f"{key}.hidden{i}.weight"], arrays[f"{key}.hidden{i}.bias"] = w, b
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_folded(path: Path) -> dict:
    """Read :func:`save_folded`'s file back into ``{parameter: FoldedMLP}``."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        out = {}
        for p, m in meta.items():
            members = []
            for k in range(m["members"]):
                key = f"{p}.{k}"
                members.append(FoldedNet(
                    first_weight=z[f"{key}.first_weight"], first_bias=z[f"{key}.first_bias"],
                    hidden=[(z[f"{key}.hidden{i}.weight"], z[f"{key}.hidden{i}.bias"]) for i in range(m["hidden"][k])],
                    head_weight=z[f"{key}.head_weight"], head_bias=z[f"{key}.head_bias"]))
            out[p] = FoldedMLP(members=members, target_mean=m["target_mean"], target_scale=m["target_scale"],
                               error_factor=m["error_factor"], log_mask=m["log_mask"], colour_pairs=m["colour_pairs"])
    return out


#: A model name is one folder name: letters, digits, ".", "_", "-", starting with a letter or
#: digit; no path (``./demo``, ``demo/``, ``../x/demo``), no newline (checked with fullmatch).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_model_name(name) -> str:
    """``name`` if it is a valid model name (for train and score alike), else a one-line UserError."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise UserError(f"Model name {name!r} is not allowed: use up to 64 letters, digits, '.', '_' or '-', starting "
                        "with a letter or digit (a name, not a path: models live in the models directory).")
    return name


def read_card(name: str, models_dir=None, db=None) -> tuple[Path, dict]:
    """The folder of model ``name`` and its validated card.json.

    Raises
    ------
    UserError
        Unknown name, or a card that is missing, corrupt or for other parameters.
    """
    root = models_root(models_dir, db)
    folder = root / check_model_name(name)
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
    return folder, card


def load_scorer(name: str, models_dir=None, db=None) -> tuple[dict, dict]:
    """Model ``name``'s card and its exported networks ``{parameter: FoldedMLP}``, without Keras.

    ``train`` writes :data:`SCORER_FILE` beside the ``.keras`` files and its sha256
    into card.json.  A folder from before that file existed is folded from its
    ``.keras`` files, which needs Keras.
    """
    folder, card = read_card(name, models_dir, db)
    path = folder / SCORER_FILE
    retrain = f"retrain with `stellardb train --name {name}`"
    if not path.is_file():
        if card.get("scorer_sha256"):
            raise UserError(f"{path} is missing; {retrain}.")
        from .errors import require_ml

        require_ml(f"Model {name} was trained before {SCORER_FILE} existed; reading its .keras files",
                   modules=("keras",))
        _, models = load_model_folder(name, models_dir, db)
        return card, {p: fold_model(models[p]) for p in card["parameters"]}
    import hashlib

    if card.get("scorer_sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != card["scorer_sha256"]:
        raise UserError(f"{path} does not match its card.json (sha256 differs): the folder was changed after training; {retrain}.")
    try:
        folded = load_folded(path)
        if sorted(folded) != sorted(PARAMETERS):
            raise ValueError(f"holds {sorted(folded)}")
        width = {m.n_inputs - len(m.colour_pairs) for m in folded.values()}
        if width != {len(card["features"])}:
            raise ValueError("its inputs do not match card.json's features")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise UserError(f"{path} is corrupt or not a stellardb scorer ({reason}); {retrain}.") from None
    return card, folded


def load_model_folder(name: str, models_dir=None, db=None):
    """Read ``models/NAME``: its card and the three Keras models (needs Keras).

    Returns
    -------
    (dict, dict)
        The card and ``{parameter: keras.Model}``.

    Raises
    ------
    UserError
        Unknown name, or a missing or corrupt card or model file.
    """
    folder, card = read_card(name, models_dir, db)
    features = list(card["features"])
    import keras

    from . import mlp  # noqa: F401  registers the custom layers with Keras

    models = {}
    for p in card["parameters"]:
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
    # stars whose prediction lies outside the training labels' range, per parameter, and
    # stars with at least one input outside the training range ("inputs"); None without ranges
    outside_training: dict | None = None


def run(db, model: str = "default", models_dir=None, batch_rows: int = BATCH_ROWS, progress: bool = True) -> ScoreSummary:
    """Predict Teff, log g and [Fe/H] for every row of ``scoring_set`` and store them.

    Parameters
    ----------
    db : path
        DuckDB database (see :func:`stellardb.train.connect_db`).
    model : str
        Folder name under the models directory.
    models_dir : path or None
        Models directory; default $STELLARDB_MODELS, else models/ beside the database file.
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
    card, folded = load_scorer(model, models_dir, db)
    features = list(card["features"])
    con = connect_db(db)
    try:
        from .doctor import check_recorded

        check_recorded(con, model, models_root(models_dir, db) / model)
        db_features = database_features(con)
        if set(db_features) != set(features):
            missing = sorted(set(features) - set(db_features))
            extra = sorted(set(db_features) - set(features))
            raise UserError(
                f'Model "{model}" was trained on features that do not match the database '
                f"(missing in the database: {', '.join(missing) or 'none'}; not in the model: {', '.join(extra) or 'none'}); "
                f"retrain it with `stellardb train --name {model}`."
            )
        scorer = NumpyScorer(folded)
        try:
            flags = RangeFlags.from_card(card)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{models_root(models_dir, db) / model / 'card.json'} has unreadable training_ranges ({exc.__class__.__name__}); "
                            f"retrain with `stellardb train --name {model}`.") from None
        total = con.execute("select count(*) from scoring_set").fetchone()[0]
        if total == 0:
            from .db import why_not_scored_summary

            raise UserError(f"No star passes the feature cuts, so there is nothing to score ("
                            f"{why_not_scored_summary(con)}); `stellardb query \"select * from why_not_scored\"` "
                            "gives the reason per star.")
        scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        from .versions import library_versions

        versions = library_versions()  # for model_runs; read before the timed loop (0.1 s, metadata scan)
        columns = ", ".join(quote_identifier(f) for f in features)
        t0 = time.perf_counter()
        reader = con.cursor()
        writer = con.cursor()
        done = 0
        flagged = np.zeros(len(PARAMETERS) + 1, np.int64)  # per parameter outside the label range, then any input outside
        writer.execute("begin transaction")
        try:
            writer.execute("delete from predictions where model = $model", {"model": model})
            stream = reader.sql(f"select source_id, {columns} from scoring_set").to_arrow_reader(batch_rows)
            with progress_bar(f"scoring with {model}", total=total, disable=not progress) as advance:
                for batch in stream:
                    flagged += _write_batch(writer, batch, features, scorer, model, scored_at, flags)
                    done += batch.num_rows
                    advance(done, total)
            _record_run(writer, "score", model, scored_at, done, models_root(models_dir, db) / model, card, versions)
            writer.execute("commit")
        except BaseException as exc:
            # KeyboardInterrupt included: the previous predictions stay as they were
            # (unless it came just after the commit: then the new ones are all there)
            from .db import undo_or_report

            undo_or_report(writer, exc, f"scoring with model {model} ({done:,} stars)")
            raise
        finally:
            reader.close()
        seconds = time.perf_counter() - t0
        writer.close()
    finally:
        con.close()
    outside = None if flags is None else {p: int(flagged[i]) for i, p in enumerate(PARAMETERS)} | {"inputs": int(flagged[-1])}
    return ScoreSummary(model=model, rows=done, seconds=seconds, scored_at=scored_at, outside_training=outside)


def _record_run(con, command: str, model: str, at, stars: int, folder: Path, card: dict, versions: dict) -> None:
    """One row of ``model_runs``: the versions that ran this command and those that trained the model."""
    import hashlib

    con.execute(
        "insert into model_runs values ($command, $model, $at, $stars, $sha, $versions, $trained_with)",
        {"command": command, "model": model, "at": at, "stars": int(stars),
         "sha": hashlib.sha256((folder / "card.json").read_bytes()).hexdigest(),
         "versions": json.dumps(versions),
         "trained_with": json.dumps(card.get("versions")) if card.get("versions") else None},
    )


def batch_to_matrix(batch, features) -> np.ndarray:
    """Arrow batch -> float32 matrix (n, len(features)); NULL becomes NaN."""
    from .arrow import to_float64

    x = np.empty((batch.num_rows, len(features)), np.float32)
    for j, name in enumerate(features):
        x[:, j] = to_float64(batch.column(name))
    return x


def _write_batch(writer, batch, features, scorer, model, scored_at, flags=None) -> np.ndarray:
    """Score one Arrow batch and insert it; returns the flag counts (see ``run``)."""
    import pyarrow as pa

    from .arrow import to_arrow

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
