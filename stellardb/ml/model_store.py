"""Model folders: names, the card, the exported scorer, atomic saving and loading.

A model is a folder ``models/NAME/`` beside the database (or under $STELLARDB_MODELS):
``{teff,logg,feh}.keras``, ``scorer.npz`` (the networks as arrays, what ``score``
reads), ``card.json`` (features, scaling, split, seed, data fingerprint, versions,
metrics) and ``plots/``.  ``train`` and ``score`` both name models through
:func:`check_model_name`; ``train`` writes a folder with :func:`save_atomically`, so a
reader sees the old model or the new one, never half of one.  Keras is imported only
by :func:`fold_model` and :func:`load_model_folder`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from stellardb import config
from stellardb.errors import UserError
from stellardb.ml.features import PARAMETERS
from stellardb.ml.scorer import FoldedMLP, FoldedNet


#: The exported scorer beside the .keras files: ``score`` needs neither Keras nor TensorFlow.
SCORER_FILE = "scorer.npz"


def models_root(models_dir=None, db=None) -> Path:
    """The models directory, absolute: ``models_dir``, else ``$STELLARDB_MODELS``, else
    ``models/`` beside the database file ``db`` (else beside the current directory).

    Models belong to the database whose labels trained them and whose predictions
    they made, so they live beside it, not wherever a command happened to run.
    """
    models_dir = config.get("models", models_dir)
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
        raise UserError(f"{folder / 'card.json'} is corrupt ({exc.__class__.__name__}); retrain with `stellardb train --model {name}`.") from None
    if parameters != list(PARAMETERS):
        raise UserError(
            f"{folder / 'card.json'} lists parameters {parameters}, but stellardb predicts {list(PARAMETERS)}; "
            f"retrain with `stellardb train --model {name}`."
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
    retrain = f"retrain with `stellardb train --model {name}`"
    if not path.is_file():
        if card.get("scorer_sha256"):
            raise UserError(f"{path} is missing; {retrain}.")
        from stellardb.errors import require_ml

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

    from stellardb.ml import mlp  # noqa: F401  registers the custom layers with Keras

    models = {}
    for p in card["parameters"]:
        path = folder / f"{p}.keras"
        if not path.is_file():
            raise UserError(f"{path} is missing; retrain with `stellardb train --model {name}`.")
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
            raise UserError(f"{path} is corrupt or not a stellardb model ({reason}); retrain with `stellardb train --model {name}`.") from None
        models[p] = model
    return card, models


def save_atomically(root: Path, name: str, models: dict, card: dict, data, predictions, plots: bool, folded: dict,
                     g_mag=None):
    """Write the folder under a temporary name and move it into place only when complete.

    Returns (folder, previous): ``previous`` is a temporary folder holding the model
    this one replaced (None if there was none); the caller deletes it once the
    database tables are written too, or moves it back if they could not be.
    """
    root.mkdir(parents=True, exist_ok=True)
    # the PID in the name: `stellardb doctor` leaves the folders of a train that is still running alone
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=root))
    old = None
    try:
        for p, model in models.items():
            model.save(tmp / f"{p}.keras")
        # the networks as plain arrays: `score` reads them without Keras
        card["scorer_file"] = SCORER_FILE
        card["scorer_sha256"] = save_folded(tmp / SCORER_FILE, folded)
        (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        if plots:
            from stellardb.ml.plots import write_plots

            write_plots(tmp / "plots", data, predictions, card["features"], g_mag=g_mag)
        final = root / name
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=root))
            os.replace(final, old / name)
        os.replace(tmp, final)
    except BaseException:
        if old is not None and not (root / name).exists():
            os.replace(old / name, root / name)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, old


def record_run(con, command: str, model: str, at, stars: int, folder: Path, card: dict, versions: dict) -> None:
    """One row of ``model_runs``: the versions that ran this command and those that trained the model."""
    import hashlib

    con.execute(
        "insert into model_runs values ($command, $model, $at, $stars, $sha, $versions, $trained_with)",
        {"command": command, "model": model, "at": at, "stars": int(stars),
         "sha": hashlib.sha256((folder / "card.json").read_bytes()).hexdigest(),
         "versions": json.dumps(versions),
         "trained_with": json.dumps(card.get("versions")) if card.get("versions") else None},
    )


# ---------------------------------------------------------------- exporting trained networks


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
        raise ValueError(f"model has no {prefix}dense_0 layer; was it built by stellardb.ml.mlp.build_mlp?")
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
    """Export a :func:`stellardb.ml.mlp.build_mlp` model (one network or an ensemble) to :class:`FoldedMLP`.

    Dense (no bias) followed by BatchNormalization is ``x @ (W * k) + (beta - mu * k)``
    with ``k = gamma / sqrt(var + eps)``.  The input scaling folds into the first
    layer: with ``x0 = x`` where finite else 0 and ``f = isfinite(x)``, the
    standardised input is ``x0 / s - f * m / s`` and the missing flag is ``1 - f``,
    so the first layer is ``[x0, f] @ [Wz / s; -(m / s) Wz - Wf] + (b + sum(Wf))``.
    Dropout is the identity at inference.  Each ensemble member is folded the same way.
    """
    from stellardb.ml.mlp import ensemble_members, member_prefix

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


def read_family_card(name: str, models_dir=None, db=None) -> tuple[Path, dict] | None:
    """The path and card of model family ``name`` (``NAME.family.json``, :mod:`stellardb.ml.selection`), with
    each member's card under ``member_cards``; None when ``name`` is no family."""
    from stellardb.ml.selection import family_path, read_family

    root = models_root(models_dir, db)
    family = read_family(root, check_model_name(name))
    if family is None:
        return None
    members = {}
    for m in family["members"]:
        try:
            members[m["feature_set"]] = read_card(m["model"], models_dir, db)[1]
        except UserError:
            continue  # a member folder removed by hand: the family card still says what it was
    return family_path(root, name), {**family, "member_cards": members}
