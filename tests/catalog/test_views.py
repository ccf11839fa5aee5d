"""The SQL views: quality cuts, features, labels and dbt-style key checks (issue 3).

Counts and values are recomputed in pandas from the raw simulated files (Gaia ECSV,
SkyMapper, Bailer-Jones and label CSVs) joined through a brute-force crossmatch, not
read back from the views under test.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from stellardb.ingest import pipeline as ingest

from ..helpers import MJD_J2016, brute_force_xmatch, ecsv_header_lines, gaia_frame, skymapper_frame


pytestmark = pytest.mark.filterwarnings("ignore::astropy.units.UnitsWarning", "ignore::astropy.utils.exceptions.AstropyUserWarning")

#: SkyMapper A_band / E(B-V), Wolf et al. 2018 (docs/catalogues.md)
R_SKYMAPPER = {"u": 4.294, "v": 4.026, "g": 2.986, "r": 2.288, "i": 1.588, "z": 1.206}
BANDS = list(R_SKYMAPPER)
GAIA_COLUMNS = [
    "source_id", "ref_epoch", "ra", "dec", "pmra", "pmdec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
    "teff_gspphot", "teff_gspphot_lower", "teff_gspphot_upper", "logg_gspphot", "logg_gspphot_lower",
    "logg_gspphot_upper", "mh_gspphot", "mh_gspphot_lower", "mh_gspphot_upper",
]


def query(db_path, sql) -> pd.DataFrame:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


# ---------------------------------------------------------------- pandas from the raw files


@pytest.fixture(scope="module")
def raw_stars(sky) -> pd.DataFrame:
    """One row per Gaia source from the raw files: Gaia, its Bailer-Jones distance and its
    SkyMapper partner (brute-force crossmatch), with the seed's quality cuts applied in pandas."""
    path = sky.files["gaia"]
    gaia = pd.read_csv(path, skiprows=ecsv_header_lines(path), na_values=["null"], usecols=GAIA_COLUMNS)
    sm = pd.read_csv(sky.files["skymapper"])
    dist = pd.read_csv(sky.files["distances"], usecols=["source_id", "r_med_geo"])
    pairs, _ = brute_force_xmatch(gaia, sm, 1.0, kdtree=True)
    stars = (
        gaia.merge(dist, on="source_id", how="left")
        .merge(pairs[["gaia_source_id", "skymapper_object_id"]], left_on="source_id", right_on="gaia_source_id", how="left")
        .merge(sm, left_on="skymapper_object_id", right_on="object_id", how="left")
    )
    assert len(stars) == len(gaia)
    # magnitudes are float32 in the archive (and in the database): compare G at that precision
    g = stars["phot_g_mean_mag"].astype(np.float32)
    n_missing = stars[[f"{b}_psf" for b in BANDS]].isna().sum(axis=1)
    stars["passes"] = (
        stars["phot_bp_mean_mag"].notna() & stars["phot_rp_mean_mag"].notna() & (g <= np.float32(18.0))
        & (n_missing <= 2) & stars["r_med_geo"].notna()
    )
    return stars


@pytest.fixture(scope="module")
def raw_labels(sky) -> pd.DataFrame:
    return pd.read_csv(sky.files["sos"])


def test_scoring_set_count_equals_pandas(sky_db_path, raw_stars):
    """Rows of scoring_set = stars passing the seed's cuts (BP, RP, G <= 18, <= 2 of uvgriz missing, distance), in pandas."""
    expected = int(raw_stars["passes"].sum())
    assert 0.2 * len(raw_stars) < expected < 0.9 * len(raw_stars)  # the cuts bite, but not everything
    got = query(sky_db_path, "select count(*) as n from scoring_set")["n"][0]
    assert got == expected
    ids = query(sky_db_path, "select source_id from scoring_set")["source_id"]
    assert set(ids) == set(raw_stars.loc[raw_stars["passes"], "source_id"])


