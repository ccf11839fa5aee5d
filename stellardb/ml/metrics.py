"""Residual statistics and the seed's comparison table.

Definitions (docs/catalogues.md): residual ``r = predicted - reference``; ``sigma`` is
the standard deviation of r; ``MAD = median(|r - median(r)|)`` (unscaled); we also
report ``1.4826 * MAD`` (the Gaussian-equivalent sigma) and the RMSE.  The error
calibration is the fraction of stars with ``|r| < error``; a well-calibrated
1-sigma error gives about 0.683.
"""

from __future__ import annotations

import numpy as np


STAT_NAMES = ("n", "mean", "median", "sigma", "mad", "mad_scaled", "rmse", "calibration_68")
GAUSS_MAD = 1.4826
ONE_SIGMA_FRACTION = 0.6827

LABELS = {"teff": "Teff (K)", "logg": "log g (dex)", "feh": "[Fe/H] (dex)"}


def residual_stats(predicted, reference, error=None) -> dict:
    """Statistics of ``predicted - reference`` over the stars where both are finite.

    Parameters
    ----------
    predicted, reference : array-like
        Same units (K or dex).
    error : array-like or None
        Per-star 1-sigma error of ``predicted``; gives ``calibration_68``.

    Returns
    -------
    dict
        ``n, mean, median, sigma, mad, mad_scaled, rmse, calibration_68`` (None
        where undefined).
    """
    predicted = np.asarray(predicted, dtype=float)
    reference = np.asarray(reference, dtype=float)
    ok = np.isfinite(predicted) & np.isfinite(reference)
    if error is not None:
        error = np.asarray(error, dtype=float)
        ok &= np.isfinite(error)
    r = predicted[ok] - reference[ok]
    if r.size == 0:
        return {name: (0 if name == "n" else None) for name in STAT_NAMES}
    median = float(np.median(r))
    mad = float(np.median(np.abs(r - median)))
    return {
        "n": int(r.size),
        "mean": float(np.mean(r)),
        "median": median,
        "sigma": float(np.std(r)),
        "mad": mad,
        "mad_scaled": GAUSS_MAD * mad,
        "rmse": float(np.sqrt(np.mean(r * r))),
        "calibration_68": None if error is None else float(np.mean(np.abs(r) < error[ok])),
    }


def calibration_factor(predicted, reference, error) -> float:
    """Factor k such that ``|r| < k * error`` for 68.27 per cent of the stars.

    Fitted on the validation split, it corrects a sigma head that is over- or
    under-confident on average (a one-parameter recalibration, Kuleshov et al. 2018).
    """
    predicted, reference, error = (np.asarray(a, dtype=float) for a in (predicted, reference, error))
    ok = np.isfinite(predicted) & np.isfinite(reference) & np.isfinite(error) & (error > 0)
    if not ok.any():
        return 1.0
    return float(np.quantile(np.abs(predicted[ok] - reference[ok]) / error[ok], ONE_SIGMA_FRACTION))
