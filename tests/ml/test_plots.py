"""The PNG plots: drawing style by sample size, announced clipping, titles that never
overlap, and the numbers drawn checked against NumPy and DuckDB computed here.

Everything is synthetic, seeded and small: a SimpleNamespace stands in for
train.LabelledData, and an in-memory stellardb database holds a few gaia,
predictions, skymapper and xmatch rows.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, QuadMesh  # noqa: E402

from stellardb.ml import plots  # noqa: E402
from stellardb.ml import score_plots
from stellardb.catalog import xmatch_plot
from stellardb.catalog.db import connect  # noqa: E402
from stellardb.errors import UserError  # noqa: E402
from stellardb.ml.features import FEATURES, GSPPHOT, PARAMETERS  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------- layout checks


def _overlap(a, b, tol: float = 0.5) -> bool:
    """Two display boxes share more than ``tol`` pixels in both directions."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tol and min(a.y1, b.y1) - max(a.y0, b.y0) > tol


def _texts(fig):
    """(name, Text) of the suptitle, every axes' titles, axis labels and notes, non-empty and visible."""
    found = []
    if fig._suptitle is not None:
        found.append(("suptitle", fig._suptitle))
    for i, ax in enumerate(fig.axes):
        for name, text in (("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title),
                           ("xlabel", ax.xaxis.label), ("ylabel", ax.yaxis.label)):
            found.append((f"axes {i} {name}", text))
        found.extend((f"axes {i} note {j}", t) for j, t in enumerate(ax.texts))
    return [(n, t) for n, t in found if t.get_visible() and t.get_text().strip()]


def layout_problems(fig) -> list[str]:
    """Texts cut off at the figure's edge, texts that overlap each other, titles that run into any axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(n, t.get_window_extent(renderer)) for n, t in _texts(fig)]
    boxes += [(f"legend {i}", leg.get_window_extent(renderer)) for i, leg in enumerate(fig.legends)]
    edge = fig.bbox
    problems = [f"{n} is cut off" for n, b in boxes
                if b.x0 < edge.x0 - 1 or b.y0 < edge.y0 - 1 or b.x1 > edge.x1 + 1 or b.y1 > edge.y1 + 1]
    problems += [f"{n1} overlaps {n2}" for (n1, b1), (n2, b2) in itertools.combinations(boxes, 2) if _overlap(b1, b2)]
    for n, b in boxes:
        if "title" in n:
            problems += [f"{n} runs into axes {i}" for i, ax in enumerate(fig.axes) if _overlap(b, ax.get_window_extent(renderer))]
    return problems


def all_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def test_layout_check_catches_overlapping_titles():
    """The checker itself fails a figure whose long titles run into each other (the old density plot)."""
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax in axes:
        ax.set_title("Gaia GSP-Phot: MAD 0.45, RMSE 0.742 (n=50,000) and more words")
    problems = layout_problems(fig)
    assert any("title overlaps" in p for p in problems), problems
    fig2, ax = plt.subplots(figsize=(3, 3))
    ax.text(0.5, 1.4, "far above the figure", transform=ax.transAxes)
    assert any("cut off" in p for p in layout_problems(fig2))


# ----------------------------------------------------------------- train-time plots


def sample(n, seed=0, outliers=0):
    """Reference, ML and GSP-Phot Teff for n stars; ``outliers`` GSP-Phot values 10,000 K off."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(4000, 7000, n)
    ml = ref + rng.normal(0, 100, n)
    gsp = ref + rng.normal(0, 250, n)
    gsp[:outliers] += 10_000
    return ref, ml, gsp


def test_small_samples_are_drawn_as_points_large_ones_as_a_histogram():
    """Up to SCATTER_MAX stars every star is one marker; above it the panels are 2-D histograms with a colour bar."""
    ref, ml, gsp = sample(200)
    fig, info = plots.density_figure("teff", ref, ml, gsp)
    assert info["style"] == "scatter" and info["n"] == 200
    panels = fig.axes[:2]
    for ax in panels:
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points) == 1 and len(points[0].get_offsets()) == 200
        assert not any(isinstance(c, QuadMesh) for c in ax.collections)
    assert len(fig.axes) == 2  # no colour bar of counts for points

    n = plots.SCATTER_MAX + 1
    ref, ml, gsp = sample(n, seed=1)
    fig, info = plots.density_figure("teff", ref, ml, gsp)
    assert info["style"] == "density"
    mesh = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    assert len(mesh) == 1
    lo, hi = info["limits"]
    bins = np.linspace(lo, hi, 81)
    want = np.histogram2d(ref, ml, bins=[bins, bins])[0]
    # the left panel's cells hold the stars numpy bins there (empty cells masked)
    np.testing.assert_array_equal(np.ma.filled(mesh[0].get_array(), 0).reshape(80, 80), want.T)
    assert len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "stars per bin"
    assert plots.draw_style(plots.SCATTER_MAX) == "scatter" and plots.draw_style(plots.SCATTER_MAX + 1) == "density"


