"""``stellardb xmatch``: the Gaia x SkyMapper crossmatch (and position-only labels x Gaia).

The logic is SQL (``sql/30_crossmatch/``); this materialises its views as the tables
``xmatch`` and ``xmatch_labels``, which ingest and forget also refresh.
"""

from __future__ import annotations

import time
from pathlib import Path

from stellardb.catalog import db
from stellardb.catalog.export import check_plot_path
from stellardb.errors import UserError


# ---------------------------------------------------------------- crossmatch upkeep


def refresh_xmatch(con) -> int:
    """Materialise the view ``xm_gaia_skymapper`` as table ``xmatch``; returns pairs."""
    con.execute("delete from xmatch")
    con.execute("insert into xmatch select * from xm_gaia_skymapper")
    return db.row_count(con, "xmatch")


def refresh_label_match(con) -> int:
    """Materialise the view ``xm_labels_gaia`` as table ``xmatch_labels``; returns pairs."""
    con.execute("delete from xmatch_labels")
    con.execute("insert into xmatch_labels select * from xm_labels_gaia")
    return db.row_count(con, "xmatch_labels")


def run(db_path, radius_arcsec: float | None = None, plot=None) -> dict:
    """Materialise the Gaia x SkyMapper crossmatch (table ``xmatch``) in one transaction.

    Parameters
    ----------
    radius_arcsec : float, optional
        Match radius; stored in ``settings`` (default 1.0 arcsec).  Must be positive
        and at most 30 arcsec: beyond that a nearest-neighbour match stops meaning
        "the same star" at Gaia's depth.
    plot : path, optional
        Also write the separation / match-fraction PNG there
        (:func:`stellardb.catalog.xmatch_plot.write_xmatch_plot`).
    """
    if plot is not None:
        check_plot_path(Path(plot))
        from stellardb.errors import require_ml

        require_ml("xmatch --plot", modules=("matplotlib",))
    if radius_arcsec is not None and not (0 < radius_arcsec <= 30):
        raise UserError(f"--radius-arcsec must be in (0, 30] arcsec, got {radius_arcsec}.")
    con = db.connect(db_path, read_only=False)
    try:
        if db.row_count(con, "gaia") == 0 or db.row_count(con, "skymapper") == 0:
            raise UserError("Crossmatch needs both tables: ingest gaia and skymapper files first (`stellardb ingest ...`).")
        t0 = time.perf_counter()
        with db.transaction(con, "the crossmatch (table xmatch)"):
            if radius_arcsec is not None:
                db.set_setting(con, "xmatch_radius_arcsec", radius_arcsec)
            pairs = refresh_xmatch(con)
            labels = refresh_label_match(con)
        stats = con.execute(
            "select count(*), median(sep_arcsec), coalesce(count_if(n_candidates > 1), 0) from xmatch"
        ).fetchone()
        if plot is not None:
            from stellardb.catalog.xmatch_plot import write_xmatch_plot

            try:
                write_xmatch_plot(con, plot, db.get_setting(con, "xmatch_radius_arcsec"))
            except OSError as exc:
                raise UserError(f"Cannot write the plot {plot} ({exc.strerror or exc}); the crossmatch itself is "
                                "stored (table xmatch): choose a writable path and run again.") from None
        return {
            "pairs": pairs,
            "label_matches": labels,
            "median_sep_arcsec": stats[1],
            "ambiguous": stats[2],
            "radius_arcsec": db.get_setting(con, "xmatch_radius_arcsec"),
            "skymapper_rows": db.row_count(con, "skymapper"),
            "gaia_rows": db.row_count(con, "gaia"),
            # rows the crossmatch cannot use (bad positions, motions or epochs), left out
            "gaia_skipped": db.row_count(con, "gaia_src") - db.row_count(con, "gaia_motion"),
            "skymapper_skipped": db.row_count(con, "skymapper_src") - db.row_count(con, "skymapper_positions"),
            "seconds": time.perf_counter() - t0,
        }
    finally:
        con.close()