def test_training_set_count_equals_pandas(sky_db_path, raw_stars, raw_labels):
    """Rows of training_set = stars passing the cuts that have a Teff, log g or [Fe/H] label, in pandas."""
    has_label = raw_labels[raw_labels[["teff", "logg", "feh"]].notna().any(axis=1)]["source_id"]
    expected = set(raw_stars.loc[raw_stars["passes"] & raw_stars["source_id"].isin(has_label), "source_id"])
    assert len(expected) > 100
    got = query(sky_db_path, "select source_id from training_set")["source_id"]
    assert len(got) == len(expected)
    assert set(got) == expected


def test_each_cut_removes_what_pandas_says(sky_db_path, raw_stars):
    """Stars failing only one cut each (G > 18, 3+ bands missing, no distance, no BP) are absent from scoring_set."""
    ids = set(query(sky_db_path, "select source_id from scoring_set")["source_id"])
    s = raw_stars
    n_missing = s[[f"{b}_psf" for b in BANDS]].isna().sum(axis=1)
    for name, failing in {
        "G > 18": s["phot_g_mean_mag"].astype(np.float32) > np.float32(18.0),
        "3+ SkyMapper bands missing": n_missing >= 3,
        "no distance": s["r_med_geo"].isna(),
        "no BP": s["phot_bp_mean_mag"].isna(),
    }.items():
        assert failing.sum() > 0, f"the simulated sky has no star failing {name}"
        assert not (set(s.loc[failing, "source_id"]) & ids), name
    # exactly two bands missing still passes
    two = s["passes"] & (n_missing == 2)
    assert two.sum() > 0 and set(s.loc[two, "source_id"]) <= ids


def test_features_equal_pandas(sky_db_path, raw_stars):
    """Absolute magnitudes (de-reddened and _nored), errors and GSP-Phot _err of 500 stars equal pandas."""
    sample = raw_stars[raw_stars["passes"]].sample(500, random_state=1)
    ids = ",".join(str(i) for i in sample["source_id"])
    f = query(sky_db_path, f"select * from features where source_id in ({ids})").set_index("source_id")
    s = sample.set_index("source_id").loc[f.index]
    assert len(f) == 500
    dm = 5.0 * np.log10(s["r_med_geo"] / 10.0)
    for b, r in R_SKYMAPPER.items():
        m = s[f"{b}_psf"]
        np.testing.assert_allclose(f[f"{b}abs"], m - dm - r * s["ebmv_sfd"], atol=1e-4, err_msg=b)
        np.testing.assert_allclose(f[f"{b}abs_nored"], m - dm, atol=1e-4, err_msg=b)
        assert f[f"{b}abs"].isna().tolist() == m.isna().tolist()
        np.testing.assert_allclose(f[f"e_{b}_psf"], s[f"e_{b}_psf"], rtol=1e-6)
    for p in ("teff", "logg", "mh"):
        half = (s[f"{p}_gspphot_upper"] - s[f"{p}_gspphot_lower"]) / 2.0
        np.testing.assert_allclose(f[f"{p}_gspphot_err"], half, rtol=1e-5, atol=1e-6, err_msg=p)
    np.testing.assert_allclose(f["r_med_geo"], s["r_med_geo"], rtol=1e-6)
    np.testing.assert_allclose(f["phot_bp_mean_mag"], s["phot_bp_mean_mag"], rtol=1e-6)
    assert f["passes_feature_cuts"].all()


def test_features_has_the_seeds_27_inputs(sky_db_path):
    """features holds the seed's 27 inputs (docs/catalogues.md) besides source_id and the cut flag."""
    seed_inputs = (
        ["r_med_geo", "phot_bp_mean_mag", "phot_rp_mean_mag"]
        + [f"{b}abs" for b in BANDS] + [f"{b}abs_nored" for b in BANDS]
        + [f"e_{b}_psf" for b in BANDS]
        + ["teff_gspphot", "logg_gspphot", "mh_gspphot", "teff_gspphot_err", "logg_gspphot_err", "mh_gspphot_err"]
    )
    assert len(seed_inputs) == 27
    columns = query(sky_db_path, "select * from features limit 0").columns.tolist()
    assert sorted(columns) == sorted(["source_id", "passes_feature_cuts", *seed_inputs])


