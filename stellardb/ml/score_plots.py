"""A Kiel diagram of the stars a model scored, next to Gaia GSP-Phot's for the same stars.

Teff runs from hot on the left to cool on the right and log g grows downwards, as
astronomers draw it: the main sequence lies along the bottom, the giant branch climbs
to the upper right.  The colour is [Fe/H] (GSP-Phot gives [M/H]).  Up to SCATTER_MAX
stars are drawn as points; a larger sample becomes GRID cells, each coloured by the
median [Fe/H] of its stars, binned in SQL so that a catalogue of millions never
reaches Python one star at a time.

Both panels share the axes, bounded by the 0.5th and 99.5th percentiles of both
samples together (padded); each panel says how many of its stars fall outside.  The
numbers drawn are returned so that they can be checked against SQL.  matplotlib is
imported only inside the functions (Agg backend), never Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stellardb.errors import UserError
from stellardb.ml.plots import CLIP_PERCENTILES, SCATTER_MAX, note_outside

#: Cells of the density rendering in Teff and in log g.
GRID = (70, 55)
#: Percentiles of [Fe/H] that bound the colour scale (the colour bar's arrows show the rest).
COLOUR_PERCENTILES = (2.0, 98.0)
#: A density cell with fewer stars is drawn grey: the median of a handful of stars is
#: noise that would speckle the sparse edges with extreme colours.
MIN_CELL_STARS = 5

#: Panel key -> (Teff, log g, metallicity) columns, and how the panel is named.
COLUMNS = {"ml": ("p.teff", "p.logg", "p.feh"), "gspphot": ("g.teff_gspphot", "g.logg_gspphot", "g.mh_gspphot")}
NAMES = {"ml": "stellardb ML", "gspphot": "Gaia GSP-Phot"}

# The scored stars with their GSP-Phot values.  gaia directly, not the stars view:
# these six columns need none of its other joins.
SCORED = """
    select p.source_id, {x} as x, {y} as y, {c} as c
    from predictions as p
    inner join gaia as g on g.source_id = p.source_id
    where p.model = $model
"""


def _panel(key: str) -> str:
    """SQL of one panel's stars: those with all three values finite."""
    x, y, c = COLUMNS[key]
    return f"select * from ({SCORED.format(x=x, y=y, c=c)}) where isfinite(x) and isfinite(y) and isfinite(c)"


def _padded(lo, hi, pad: float = 0.05) -> tuple[float, float]:
    span = hi - lo or max(abs(hi), 1.0)
    return float(lo - pad * span), float(hi + pad * span)


