"""The feature contract: the model inputs, their units and transforms, and the predicted parameters.

Everything here is plain Python and NumPy, so the scorer, the metrics, the plots
and any web process can use the contract without importing Keras or TensorFlow
(only :mod:`stellardb.ml.mlp` and :mod:`stellardb.ml.train` do).
"""

from __future__ import annotations

import numpy as np

from stellardb.errors import UserError

# The seed's 27 real inputs, in this order.  `train` and `score` check them against
# the columns of the `features` view, and every model records them in card.json.
FEATURES = (
    "r_med_geo",
    "phot_bp_mean_mag",
    "phot_rp_mean_mag",
    "uabs",
    "vabs",
    "gabs",
    "rabs",
    "iabs",
    "zabs",
    "uabs_nored",
    "vabs_nored",
    "gabs_nored",
    "rabs_nored",
    "iabs_nored",
    "zabs_nored",
    "e_u_psf",
    "e_v_psf",
    "e_g_psf",
    "e_r_psf",
    "e_i_psf",
    "e_z_psf",
    "teff_gspphot",
    "logg_gspphot",
    "mh_gspphot",
    "teff_gspphot_err",
    "logg_gspphot_err",
    "mh_gspphot_err",
)

# Strictly positive inputs with long tails (distance, photometric and GSP-Phot
# errors; e_u_psf spans 0.01-1.8 mag): the network sees their log10, so a few faint
# stars do not squeeze everyone else into a sliver of the standardised range.
# A non-positive value counts as missing.
LOG_FEATURES = (
    "r_med_geo",
    "e_u_psf",
    "e_v_psf",
    "e_g_psf",
    "e_r_psf",
    "e_i_psf",
    "e_z_psf",
    "teff_gspphot_err",
    "logg_gspphot_err",
    "mh_gspphot_err",
    # the other feature sets' error columns (stellardb.ml.feature_sets)
    "phot_g_mean_mag_error",
    "phot_bp_mean_mag_error",
    "phot_rp_mean_mag_error",
    "j_msigcom",
    "h_msigcom",
    "k_msigcom",
    *(f"w{k}sigmpro" for k in range(1, 5)),
    *(f"{b}MeanPSFMagErr" for b in "grizy"),
    *(f"psfMagErr_{b}" for b in "ugriz"),
)

# Colours the network gets as extra inputs (each with its own missing flag): linear in
# the magnitudes, but given explicitly they lower the test MAD; reddened and
# de-reddened both, as the seed kept both magnitudes (docs/decisions.md).
COLOURS = (
    ("phot_bp_mean_mag", "phot_rp_mean_mag"),
    ("uabs", "vabs"),
    ("vabs", "gabs"),
    ("gabs", "rabs"),
    ("rabs", "iabs"),
    ("iabs", "zabs"),
    ("uabs_nored", "vabs_nored"),
    ("vabs_nored", "gabs_nored"),
    ("gabs_nored", "rabs_nored"),
    ("rabs_nored", "iabs_nored"),
    ("iabs_nored", "zabs_nored"),
    # the other feature sets (apparent magnitudes: a colour needs no distance)
    ("phot_g_mean_mag", "phot_rp_mean_mag"),
    ("phot_rp_mean_mag", "k_m"),
    ("j_m", "h_m"),
    ("h_m", "k_m"),
    ("k_m", "w1mpro"),
    ("w1mpro", "w2mpro"),
    ("w2mpro", "w3mpro"),
    ("phot_rp_mean_mag", "w1mpro"),
    ("gMeanPSFMag", "rMeanPSFMag"),
    ("rMeanPSFMag", "iMeanPSFMag"),
    ("iMeanPSFMag", "zMeanPSFMag"),
    ("zMeanPSFMag", "yMeanPSFMag"),
    ("psfMag_u", "psfMag_g"),
    ("psfMag_g", "psfMag_r"),
    ("psfMag_r", "psfMag_i"),
    ("psfMag_i", "psfMag_z"),
)
# An entry (a, b, k) would mean a - k * b.

