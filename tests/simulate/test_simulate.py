"""The simulated sky: formats, conventions and realism (issue 2)."""

from __future__ import annotations

import gzip
import hashlib
import re

import healpy
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from stellardb.catalog import astrometry
from stellardb import simulate as sim
from stellardb.simulate.gaia_schema import GAIA_SOURCE_COLUMNS
from ..helpers import SKY_STARS, read_truth


SKYMAPPER_COLUMNS = [
    "object_id", "raj2000", "dej2000", "e_raj2000", "e_dej2000", "mean_epoch", "flags", "class_star",
    "u_psf", "e_u_psf", "v_psf", "e_v_psf", "g_psf", "e_g_psf", "r_psf", "e_r_psf",
    "i_psf", "e_i_psf", "z_psf", "e_z_psf", "ebmv_sfd",
]
BJ_COLUMNS = ["source_id", "r_med_geo", "r_lo_geo", "r_hi_geo", "r_med_photogeo", "r_lo_photogeo", "r_hi_photogeo", "flag"]
SOS_COLUMNS = ["source_id", "ra", "dec", "teff", "e_teff", "logg", "e_logg", "feh", "e_feh", "survey"]


def mad(x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.median(np.abs(x - np.median(x))))


# ---------------------------------------------------------------- formats


@pytest.fixture(scope="module")
def gaia_astropy(sky):
    # Gaia's bulk files write missing values as 'null', which ECSV readers must be told
    # (astropy docs, "Reading Gaia data tables").
    return Table.read(sky.files["gaia"], format="ascii.ecsv", fill_values=("null", "0"))


def test_gaia_file_is_archive_ecsv(sky, gaia_astropy):
    """gaia_source.csv.gz parses as ECSV with DR3 names, dtypes and units, in archive order."""
    t = gaia_astropy
    assert len(t) == SKY_STARS
    assert t.colnames == [c[0] for c in GAIA_SOURCE_COLUMNS]
    for name, datatype, unit, *_ in GAIA_SOURCE_COLUMNS:
        kind = {"int64": "i", "int16": "i", "float64": "f", "float32": "f", "bool": "b", "string": "U"}[datatype]
        assert t[name].dtype.kind == kind, name
        if datatype not in ("string", "bool"):
            assert t[name].dtype.itemsize == int(datatype[-2:]) // 8, name
    assert t["ra"].unit == u.deg and t["parallax"].unit == u.mas and t["pmra"].unit == u.mas / u.yr
    assert np.all(t["ref_epoch"] == 2016.0)
    with gzip.open(sky.files["gaia"], "rt") as fh:
        assert fh.readline() == "# %ECSV 1.0\n"


def test_gaia_columns_match_real_dr3_file(data_path, gaia_astropy):
    """Every column we write has the datatype and unit of the same column in a real DR3 file."""
    real = Table.read(data_path("real/gaia_dr3_fixture_5rows.ecsv"), format="ascii.ecsv")
    for name in gaia_astropy.colnames:
        assert name in real.colnames, name
        assert real[name].dtype.kind == gaia_astropy[name].dtype.kind, name
        if real[name].dtype.kind in "if":
            assert real[name].dtype.itemsize == gaia_astropy[name].dtype.itemsize, name
        assert str(real[name].unit) == str(gaia_astropy[name].unit), name


def test_gaia_null_convention(sky, gaia_astropy):
    """Missing Gaia values are written 'null' (never empty, never nan) and read back as masked."""
    with gzip.open(sky.files["gaia"], "rt") as fh:
        rows = [line for line in fh if not line.startswith("#")][1:2000]
    text = "".join(rows)
    assert ",null," in text or ",null\n" in text
    assert ",," not in text and not re.search(r"(^|,)nan(,|$)", text, re.M)
    t = gaia_astropy
    assert 0 < t["teff_gspphot"].mask.sum() < len(t)
    # the published GSP-Phot block is all-or-nothing per source
    assert np.array_equal(t["teff_gspphot"].mask, t["mh_gspphot_upper"].mask)
    assert np.array_equal(t["teff_gspphot"].mask, t["libname_gspphot"].mask)


