"""A PNG that shows whether a Gaia x SkyMapper crossmatch radius is sensible.

Left: the separations of the matched pairs.  True counterparts pile up near zero (a
Rayleigh-like bump set by the astrometric errors); chance neighbours grow linearly with
separation (their number in an annulus is density x 2 pi r dr).  A radius well past the
bump, before the linear rise dominates, keeps the real pairs and few false ones.
Right: the fraction of SkyMapper sources that found a Gaia partner per r_psf
magnitude: it falls where SkyMapper reaches past Gaia's depth (G ~ 20.7) and shows
any bright-end losses (saturation, proper motions the epochs did not follow).  Each
bin is a marker with its binomial error; bins with fewer than MIN_SOURCES sources are
not drawn, and a note in the panel counts them.

The numbers behind both panels are returned, so that they can be checked and reused:
the separations are binned with np.histogram, the magnitude bins counted in SQL.
matplotlib is imported only inside the functions (Agg backend), never Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Separation bins per match radius, and the width of a magnitude bin (mag).
SEP_BINS = 50
MAG_BIN = 0.5
#: Magnitude bins with fewer SkyMapper sources are counted but not drawn.
MIN_SOURCES = 10


def xmatch_diagnostics(con, radius_arcsec: float) -> dict[str, np.ndarray]:
    """Separation histogram of the pairs and match fraction per SkyMapper r_psf bin.

    Returns
    -------
    dict
        ``sep_edges_arcsec`` (SEP_BINS + 1 edges over [0, radius]), ``sep_counts``;
        ``r_psf_lo_mag`` (lower edge of each MAG_BIN bin that has sources),
        ``n_sources`` and ``n_matched`` SkyMapper sources in it.
    """
    sep = con.execute("select sep_arcsec from xmatch").fetchnumpy()["sep_arcsec"]
    counts, edges = np.histogram(np.asarray(sep, dtype=np.float64), bins=SEP_BINS, range=(0.0, radius_arcsec))
    mag = con.execute(
        """
        select floor(s.r_psf / $bin) * $bin as r_lo, count(*), count(x.skymapper_object_id)
        from skymapper as s
        left join xmatch as x on x.skymapper_object_id = s.object_id
        where s.r_psf is not null
        group by r_lo
        order by r_lo
        """,
        {"bin": MAG_BIN},
    ).fetchall()
    mag = np.array(mag, dtype=np.float64).reshape(-1, 3)
    return {
        "sep_edges_arcsec": edges,
        "sep_counts": counts,
        "r_psf_lo_mag": mag[:, 0],
        "n_sources": mag[:, 1].astype(np.int64),
        "n_matched": mag[:, 2].astype(np.int64),
    }


def xmatch_figure(d: dict, radius_arcsec: float, pairs_beyond: int = 0):
    """The figure of :func:`write_xmatch_plot` from the numbers of :func:`xmatch_diagnostics`.

    ``pairs_beyond``: pairs of the xmatch table farther apart than ``radius_arcsec``
    (made with a larger radius than the one given), which the histogram cannot show
    and the panel says so.  Magnitude bins with fewer than MIN_SOURCES sources are
    not drawn, and the panel says how many sources they hold.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 5), layout="constrained")
    pairs = int(d["sep_counts"].sum())
    fig.suptitle(f"Gaia x SkyMapper crossmatch: {pairs + pairs_beyond:,} pairs, radius {radius_arcsec:g} arcsec")
    edges = d["sep_edges_arcsec"]
    left.stairs(d["sep_counts"], edges, fill=True, alpha=0.6)
    if d["sep_counts"].any():  # (a log axis of nothing but zeros is an error in matplotlib)
        left.set_yscale("log")
        left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    left.set_xlim(0, radius_arcsec)
    left.set_xlabel("separation, Gaia moved to the SkyMapper epoch (arcsec)")
    left.set_ylabel(f"pairs per {edges[1] * 1000:.0f} mas")
    left.set_title("separation of the pairs", fontsize=11)
    if pairs_beyond:
        _note(left, f"{pairs_beyond:,} of {pairs + pairs_beyond:,} pairs beyond {radius_arcsec:g} arcsec, not shown", "right")

    lo, n, k = d["r_psf_lo_mag"], d["n_sources"], d["n_matched"]
    enough = n >= MIN_SOURCES  # a fraction from a handful of stars is noise
    frac = np.divide(k, n, out=np.zeros(n.shape), where=n > 0)
    # binomial standard error: with 20 sources a bin is uncertain by 0.1
    err = np.sqrt(frac * (1 - frac) / np.maximum(n, 1))
    centre = lo + MAG_BIN / 2
    # one marker per bin, its width the bin: a line would join bins across gaps
    right.errorbar(centre[enough], frac[enough], xerr=MAG_BIN / 2, yerr=err[enough], fmt="o", ms=3.5, lw=1.4)
    right.set_ylim(0, 1.05)
    if lo.size:
        right.set_xlim(lo.min() - 0.25, lo.max() + MAG_BIN + 0.25)
    right.set_xlabel("SkyMapper r_psf (mag)")
    right.set_ylabel("fraction with a Gaia partner")
    # two lines: the counts run to 8 digits each on a full catalogue
    right.set_title(f"{int(k.sum()):,} of {int(n.sum()):,} SkyMapper sources\nwith r_psf matched", fontsize=11)
    right.grid(alpha=0.3)
    if (~enough).any():
        bins = int((~enough).sum())
        _note(right, f"{int(n[~enough].sum()):,} sources in {bins} bin{'s' if bins > 1 else ''} with < {MIN_SOURCES} "
                     "sources, not drawn", "left")
    return fig


def _note(ax, text: str, side: str):
    """A boxed note in the lower corner of ``ax`` (``side`` "left" or "right"), where these panels are empty."""
    x = 0.02 if side == "left" else 0.98
    return ax.text(x, 0.03, text, transform=ax.transAxes, ha=side, va="bottom", fontsize=8.5, color="0.15",
                   bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.6", "alpha": 0.9}, zorder=5)


def write_xmatch_plot(con, path, radius_arcsec: float) -> dict[str, np.ndarray]:
    """Draw :func:`xmatch_diagnostics` into the PNG ``path``; returns the numbers drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = xmatch_diagnostics(con, radius_arcsec)
    beyond = con.execute("select count(*) from xmatch where sep_arcsec > $r", {"r": radius_arcsec}).fetchone()[0]
    fig = xmatch_figure(d, radius_arcsec, beyond)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return d
