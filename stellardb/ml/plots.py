"""PNG plots of a trained model's test-split performance (matplotlib, Agg backend).

* ``<param>_density.png``: predicted vs reference, ML and GSP-Phot side by side on the
  same stars and the same axes: a 2-D histogram for large samples, the points
  themselves for small ones (SCATTER_MAX), where a histogram is mostly lone pixels;
* ``<param>_residuals.png``: histograms of predicted - reference for both, log y axis;
* ``calibration_vs_g.png`` (only when the G magnitudes are given): |predicted -
  reference| / predicted error against Gaia G for each parameter, with its median and
  68.27th percentile in bins of equal star counts.  For a calibrated 1-sigma error
  they are 0.674 and 1 at every magnitude; an error that is too small at the faint end
  shows as medians that rise with G.

Axis ranges run from the 0.5th to the 99.5th percentile of the values (padded by 5 %),
so that a few outliers do not squash the bulk of the stars into a corner; every panel
that leaves stars out says how many.  The
figure builders (``density_figure``, ``residuals_figure``, ``calibration_figure``)
return the figure and the numbers drawn, so that tests can check both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stellardb.ml.features import GSPPHOT, PARAMETERS, UNITS
from stellardb.ml.metrics import LABELS, ONE_SIGMA_FRACTION, residual_stats

#: Up to this many stars a panel shows the points; more become a 2-D histogram.
SCATTER_MAX = 3000
#: Percentiles of the values that bound the axes (the rest are counted, not drawn).
CLIP_PERCENTILES = (0.5, 99.5)
#: |r| / error axis of the calibration plot runs from 0 to this.
RATIO_MAX = 4.0
#: Stars per magnitude bin of the calibration plot (at least), and at most this many bins.
MIN_PER_BIN = 30
MAX_BINS = 12
#: Median and 68.27th percentile of |x| for x ~ N(0, 1): what a calibrated error gives.
CALIBRATED_MEDIAN = 0.6745
CALIBRATED_P68 = 1.0

NAMES = {"ml": "stellardb ML", "gspphot": "Gaia GSP-Phot"}


def draw_style(n: int) -> str:
    """``"scatter"`` for up to SCATTER_MAX stars, else ``"density"``."""
    return "scatter" if n <= SCATTER_MAX else "density"


def format_value(value, parameter: str) -> str:
    """A statistic in the parameter's units: whole kelvin, dex to 3 decimals."""
    if value is None:
        return "-"
    return f"{value:,.0f} K" if UNITS[parameter] == "K" else f"{value:.3f} dex"


def clip_range(*arrays, percentiles=CLIP_PERCENTILES, pad: float = 0.05) -> tuple[float, float]:
    """Axis limits: the given percentiles of all finite values together, widened by ``pad`` of the span."""
    values = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, percentiles)
    span = hi - lo or max(abs(hi), 1.0)  # all equal: still a visible range
    return float(lo - pad * span), float(hi + pad * span)


def count_outside(x, y, xlim, ylim) -> int:
    """Stars with x or y outside the closed ranges ``xlim``, ``ylim``."""
    x, y = np.asarray(x), np.asarray(y)
    inside = (x >= xlim[0]) & (x <= xlim[1]) & (y >= ylim[0]) & (y <= ylim[1])
    return int(np.count_nonzero(~inside))


def note_outside(ax, outside: int, n: int, where: str = "outside the axes", loc: str = "upper left"):
    """Write "k of n stars <where>, not shown" in a corner of ``ax``; nothing when k is 0.

    Returns the Text (or None), so that callers and tests can find it.
    """
    if not outside:
        return None
    x, ha = (0.02, "left") if "left" in loc else (0.98, "right")
    y, va = (0.98, "top") if "upper" in loc else (0.02, "bottom")
    return ax.text(x, y, f"{outside:,} of {n:,} stars {where}, not shown", transform=ax.transAxes, ha=ha, va=va,
                   fontsize=8.5, color="0.15", bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.6", "alpha": 0.9},
                   zorder=5)