def test_gaia_parses_with_duckdb(sky, sky_db):
    """DuckDB reads the Gaia file with its archive types; nulls become SQL NULL."""
    types = dict(sky_db.execute("select column_name, column_type from (describe gaia)").fetchall())
    assert types["source_id"] == "BIGINT" and types["ra"] == "DOUBLE" and types["has_xp_continuous"] == "BOOLEAN"
    n, n_plx, n_teff = sky_db.execute("select count(*), count(parallax), count(teff_gspphot) from gaia").fetchone()
    assert n == SKY_STARS and 0 < n_plx < n and 0 < n_teff < n


def test_source_id_encodes_healpix(sky, sky_db):
    """source_id // 2**35 is healpy's nested order-12 index of (ra, dec); ids are unique."""
    sid, ra, dec = (np.array(c) for c in zip(*sky_db.execute("select source_id, ra, dec from gaia").fetchall()))
    expected = healpy.ang2pix(4096, ra, dec, nest=True, lonlat=True)
    np.testing.assert_array_equal(sid // 2**35, expected)
    assert len(np.unique(sid)) == len(sid)


def test_skymapper_distances_labels_columns(sky, sky_db):
    """The other three files carry the surveys' own column names, types and null convention."""
    for view, cols in (("skymapper", SKYMAPPER_COLUMNS), ("distances", BJ_COLUMNS), ("sos", SOS_COLUMNS)):
        names = [r[0] for r in sky_db.execute(f"select column_name from (describe {view})").fetchall()]
        assert names == cols, view
    types = dict(sky_db.execute("select column_name, column_type from (describe skymapper)").fetchall())
    assert types["object_id"] == "BIGINT" and types["mean_epoch"] == "DOUBLE" and types["u_psf"] == "DOUBLE"
    # SkyMapper TAP CSV exports leave missing magnitudes empty
    text = sky.files["skymapper"].read_text()
    assert ",," in text and "null" not in text and ",nan" not in text
    lo, hi = sky_db.execute("select min(mean_epoch), max(mean_epoch) from skymapper").fetchone()
    assert 56600 < lo < hi < 58800  # MJD 2014..2019
    assert sky_db.execute("select count(*) from distances where not (r_lo_geo <= r_med_geo and r_med_geo <= r_hi_geo)").fetchone()[0] == 0
    assert sky_db.execute("select count(distinct object_id) = count(*) from skymapper").fetchone()[0]


def test_parquet_format(tmp_path):
    """--format parquet writes the three non-Gaia catalogues as Parquet with the same columns."""
    s = sim.simulate(tmp_path / "p", stars=3000, seed=11, fmt="parquet")
    assert s.files["gaia"].name == "gaia_source.csv.gz"
    assert pq.read_schema(s.files["skymapper"]).names == SKYMAPPER_COLUMNS
    assert pq.read_schema(s.files["distances"]).names == BJ_COLUMNS
    assert pq.read_schema(s.files["sos"]).names == SOS_COLUMNS
    sm = pq.read_table(s.files["skymapper"])
    assert sm.column("u_psf").null_count > 0


# ---------------------------------------------------------------- determinism


def _digest(summary):
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in summary.files.items()}


def test_same_seed_identical_files(tmp_path, monkeypatch):
    """Same seed -> byte-identical files, with one or two worker processes and several chunks."""
    monkeypatch.setattr(sim, "CHUNK_STARS", 1500)
    a = sim.simulate(tmp_path / "a", stars=4000, seed=5, truth=True, workers=1)
    b = sim.simulate(tmp_path / "b", stars=4000, seed=5, truth=True, workers=2)
    c = sim.simulate(tmp_path / "c", stars=4000, seed=6, workers=1)
    assert _digest(a) == _digest(b)
    assert _digest(a)["gaia"] != _digest(c)["gaia"]
    # ids stay unique across chunks
    truth = pq.read_table(a.files["truth"]).to_pandas()
    assert truth.source_id.is_unique and truth.skymapper_object_id.dropna().is_unique


