"""``stellardb xmatch``: Gaia x each photometric survey (and position-only labels x Gaia).

The logic is SQL (``sql/30_crossmatch/``: one macro, ``xm_gaia_survey``, for every survey
of :mod:`stellardb.catalog.surveys`); this materialises it as the tables ``xmatch``
(SkyMapper), ``xmatch_tmass``, ``xmatch_allwise``, ``xmatch_ps1``, ``xmatch_sdss`` and
``xmatch_labels``, which ingest and forget also refresh.
"""

from __future__ import annotations

import time
from pathlib import Path

from stellardb.catalog import db
from stellardb.catalog.surveys import SURVEYS
from stellardb.catalog.export import check_plot_path
from stellardb.errors import UserError


# ---------------------------------------------------------------- crossmatch upkeep


def refresh_xmatch(con) -> int:
    """Materialise the view ``xm_gaia_skymapper`` as table ``xmatch``; returns pairs."""
    con.execute("delete from xmatch")
    con.execute("insert into xmatch select * from xm_gaia_skymapper")
    return db.row_count(con, "xmatch")


def refresh_survey(con, name: str) -> int:
    """Materialise Gaia x survey ``name`` (the macro ``xm_gaia_survey`` on its positions view at its
    settings radius) as its crossmatch table, emptied when either side has no rows; returns pairs."""
    s = SURVEYS[name]
    if name == "skymapper":
        if db.row_count(con, "gaia") and db.row_count(con, "skymapper"):
            return refresh_xmatch(con)
        con.execute("delete from xmatch")
        return 0
    con.execute(f"delete from {s.xmatch_table}")
    if db.row_count(con, "gaia") and db.row_count(con, s.table):
        con.execute(
            f"insert into {s.xmatch_table} select * from xm_gaia_survey('{s.positions_view}', "
            f"(select value from settings where name = '{s.radius_setting}'))"
        )
    return db.row_count(con, s.xmatch_table)


def surveys_touched_by(table: str) -> list[str]:
    """The surveys whose crossmatch depends on rows of ``table``."""
    if table == "gaia":
        return list(SURVEYS)
    return [table] if table in SURVEYS else []


def refresh_label_match(con) -> int:
    """Materialise the view ``xm_labels_gaia`` as table ``xmatch_labels``; returns pairs."""
    con.execute("delete from xmatch_labels")
    con.execute("insert into xmatch_labels select * from xm_labels_gaia")
    return db.row_count(con, "xmatch_labels")


def run(db_path, radius_arcsec: float | None = None, plot=None, surveys=None) -> dict:
    """Materialise the Gaia x survey crossmatches (tables ``xmatch``, ``xmatch_tmass``, ...) in one transaction.

    Parameters
    ----------
    radius_arcsec : float, optional
        Match radius of the surveys crossmatched, stored in ``settings`` (defaults:
        :data:`stellardb.catalog.surveys.SURVEYS`).  Must be positive and at most 30
        arcsec: beyond that a nearest-neighbour match stops meaning "the same star" at
        Gaia's depth.
    plot : path, optional
        Also write the SkyMapper separation / match-fraction PNG there
        (:func:`stellardb.catalog.xmatch_plot.write_xmatch_plot`).
    surveys : list of str, optional
        Surveys to crossmatch; default every survey with rows.
    """
    if plot is not None:
        check_plot_path(Path(plot))
        from stellardb.errors import require_ml

        require_ml("xmatch --plot", modules=("matplotlib",))
    if radius_arcsec is not None and not (0 < radius_arcsec <= 30):
        raise UserError(f"--radius-arcsec must be in (0, 30] arcsec, got {radius_arcsec}.")
    for name in surveys or ():
        if name not in SURVEYS:
            raise UserError(f"Unknown survey {name!r}; choose from {', '.join(SURVEYS)}.")
    con = db.connect(db_path, read_only=False)
    try:
        if db.row_count(con, "gaia") == 0:
            raise UserError("Crossmatch needs Gaia sources: ingest a Gaia file first (`stellardb ingest gaia FILE`).")
        with_rows = [name for name in SURVEYS if db.row_count(con, SURVEYS[name].table)]
        chosen = list(dict.fromkeys(surveys)) if surveys else with_rows
        empty = [name for name in chosen if name not in with_rows]
        if not chosen or empty:
            what = ", ".join(empty) if empty else "any photometric survey"
            raise UserError(f"Crossmatch needs survey rows, and the database has none of {what}: ingest a survey file "
                            f"first (`stellardb ingest SURVEY FILE`, SURVEY one of {', '.join(SURVEYS)}).")
        if plot is not None and "skymapper" not in chosen:
            raise UserError("--plot shows the SkyMapper crossmatch; add --survey skymapper, or leave --plot out.")
        t0 = time.perf_counter()
        per_survey = {}
        with db.transaction(con, "the crossmatch (tables " + ", ".join(SURVEYS[n].xmatch_table for n in chosen) + ")"):
            for name in chosen:
                if radius_arcsec is not None:
                    db.set_setting(con, SURVEYS[name].radius_setting, radius_arcsec)
                t1 = time.perf_counter()
                pairs = refresh_survey(con, name)
                per_survey[name] = {"pairs": pairs, "seconds": time.perf_counter() - t1}
            labels = refresh_label_match(con)
        for name in chosen:
            s = SURVEYS[name]
            stats = con.execute(f"select median(sep_arcsec), coalesce(count_if(n_candidates > 1), 0) "
                                f"from {s.xmatch_table}").fetchone()
            per_survey[name].update(
                median_sep_arcsec=stats[0], ambiguous=stats[1], radius_arcsec=db.get_setting(con, s.radius_setting),
                rows=db.row_count(con, s.table),
                # rows the crossmatch cannot use (bad positions or epochs), left out
                skipped=db.row_count(con, f"{s.table}_src") - db.row_count(con, s.positions_view),
            )
        if plot is not None:
            from stellardb.catalog.xmatch_plot import write_xmatch_plot

            try:
                write_xmatch_plot(con, plot, db.get_setting(con, "xmatch_radius_arcsec"))
            except OSError as exc:
                raise UserError(f"Cannot write the plot {plot} ({exc.strerror or exc}); the crossmatch itself is "
                                "stored (table xmatch): choose a writable path and run again.") from None
        sky = per_survey.get("skymapper", {})
        return {
            "surveys": per_survey,
            # the SkyMapper figures under their earlier names (the seed's crossmatch)
            "pairs": sky.get("pairs", 0),
            "median_sep_arcsec": sky.get("median_sep_arcsec"),
            "ambiguous": sky.get("ambiguous", 0),
            "radius_arcsec": db.get_setting(con, "xmatch_radius_arcsec"),
            "skymapper_rows": db.row_count(con, "skymapper"),
            "label_matches": labels,
            "gaia_rows": db.row_count(con, "gaia"),
            "gaia_skipped": db.row_count(con, "gaia_src") - db.row_count(con, "gaia_motion"),
            "skymapper_skipped": sky.get("skipped", 0),
            "seconds": time.perf_counter() - t0,
        }
    finally:
        con.close()