@pytest.mark.parametrize("n", [150, plots.SCATTER_MAX + 500])
def test_stars_outside_the_axes_are_counted_and_said(n):
    """Both styles: the stars outside the shared range equal a NumPy count, and each panel says how many."""
    ref, ml, gsp = sample(n, seed=2, outliers=3)
    fig, info = plots.density_figure("teff", ref, ml, gsp)
    lo, hi = info["limits"]
    for key, pred in (("ml", ml), ("gspphot", gsp)):
        want = int(np.sum((ref < lo) | (ref > hi) | (pred < lo) | (pred > hi)))
        assert info["outside"][key] == want
    assert info["outside"]["gspphot"] >= 3
    notes = [t.get_text() for t in fig.axes[1].texts]
    assert f"{info['outside']['gspphot']:,} of {n:,} stars outside the axes, not shown" in notes
    if info["outside"]["ml"] == 0:
        assert not fig.axes[0].texts  # nothing clipped, nothing said
    assert not layout_problems(fig)


def test_residual_histogram_says_what_lies_beyond_its_range():
    ref, ml, gsp = sample(400, seed=3, outliers=3)
    fig, info = plots.residuals_figure("teff", ref, ml, gsp)
    span = info["span"]
    assert info["outside"] == {"ml": int(np.sum(np.abs(ml - ref) > span)), "gspphot": int(np.sum(np.abs(gsp - ref) > span))}
    assert info["outside"]["gspphot"] >= 3
    assert f"{info['outside']['gspphot']:,} GSP-Phot" in all_text(fig)
    drawn = sum(patch.get_path().vertices.shape[0] > 0 for patch in fig.axes[0].patches)
    assert drawn == 2  # one outline per method
    assert not layout_problems(fig)


def test_density_titles_do_not_overlap_even_with_big_numbers():
    """Large errors (thousands of K), eight-digit star counts: titles stay apart and inside the figure."""
    rng = np.random.default_rng(4)
    n = plots.SCATTER_MAX + 10
    ref = rng.uniform(3000, 40000, n)
    fig, _ = plots.density_figure("teff", ref, ref + rng.normal(0, 3000, n), ref + rng.normal(0, 9000, n))
    fig._suptitle.set_text(fig._suptitle.get_text().replace(f"{n:,}", "12,345,678"))
    assert not layout_problems(fig)
    for p in PARAMETERS:
        ref, ml, gsp = sample(300, seed=5)
        fig, _ = plots.density_figure(p, ref / 1000, ml / 1000, gsp / 1000)
        assert not layout_problems(fig), p
        fig, _ = plots.residuals_figure(p, ref, ml, gsp)
        assert not layout_problems(fig), p