# ---------------------------------------------------------------- realism: sky


def test_sky_coverage(sky):
    """Southern sky with density rising toward the plane; the pole and RA 0/360 are populated."""
    t = read_truth(sky)
    assert t.dec_2016_deg.max() < 2.0
    l_deg, b_deg = astrometry.icrs_to_galactic(t.ra_2016_deg.values, t.dec_2016_deg.values)
    sin_b = np.abs(np.sin(np.radians(b_deg)))
    # stars per unit sin(b) (i.e. per unit area) near the plane vs at high latitude
    low = (sin_b < np.sin(np.radians(10))).sum() / np.sin(np.radians(10))
    high = (sin_b > np.sin(np.radians(40))).sum() / (1 - np.sin(np.radians(40)))
    assert low > 3 * high
    assert (t.dec_2016_deg < -87).sum() >= 5
    assert ((t.ra_2016_deg < 1).sum() >= 5) and ((t.ra_2016_deg > 359).sum() >= 5)


def test_close_neighbours(sky):
    """About 1-2 per cent of Gaia sources have another within 1-3 arcsec (astropy search_around_sky)."""
    t = read_truth(sky)
    c = SkyCoord(t.ra_2016_deg.values * u.deg, t.dec_2016_deg.values * u.deg)
    i, j, sep, _ = c.search_around_sky(c, 3 * u.arcsec)
    pair = (i != j) & (sep.arcsec >= 1.0)
    frac = len(np.unique(i[pair])) / len(t)
    assert 0.01 <= frac <= 0.025


def test_counterparts_missing_both_ways(sky, sky_db):
    """A few per cent of Gaia sources lack a SkyMapper row, and vice versa."""
    t = read_truth(sky)
    gaia_only = t.skymapper_object_id.isna().mean()
    n_sm = sky_db.execute("select count(*) from skymapper").fetchone()[0]
    sm_only = 1 - t.skymapper_object_id.notna().sum() / n_sm
    assert 0.01 < gaia_only < 0.10
    assert 0.01 < sm_only < 0.10


def test_skymapper_positions_follow_proper_motion(sky, sky_db):
    """SkyMapper minus Gaia offsets equal pm * (mean_epoch - 2016) plus ~0.1 arcsec scatter."""
    t = read_truth(sky).dropna(subset=["skymapper_object_id"])
    sm = sky_db.execute("select object_id, raj2000, dej2000, e_raj2000, mean_epoch from skymapper").df().set_index("object_id")
    g = sky_db.execute("select source_id, ra, dec, pmra, pmdec from gaia").df().set_index("source_id")
    t = t.join(sm, on="skymapper_object_id").join(g, on="source_id")
    dt = (t.mean_epoch.values - 57388.5) / 365.25  # MJD 57388.5 = J2016.0
    gaia = SkyCoord(t.ra.values * u.deg, t.dec.values * u.deg)
    skym = SkyCoord(t.raj2000.values * u.deg, t.dej2000.values * u.deg)
    d_east, d_north = (a.to_value(u.mas) for a in gaia.spherical_offsets_to(skym))
    pm_e, pm_n = t.pmra_mas_yr.values * dt, t.pmdec_mas_yr.values * dt
    resid = np.hypot(d_east - pm_e, d_north - pm_n)
    assert 50 < np.median(resid) < 200  # ~0.1 arcsec astrometric scatter
    # the offsets are the motion: regression slope ~1 in both coordinates (the
    # 0.1 arcsec scatter against a 13 mas rms motion leaves a few per cent of noise)
    w = 1.0 / t.e_raj2000.values**2
    for d, pm in ((d_east, pm_e), (d_north, pm_n)):
        assert 0.9 < np.sum(w * d * pm) / np.sum(w * pm**2) < 1.1
    # motions over 0.2 arcsec between epochs (about 1 in 2000 stars in this 40k sky)
    fast = np.hypot(pm_e, pm_n) > 200
    assert fast.sum() >= 10
    assert np.corrcoef(d_east[fast], pm_e[fast])[0, 1] > 0.9
    # without propagation the offsets would be much larger than the scatter
    assert np.median(np.hypot(d_east, d_north)[fast]) > 2 * np.median(resid[fast])


