"""Photometric surveys as declared specs: the spec and its SQL agree, every survey ingests in its own
spellings and null conventions, and every survey's crossmatch equals a brute-force one."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stellardb.catalog import db
from stellardb.catalog.surveys import NEW_SURVEYS, SURVEYS
from stellardb.cli.main import cli
from stellardb.errors import UserError
from stellardb.ingest import pipeline

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
FILES = {"gaia": "gaia_source.csv.gz", "skymapper": "skymapper_master.csv", "tmass": "tmass_psc.csv",
         "allwise": "allwise_source.csv", "ps1": "ps1_dr2_mean.csv", "sdss": "sdss_dr17_photoobj.csv",
         "distances": "bailer_jones_distances.csv"}


@pytest.fixture(scope="module")
def allsky(tmp_path_factory):
    """A 12,000-star simulated whole sky with every survey, ingested (truth kept)."""
    from stellardb.simulate import simulate

    root = tmp_path_factory.mktemp("allsky")
    simulate(root / "sky", stars=12_000, seed=15, truth=True, sky="all", workers=1)
    path = root / "allsky.duckdb"
    for table, name in FILES.items():
        pipeline.run(path, table, [root / "sky" / name])
    return root, path


def _copy(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / path.name
    shutil.copy(path, out)
    return out


def test_every_survey_spec_matches_its_sql():
    """Table, key, position, epoch, bands and errors, crossmatch table, positions view, features view and
    radius setting of each spec exist in the schema, as the spec names them."""
    con = db.connect(":memory:")
    try:
        for s in SURVEYS.values():
            cols = {c.lower() for c, _ in db.table_columns(con, s.table)}
            wanted = [s.key, *s.position, *(c for b in s.bands for c in (b.mag, b.err))]
            wanted += [s.epoch_column] if s.epoch_column else []
            assert {w.lower() for w in wanted} <= cols, (s.name, sorted({w.lower() for w in wanted} - cols))
            xm = {c.lower() for c, _ in db.table_columns(con, s.xmatch_table)}
            assert {s.xmatch_key.lower(), "gaia_source_id", "sep_arcsec", "n_candidates", "dt_yr"} == xm
            pos = [d[0] for d in con.execute(f"select * from {s.positions_view} limit 0").description]
            assert pos == ["object_id", "ra_deg", "dec_deg", "epoch_yr"], s.name
            assert db.get_setting(con, s.radius_setting) == s.radius_arcsec
            if s.name != "skymapper":
                feats = {d[0].lower() for d in con.execute(f"select * from {s.features_view} limit 0").description}
                assert {c.lower() for b in s.bands for c in (b.mag, b.err)} | {"source_id", s.passes_column} == feats
            assert all(0 < b.r_ebv < 5 for b in s.bands) and s.extinction_source
    finally:
        con.close()


@pytest.mark.parametrize("name", NEW_SURVEYS)
def test_each_simulated_survey_file_ingests_with_its_own_nulls(allsky, name):
    """Every row is stored; PS1's -999 and SDSS's -9999 become NULL, SDSS clean = 0 rows keep no
    photometry; 2MASS and AllWISE upper limits stay as written, and the features view drops them."""
    root, path = allsky
    s = SURVEYS[name]
    raw = pd.read_csv(root / "sky" / FILES[name])
    band = s.bands[-1]  # the shallowest band: the most missing values
    con = db.connect(path)
    try:
        assert db.row_count(con, name) == len(raw)
        stored = con.execute(f"select count({band.mag}), count({band.err}) from {name}").fetchone()
        matched = con.execute(f"select count(*), count(v.{band.err}) from {s.xmatch_table} x join {name} v "
                              f"on v.{s.key} = x.{s.xmatch_key}").fetchone()
        feats = con.execute(f"select count(*), count({band.mag}) from {s.features_view}").fetchone()
    finally:
        con.close()
    if name == "ps1":
        assert stored[0] == int((raw[band.mag] != -999).sum()) < len(raw)
    elif name == "sdss":
        assert stored[0] == int((raw["clean"] == 1).sum()) < len(raw)
    else:
        assert stored == (len(raw), int(raw[band.err].notna().sum()))
        assert stored[1] < stored[0]
        # upper limits are no measurement: the features carry a band only where its error is given
        assert feats == matched


def _brute_force_pairs(gaia: pd.DataFrame, rows: pd.DataFrame, radius_arcsec: float) -> set:
    """Nearest Gaia source (moved linearly on the tangent plane to each row's epoch) within the radius,
    ties to the smaller id; then a Gaia source keeps its nearest row.  KD-tree only to find candidates."""
    from scipy.spatial import cKDTree

    def unit(ra, dec):
        ra, dec = np.radians(ra), np.radians(dec)
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)

    p = unit(gaia.ra.to_numpy(), gaia.dec.to_numpy())
    ra, dec = np.radians(gaia.ra.to_numpy()), np.radians(gaia.dec.to_numpy())
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=1)
    mas = np.radians(1 / 3.6e6)
    v = (gaia.pmra.fillna(0).to_numpy()[:, None] * east + gaia.pmdec.fillna(0).to_numpy()[:, None] * north) * mas
    q = unit(rows.ra.to_numpy(), rows.dec.to_numpy())
    tree = cKDTree(p)
    reach = np.radians((radius_arcsec + 120.0) / 3600.0)  # motion over <= 20 yr of < 6 arcsec/yr
    best = {}
    for i, cand in enumerate(tree.query_ball_point(q, 2 * np.sin(reach / 2))):
        if not cand:
            continue
        cand = np.array(cand)
        moved = p[cand] + (rows.epoch_yr.iat[i] - 2016.0) * v[cand]
        moved /= np.linalg.norm(moved, axis=1)[:, None]
        sep = np.degrees(np.arctan2(np.linalg.norm(np.cross(moved, q[i]), axis=1), moved @ q[i])) * 3600
        ok = sep <= radius_arcsec
        if ok.any():
            ids = gaia.source_id.to_numpy()[cand[ok]]
            order = np.lexsort((ids, sep[ok]))
            best[rows.object_id.iat[i]] = (ids[order[0]], sep[ok][order[0]])
    keep = {}
    for obj, (gid, sep) in best.items():
        if gid not in keep or (sep, obj) < (keep[gid][1], keep[gid][0]):
            keep[gid] = (obj, sep)
    return {(obj, gid) for gid, (obj, _) in keep.items()}


@pytest.mark.parametrize("name", list(SURVEYS))
def test_every_survey_crossmatch_equals_brute_force_and_the_truth(allsky, name):
    """The one SQL crossmatch, applied to each survey, gives the pairs of an independent brute force
    (each row at its own epoch: 2MASS's 15-19 years before Gaia), and they are the simulated identities."""
    root, path = allsky
    s = SURVEYS[name]
    con = db.connect(path)
    try:
        gaia = con.execute("select source_id, ra, dec, pmra, pmdec from gaia").df()
        rows = con.execute(f"select object_id, ra_deg as ra, dec_deg as dec, epoch_yr from {s.positions_view}").df()
        got = set(map(tuple, con.execute(f"select {s.xmatch_key}, gaia_source_id from {s.xmatch_table}").fetchall()))
    finally:
        con.close()
    want = _brute_force_pairs(gaia, rows, s.radius_arcsec)
    assert got == want and len(got) > 100
    import pyarrow.parquet as pq

    column = "skymapper_object_id" if name == "skymapper" else f"{name}_id"
    truth = pq.read_table(root / "sky" / "truth.parquet", columns=["source_id", column]).to_pylist()
    identity = {(r[column], r["source_id"]) for r in truth if r[column] is not None}  # exact int64 (ids reach 1.2e18)
    assert len(got & identity) >= 0.98 * len(got)


def test_fast_movers_at_the_pole_and_ra_zero_across_the_2mass_epoch_gap(tmp_path):
    """Gaia stars moving 1-5 arcsec/yr at the pole and across RA 0/360, seen by 2MASS in 1998: the
    crossmatch finds each at its 2MASS position (18 years and up to 90 arcsec away) and nothing else."""
    path = tmp_path / "pm.duckdb"
    con = db.connect(path, read_only=False, create=True)
    try:
        rng = np.random.default_rng(3)
        n = 40
        ra = np.concatenate([rng.uniform(0, 360, n // 2), rng.uniform(-0.01, 0.01, n // 2) % 360])
        dec = np.concatenate([rng.uniform(89.98, 90.0, n // 2), rng.uniform(-1, 1, n // 2)])
        pmra, pmdec = rng.uniform(-5000, 5000, n), rng.uniform(-5000, 5000, n)
        sid = np.arange(n) + 10**15
        gaia = pd.DataFrame({"source_id": sid, "ra": ra, "dec": dec, "pmra": pmra, "pmdec": pmdec,
                             "ref_epoch": 2016.0, "healpix_12": sid >> 35, "ingest_id": 1})
        from stellardb.catalog.astrometry import propagate

        jd = 2450814.5 + rng.uniform(0, 300, n)
        ra_t, dec_t = propagate(ra, dec, pmra, pmdec, 2000.0 + (jd - 2451545.0) / 365.25 - 2016.0)
        tmass = pd.DataFrame({"pts_key": np.arange(n) + 7, "ra": ra_t, "dec": dec_t, "jdate": jd, "j_m": 10.0,
                              "healpix_12": 0, "ingest_id": 2})
        con.register("g", gaia)
        con.register("t", tmass)
        con.execute("insert into gaia by name select * from g")
        con.execute("insert into tmass by name select * from t")
        from stellardb.catalog import xmatch

        assert xmatch.refresh_survey(con, "tmass") == n
        pairs = con.execute("select tmass_pts_key - 7, gaia_source_id - 1000000000000000, sep_arcsec, dt_yr "
                            "from xmatch_tmass order by 1").fetchall()
    finally:
        con.close()
    assert [(a, b) for a, b, _, _ in pairs] == [(k, k) for k in range(n)]
    assert max(p[2] for p in pairs) < 0.01 and all(-18.5 < p[3] < -17 for p in pairs)


def test_real_2mass_and_allwise_rows_of_the_benchmark_stars_ingest_and_match(tmp_path):
    """The GBS v3 table's real 2MASS and AllWISE columns (the Gaia archive's spellings) ingest with their
    presets, and the crossmatch pairs each with its own Gaia DR3 star (the table's source_id)."""
    path = tmp_path / "gbs.duckdb"
    pipeline.run(path, "gaia", [REAL / "gbs_v3_lite_subset.fits"], preset="gbs-v3-gaia")
    res_t = pipeline.run(path, "tmass", [REAL / "gbs_v3_tmass_allwise_subset.fits"], preset="gbs-v3-tmass")
    res_w = pipeline.run(path, "allwise", [REAL / "gbs_v3_tmass_allwise_subset.fits"], preset="gbs-v3-allwise")
    from astropy.table import Table

    t = Table.read(REAL / "gbs_v3_tmass_allwise_subset.fits")
    con = db.connect(path)
    try:
        assert db.row_count(con, "tmass") == int((~t["tmass_oid"].mask).sum() if hasattr(t["tmass_oid"], "mask")
                                                 else len(t))
        pairs_t = con.execute("select tmass_pts_key, gaia_source_id from xmatch_tmass").fetchall()
        pairs_w = con.execute("select allwise_cntr, gaia_source_id from xmatch_allwise").fetchall()
        epochs = con.execute("select min(jdate), max(jdate) from tmass").fetchone()
    finally:
        con.close()
    own_t = {(int(a), int(b)) for a, b in zip(t["tmass_oid"], t["source_id"]) if not np.ma.is_masked(a) and not np.ma.is_masked(b)}
    own_w = {(int(a), int(b)) for a, b in zip(t["allwise_oid"], t["source_id"]) if not np.ma.is_masked(a) and not np.ma.is_masked(b)}
    # rows whose Gaia id the full table leaves empty (12; the lite table has them): their pairs cannot be checked
    no_gaia_t = {int(a) for a, b in zip(t["tmass_oid"], t["source_id"]) if not np.ma.is_masked(a) and np.ma.is_masked(b)}
    no_gaia_w = {int(a) for a, b in zip(t["allwise_oid"], t["source_id"]) if not np.ma.is_masked(a) and np.ma.is_masked(b)}
    # bright, fast nearby stars: most pairs found, and every pair found is the table's own
    assert {p for p in pairs_t if p[0] not in no_gaia_t} <= own_t and len(pairs_t) >= 0.8 * len(own_t)
    assert {p for p in pairs_w if p[0] not in no_gaia_w} <= own_w and len(pairs_w) >= 0.7 * len(own_w)
    assert 2450500 < epochs[0] < epochs[1] < 2452000  # jdate is a Julian Date of 1997-2001
    assert res_t.files[0].rows > 150 and res_w.files[0].rows > 150


def test_a_flux_given_as_a_magnitude_is_refused_and_nothing_changes(allsky, tmp_path):
    root, path = allsky
    path = _copy(path, tmp_path)
    raw = pd.read_csv(root / "sky" / FILES["ps1"])
    ok = raw["gMeanPSFMag"] > 0
    raw.loc[ok, "gMeanPSFMag"] = 3631.0 * 10 ** (-0.4 * raw.loc[ok, "gMeanPSFMag"])  # Jy
    raw["objID"] += 1  # new keys, so only the flux check can refuse it
    bad = tmp_path / "ps1_flux.csv"
    raw.to_csv(bad, index=False)
    before = db.connect(path)
    try:
        n = db.row_count(before, "ps1")
    finally:
        before.close()
    result = CliRunner().invoke(cli, ["--db", str(path), "ingest", "ps1", str(bad), "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "gMeanPSFMag" in result.output and "flux" in result.output
    con = db.connect(path)
    try:
        assert db.row_count(con, "ps1") == n
    finally:
        con.close()


def test_a_survey_file_given_as_another_survey_is_refused(allsky, tmp_path):
    """A Pan-STARRS1 file given as 2MASS: one line naming the columns 2MASS needs; nothing stored."""
    root, path = allsky
    path = _copy(path, tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(path), "ingest", "tmass", str(root / "sky" / FILES["ps1"]), "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "pts_key" in result.output or "ra" in result.output


def test_xmatch_survey_option_sets_only_that_surveys_radius(allsky, tmp_path):
    root, path = allsky
    path = _copy(path, tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(path), "xmatch", "--survey", "tmass", "--radius-arcsec", "0.3"])
    assert result.exit_code == 0, result.output
    assert "xmatch tmass:" in result.output and "xmatch ps1" not in result.output
    con = db.connect(path)
    try:
        assert db.get_setting(con, "tmass_match_radius_arcsec") == 0.3
        assert db.get_setting(con, "ps1_match_radius_arcsec") == 1.0
        assert con.execute("select max(sep_arcsec) from xmatch_tmass").fetchone()[0] <= 0.3
    finally:
        con.close()
    with pytest.raises(UserError, match="Unknown survey"):
        from stellardb.catalog import xmatch

        xmatch.run(path, surveys=["galex"])


def test_forgetting_a_survey_file_removes_its_pairs(allsky, tmp_path):
    root, path = allsky
    path = _copy(path, tmp_path)
    con = db.connect(path)
    try:
        ingest_id = con.execute("select ingest_id from ingests where table_name = 'allwise'").fetchone()[0]
        other = con.execute("select count(*) from xmatch_tmass").fetchone()[0]
    finally:
        con.close()
    result = CliRunner().invoke(cli, ["--db", str(path), "forget", str(ingest_id), "--yes"])
    assert result.exit_code == 0, result.output
    con = db.connect(path)
    try:
        assert db.row_count(con, "allwise") == 0 and db.row_count(con, "xmatch_allwise") == 0
        assert con.execute("select count(*) from xmatch_tmass").fetchone()[0] == other
    finally:
        con.close()


def test_sdss_clean_flag_in_any_case_and_float_ids_are_refused(allsky, tmp_path):
    """CLEAN spelled in capitals still removes saturated photometry; an objID written as a float (digits
    lost) is refused, not stored rounded."""
    root, path = allsky
    raw = pd.read_csv(root / "sky" / FILES["sdss"])
    upper = raw.rename(columns={c: c.upper() for c in raw.columns})
    f = tmp_path / "sdss_upper.csv"
    upper.to_csv(f, index=False)
    db_path = tmp_path / "u.duckdb"
    pipeline.run(db_path, "sdss", [f])
    con = db.connect(db_path)
    try:
        assert con.execute("select count(psfMag_r) from sdss").fetchone()[0] == int((raw["clean"] == 1).sum())
    finally:
        con.close()
    ps1 = pd.read_csv(root / "sky" / FILES["ps1"])
    ps1["objID"] = ps1["objID"].astype("float64")
    fp = tmp_path / "ps1_float.parquet"
    ps1.to_parquet(fp)
    with pytest.raises(UserError, match="floating point"):
        pipeline.run(tmp_path / "f.duckdb", "ps1", [fp])
    assert not (tmp_path / "f.duckdb").exists()


def test_surveys_command_lists_every_spec():
    """`stellardb surveys` names each survey with its key, epoch column, every band and the extinction source."""
    out = CliRunner().invoke(cli, ["surveys"])
    assert out.exit_code == 0, out.output
    for s in SURVEYS.values():
        assert f"{s.name} - {s.title}" in out.output and f"key {s.key};" in out.output
        assert all(f"{b.mag} +- {b.err}" in out.output for b in s.bands)
        assert s.extinction_source in out.output and s.radius_setting in out.output