def calibration_arrays(n, seed=6, faint_factor=2.0):
    """Reference, value, error and G with errors right below G = 15 and ``faint_factor`` too small above it."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(10, 18, n)
    sigma = 0.1 * (1 + 0.2 * (g - 10))
    ref = rng.normal(0, 1, n)
    value = ref + rng.normal(0, 1, n) * sigma
    error = np.where(g > 15, sigma / faint_factor, sigma)
    return ref, value, error, g


def test_calibration_by_magnitude_equals_numpy_and_finds_a_bad_faint_end():
    ref, value, error, g = calibration_arrays(6000)
    ref[:7] = np.nan  # left out
    error[7:10] = 0.0  # left out: an error of 0 calibrates nothing
    d = plots.calibration_by_magnitude(ref, value, error, g)
    ok = np.isfinite(ref) & (error > 0)
    gg, ratio = g[ok], np.abs(value[ok] - ref[ok]) / error[ok]
    edges = d["edges"]
    assert len(edges) == plots.MAX_BINS + 1 and edges[0] == gg.min() and edges[-1] == gg.max()
    assert d["n"].sum() == ok.sum() == 6000 - 10
    assert d["n"].max() - d["n"].min() <= 2  # equal-count bins
    for i in range(plots.MAX_BINS):
        last = i == plots.MAX_BINS - 1
        inside = (gg >= edges[i]) & ((gg <= edges[i + 1]) if last else (gg < edges[i + 1]))
        assert d["n"][i] == inside.sum()
        assert d["median"][i] == pytest.approx(np.median(ratio[inside]))
        assert d["p68"][i] == pytest.approx(np.percentile(ratio[inside], 68.27))
    centre = 0.5 * (edges[:-1] + edges[1:])
    bright, faint = (centre < 14.8), (centre > 15.2)
    # calibrated: median |r|/err 0.674 and 68th percentile 1; twice too small errors double both
    np.testing.assert_allclose(d["median"][bright], plots.CALIBRATED_MEDIAN, atol=0.08)
    np.testing.assert_allclose(d["p68"][bright], 1.0, atol=0.1)
    np.testing.assert_allclose(d["median"][faint], 2 * plots.CALIBRATED_MEDIAN, atol=0.15)


def test_calibration_figure_style_notes_and_layout():
    small = {p: calibration_arrays(120, seed=i) for i, p in enumerate(PARAMETERS)}
    fig, info = plots.calibration_figure(small)
    assert {p: info[p]["style"] for p in PARAMETERS} == dict.fromkeys(PARAMETERS, "scatter")
    assert info["teff"]["n"].sum() == 120 and len(info["teff"]["edges"]) == 120 // plots.MIN_PER_BIN + 1
    for ax, p in zip(fig.axes, PARAMETERS):
        want = int(np.sum(info[p]["ratio"] > plots.RATIO_MAX))
        assert info[p]["outside"] == want
        notes = [t.get_text() for t in ax.texts]
        assert notes == ([f"{want:,} of 120 stars above {plots.RATIO_MAX:g}, not shown"] if want else [])
    assert not layout_problems(fig)
    large = {p: calibration_arrays(plots.SCATTER_MAX + 100, seed=9) for p in PARAMETERS}
    fig, info = plots.calibration_figure(large)
    assert info["feh"]["style"] == "density"
    assert any(isinstance(c, QuadMesh) for c in fig.axes[0].collections)
    assert not layout_problems(fig)


def labelled_data(n=600, seed=7):
    """A stand-in for train.LabelledData with GSP-Phot inputs, and its predictions and G magnitudes."""
    rng = np.random.default_rng(seed)
    x = np.full((n, len(FEATURES)), np.nan, np.float32)
    labels, predictions = {}, {}
    centre = {"teff": 5500.0, "logg": 4.0, "feh": -0.2}
    width = {"teff": 600.0, "logg": 0.8, "feh": 0.4}
    for p in PARAMETERS:
        labels[p] = rng.normal(centre[p], width[p], n)
        x[:, FEATURES.index(GSPPHOT[p])] = labels[p] + rng.normal(0, width[p] / 2, n)
        err = np.full(n, width[p] / 5, np.float32)
        predictions[p] = ((labels[p] + rng.normal(0, width[p] / 5, n)).astype(np.float32), err)
    labels["feh"][:20] = np.nan  # stars without [Fe/H]
    split = np.array(["train"] * (n // 2) + ["validation"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    rng.shuffle(split)
    data = types.SimpleNamespace(x=x, labels=labels, split=split, source_id=np.arange(n, dtype=np.int64))
    return data, predictions, rng.uniform(9, 17, n)


def test_write_plots_adds_the_calibration_plot_only_with_g(tmp_path, monkeypatch):
    """Six PNGs without G (what train.py writes today); a seventh, of the test split only, with G."""
    data, predictions, g = labelled_data()
    written = plots.write_plots(tmp_path / "a", data, predictions, list(FEATURES))
    assert sorted(p.name for p in written) == sorted(f"{p}_{k}.png" for p in PARAMETERS for k in ("density", "residuals"))
    assert all(p.read_bytes()[:8] == PNG for p in written)

    seen = {}
    original = plots.calibration_figure

    def spy(samples):
        fig, info = original(samples)
        seen.update(info)
        return fig, info

    monkeypatch.setattr(plots, "calibration_figure", spy)
    written = plots.write_plots(tmp_path / "b", data, predictions, list(FEATURES), g_mag=g)
    assert written[-1].name == "calibration_vs_g.png" and written[-1].read_bytes()[:8] == PNG
    test = data.split == "test"
    for p in PARAMETERS:
        assert seen[p]["n"].sum() == np.sum(test & np.isfinite(data.labels[p]))
        ratio = np.abs(predictions[p][0][test] - data.labels[p][test]) / predictions[p][1][test]
        np.testing.assert_allclose(np.sort(seen[p]["ratio"]), np.sort(ratio[np.isfinite(ratio)]), rtol=1e-6)
    with pytest.raises(ValueError, match="one value per row"):
        plots.write_plots(tmp_path / "c", data, predictions, list(FEATURES), g_mag=g[:-1])


def test_g_magnitudes_follow_the_given_order():
    """G of each source_id as the gaia table has it, in the caller's order, NaN for a star without G or not in gaia."""
    con = connect(":memory:")
    rows = pd.DataFrame({"source_id": [10, 20, 30], "ra": 1.0, "dec": 2.0, "healpix_12": 0, "ingest_id": 1,
                         "phot_g_mean_mag": pd.array([12.5, None, 17.25], dtype="Float64")})
    con.execute("insert into gaia by name select * from rows")
    got = plots.g_magnitudes(con, np.array([30, 99, 10, 20, 30]))
    np.testing.assert_array_equal(got, [17.25, np.nan, 12.5, np.nan, 17.25])
    assert plots.g_magnitudes(con, np.array([], dtype=np.int64)).shape == (0,)