def kiel_numbers(con, model: str, scatter_max: int | None = None) -> dict:
    """What :func:`write_score_plots` draws, computed in SQL.

    Parameters
    ----------
    con : duckdb connection
        The stellardb database.
    model : str
        Value of ``predictions.model``.
    scatter_max : int or None
        Most stars drawn as points (default SCATTER_MAX); more become density cells.

    Returns
    -------
    dict
        ``model``; ``n_scored`` (rows of ``predictions`` for the model with a Gaia
        row); ``style`` ("scatter" or "density"); ``teff_range_k``,
        ``logg_range_dex`` (axis limits, low to high); ``feh_range_dex`` (colour
        limits: COLOUR_PERCENTILES of the stars' metallicities, or for "density" of
        the medians of cells with at least MIN_CELL_STARS stars); ``teff_edges_k``,
        ``logg_edges_dex`` (the GRID cell edges); and per panel, ``"ml"`` and
        ``"gspphot"``: ``n`` (stars with finite Teff, log g and metallicity),
        ``outside`` (of those, outside the axes), then for "scatter" ``teff``,
        ``logg``, ``feh`` (the points, by source_id) and for "density" ``counts`` and
        ``median_feh``, arrays of shape (GRID[1], GRID[0]) indexed [log g cell, Teff
        cell] (``median_feh`` NaN where a cell is empty).
    """
    scatter_max = SCATTER_MAX if scatter_max is None else scatter_max
    args = {"model": model}
    n_scored = con.execute(f"select count(*) from ({SCORED.format(x='p.teff', y='p.logg', c='p.feh')})", args).fetchone()[0]
    if n_scored == 0:
        raise UserError(f"No predictions of model {model!r} for stars in the gaia table: run `stellardb score --model {model}` first.")
    both = f"{_panel('ml')} union all {_panel('gspphot')}"
    lo, hi = CLIP_PERCENTILES
    ranges = con.execute(
        f"""select quantile_cont(x, [{lo / 100}, {hi / 100}]), quantile_cont(y, [{lo / 100}, {hi / 100}]),
                   quantile_cont(c, [{COLOUR_PERCENTILES[0] / 100}, {COLOUR_PERCENTILES[1] / 100}])
            from ({both})""",
        args,
    ).fetchone()
    out = {"model": model, "n_scored": int(n_scored), "style": "scatter" if n_scored <= scatter_max else "density"}
    if ranges[0] is None:  # not one star with all three values in either panel
        ranges = ([4000.0, 7000.0], [0.0, 5.0], [-1.0, 0.5])
    out["teff_range_k"] = _padded(*ranges[0])
    out["logg_range_dex"] = _padded(*ranges[1])
    c_lo, c_hi = ranges[2]
    out["feh_range_dex"] = (float(c_lo), float(c_hi)) if c_hi > c_lo else (float(c_lo) - 0.1, float(c_hi) + 0.1)
    nx, ny = GRID
    out["teff_edges_k"] = np.linspace(*out["teff_range_k"], nx + 1)
    out["logg_edges_dex"] = np.linspace(*out["logg_range_dex"], ny + 1)
    box = {"x0": out["teff_range_k"][0], "x1": out["teff_range_k"][1], "y0": out["logg_range_dex"][0],
           "y1": out["logg_range_dex"][1]}
    inside = "x between $x0 and $x1 and y between $y0 and $y1"
    for key in COLUMNS:
        n, outside = con.execute(f"select count(*), count(*) filter (where not ({inside})) from ({_panel(key)})",
                                 {**args, **box}).fetchone()
        panel = {"n": int(n), "outside": int(outside)}
        if out["style"] == "scatter":
            points = con.execute(f"select x, y, c from ({_panel(key)}) order by source_id", args).fetchnumpy()
            panel.update(teff=np.asarray(points["x"], np.float64), logg=np.asarray(points["y"], np.float64),
                         feh=np.asarray(points["c"], np.float64))
        else:
            # least(): a star on the upper edge belongs to the last cell, as in np.histogram2d
            cells = con.execute(
                f"""select least(floor((x - $x0) / ($x1 - $x0) * {nx}), {nx - 1})::int as i,
                           least(floor((y - $y0) / ($y1 - $y0) * {ny}), {ny - 1})::int as j,
                           count(*), median(c)
                    from ({_panel(key)}) where {inside} group by all""",
                {**args, **box},
            ).fetchall()
            counts = np.zeros((ny, nx), np.int64)
            median = np.full((ny, nx), np.nan)
            for i, j, k, m in cells:
                counts[j, i], median[j, i] = k, m
            panel.update(counts=counts, median_feh=median)
        out[key] = panel
    if out["style"] == "density":
        # the colours are cell medians, narrower than the stars' spread: scale them by their own percentiles
        medians = np.concatenate([out[k]["median_feh"][out[k]["counts"] >= MIN_CELL_STARS] for k in COLUMNS])
        if medians.size:
            c_lo, c_hi = np.percentile(medians, COLOUR_PERCENTILES)
            out["feh_range_dex"] = (float(c_lo), float(c_hi)) if c_hi > c_lo else (float(c_lo) - 0.1, float(c_hi) + 0.1)
    return out