# ---------------------------------------------------------------- realism: stars


def test_stellar_parameters_ranges_and_correlations(sky):
    """Teff, log g, [Fe/H] span the requested ranges and correlate as real populations do."""
    t = read_truth(sky)
    assert t.teff_k.between(3500, 8000).all() and t.logg.between(0.5, 5.0).all() and t.feh.between(-2.5, 0.5).all()
    assert set(t.population) == {"thin_disk", "thick_disk", "halo"}
    assert set(t.stage) == {"dwarf", "subgiant", "red_giant", "red_clump"}
    giants = t[t.stage.isin(["red_giant", "red_clump"])]
    assert giants.teff_k.median() < 5200 and giants.logg.max() < 3.8
    # metal-poor giants are hotter at fixed gravity
    rgb = t[t.stage == "red_giant"]
    coef = np.polyfit(np.c_[rgb.logg, rgb.feh] @ [0, 1], rgb.teff_k - 260 * (rgb.logg - 2.5), 1)[0]
    assert coef < -100
    assert t[t.population == "halo"].feh.median() < t[t.population == "thin_disk"].feh.median() - 1.0


def test_photometry_carries_feh_in_v_and_logg_in_u(sky, sky_db):
    """At fixed Gaia colour, de-reddened v-g rises with [Fe/H]; for hot stars u-v rises with log g."""
    df = sky_db.execute(
        """select t.teff_k, t.logg, t.feh, t.ebv_true, s.u_psf, s.v_psf, s.g_psf
           from truth t join skymapper s on s.object_id = t.skymapper_object_id
           where s.u_psf is not null and s.v_psf is not null and s.g_psf is not null and t.g_true_mag < 16"""
    ).df()
    vg = df.v_psf - df.g_psf - (4.026 - 2.986) * df.ebv_true
    uv = df.u_psf - df.v_psf - (4.294 - 4.026) * df.ebv_true
    x = np.c_[np.ones(len(df)), df.teff_k / 1000, (df.teff_k / 1000) ** 2, df.feh, df.logg]
    beta_vg = np.linalg.lstsq(x, vg, rcond=None)[0]
    assert beta_vg[3] > 0.1  # mag per dex of [Fe/H]
    hot = df.teff_k > 6000
    beta_uv = np.linalg.lstsq(x[hot], uv[hot], rcond=None)[0]
    assert beta_uv[4] > 0.08  # mag per dex of log g (Balmer jump)


def test_depth_and_missing_bands(sky, sky_db):
    """u and v are shallower than g, r; faint Gaia sources lose BP/RP, GSP-Phot stops at G ~ 19."""
    miss = sky_db.execute(
        """select avg((u_psf is null)::int), avg((v_psf is null)::int), avg((g_psf is null)::int), avg((r_psf is null)::int)
           from skymapper"""
    ).fetchone()
    assert miss[0] > 3 * miss[2] and miss[1] > 3 * miss[3]
    faint_no_xp, bright_no_xp = sky_db.execute(
        """select avg((phot_bp_mean_mag is null)::int) filter (where phot_g_mean_mag > 20.5),
                  avg((phot_bp_mean_mag is null)::int) filter (where phot_g_mean_mag < 17)
           from gaia"""
    ).fetchone()
    assert faint_no_xp > 0.1 and bright_no_xp < 0.02
    gsp_bright, gsp_faint = sky_db.execute(
        """select avg((teff_gspphot is not null)::int) filter (where phot_g_mean_mag < 18),
                  count(teff_gspphot) filter (where phot_g_mean_mag > 19.2)
           from gaia"""
    ).fetchone()
    assert gsp_bright > 0.8 and gsp_faint == 0
    # magnitude errors grow toward the faint end
    e_bright, e_faint = sky_db.execute(
        "select median(e_g_psf) filter (where g_psf < 16), median(e_g_psf) filter (where g_psf > 20) from skymapper"
    ).fetchone()
    assert e_faint > 5 * e_bright