# ---------------------------------------------------------------- given / expect rows


def _write(frame, path):
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def logic_db(tmp_path_factory):
    """Seven stars built to sit on each edge of the quality cuts, with labels from several surveys."""
    folder = tmp_path_factory.mktemp("logic")
    path = folder / "logic.duckdb"
    ra = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
    dec = np.full(7, -30.0)
    gaia = gaia_frame(ra, dec)
    gaia["phot_g_mean_mag"] = [15.0, 18.0, 18.001, 15.0, 15.0, 15.0, np.nan]
    gaia.loc[3, "phot_bp_mean_mag"] = np.nan
    sm = skymapper_frame(ra[[0, 1, 2, 3, 4, 6]], dec[[0, 1, 2, 3, 4, 6]], MJD_J2016)  # star 5 has no SkyMapper row
    sm["ebmv_sfd"] = 0.1
    sm.loc[0, ["u_psf", "v_psf"]] = np.nan  # two bands missing: passes
    sm.loc[4, ["u_psf", "v_psf", "z_psf"]] = np.nan  # three missing: fails
    sm.loc[1, "g_psf"] = 16.5
    dist = pd.DataFrame({"source_id": gaia["source_id"], "r_med_geo": [100.0, 1000.0, 100.0, 100.0, 100.0, 100.0, 100.0]})
    sid = gaia["source_id"]
    labels = pd.DataFrame({
        "source_id": [sid[0], sid[0], sid[0], sid[1], sid[1], sid[2], sid[4]],
        "survey":    ["APOGEE", "GALAH", "RAVE", "GALAH", "LAMOST", "GES", "GES"],
        "teff":      [5000.0, 5100.0, 5200.0, 6000.0, 6100.0, 5500.0, np.nan],
        "e_teff":    [50.0, 40.0, 30.0, 80.0, 80.0, 60.0, np.nan],
        "logg":      [4.5, 4.4, np.nan, 4.0, 4.1, 4.2, np.nan],
        "feh":       [-0.1, -0.2, -0.3, 0.0, 0.1, -1.0, np.nan],
    })
    for table, frame in (("gaia", gaia), ("skymapper", sm), ("distances", dist), ("sos", labels)):
        ingest.run(path, table, [_write(frame, folder / f"{table}.csv")])
    return path, gaia, sm


def test_feature_cut_edges(logic_db):
    """Given stars on each cut's edge, expect: G = 18.0 and 2 missing bands pass; G 18.001, 3 missing, no BP/partner/G fail."""
    path, gaia, _ = logic_db
    f = query(path, "select source_id, passes_feature_cuts from features").set_index("source_id")["passes_feature_cuts"]
    expected = [True, True, False, False, False, False, False]
    assert [bool(f[s]) for s in gaia["source_id"]] == expected
    assert query(path, "select count(*) as n from scoring_set")["n"][0] == 2


def test_feature_values_given_expect(logic_db):
    """Given g = 16.5 at 1000 pc with E(B-V) = 0.1, expect gabs = 16.5 - 10 - 0.2986 and gabs_nored = 6.5."""
    path, gaia, _ = logic_db
    row = query(path, f"select * from features where source_id = {gaia['source_id'][1]}").iloc[0]
    assert row["gabs"] == pytest.approx(16.5 - 10.0 - 0.2986, abs=1e-5)
    assert row["gabs_nored"] == pytest.approx(6.5, abs=1e-5)
    assert row["zabs"] == pytest.approx(15.5 - 10.0 - 0.1206, abs=1e-5)
    star0 = query(path, f"select uabs, vabs, gabs from features where source_id = {gaia['source_id'][0]}").iloc[0]
    assert pd.isna(star0["uabs"]) and pd.isna(star0["vabs"])
    assert star0["gabs"] == pytest.approx(15.2 - 5.0 - 0.2986, abs=1e-5)


