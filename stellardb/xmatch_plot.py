"""A PNG that shows whether a Gaia x SkyMapper crossmatch radius is sensible.

Left: the separations of the matched pairs.  True counterparts pile up near zero (a
Rayleigh-like bump set by the astrometric errors); chance neighbours grow linearly with
separation (their number in an annulus is density x 2 pi r dr).  A radius well past the
bump, before the linear rise dominates, keeps the real pairs and few false ones.
Right: the fraction of SkyMapper sources that found a Gaia partner per r_psf
magnitude: it falls where SkyMapper reaches past Gaia's depth (G ~ 20.7) and shows
any bright-end losses (saturation, proper motions the epochs did not follow).

The numbers behind both panels are returned, so that they can be checked and reused:
the separations are binned with np.histogram, the magnitude bins counted in SQL.  matplotlib is imported only here
(Agg backend) and not Keras, unlike :mod:`stellardb.plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Separation bins per match radius, and the width of a magnitude bin (mag).
SEP_BINS = 50
MAG_BIN = 0.5


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


def write_xmatch_plot(con, path, radius_arcsec: float) -> dict[str, np.ndarray]:
    """Draw :func:`xmatch_diagnostics` into the PNG ``path``; returns the numbers drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = xmatch_diagnostics(con, radius_arcsec)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    edges = d["sep_edges_arcsec"]
    left.stairs(d["sep_counts"], edges, fill=True, alpha=0.6)
    if d["sep_counts"].any():  # (a log axis of nothing but zeros is an error in matplotlib)
        left.set_yscale("log")
    left.set_xlim(0, radius_arcsec)
    left.set_xlabel("separation Gaia (moved to the SkyMapper epoch) - SkyMapper [arcsec]")
    left.set_ylabel(f"pairs per {edges[1] * 1000:.0f} mas")
    left.set_title(f"{int(d['sep_counts'].sum()):,} pairs within {radius_arcsec:g} arcsec")

    lo, n, k = d["r_psf_lo_mag"], d["n_sources"], d["n_matched"]
    enough = n >= 10  # a fraction from a handful of stars is noise
    frac = np.divide(k, n, out=np.zeros(n.shape), where=n > 0)
    centre = lo + MAG_BIN / 2
    right.step(centre[enough], frac[enough], where="mid")
    right.set_ylim(0, 1.02)
    right.set_xlabel("SkyMapper r_psf [mag]")
    right.set_ylabel("fraction with a Gaia partner")
    right.set_title(f"{int(k.sum()):,} of {int(n.sum()):,} SkyMapper sources with r_psf matched")
    right.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return d