def test_distances_and_extinction(sky, sky_db):
    """r_med_geo tracks the true distance for good parallaxes; extinction rises with distance and toward the plane."""
    df = sky_db.execute(
        """select d.r_med_geo, t.distance_pc, g.parallax_over_error, t.ebv_true, t.ebv_sfd, g.b
           from distances d join truth t using (source_id) join gaia g using (source_id)"""
    ).df()
    good = df.parallax_over_error > 10
    assert np.median(np.abs(np.log(df.r_med_geo[good] / df.distance_pc[good]))) < 0.05
    n_missing = SKY_STARS - len(df)
    assert 0.02 * SKY_STARS < n_missing < 0.2 * SKY_STARS
    assert (df.ebv_true <= df.ebv_sfd + 1e-9).all()
    near_plane = np.abs(df.b) < 10
    assert df.ebv_sfd[near_plane].median() > 4 * df.ebv_sfd[np.abs(df.b) > 40].median()
    far = df.distance_pc > 2000
    assert (df.ebv_true / df.ebv_sfd)[far].median() > (df.ebv_true / df.ebv_sfd)[df.distance_pc < 200].median()


def test_gsp_phot_versus_reference_matches_seed(sky, sky_db):
    """GSP-Phot minus reference has MAD within 25 per cent of the seed's 165 K / 0.213 / 0.170 dex."""
    df = sky_db.execute(
        """select s.teff, s.logg, s.feh, g.teff_gspphot, g.logg_gspphot, g.mh_gspphot
           from sos s join gaia g using (source_id) where g.teff_gspphot is not null"""
    ).df()
    assert len(df) > 1000
    for gsp, ref, target in (("teff_gspphot", "teff", 165.0), ("logg_gspphot", "logg", 0.213), ("mh_gspphot", "feh", 0.170)):
        m = mad(df[gsp] - df[ref])
        assert abs(m / target - 1) < 0.25, (gsp, m)
    # GSP-Phot [M/H] runs low
    assert np.median(df.mh_gspphot - df.feh) < -0.05


def test_reference_labels(sky, sky_db):
    """About 5 per cent of stars carry labels, brighter ones preferred, with spectroscopic-level noise."""
    df = sky_db.execute(
        """select s.*, t.teff_k, t.logg as logg_true, t.feh as feh_true, g.phot_g_mean_mag
           from sos s join truth t using (source_id) join gaia g using (source_id)"""
    ).df()
    assert 0.04 < len(df) / SKY_STARS < 0.06
    g_all = sky_db.execute("select median(phot_g_mean_mag) from gaia").fetchone()[0]
    assert df.phot_g_mean_mag.median() < g_all - 2
    assert 20 < (df.teff - df.teff_k).std() < 90
    assert 0.04 < (df.logg - df.logg_true).std() < 0.15
    assert 0.03 < (df.feh - df.feh_true).std() < 0.10
    assert set(df.survey) <= {"APOGEE", "GALAH", "GES", "RAVE", "LAMOST"} and df.survey.nunique() >= 4
    assert (df.dec[df.survey == "LAMOST"] <= -10 + 1e-6).sum() == 0 or df[df.survey == "LAMOST"].dec.max() <= 2


def test_no_truth_leaks_into_catalogues(sky, sky_db):
    """No published column reproduces a true parameter: every column misses it by a realistic margin."""
    t = read_truth(sky).set_index("source_id")
    g = sky_db.execute("select * from gaia").df().set_index("source_id")
    s = sky_db.execute("select * from sos").df().set_index("source_id")
    sm = sky_db.execute("select * from skymapper").df().set_index("object_id")
    truth_cols = {"teff_k": 25.0, "logg": 0.03, "feh": 0.03}
    frames = [g.join(t, how="inner", rsuffix="_t"), s.join(t, how="inner", rsuffix="_t"),
              sm.join(t.reset_index().set_index("skymapper_object_id"), how="inner", rsuffix="_t")]
    for frame in frames:
        for col in frame.columns:
            if col in t.columns or not pd.api.types.is_numeric_dtype(frame[col].dtype):
                continue
            x = frame[col].astype(float)
            ok = x.notna().values
            if ok.sum() < 100:
                continue
            design = np.c_[np.ones(ok.sum()), x.values[ok]]
            for truth_col, min_rms in truth_cols.items():
                y = frame[truth_col].values[ok]
                # a (scaled, shifted) copy of the truth would leave tiny residuals
                resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
                assert resid.std() > min_rms, (col, truth_col)