def test_best_label_given_expect(logic_db):
    """Given three surveys for one star, expect the row with most labels, then smallest e_teff, then survey name."""
    path, gaia, _ = logic_db
    best = query(path, "select source_id, survey from best_labels").set_index("source_id")["survey"]
    sid = gaia["source_id"]
    assert best[sid[0]] == "GALAH"  # APOGEE and GALAH both have 3 labels; GALAH's e_teff is smaller; RAVE has 2
    assert best[sid[1]] == "GALAH"  # equal counts and errors: alphabetical
    assert best[sid[2]] == "GES"
    train = query(path, "select source_id, survey, teff from training_set").set_index("source_id")
    assert sorted(train.index) == sorted([sid[0], sid[1]])
    assert train.loc[sid[0], "teff"] == 5100.0
    # a star whose only label row has no Teff, log g or [Fe/H] is not a training star (and fails the cuts anyway)
    assert sid[4] not in train.index


# ---------------------------------------------------------------- dbt-style checks


def _unique(relation, columns, where="true"):
    return (f"unique {relation}({columns})",
            f"select count(*) from (select {columns} from {relation} where {where} group by all having count(*) > 1)")


def _not_null(relation, column):
    return (f"not_null {relation}.{column}", f"select count(*) from {relation} where {column} is null")


CHECKS = dict([
    *[_unique(r, c) for r, c in [
        ("gaia", "source_id"), ("skymapper", "object_id"), ("distances", "source_id"),
        ("stars", "source_id"), ("features", "source_id"), ("scoring_set", "source_id"),
        ("training_set", "source_id"), ("best_labels", "source_id"), ("labels", "survey, source_id"),
        ("xmatch", "gaia_source_id"), ("xmatch", "skymapper_object_id"),
        ("xmatch_labels", "survey, gaia_source_id"), ("xmatch_labels", "survey, label_ra, label_dec"),
        ("ingests", "ingest_id"), ("ingests", "table_name, sha256"), ("settings", "name"),
    ]],
    _unique("sos", "survey, source_id", "source_id is not null"),
    _unique("sos", "survey, ra, dec", "source_id is null and ra is not null and dec is not null"),
    *[_not_null(r, c) for r, c in [
        ("gaia", "source_id"), ("gaia", "healpix_12"), ("skymapper", "object_id"), ("skymapper", "healpix_12"),
        ("distances", "source_id"), ("stars", "source_id"), ("stars", "healpix_12"), ("features", "source_id"),
        ("features", "passes_feature_cuts"), ("scoring_set", "source_id"), ("training_set", "source_id"),
        ("training_set", "survey"), ("labels", "source_id"), ("labels", "survey"), ("best_labels", "source_id"),
        ("xmatch", "gaia_source_id"), ("xmatch", "skymapper_object_id"), ("xmatch", "sep_arcsec"),
        ("xmatch", "n_candidates"), ("sos", "survey"),
    ]],
    # accepted values and relationships
    ("accepted_values xmatch.sep_arcsec <= radius, n_candidates >= 1",
     "select count(*) from xmatch where not (sep_arcsec between 0 and "
     "(select value from settings where name = 'xmatch_radius_arcsec') and n_candidates >= 1)"),
    ("accepted_values xmatch_labels.sep_arcsec <= radius",
     "select count(*) from xmatch_labels where not (sep_arcsec between 0 and "
     "(select value from settings where name = 'label_match_radius_arcsec') and n_candidates >= 1)"),
    ("accepted_values scoring_set.passes_feature_cuts", "select count(*) from scoring_set where not passes_feature_cuts"),
    ("accepted_values ingests.table_name", "select count(*) from ingests where table_name not in ('gaia', 'skymapper', 'distances', 'sos')"),
    ("accepted_values ingests.format", "select count(*) from ingests where format not in ('ecsv', 'csv', 'parquet', 'fits', 'votable')"),
    ("accepted_values training_set.survey", "select count(*) from training_set where survey not in (select survey from sos)"),
    ("relationships xmatch.gaia_source_id -> gaia", "select count(*) from xmatch where gaia_source_id not in (select source_id from gaia)"),
    ("relationships xmatch.skymapper_object_id -> skymapper",
     "select count(*) from xmatch where skymapper_object_id not in (select object_id from skymapper)"),
    ("relationships training_set -> scoring_set", "select count(*) from training_set where source_id not in (select source_id from scoring_set)"),
    ("relationships best_labels -> labels", "select count(*) from best_labels b anti join labels l using (survey, source_id)"),
    ("relationships ingests.rows = stored rows",
     "select count(*) from (select table_name, sum(rows) as n from ingests group by 1) i where n <> "
     "(case table_name when 'gaia' then (select count(*) from gaia) when 'skymapper' then (select count(*) from skymapper) "
     "when 'distances' then (select count(*) from distances) else (select count(*) from sos) end)"),
    ("row count stars = gaia", "select abs((select count(*) from stars) - (select count(*) from gaia))"),
    ("row count features = gaia", "select abs((select count(*) from features) - (select count(*) from gaia))"),
])