def _plain_log_formatter():
    """Tick labels of a log axis of star counts as plain numbers (1, 10, 1,000), not 10^0."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")


def _count_colorbar(fig, mappable, ax):
    """Colour bar of stars per bin with plain numbers."""
    from matplotlib.ticker import LogFormatter

    bar = fig.colorbar(mappable, ax=ax, label="stars per bin")
    bar.ax.yaxis.set_major_formatter(_plain_log_formatter())
    # a colour bar from 1 to 5 has no second decade: label 2, 3, 5 as well
    bar.ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    return bar


def _point_size(n: int) -> float:
    """Marker area (points^2): large enough to see 50 stars, small enough that 3000 do not merge."""
    return float(np.clip(2000.0 / max(n, 1) ** 0.75, 3.0, 30.0))


def comparison_sample(data, predictions, features, parameter):
    """Test-split stars with a finite reference, ML prediction and GSP-Phot value: (ref, ml, gsp)."""
    test = data.split == "test"
    ref = data.labels[parameter]
    gsp = data.x[:, list(features).index(GSPPHOT[parameter])].astype(np.float64)
    ml = predictions[parameter][0].astype(np.float64)
    both = test & np.isfinite(ref) & np.isfinite(gsp) & np.isfinite(ml)
    return ref[both], ml[both], gsp[both]


def _emptier_corner(x, y, lo, hi) -> str:
    """"upper left" or "lower right" of a predicted-vs-reference panel, whichever holds fewer stars.

    Both lie far from the 1:1 line, so a note there covers only outliers; this picks
    the corner that hides fewer of them.
    """
    span = hi - lo
    wide, tall = lo + 0.55 * span, 0.12 * span  # the note's box, roughly
    upper_left = np.count_nonzero((x < wide) & (y > hi - tall))
    lower_right = np.count_nonzero((x > hi - 0.55 * span) & (y < lo + tall))
    return "upper left" if upper_left <= lower_right else "lower right"


def density_figure(parameter: str, ref, ml, gsp):
    """Predicted vs reference for ML (left) and GSP-Phot (right) on shared axes.

    Returns
    -------
    (Figure, dict)
        The dict holds ``style`` ("scatter" or "density"), ``n``, ``limits`` (the
        shared axis range) and ``outside`` ({"ml": k, "gspphot": k}: stars with the
        reference or the prediction outside it, announced in each panel).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    n = int(np.size(ref))
    style = draw_style(n)
    lo, hi = clip_range(ref, ml, gsp)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5.4), sharex=True, sharey=True, layout="constrained")
    fig.suptitle(f"{LABELS[parameter]}: predicted vs reference, test split, the same {n:,} stars")
    info = {"style": style, "n": n, "limits": (lo, hi), "outside": {}}
    bins = np.linspace(lo, hi, 81)
    counts = {key: np.histogram2d(ref, pred, bins=[bins, bins])[0] for key, pred in (("ml", ml), ("gspphot", gsp))}
    # one colour scale for both panels, so that equal colours mean equal numbers of stars
    norm = LogNorm(1, max(2.0, max(c.max() for c in counts.values())))
    image = None
    for ax, key, pred in ((axes[0], "ml", ml), (axes[1], "gspphot", gsp)):
        s = residual_stats(pred, ref)
        if style == "scatter":
            ax.scatter(ref, pred, s=_point_size(n), lw=0, alpha=0.7, color="C0", rasterized=True)
        else:
            image = ax.pcolormesh(bins, bins, np.ma.masked_less(counts[key].T, 1), norm=norm, cmap="viridis",
                                  rasterized=True)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
        # two lines: the name and the numbers would overflow one panel's width
        ax.set_title(f"{NAMES[key]}\nMAD {format_value(s['mad'], parameter)}, RMSE {format_value(s['rmse'], parameter)}",
                     fontsize=11)
        ax.set_xlabel(f"reference {LABELS[parameter]}")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        info["outside"][key] = count_outside(ref, pred, (lo, hi), (lo, hi))
        note_outside(ax, info["outside"][key], n, loc=_emptier_corner(ref, pred, lo, hi))
    axes[0].set_ylabel(f"predicted {LABELS[parameter]}")
    if image is not None:
        _count_colorbar(fig, image, axes)
    return fig, info