def kiel_figure(d: dict):
    """The two Kiel diagrams of :func:`kiel_numbers` ``d`` side by side, with one colour bar."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.6), sharex=True, sharey=True, layout="constrained")
    density = d["style"] == "density"
    # the cell rule on a line of its own: with a long model name one line overflows the figure
    fig.suptitle(f"Kiel diagram of the {d['n_scored']:,} stars scored by model {d['model']}"
                 + (f"\nmedian [Fe/H] per cell; grey: cells with fewer than {MIN_CELL_STARS} stars" if density else ""))
    norm = Normalize(*d["feh_range_dex"])
    # colour bar arrows only where some drawn colour lies beyond the scale
    drawn = np.concatenate([d[k]["median_feh"][d[k]["counts"] >= MIN_CELL_STARS] if density else d[k]["feh"]
                            for k in COLUMNS])
    drawn = drawn[np.isfinite(drawn)]
    below, above = bool((drawn < norm.vmin).any()), bool((drawn > norm.vmax).any())
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(below, above)]
    image = None
    for ax, key in zip(axes, COLUMNS):
        p = d[key]
        if density:
            few = (p["counts"] > 0) & (p["counts"] < MIN_CELL_STARS)
            ax.pcolormesh(d["teff_edges_k"], d["logg_edges_dex"], np.ma.masked_where(~few, few.astype(float)),
                          cmap="Greys", vmin=0, vmax=2.5, rasterized=True)
            image = ax.pcolormesh(d["teff_edges_k"], d["logg_edges_dex"],
                                  np.ma.masked_where(p["counts"] < MIN_CELL_STARS, p["median_feh"]),
                                  cmap="viridis", norm=norm, rasterized=True)
        elif p["n"]:
            size = float(np.clip(2000.0 / max(d["n_scored"], 1) ** 0.75, 3.0, 30.0))
            image = ax.scatter(p["teff"], p["logg"], c=p["feh"], cmap="viridis", norm=norm, s=size, lw=0, alpha=0.85,
                               rasterized=True)
        what = "[Fe/H]" if key == "ml" else "[M/H]"
        count = f"{p['n']:,} stars" if p["n"] == d["n_scored"] else f"{p['n']:,} of {d['n_scored']:,} stars have Teff, log g, {what}"
        ax.set_title(f"{NAMES[key]}\n{count}", fontsize=11)
        ax.set_xlabel("Teff (K)")
        ax.grid(alpha=0.25)
        if not p["n"]:
            ax.text(0.5, 0.5, f"no {NAMES[key]} values for these stars", transform=ax.transAxes, ha="center", va="center")
        # upper left is hot and low gravity: almost empty in a Kiel diagram
        note_outside(ax, p["outside"], p["n"])
    axes[0].set_ylabel("log g (dex)")
    # hot on the left, low gravity on top
    axes[0].set_xlim(d["teff_range_k"][1], d["teff_range_k"][0])
    axes[0].set_ylim(d["logg_range_dex"][1], d["logg_range_dex"][0])
    if image is None:
        from matplotlib.cm import ScalarMappable

        image = ScalarMappable(norm=norm, cmap="viridis")
    label = ("median " if density else "") + "[Fe/H] (dex); GSP-Phot: [M/H]"
    fig.colorbar(image, ax=axes, label=label, extend=extend, shrink=0.95)
    return fig


def write_score_plots(con, model: str, path) -> dict:
    """Write the Kiel diagrams of ``model``'s scored stars, ML and GSP-Phot, into the PNG ``path``.

    Parameters
    ----------
    con : duckdb connection
        The stellardb database (read-only is enough).
    model : str
        Value of ``predictions.model``.
    path : path
        The PNG; its folder is created if absent.

    Returns
    -------
    dict
        The numbers drawn (:func:`kiel_numbers`).

    Raises
    ------
    UserError
        The model has no predictions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = kiel_numbers(con, model)
    fig = kiel_figure(d)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return d