# ---------------------------------------------------------------- bad input


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    """A run that fails half-way leaves neither OUTDIR nor a partial directory."""
    from stellardb.simulate import surveys

    monkeypatch.setattr(sim, "CHUNK_STARS", 1000)
    real = surveys.build_chunk
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(surveys, "build_chunk", flaky)
    with pytest.raises(RuntimeError):
        sim.simulate(tmp_path / "out", stars=3000, seed=1, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_files(tmp_path):
    """--overwrite replaces an existing sky; without it the existing files are untouched."""
    a = sim.simulate(tmp_path / "sky", stars=500, seed=1)
    before = _digest(a)
    with pytest.raises(sim.UserError, match="--overwrite"):
        sim.simulate(tmp_path / "sky", stars=500, seed=2)
    assert _digest(a) == before
    b = sim.simulate(tmp_path / "sky", stars=500, seed=2, overwrite=True)
    assert _digest(b)["gaia"] != before["gaia"]



_SIGTERM_SCRIPT = """
import multiprocessing, os, signal, sys, threading, time, traceback
from stellardb.cores import process_pool

# the CLI's handler (stellardb.cli.main._exit_cleanly_on_sigterm), inherited through fork
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

def task(i):
    # As OpenBLAS does in a real worker: another thread that can take the SIGTERM while
    # the main thread, which alone runs Python signal handlers, waits on the task queue.
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    both.wait(timeout=60)  # one task per worker: each holds its task until the other has one
    return os.getpid()

def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    # ProcessLookupError: the pool's handler thread reaped the worker between open and
    # read (about one run in twenty on a busy machine, which then hung in terminate)
    except (FileNotFoundError, ProcessLookupError):
        return True

both = multiprocessing.get_context("fork").Barrier(2)
with process_pool(2) as pool:
    try:
        pids = set(pool.map(task, range(2), chunksize=1))
        # what Pool.terminate() does to its workers, without the stop sentinels it also
        # queues (which may or may not reach a worker: the hang was a race)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not all(map(gone, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        print("dead" if all(map(gone, pids)) else "alive", len(pids), flush=True)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        # A worker killed behind the pool's back may hold the task queue's lock, so the
        # pool's own exit (terminate) could wait for ever, and the pool starts
        # replacements: end this whole process group (its own session) at once, whatever
        # happened above.
        os.killpg(0, signal.SIGKILL)
"""


def test_pool_workers_die_on_sigterm_whatever_thread_receives_it(tmp_path):
    """A SIGTERM to a pool worker ends it even when the signal lands on a thread other than
    the main one, blocked on the task queue (`simulate --stars 2000000` once hung for ever
    in Pool.terminate after writing every file).  The 60 s deadline only catches a hang;
    dying takes milliseconds."""
    import subprocess
    import sys

    import os
    import signal

    script = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = script.communicate(timeout=150)
    finally:
        # a script stuck before its own killpg leaves its pool's workers behind (review)
        try:
            os.killpg(script.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        script.wait()
    assert out.split() == ["dead", "2"], err


def test_simulate_uses_the_safe_pool(tmp_path, monkeypatch):
    """The simulator's workers come from stellardb.cores.process_pool (tested above)."""
    used = []
    real = sim.process_pool

    def spy(workers):
        used.append(workers)
        return real(workers)

    monkeypatch.setattr(sim, "process_pool", spy)
    monkeypatch.setattr(sim, "CHUNK_STARS", 500)
    sim.simulate(tmp_path / "sky", stars=1500, seed=3, workers=2)
    assert used == [2]
