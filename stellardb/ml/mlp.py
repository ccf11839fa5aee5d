"""The per-parameter network: a Keras 3 MLP that takes raw feature columns.

One model per stellar parameter (Teff, log g, [Fe/H]), as in the seed work:
Dense layers, each followed by BatchNormalization, ReLU and Dropout 0.02.  The
scaling lives inside the model (CONTRIBUTING.md, "Models"), so a saved ``.keras`` file
maps the raw database columns straight to physical units:

* :class:`MissingAwareScaling` takes log10 of the long-tailed positive inputs
  (:data:`LOG_FEATURES`), appends colours (:data:`COLOURS`), standardises with the
  training-split mean and standard deviation, replaces missing (non-finite) values
  by 0 *after* standardising, and appends one is-missing flag per input ("real
  params are doubled": 27 features + 11 colours become 76 network inputs);
* the head is a Dense layer with two units in standardised target units: the
  prediction and the log of its 1-sigma uncertainty (a heteroscedastic output,
  Nix & Weigend 1994; Kendall & Gal 2017);
* :class:`TargetScaling` turns them into ``[value, error]`` in physical units,
  with the validation-split calibration factor of the error built in.

A model may hold a small deep ensemble (Lakshminarayanan, Pritzel & Blundell
2017): ``members`` copies of the hidden layers and head, each with its own
random initialisation and dropout, share the input scaling; their heads are
concatenated into one ``head`` layer and :class:`TargetScaling` combines them:
the value is the mean of the members' predictions and the error the standard
deviation of the equal-weight mixture of their Gaussians,
``sqrt(mean(sigma_k^2) + var(mu_k))`` (aleatoric plus the members' disagreement),
times the calibration factor.  With one member the model is exactly the
single network above.

Only ``keras.ops`` is used, so the model runs on any Keras 3 backend.  Importing
this module trains and loads nothing.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from stellardb.ml.features import FEATURES, LOG_SIGMA_MAX, LOG_SIGMA_MIN


@keras.saving.register_keras_serializable(package="stellardb")
class MissingAwareScaling(keras.layers.Layer):
    """Log-transform, standardise raw inputs, zero the missing ones, append is-missing flags.

    Parameters
    ----------
    mean, scale : sequence of float
        Per-feature mean and standard deviation of the training split (of the
        log10 for ``log_mask`` features).
    log_mask : sequence of bool or None
        Raw features that enter as log10 (non-positive values count as missing).
    colour_pairs : sequence of (int, int) or (int, int, float), or None
        Differences ``x[:, i] - k * x[:, j]`` (k = 1 if omitted) appended to the
        raw features (after the log10) before standardising; ``mean`` and
        ``scale`` cover them too.
    """

    def __init__(self, mean, scale, log_mask=None, colour_pairs=None, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.scale = [float(v) for v in scale]
        self.colour_pairs = [[int(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else 1.0] for p in (colour_pairs or [])]
        n_raw = len(self.mean) - len(self.colour_pairs)
        self.log_mask = [bool(v) for v in (log_mask if log_mask is not None else [False] * n_raw)]

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        mean = ops.convert_to_tensor(np.asarray(self.mean, dtype=self.compute_dtype))
        scale = ops.convert_to_tensor(np.asarray(self.scale, dtype=self.compute_dtype))
        if any(self.log_mask):
            log_mask = ops.convert_to_tensor(np.asarray(self.log_mask))
            positive = ops.where(x > 0, x, ops.ones_like(x))
            logged = ops.where(x > 0, ops.log(positive) / np.log(10.0), ops.full_like(x, np.nan))
            x = ops.where(log_mask, logged, x)
        if self.colour_pairs:
            colours = [x[:, i : i + 1] - k * x[:, j : j + 1] for i, j, k in self.colour_pairs]
            x = ops.concatenate([x, *colours], axis=-1)
        missing = ops.logical_not(ops.isfinite(x))
        # Fill before standardising so NaN never enters the arithmetic (its gradient
        # would be NaN even through the unselected branch of `where`).
        filled = ops.where(missing, mean, x)
        z = (filled - mean) / scale
        return ops.concatenate([z, ops.cast(missing, self.compute_dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * (input_shape[-1] + len(self.colour_pairs)))

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "scale": self.scale, "log_mask": self.log_mask,
                "colour_pairs": self.colour_pairs}


@keras.saving.register_keras_serializable(package="stellardb")
class TargetScaling(keras.layers.Layer):
    """``(mu, log_sigma)`` in standardised target units -> ``[value, error]`` in physical units.

    Parameters
    ----------
    mean, scale : float
        Mean and standard deviation of the target on the training split.
    error_factor : float
        Calibration of the error estimate: multiplies sigma so that about 68 per
        cent of validation stars have ``|residual| < error``.
    members : int
        Ensemble members: the input is ``(mu_0, log_sigma_0, mu_1, log_sigma_1, ...)``
        and the output the mean of the ``mu_k`` with the mixture standard deviation
        ``sqrt(mean(sigma_k^2) + mean((mu_k - mean(mu))^2))`` (see the module docstring).
    """

    def __init__(self, mean, scale, error_factor=1.0, members=1, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.scale = float(scale)
        self.error_factor = float(error_factor)
        self.members = int(members)
        if self.members < 1:
            raise ValueError(f"members must be at least 1, got {members}")

    def call(self, head):
        if self.members == 1:
            mu = head[:, 0:1]
            log_sigma = ops.clip(head[:, 1:2], LOG_SIGMA_MIN, LOG_SIGMA_MAX)
            value = mu * self.scale + self.mean
            error = ops.exp(log_sigma) * (self.scale * self.error_factor)
            return ops.concatenate([value, error], axis=-1)
        pairs = ops.reshape(head, (-1, self.members, 2))
        mu = pairs[:, :, 0]
        log_sigma = ops.clip(pairs[:, :, 1], LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        # In standardised units (values near 1), so float32 loses nothing to cancellation.
        mu_mean = ops.mean(mu, axis=1, keepdims=True)
        variance = ops.mean(ops.exp(2.0 * log_sigma), axis=1, keepdims=True) + ops.mean(
            ops.square(mu - mu_mean), axis=1, keepdims=True
        )
        value = mu_mean * self.scale + self.mean
        error = ops.sqrt(variance) * (self.scale * self.error_factor)
        return ops.concatenate([value, error], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "scale": self.scale, "error_factor": self.error_factor,
                "members": self.members}


def build_mlp(
    n_features: int = len(FEATURES),
    hidden_units=(64, 64),
    dropout: float = 0.02,
    feature_mean=None,
    feature_scale=None,
    target_mean: float = 0.0,
    target_scale: float = 1.0,
    name: str = "mlp",
    log_mask=None,
    colour_pairs=None,
    members: int = 1,
) -> keras.Model:
    """Build the inference model: raw features -> ``[value, error]`` (physical units).

    Parameters
    ----------
    n_features : int
        Number of raw inputs (27 for the seed's feature set).
    hidden_units : sequence of int
        Width of each hidden Dense layer.
    dropout : float
        Dropout rate after each hidden layer (the seed used 0.02).
    feature_mean, feature_scale : array-like of shape (n_features + len(colour_pairs),) or None
        Input standardisation (raw features, then colours); default 0 and 1.
    target_mean, target_scale : float
        Target standardisation; the head predicts ``(y - target_mean) / target_scale``.
    name : str
        Model name (the parameter, e.g. ``"teff"``).
    log_mask : sequence of bool or None
        Inputs that enter as log10 (see :data:`LOG_FEATURES`); default none.
    colour_pairs : sequence of (int, int[, float]) or None
        Input differences ``x_i - k x_j`` appended as extra inputs (see :data:`COLOURS`); default none.
    members : int
        Networks in the deep ensemble (default 1, a single network).  With more
        than one, member k's layers are named ``member{k}_dense_{i}``,
        ``member{k}_batchnorm_{i}``, ... ``member{k}_head``, and ``head`` is the
        concatenation of the members' heads.

    Returns
    -------
    keras.Model
        Output of shape (n, 2): column 0 the prediction, column 1 its 1-sigma error.
        :func:`training_head` gives the standardised-unit head used for the loss.
    """
    n_inputs = n_features + len(colour_pairs or [])
    mean = np.zeros(n_inputs) if feature_mean is None else np.asarray(feature_mean, dtype=float)
    scale = np.ones(n_inputs) if feature_scale is None else np.asarray(feature_scale, dtype=float)
    if mean.shape != (n_inputs,) or scale.shape != (n_inputs,):
        raise ValueError(f"feature_mean and feature_scale must have shape ({n_inputs},)")
    members = int(members)
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    inputs = keras.Input(shape=(n_features,), name="features")
    scaled = MissingAwareScaling(mean, scale, log_mask, colour_pairs, name="scaling")(inputs)
    heads = []
    for k in range(members):
        prefix = member_prefix(k, members)
        x = scaled
        for i, units in enumerate(hidden_units):
            # No bias: BatchNormalization's beta takes its place, and the scorer folds
            # the normalisation into this layer's weights.
            x = keras.layers.Dense(units, use_bias=False, name=f"{prefix}dense_{i}")(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}batchnorm_{i}")(x)
            x = keras.layers.Activation("relu", name=f"{prefix}relu_{i}")(x)
            x = keras.layers.Dropout(dropout, name=f"{prefix}dropout_{i}")(x)
        heads.append(keras.layers.Dense(2, name=f"{prefix}head")(x))
    head = heads[0] if members == 1 else keras.layers.Concatenate(name="head")(heads)
    outputs = TargetScaling(target_mean, target_scale, members=members, name="target_scaling")(head)
    return keras.Model(inputs, outputs, name=name)


def member_prefix(k: int, members: int) -> str:
    """Layer-name prefix of ensemble member ``k`` (empty for a single network)."""
    return "" if members == 1 else f"member{k}_"


def ensemble_members(model: keras.Model) -> int:
    """Number of ensemble members of a :func:`build_mlp` model (1 for files saved before ensembles)."""
    return int(getattr(model.get_layer("target_scaling"), "members", 1))


def member_model(model: keras.Model, k: int) -> keras.Model:
    """Member ``k`` of an ensemble as a single :func:`build_mlp` network (its own weights, ``error_factor`` 1).

    Its output ``[value_k, error_k]`` is the member's own prediction and sigma; the
    ensemble's output is their mixture (:class:`TargetScaling`) times the
    ensemble's ``error_factor``.
    """
    members = ensemble_members(model)
    if not 0 <= k < members:
        raise ValueError(f"member {k} does not exist: the model has {members}")
    prefix = member_prefix(k, members)
    names = {layer.name for layer in model.layers}
    units = []
    while f"{prefix}dense_{len(units)}" in names:
        units.append(model.get_layer(f"{prefix}dense_{len(units)}").units)
    scaling, target = model.get_layer("scaling"), model.get_layer("target_scaling")
    dropout = model.get_layer(f"{prefix}dropout_0").rate if units else 0.0
    single = build_mlp(
        model.input_shape[-1], units, dropout, scaling.mean, scaling.scale, target.mean, target.scale, name=model.name,
        log_mask=scaling.log_mask, colour_pairs=scaling.colour_pairs,
    )
    for i in range(len(units)):
        single.get_layer(f"dense_{i}").set_weights(model.get_layer(f"{prefix}dense_{i}").get_weights())
        single.get_layer(f"batchnorm_{i}").set_weights(model.get_layer(f"{prefix}batchnorm_{i}").get_weights())
    single.get_layer("head").set_weights(model.get_layer(f"{prefix}head").get_weights())
    return single


def training_head(model: keras.Model) -> keras.Model:
    """The same network up to the head (standardised units, shares weights with ``model``)."""
    return keras.Model(model.inputs, model.get_layer("head").output, name=f"{model.name}_head")


def heteroscedastic_loss(huber_delta: float = 0.3):
    """Loss on the head ``(mu, log_sigma)`` in standardised target units.

    The prediction is fitted with a Huber loss (robust to the outliers of
    reference catalogues; the report's headline metric is the MAD), and sigma by
    the Gaussian negative log-likelihood of the residual with the prediction held
    fixed (``stop_gradient``), so learning the error bar never pulls on the value.

    An ensemble head ``(mu_0, log_sigma_0, mu_1, ...)`` gets the sum of its
    members' losses: members share no weights, so each one's gradient is the one
    it would get if trained alone on the same batches.
    """

    def loss(y_true, head):
        members = head.shape[-1] // 2
        y = ops.reshape(ops.cast(y_true, head.dtype), (-1, 1))
        pairs = ops.reshape(head, (-1, members, 2))
        mu = pairs[:, :, 0]
        log_sigma = ops.clip(pairs[:, :, 1], LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        r = y - mu
        abs_r = ops.abs(r)
        huber = ops.where(abs_r <= huber_delta, 0.5 * r * r, huber_delta * (abs_r - 0.5 * huber_delta))
        r_fixed = y - ops.stop_gradient(mu)
        nll = log_sigma + 0.5 * ops.square(r_fixed / ops.exp(log_sigma))
        return ops.sum(huber + nll, axis=-1)

    return loss


def value_loss(huber_delta: float = 0.3):
    """Metric: the Huber loss of the prediction (of the members' mean for an ensemble); early stopping watches it."""

    def huber(y_true, head):
        members = head.shape[-1] // 2
        y = ops.reshape(ops.cast(y_true, head.dtype), (-1,))
        mu = ops.mean(ops.reshape(head, (-1, members, 2))[:, :, 0], axis=-1)
        abs_r = ops.abs(y - mu)
        return ops.where(abs_r <= huber_delta, 0.5 * abs_r * abs_r, huber_delta * (abs_r - 0.5 * huber_delta))

    return huber