@pytest.fixture(scope="module")
def real_db(data_path, tmp_path_factory):
    """The real files (Gaia ECSV, GBS v3, PASTEL, SWEET-Cat) in one database: labels from three
    surveys, some for the same stars, some matched by position."""
    path = tmp_path_factory.mktemp("real") / "real.duckdb"
    ingest.run(path, "gaia", [data_path("real/gaia_dr3_fixture_5rows.ecsv")])
    gbs = data_path("real/gbs_v3_lite_subset.fits")
    ingest.run(path, "gaia", [gbs], preset="gbs-v3-gaia")
    ingest.run(path, "distances", [gbs], preset="gbs-v3-distances")
    ingest.run(path, "sos", [gbs], preset="gbs-v3")
    ingest.run(path, "sos", [data_path("real/pastel_v1.2_subset.fits")], preset="pastel")
    ingest.run(path, "sos", [data_path("real/sweetcat_subset.csv")], preset="sweetcat", on_duplicate="skip")
    return path


@pytest.fixture(params=["simulated", "real"])
def checked_db(request):
    """The simulated sky's database, and the real files' one."""
    return request.getfixturevalue("sky_db_path" if request.param == "simulated" else "real_db")


@pytest.mark.parametrize("check", list(CHECKS))
def test_dbt_check(check, checked_db):
    """dbt-style check on the stored tables and views: no violating rows."""
    violations = query(checked_db, CHECKS[check]).iloc[0, 0]
    assert violations == 0, check


def test_real_db_exercises_the_label_views(real_db):
    """The real database really holds stars labelled by several surveys and by position (the checks are not vacuous)."""
    multi = query(real_db, "select count(*) as n from (select source_id from labels group by 1 having count(*) > 1)")
    assert multi["n"][0] >= 20  # GBS stars that SWEET-Cat and PASTEL also list
    assert query(real_db, "select count(*) as n from xmatch_labels")["n"][0] >= 150
    assert query(real_db, "select count(*) as n from best_labels")["n"][0] == query(
        real_db, "select count(distinct source_id) as n from labels")["n"][0]


def test_copy_of_db_refreshes_views(copy_db):
    """Views are stored in the file: a plain duckdb connection (no stellardb) reads stars and training_set."""
    con = duckdb.connect(str(copy_db))
    try:
        assert con.execute("select count(*) from stars").fetchone()[0] == con.execute("select count(*) from gaia").fetchone()[0]
        assert con.execute("select count(*) from training_set").fetchone()[0] > 0
    finally:
        con.close()