# ----------------------------------------------------------------- Kiel diagram of scored stars


def scored_db(n=120, other=40, seed=8):
    """In-memory database: n stars scored by model "m" (some without GSP-Phot or [Fe/H]), ``other`` by model "x"."""
    rng = np.random.default_rng(seed)
    con = connect(":memory:")
    ids = np.arange(1, n + 1, dtype=np.int64) * 1000
    teff = rng.uniform(3800, 7000, n)
    logg = rng.uniform(1.0, 5.0, n)
    feh = rng.normal(-0.3, 0.4, n)
    gsp = {"teff_gspphot": teff + rng.normal(0, 300, n), "logg_gspphot": logg + rng.normal(0, 0.3, n),
           "mh_gspphot": feh + rng.normal(0, 0.3, n)}
    gsp["teff_gspphot"][:2] = 30_000.0  # hot outliers: outside the axes
    gaia_rows = pd.DataFrame({"source_id": ids, "ra": rng.uniform(0, 10, n), "dec": rng.uniform(-10, 0, n),
                              "healpix_12": 0, "ingest_id": 1})
    for c, v in gsp.items():
        gaia_rows[c] = pd.array(np.where(np.arange(n) % 10 == 3, np.nan, v), dtype="Float64")  # 10 % without GSP-Phot
        gaia_rows.loc[np.arange(n) % 10 == 3, c] = pd.NA
    con.execute("insert into gaia by name select * from gaia_rows")
    rows = pd.DataFrame({"source_id": ids, "teff": teff, "logg": logg, "feh": pd.array(feh, dtype="Float64"),
                         "model": "m", "scored_at": pd.Timestamp("2025-01-01")})
    rows.loc[5, "feh"] = pd.NA
    rows.loc[6, "teff"] = 20_000.0  # outside the axes
    others = rows.iloc[:other].assign(model="x", teff=9000.0)
    con.execute("insert into predictions by name select * from rows")
    con.execute("insert into predictions by name select * from others")
    return con