# Target columns of `training_set`, with units, and the GSP-Phot column that is the
# baseline for each.
PARAMETERS = ("teff", "logg", "feh")
UNITS = {"teff": "K", "logg": "dex", "feh": "dex"}
GSPPHOT = {"teff": "teff_gspphot", "logg": "logg_gspphot", "feh": "mh_gspphot"}

# The predicted log sigma (standardised units) is clipped to this range, so one bad
# batch cannot drive exp() to 0 or infinity.  exp(-7) of a 1000 K spread is 1 K.
LOG_SIGMA_MIN = -7.0
LOG_SIGMA_MAX = 3.0


def log_mask_for(features) -> list[bool]:
    """Which of ``features`` enter the network as log10."""
    return [f in LOG_FEATURES for f in features]


def log_transform(x: np.ndarray, log_mask) -> np.ndarray:
    """NumPy twin of the layer's transform: log10 of the masked columns, NaN where not positive."""
    x = np.array(x, dtype=np.float64 if x.dtype == np.float64 else np.float32, copy=True)
    for j in np.flatnonzero(log_mask):
        col = x[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            x[:, j] = np.where(col > 0, np.log10(np.where(col > 0, col, 1.0)), np.nan)
    return x


def colour_pairs_for(features) -> list[list]:
    """``[i, j, k]`` of each :data:`COLOURS` entry in ``features`` (entries whose columns are absent are skipped)."""
    index = {f: i for i, f in enumerate(features)}
    return [[index[c[0]], index[c[1]], float(c[2]) if len(c) > 2 else 1.0] for c in COLOURS if c[0] in index and c[1] in index]


def colour_names(features) -> list[str]:
    """Readable names of the derived inputs of ``features``, e.g. ``"uabs - vabs"``."""
    out = []
    for c in COLOURS:
        if c[0] in features and c[1] in features:
            k = float(c[2]) if len(c) > 2 else 1.0
            second = f"log10({c[1]})" if c[1] in LOG_FEATURES else c[1]
            out.append(f"{c[0]} - {second}" if k == 1.0 else f"{c[0]} - {k:g} {second}")
    return out


def input_names(features) -> list[str]:
    """Names of the network inputs before the missing flags: ``features`` (``log10(name)`` for
    :data:`LOG_FEATURES`), then :func:`colour_names`; the columns of :func:`prepare_inputs`."""
    return [f"log10({f})" if f in LOG_FEATURES else f for f in features] + colour_names(features)


def prepare_inputs(x: np.ndarray, log_mask, colour_pairs) -> np.ndarray:
    """NumPy twin of the layer before standardising: log10 columns, then appended colours."""
    x = log_transform(x, log_mask)
    if colour_pairs:
        pairs = [(p[0], p[1], p[2] if len(p) > 2 else 1.0) for p in colour_pairs]
        x = np.concatenate([x, np.stack([x[:, i] - k * x[:, j] for i, j, k in pairs], axis=1)], axis=1)
    return x


# ---------------------------------------------------------------- the features view of the database


def database_features(con) -> list[str]:
    """Input columns of the ``features`` view: all but ``source_id`` and ``passes_feature_cuts``."""
    try:
        names = [d[0] for d in con.execute("select * from features limit 0").description]
    except Exception as exc:  # duckdb.CatalogException and friends
        raise UserError(f"The database has no usable `features` view ({str(exc).splitlines()[0]}); run `stellardb ingest` first.") from None
    return [n for n in names if n not in ("source_id", "passes_feature_cuts")]


def check_features(con, features) -> None:
    """Raise UserError unless the ``features`` view carries exactly ``features``."""
    have = database_features(con)
    if set(have) != set(features):
        missing = sorted(set(features) - set(have))
        extra = sorted(set(have) - set(features))
        raise UserError(
            "The features view does not match stellardb.ml.features.FEATURES "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'}); "
            "rebuild the views with this version of stellardb."
        )