def residuals_figure(parameter: str, ref, ml, gsp):
    """Histograms of predicted - reference for ML and GSP-Phot, log y axis.

    Returns
    -------
    (Figure, dict)
        ``n``, ``span`` (the x axis is [-span, span]), ``bins`` (their number) and
        ``outside`` ({"ml": k, "gspphot": k}: residuals beyond ±span, announced).
    """
    import matplotlib.pyplot as plt

    n = int(np.size(ref))
    r_ml, r_gsp = ml - ref, gsp - ref
    both = np.abs(np.concatenate([r_ml, r_gsp]))
    span = float(np.percentile(both, CLIP_PERCENTILES[1])) if both.size else 1.0
    span = span or 1.0
    # about 2 sqrt(n) bins: 28 for 200 stars, 80 (the most) from 1,600 on
    nbins = int(np.clip(2 * np.sqrt(n), 10, 80))
    bins = np.linspace(-span, span, nbins + 1)
    fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")
    outside = {}
    for key, r, pred in (("ml", r_ml, ml), ("gspphot", r_gsp, gsp)):
        mad = format_value(residual_stats(pred, ref)["mad"], parameter)
        outside[key] = int(np.count_nonzero(np.abs(r) > span))
        ax.hist(r, bins=bins, histtype="step", lw=1.5, label=f"{NAMES[key]}: MAD {mad}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain_log_formatter())
    ax.set_xlim(-span, span)
    ax.set_xlabel(f"predicted - reference {LABELS[parameter]}")
    ax.set_ylabel(f"stars per {format_value(bins[1] - bins[0], parameter)} bin")
    ax.set_title(f"{LABELS[parameter]} residuals, test split ({n:,} stars)")
    ax.legend(loc="upper right", fontsize=9)
    if outside["ml"] or outside["gspphot"]:
        text = f"beyond ±{format_value(span, parameter)}, not shown:\n{outside['ml']:,} ML, {outside['gspphot']:,} GSP-Phot"
        ax.text(0.02, 0.98, text, transform=ax.transAxes, ha="left", va="top", fontsize=8.5, color="0.15",
                bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.6", "alpha": 0.9})
    return fig, {"n": n, "span": span, "bins": nbins, "outside": outside}


def calibration_by_magnitude(ref, value, error, g_mag) -> dict:
    """Median and 68.27th percentile of |value - ref| / error in bins of G with equal star counts.

    Stars with a non-finite input or error <= 0 are left out.  The number of bins is
    ``n // MIN_PER_BIN`` (1 to MAX_BINS); the edges are quantiles of G, so every bin
    holds about the same number of stars.

    Returns
    -------
    dict
        ``g_mag`` and ``ratio`` (the stars used), ``edges`` (bin edges in G, mag),
        ``n`` (stars per bin), ``median`` and ``p68`` per bin.
    """
    ref, value, error, g_mag = (np.asarray(a, dtype=np.float64) for a in (ref, value, error, g_mag))
    ok = np.isfinite(ref) & np.isfinite(value) & np.isfinite(error) & (error > 0) & np.isfinite(g_mag)
    g, ratio = g_mag[ok], np.abs(value[ok] - ref[ok]) / error[ok]
    nbins = int(np.clip(g.size // MIN_PER_BIN, 1, MAX_BINS))
    if g.size == 0:
        empty = np.empty(0)
        return {"g_mag": g, "ratio": ratio, "edges": empty, "n": empty.astype(np.int64), "median": empty, "p68": empty}
    edges = np.quantile(g, np.linspace(0.0, 1.0, nbins + 1))
    # inner edges only: the brightest star falls in bin 0, the faintest in the last
    which = np.searchsorted(edges[1:-1], g, side="right")
    counts = np.bincount(which, minlength=nbins)
    median = np.array([np.median(ratio[which == i]) if counts[i] else np.nan for i in range(nbins)])
    p68 = np.array([np.percentile(ratio[which == i], 100 * ONE_SIGMA_FRACTION) if counts[i] else np.nan for i in range(nbins)])
    return {"g_mag": g, "ratio": ratio, "edges": edges, "n": counts, "median": median, "p68": p68}


def calibration_figure(samples: dict):
    """|predicted - reference| / error against G, one panel per parameter.

    Parameters
    ----------
    samples : dict
        ``{parameter: (ref, value, error, g_mag)}`` arrays of the test split.

    Returns
    -------
    (Figure, dict)
        ``{parameter: calibration_by_magnitude(...) plus "style" and "outside"}`` (stars
        with a ratio above RATIO_MAX, announced in the panel).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(samples), figsize=(5 * len(samples), 4.9), sharey=True, layout="constrained",
                             squeeze=False)
    fig.suptitle("Is the predicted error right at every magnitude?  Test split; a calibrated error gives "
                 f"median {CALIBRATED_MEDIAN:.2f} and 68th percentile {CALIBRATED_P68:.0f}")
    info = {}
    for ax, (p, arrays) in zip(axes[0], samples.items()):
        d = calibration_by_magnitude(*arrays)
        n = int(d["g_mag"].size)
        d["style"] = draw_style(n)
        d["outside"] = int(np.count_nonzero(d["ratio"] > RATIO_MAX))
        info[p] = d
        ax.set_title(f"{LABELS[p].split(' (')[0]} ({n:,} stars)", fontsize=11)
        ax.set_xlabel("Gaia G (mag)")
        ax.set_ylim(0, RATIO_MAX)
        if n == 0:
            ax.text(0.5, 0.5, "no test stars with G and an error", transform=ax.transAxes, ha="center", va="center")
            continue
        g_lo, g_hi = clip_range(d["g_mag"], percentiles=(0, 100), pad=0.03)
        ax.set_xlim(g_lo, g_hi)
        if d["style"] == "scatter":
            ax.scatter(d["g_mag"], d["ratio"], s=_point_size(n), lw=0, alpha=0.45, color="0.45", rasterized=True,
                       label="stars")
        else:
            gb = np.linspace(g_lo, g_hi, 61)
            rb = np.linspace(0, RATIO_MAX, 41)
            ax.hist2d(d["g_mag"], d["ratio"], bins=[gb, rb], norm=LogNorm(), cmap="Greys", cmin=1, alpha=0.45,
                      rasterized=True)
        centre = 0.5 * (d["edges"][:-1] + d["edges"][1:])
        half = 0.5 * (d["edges"][1:] - d["edges"][:-1])
        # horizontal bars span each bin: its stars, not a point, are what the value summarises
        ax.errorbar(centre, d["median"], xerr=half, fmt="o", ms=4.5, color="C0", lw=1.6, label="median per bin")
        ax.errorbar(centre, d["p68"], xerr=half, fmt="s", ms=4.5, color="C3", lw=1.6, label="68th percentile per bin")
        ax.axhline(CALIBRATED_MEDIAN, color="C0", ls="--", lw=0.9, label=f"calibrated median ({CALIBRATED_MEDIAN:.2f})")
        ax.axhline(CALIBRATED_P68, color="C3", ls="--", lw=0.9, label="calibrated 68th percentile (1)")
        ax.grid(alpha=0.25)
        note_outside(ax, d["outside"], n, where=f"above {RATIO_MAX:g}")
    axes[0][0].set_ylabel("|predicted - reference| / predicted error")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        # below the panels: inside them it would cover the faint end, where the errors matter most
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    return fig, info


def g_magnitudes(con, source_id) -> np.ndarray:
    """Gaia G (``gaia.phot_g_mean_mag``, mag) of each ``source_id``, in that order; NaN where unknown.

    G is no model input, so :class:`stellardb.ml.train.LabelledData` does not carry it;
    this reads it for :func:`write_plots` (``g_mag=``) on the database connection.
    """
    import pyarrow as pa

    ids = np.asarray(source_id, dtype=np.int64)
    name = "_stellardb_plot_ids"
    con.register(name, pa.table({"source_id": ids, "row": np.arange(ids.size, dtype=np.int64)}))
    try:
        got = con.execute(
            f"""select i.row, any_value(g.phot_g_mean_mag)::double as g
                from {name} as i left join gaia as g on g.source_id = i.source_id
                group by i.row"""
        ).fetchnumpy()
    finally:
        con.unregister(name)
    out = np.full(ids.size, np.nan)
    out[np.asarray(got["row"], dtype=np.int64)] = np.ma.filled(np.ma.asarray(got["g"], dtype=np.float64), np.nan)
    return out


def write_plots(folder, data, predictions, features, g_mag=None) -> list[Path]:
    """Write the density and residual plots for every parameter into ``folder``.

    Parameters
    ----------
    folder : path
        Created if absent.
    data : stellardb.ml.train.LabelledData
        Labelled stars with their split.
    predictions : dict
        ``{parameter: (value, error)}`` for every row of ``data``.
    features : sequence of str
        Column order of ``data.x``.
    g_mag : array or None
        Gaia G (``phot_g_mean_mag``, mag) of every row of ``data``
        (:func:`g_magnitudes`); when given, ``calibration_vs_g.png`` is written too.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = folder / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    for p in PARAMETERS:
        ref, ml, gsp = comparison_sample(data, predictions, features, p)
        if ref.size == 0:
            continue
        save(density_figure(p, ref, ml, gsp)[0], f"{p}_density.png")
        save(residuals_figure(p, ref, ml, gsp)[0], f"{p}_residuals.png")
    if g_mag is not None:
        g_mag = np.asarray(g_mag, dtype=np.float64)
        if g_mag.shape != (len(data.split),):
            raise ValueError(f"g_mag has shape {g_mag.shape}; it needs one value per row of data ({len(data.split)})")
        test = data.split == "test"
        samples = {p: (data.labels[p][test], predictions[p][0][test], predictions[p][1][test], g_mag[test]) for p in PARAMETERS}
        save(calibration_figure(samples)[0], "calibration_vs_g.png")
    return written


def cv_figure(samples: dict, feature_set: str, folds: int):
    """Out-of-fold predictions against the reference labels, one panel per parameter, with the 1:1 line
    and the MAD of the residuals.  ``samples``: ``{parameter: (reference, prediction)}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PARAMETERS), figsize=(4.2 * len(PARAMETERS), 4.2), layout="constrained")
    for ax, p in zip(axes, PARAMETERS):
        ref, pred = (np.asarray(a, dtype=np.float64) for a in samples[p])
        ok = np.isfinite(ref) & np.isfinite(pred)
        ax.scatter(ref[ok], pred[ok], s=6, alpha=0.6, color="tab:blue", linewidths=0)
        if ok.any():
            lo, hi = np.percentile(np.concatenate([ref[ok], pred[ok]]), [0.5, 99.5])
            ax.plot([lo, hi], [lo, hi], color="0.3", lw=1)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            r = pred[ok] - ref[ok]
            mad = np.median(np.abs(r - np.median(r)))
            ax.set_title(f"{LABELS[p]}: {ok.sum():,} stars, MAD {mad:.3g}")
        ax.set_xlabel(f"reference {LABELS[p]}")
        ax.set_ylabel(f"predicted {LABELS[p]} (out of fold)")
    fig.suptitle(f"{feature_set}: {folds}-fold cross-validation")
    return fig