def expected_panels(con, model):
    """Each panel's stars, read through the stars_with_predictions view (not the code's own SQL)."""
    df = con.execute("select * from stars_with_predictions where model = ? order by source_id", [model]).df()
    panels = {}
    for key, cols in (("ml", ("teff", "logg", "feh")), ("gspphot", ("teff_gspphot", "logg_gspphot", "mh_gspphot"))):
        v = df[list(cols)].astype(float).to_numpy()
        panels[key] = v[np.isfinite(v).all(axis=1)]
    return len(df), panels


def test_kiel_numbers_equal_the_stars_with_predictions_view(tmp_path):
    con = scored_db()
    d = score_plots.write_score_plots(con, "m", tmp_path / "plots" / "kiel.png")
    assert (tmp_path / "plots" / "kiel.png").read_bytes()[:8] == PNG
    n_scored, panels = expected_panels(con, "m")
    assert d["n_scored"] == n_scored == 120 and d["style"] == "scatter"
    both = np.concatenate([panels["ml"], panels["gspphot"]])
    lo, hi = np.percentile(both[:, 0], [0.5, 99.5])
    assert d["teff_range_k"] == pytest.approx((lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    (t0, t1), (g0, g1) = d["teff_range_k"], d["logg_range_dex"]
    for key, v in panels.items():
        assert d[key]["n"] == len(v)
        np.testing.assert_allclose(np.column_stack([d[key]["teff"], d[key]["logg"], d[key]["feh"]]), v)
        outside = ~((v[:, 0] >= t0) & (v[:, 0] <= t1) & (v[:, 1] >= g0) & (v[:, 1] <= g1))
        assert d[key]["outside"] == outside.sum()
    assert d["ml"]["n"] == 119 and d["gspphot"]["n"] == 108  # one without [Fe/H]; 12 without GSP-Phot
    assert d["gspphot"]["outside"] >= 2  # the two at 30,000 K


def test_kiel_figure_is_drawn_as_astronomers_draw_it():
    """Teff falls to the right, log g grows downwards; clipped stars are said; small samples are points."""
    con = scored_db()
    d = score_plots.kiel_numbers(con, "m")
    fig = score_plots.kiel_figure(d)
    ml, gsp = fig.axes[:2]
    assert ml.get_xlim()[0] > ml.get_xlim()[1] and ml.get_ylim()[0] > ml.get_ylim()[1]
    assert ml.get_xlabel() == "Teff (K)" and ml.get_ylabel() == "log g (dex)"
    points = [c for c in gsp.collections if isinstance(c, PathCollection)]
    assert len(points) == 1 and len(points[0].get_offsets()) == d["gspphot"]["n"]
    assert f"{d['gspphot']['outside']:,} of {d['gspphot']['n']:,} stars outside the axes, not shown" in [t.get_text() for t in gsp.texts]
    assert f"{d['gspphot']['n']:,} of 120 stars have Teff, log g, [M/H]" in gsp.get_title()
    assert not layout_problems(fig)


def test_kiel_density_cells_equal_numpy(monkeypatch):
    """Above SCATTER_MAX the cells' counts equal np.histogram2d and their colours the median [Fe/H] of their stars."""
    monkeypatch.setattr(score_plots, "SCATTER_MAX", 50)
    # coarse cells hold many stars, so that a median differs from a mean or a single value
    monkeypatch.setattr(score_plots, "GRID", (8, 6))
    con = scored_db(n=400, other=10, seed=9)
    d = score_plots.kiel_numbers(con, "m")
    assert d["style"] == "density" and d["ml"]["counts"].shape == (6, 8) and d["ml"]["counts"].max() >= 10
    _, panels = expected_panels(con, "m")
    tx, gy = d["teff_edges_k"], d["logg_edges_dex"]
    for key, v in panels.items():
        counts = np.histogram2d(v[:, 1], v[:, 0], bins=[gy, tx])[0]
        np.testing.assert_array_equal(d[key]["counts"], counts)
        assert counts.sum() + d[key]["outside"] == d[key]["n"] == len(v)
        j = np.clip(np.searchsorted(gy, v[:, 1], side="right") - 1, 0, len(gy) - 2)
        i = np.clip(np.searchsorted(tx, v[:, 0], side="right") - 1, 0, len(tx) - 2)
        for jj, ii in zip(*np.nonzero(counts)):
            inside = (j == jj) & (i == ii) & (v[:, 0] >= tx[0]) & (v[:, 0] <= tx[-1]) & (v[:, 1] >= gy[0]) & (v[:, 1] <= gy[-1])
            assert d[key]["median_feh"][jj, ii] == pytest.approx(np.median(v[inside, 2]))
        assert np.isnan(d[key]["median_feh"][counts == 0]).all()
    fig = score_plots.kiel_figure(d)
    assert any(isinstance(c, QuadMesh) for c in fig.axes[0].collections)
    assert "median [Fe/H] per cell" in fig._suptitle.get_text()
    # a long model name and eight-digit counts still leave the titles apart
    d.update(model="gaia-dr3-skymapper-dr4-deep-ensemble-v12", n_scored=12_345_678)
    d["gspphot"]["n"] = 11_111_111
    assert not layout_problems(score_plots.kiel_figure(d))


def test_kiel_of_a_model_without_predictions_is_a_user_error(tmp_path):
    con = scored_db(n=10, other=5)
    with pytest.raises(UserError, match="stellardb score --model nope"):
        score_plots.write_score_plots(con, "nope", tmp_path / "kiel.png")
    assert not (tmp_path / "kiel.png").exists()


def test_score_plots_imports_no_keras_tensorflow_rich_or_matplotlib():
    code = ("import sys, stellardb.ml.score_plots, stellardb.ml.plots, stellardb.catalog.xmatch_plot; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'rich', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------- crossmatch plot


def test_xmatch_plot_says_what_it_leaves_out(tmp_path):
    """Pairs beyond the radius and magnitude bins with < MIN_SOURCES sources are counted in notes, as SQL counts them."""
    rng = np.random.default_rng(10)
    con = connect(":memory:")
    n = 300
    r = np.concatenate([rng.uniform(14, 18, n - 4), [21.1, 21.2, 22.3, 22.4]])  # two sparse faint bins
    sky = pd.DataFrame({"object_id": np.arange(n), "raj2000": 1.0, "dej2000": -1.0, "mean_epoch": 57000.0,
                        "r_psf": r, "healpix_12": 0, "ingest_id": 1})
    con.execute("insert into skymapper by name select * from sky")
    matched = np.flatnonzero(rng.random(n) < 0.9)
    sep = rng.rayleigh(0.1, matched.size)
    sep[:3] = 1.5  # made with a larger radius than the one plotted
    pairs = pd.DataFrame({"skymapper_object_id": matched, "gaia_source_id": matched, "sep_arcsec": sep, "n_candidates": 1})
    con.execute("insert into xmatch by name select * from pairs")
    d = xmatch_plot.write_xmatch_plot(con, tmp_path / "x.png", 1.0)
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG
    fig = xmatch_plot.xmatch_figure(d, 1.0, int(np.sum(sep > 1.0)))
    text = all_text(fig)
    assert f"3 of {matched.size:,} pairs beyond 1 arcsec, not shown" in text
    sparse = pd.Series(np.floor(r / xmatch_plot.MAG_BIN) * xmatch_plot.MAG_BIN).value_counts()
    sparse = sparse[sparse < xmatch_plot.MIN_SOURCES]
    assert f"{int(sparse.sum())} sources in {len(sparse)} bins with < {xmatch_plot.MIN_SOURCES} sources, not drawn" in text
    assert not layout_problems(fig)
    # a full catalogue's counts in the titles
    big = dict(d, sep_counts=d["sep_counts"] * 100_000, n_sources=d["n_sources"] * 100_000,
               n_matched=d["n_matched"] * 100_000)
    assert not layout_problems(xmatch_plot.xmatch_figure(big, 1.0, 12_345_678))
