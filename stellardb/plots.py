"""PNG plots of a trained model's test-split performance (matplotlib, Agg backend).

* ``<param>_density.png``: predicted vs reference density scatter, ML and GSP-Phot
  side by side on the same stars and the same axes;
* ``<param>_residuals.png``: histograms of predicted - reference for both, log y axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import LABELS, residual_stats
from .features import GSPPHOT, PARAMETERS


def _comparison_sample(data, predictions, features, parameter):
    test = data.split == "test"
    ref = data.labels[parameter]
    gsp = data.x[:, list(features).index(GSPPHOT[parameter])].astype(np.float64)
    ml = predictions[parameter][0].astype(np.float64)
    both = test & np.isfinite(ref) & np.isfinite(gsp) & np.isfinite(ml)
    return ref[both], ml[both], gsp[both]


def write_plots(folder, data, predictions, features) -> list[Path]:
    """Write the density and residual plots for every parameter into ``folder``.

    Parameters
    ----------
    folder : path
        Created if absent.
    data : stellardb.train.LabelledData
        Labelled stars with their split.
    predictions : dict
        ``{parameter: (value, error)}`` for every row of ``data``.
    features : sequence of str
        Column order of ``data.x``.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for p in PARAMETERS:
        ref, ml, gsp = _comparison_sample(data, predictions, features, p)
        if ref.size == 0:
            continue
        lo, hi = np.percentile(np.concatenate([ref, ml, gsp]), [0.5, 99.5])
        pad = 0.05 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True, constrained_layout=True)
        for ax, pred, title in ((axes[0], ml, "ML (stellardb)"), (axes[1], gsp, "Gaia GSP-Phot")):
            s = residual_stats(pred, ref)
            bins = np.linspace(lo, hi, 80)
            image = ax.hist2d(ref, pred, bins=[bins, bins], norm=LogNorm(), cmap="viridis", cmin=1)[3]
            ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
            ax.set_title(f"{title}: MAD {s['mad']:.3g}, RMSE {s['rmse']:.3g} (n={s['n']:,})")
            ax.set_xlabel(f"reference {LABELS[p]}")
            ax.set_aspect("equal")
        axes[0].set_ylabel(f"predicted {LABELS[p]}")
        fig.colorbar(image, ax=axes, label="stars per bin")
        path = folder / f"{p}_density.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

        r_ml, r_gsp = ml - ref, gsp - ref
        span = np.percentile(np.abs(np.concatenate([r_ml, r_gsp])), 99.5) or 1.0
        bins = np.linspace(-span, span, 81)
        fig, ax = plt.subplots(figsize=(6.5, 4.4), constrained_layout=True)
        ax.hist(r_ml, bins=bins, histtype="step", lw=1.5, label=f"ML: MAD {residual_stats(ml, ref)['mad']:.3g}")
        ax.hist(r_gsp, bins=bins, histtype="step", lw=1.5, label=f"GSP-Phot: MAD {residual_stats(gsp, ref)['mad']:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel(f"predicted - reference {LABELS[p]}")
        ax.set_ylabel("stars")
        ax.set_title(f"{LABELS[p]} residuals, test split (n={ref.size:,})")
        ax.legend()
        path = folder / f"{p}_residuals.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
