"""`stellardb ingest`: formats, presets, real files, HEALPix index, provenance and bad input (issue 3).

Expected values come from reading the same files independently (pandas, astropy,
hashlib, healpy), never from stellardb itself.  Bad input must give a one-line error
and leave the database exactly as it was: every table's row count and content
checksum (order-independent and storage-order-weighted row hashes) are compared.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import healpy
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import MaskedColumn, Table
from astropy.time import Time

from stellardb.ingest import pipeline as ingest

from ..helpers import GAIA_ECSV, GBS, PASTEL, SWEETCAT, ecsv_header_lines, error_line, gaia_frame, invoke, query, skymapper_frame, small_sky, snapshot, write


pytestmark = pytest.mark.filterwarnings("ignore::astropy.units.UnitsWarning", "ignore::astropy.utils.exceptions.AstropyUserWarning")


# ---------------------------------------------------------------- helpers


def read_fits(path) -> Table:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Table.read(path)


def filled(column, fill=np.nan) -> np.ndarray:
    """A (masked) astropy column as a plain float array, masked -> ``fill``."""
    return np.ma.asarray(column).astype(float).filled(fill)


# ---------------------------------------------------------------- the simulated sky


def test_simulated_files_ingest_with_their_row_counts(sky, sky_db_path):
    """The four simulated files land with the row counts pandas reads from them."""
    gaia_path = sky.files["gaia"]
    expected = {
        "gaia": len(pd.read_csv(gaia_path, skiprows=ecsv_header_lines(gaia_path), usecols=["source_id"])),
        "skymapper": len(pd.read_csv(sky.files["skymapper"], usecols=["object_id"])),
        "distances": len(pd.read_csv(sky.files["distances"], usecols=["source_id"])),
        "sos": len(pd.read_csv(sky.files["sos"], usecols=["source_id"])),
    }
    got = {t: int(query(sky_db_path, f"select count(*) as n from {t}")["n"][0]) for t in expected}
    assert got == expected


def test_ingests_table_records_file_sha256_rows(sky, sky_db_path):
    """Table ingests holds one row per file: table, absolute path, sha256 (hashlib), rows, format, time."""
    rows = query(sky_db_path, "select * from ingests order by ingest_id")
    assert rows["table_name"].tolist() == ["gaia", "skymapper", "distances", "sos"]
    for _, row in rows.iterrows():
        path = Path(sky.files[row["table_name"]])
        assert Path(row["file"]) == path.resolve()
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        stored = int(query(sky_db_path, f"select count(*) as n from {row['table_name']}")["n"][0])
        assert row["rows"] == stored
        assert pd.notna(row["ingested_at"])
    assert rows["format"].tolist() == ["ecsv", "csv", "csv", "csv"]
    assert rows["ingest_id"].is_unique


def test_same_file_again_adds_nothing(sky, copy_db, tmp_path):
    """Re-ingesting a file (or a renamed copy, or the same file twice in one command) adds no rows and says so."""
    before = snapshot(copy_db)
    result = invoke(copy_db, "ingest", "skymapper", sky.files["skymapper"])
    assert result.exit_code == 0, result.output
    assert "already ingested" in result.output
    renamed = tmp_path / "renamed.csv"
    shutil.copy(sky.files["distances"], renamed)
    result = ingest.run(copy_db, "distances", [renamed, renamed])
    assert [f.rows for f in result.files] == [0, 0]
    assert all(f.skipped and "already ingested" in f.skipped for f in result.files)
    assert snapshot(copy_db) == before


def test_same_new_file_twice_in_one_command_loads_once(db, tmp_path):
    """A new file named twice in one command is loaded once; the second is skipped."""
    gaia, *_ = small_sky(5, seed=9)
    gaia["source_id"] += 10**6  # new ids
    path = write(gaia, tmp_path / "new.csv")
    result = ingest.run(db, "gaia", [path, path])
    assert [f.rows for f in result.files] == [5, 0]
    assert "already ingested" in result.files[1].skipped
    assert int(query(db, "select count(*) as n from gaia")["n"][0]) == 35


def test_gaia_healpix_from_source_id_equals_healpy(sky_db_path):
    """gaia.healpix_12 = source_id >> 35 = healpy.ang2pix(4096, ra, dec, nest=True, lonlat=True)."""
    g = query(sky_db_path, "select source_id, ra, dec, healpix_12 from gaia")
    np.testing.assert_array_equal(g["healpix_12"], g["source_id"].to_numpy() // 2**35)
    np.testing.assert_array_equal(g["healpix_12"], healpy.ang2pix(4096, g["ra"], g["dec"], nest=True, lonlat=True))


def test_skymapper_healpix_equals_healpy(sky_db_path):
    """skymapper.healpix_12 = healpy.ang2pix(4096, raj2000, dej2000, nest=True, lonlat=True)."""
    s = query(sky_db_path, "select raj2000, dej2000, healpix_12 from skymapper")
    np.testing.assert_array_equal(s["healpix_12"], healpy.ang2pix(4096, s["raj2000"], s["dej2000"], nest=True, lonlat=True))


def test_id_tables_healpix_from_source_id(sky_db_path):
    """distances and sos (rows with a Gaia id) take healpix_12 from source_id >> 35."""
    for table in ("distances", "sos"):
        t = query(sky_db_path, f"select source_id, healpix_12 from {table} where source_id is not null")
        assert len(t)
        np.testing.assert_array_equal(t["healpix_12"], t["source_id"].to_numpy() // 2**35)


@pytest.mark.parametrize("table", ["gaia", "skymapper", "distances", "sos"])
def test_tables_stored_in_healpix_order(sky_db_path, table):
    """Each table's rows are stored (rowid order) by non-decreasing healpix_12."""
    hp = query(sky_db_path, f"select healpix_12 from {table} order by rowid")["healpix_12"].to_numpy()
    assert np.all(np.diff(hp) >= 0)


@pytest.mark.parametrize("table", ["gaia", "skymapper"])
def test_healpix_order_kept_after_several_files(table, sky, tmp_path):
    """Rows shuffled and split over three files (two commands) are still stored ordered by healpix_12."""
    path = sky.files[table]
    if table == "gaia":
        frame = pd.read_csv(path, skiprows=ecsv_header_lines(path), na_values=["null"],
                            usecols=["source_id", "ra", "dec", "pmra", "pmdec", "phot_g_mean_mag"])
    else:
        frame = pd.read_csv(path)
    frame = frame.sample(6000, random_state=2)
    parts = [write(frame.iloc[i::3], tmp_path / f"part{i}.csv") for i in range(3)]
    db_path = tmp_path / "parts.duckdb"
    ingest.run(db_path, table, parts[:1])
    hp = query(db_path, f"select healpix_12 from {table} order by rowid")["healpix_12"].to_numpy()
    assert len(hp) == 2000 and np.all(np.diff(hp) >= 0)
    ingest.run(db_path, table, parts[1:])
    hp = query(db_path, f"select healpix_12 from {table} order by rowid")["healpix_12"].to_numpy()
    assert len(hp) == 6000 and np.all(np.diff(hp) >= 0)


# ---------------------------------------------------------------- formats


def table_content(db_path, table: str, key: str) -> pd.DataFrame:
    return query(db_path, f"select * exclude (ingest_id) from {table} order by {key}")


def test_parquet_gives_the_same_table_as_csv(sky, tmp_path):
    """The SkyMapper CSV rewritten as Parquet (pyarrow) ingests to identical content."""
    parquet = tmp_path / "skymapper.parquet"
    pq.write_table(pacsv.read_csv(sky.files["skymapper"]), parquet)
    ingest.run(tmp_path / "csv.duckdb", "skymapper", [sky.files["skymapper"]])
    ingest.run(tmp_path / "pq.duckdb", "skymapper", [parquet])
    a = table_content(tmp_path / "csv.duckdb", "skymapper", "object_id")
    b = table_content(tmp_path / "pq.duckdb", "skymapper", "object_id")
    assert len(a) == len(pd.read_csv(sky.files["skymapper"], usecols=["object_id"]))
    pd.testing.assert_frame_equal(a, b)
    assert query(tmp_path / "pq.duckdb", "select format from ingests")["format"].tolist() == ["parquet"]


def test_gzipped_csv_gives_the_same_table(sky, tmp_path):
    """A gzipped CSV ingests to the same content as the plain one."""
    frame = pd.read_csv(sky.files["distances"], dtype={"flag": str}).iloc[:3000]
    plain = write(frame, tmp_path / "d.csv")
    zipped = tmp_path / "d.csv.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    ingest.run(tmp_path / "a.duckdb", "distances", [plain])
    ingest.run(tmp_path / "b.duckdb", "distances", [zipped])
    a = table_content(tmp_path / "a.duckdb", "distances", "source_id")
    b = table_content(tmp_path / "b.duckdb", "distances", "source_id")
    assert len(a) == 3000
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(np.sort(a["source_id"]), np.sort(frame["source_id"]))


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_fits_and_votable_with_masked_values(fmt, tmp_path):
    """FITS and VOTable written by astropy ingest; masked floats and integers become NULL."""
    t = Table()
    t["object_id"] = np.array([11, 12, 13, 14], dtype=np.int64)
    t["raj2000"] = [10.5, 20.25, 359.75, 0.0]
    t["dej2000"] = [-10.0, -20.5, -89.5, 1.0]
    t["mean_epoch"] = [57000.0, 57100.5, 57200.25, 58000.0]
    t["u_psf"] = MaskedColumn([15.5, 16.25, 17.0, 18.0], mask=[False, True, False, True])
    t["g_psf"] = MaskedColumn(np.array([14.5, 15.0, 16.0, 17.0], dtype=np.float32), mask=[True, False, False, False])
    t["flags"] = MaskedColumn(np.array([0, 4, 8, 3], dtype=np.int32), mask=[False, False, True, False])
    path = tmp_path / ("s.fits" if fmt == "fits" else "s.xml")
    t.write(path, format=fmt)
    db_path = tmp_path / "f.duckdb"
    ingest.run(db_path, "skymapper", [path])
    got = query(db_path, "select object_id, raj2000, dej2000, mean_epoch, u_psf, g_psf, flags, healpix_12 "
                         "from skymapper order by object_id")
    assert got["object_id"].tolist() == [11, 12, 13, 14]
    np.testing.assert_array_equal(got["raj2000"], t["raj2000"])
    np.testing.assert_array_equal(got["mean_epoch"], t["mean_epoch"])
    assert got["u_psf"].isna().tolist() == [False, True, False, True]
    assert got["g_psf"].isna().tolist() == [True, False, False, False]
    assert got["flags"].isna().tolist() == [False, False, True, False]
    assert got["u_psf"][0] == 15.5 and got["flags"][1] == 4
    np.testing.assert_array_equal(got["healpix_12"], healpy.ang2pix(4096, t["raj2000"], t["dej2000"], nest=True, lonlat=True))
    assert query(db_path, "select format from ingests")["format"].tolist() == [fmt]


# ---------------------------------------------------------------- presets and renames


def vizier_distances(n: int = 6) -> pd.DataFrame:
    """Bailer-Jones distances in VizieR's spelling; every column holds distinct values."""
    rng = np.random.default_rng(4)
    med = rng.uniform(100, 2000, n)
    ids = gaia_frame(rng.uniform(0, 360, n), rng.uniform(-80, 0, n))["source_id"]
    return pd.DataFrame({
        "Source": ids, "rgeo": med, "b_rgeo": med * 0.9, "B_rgeo": med * 1.1,
        "rpgeo": med * 1.01, "b_rpgeo": med * 0.91, "B_rpgeo": med * 1.12, "Flag": "10033",
    })


def write_as(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    else:
        Table.from_pandas(frame).write(path, format="fits")
    return path


def stored_distances(db_path) -> pd.DataFrame:
    return query(db_path, "select source_id, r_med_geo, r_lo_geo, r_hi_geo, r_med_photogeo, r_lo_photogeo, "
                          "r_hi_photogeo, flag from distances order by source_id")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_bailer_jones_vizier_spelling_is_detected(fmt, tmp_path):
    """VizieR's Source, rgeo, b_rgeo, rpgeo, b_rpgeo, Flag are detected (preset bailer-jones-vizier) and mapped."""
    frame = vizier_distances()
    path = write_as(frame, tmp_path / f"gedr3dis.{fmt}", fmt)
    db_path = tmp_path / "v.duckdb"
    ingest.run(db_path, "distances", [path])
    got = stored_distances(db_path)
    want = frame.sort_values("Source").reset_index(drop=True)
    assert got["source_id"].tolist() == want["Source"].tolist()
    np.testing.assert_allclose(got["r_med_geo"], want["rgeo"], rtol=1e-6)
    np.testing.assert_allclose(got["r_lo_geo"], want["b_rgeo"], rtol=1e-6)
    np.testing.assert_allclose(got["r_med_photogeo"], want["rpgeo"], rtol=1e-6)
    np.testing.assert_allclose(got["r_lo_photogeo"], want["b_rpgeo"], rtol=1e-6)
    assert (got["flag"] == "10033").all()
    assert query(db_path, "select preset from ingests")["preset"].tolist() == ["bailer-jones-vizier"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_bailer_jones_vizier_upper_bounds_differ_only_in_case(fmt, tmp_path):
    """VizieR's B_rgeo/B_rpgeo (upper bounds; b_ and B_ differ only in case) land in r_hi_geo/r_hi_photogeo."""
    frame = vizier_distances()
    path = write_as(frame, tmp_path / f"gedr3dis.{fmt}", fmt)
    db_path = tmp_path / "v.duckdb"
    ingest.run(db_path, "distances", [path], preset="bailer-jones-vizier")
    got = stored_distances(db_path)
    want = frame.sort_values("Source").reset_index(drop=True)
    np.testing.assert_allclose(got["r_hi_geo"], want["B_rgeo"], rtol=1e-6)
    np.testing.assert_allclose(got["r_hi_photogeo"], want["B_rpgeo"], rtol=1e-6)
    np.testing.assert_allclose(got["r_lo_geo"], want["b_rgeo"], rtol=1e-6)


def test_rename_option(tmp_path):
    """--rename OLD=NEW maps columns a preset does not know, on top of detection."""
    frame = vizier_distances().rename(columns={"Source": "GaiaDR3", "rgeo": "dist50"})[["GaiaDR3", "dist50", "Flag"]]
    path = write(frame, tmp_path / "mine.csv")
    result = invoke(tmp_path / "r.duckdb", "ingest", "distances", path,
                    "--rename", "GaiaDR3=source_id", "--rename", "dist50=r_med_geo")
    assert result.exit_code == 0, result.output
    got = stored_distances(tmp_path / "r.duckdb")
    want = frame.sort_values("GaiaDR3")
    assert got["source_id"].tolist() == want["GaiaDR3"].tolist()
    np.testing.assert_allclose(got["r_med_geo"], want["dist50"], rtol=1e-6)


def test_rename_without_it_the_column_is_missing(tmp_path):
    """The same file without --rename is refused, naming the missing column and --rename."""
    frame = vizier_distances().rename(columns={"Source": "GaiaDR3", "rgeo": "dist50"})[["GaiaDR3", "dist50"]]
    path = write(frame, tmp_path / "mine.csv")
    line = error_line(invoke(tmp_path / "r.duckdb", "ingest", "distances", path))
    assert "mine.csv" in line and "source_id" in line and "--rename" in line


def test_apogee_and_galah_spellings(tmp_path):
    """APOGEE DR17 (GAIAEDR3_SOURCE_ID, FE_H, -9999 = missing) and GALAH DR3 (dr3_source_id, fe_h) labels map to sos."""
    ids = gaia_frame([10.0, 20.0, 30.0], [-10.0, -20.0, -30.0])["source_id"].to_numpy()
    apogee = Table({"APOGEE_ID": ["a", "b", "c"], "GAIAEDR3_SOURCE_ID": ids, "RA": [10.0, 20.0, 30.0],
                    "DEC": [-10.0, -20.0, -30.0], "TEFF": [5000.0, -9999.0, 4500.0], "TEFF_ERR": [50.0, 60.0, 70.0],
                    "LOGG": [4.5, 2.5, -9999.0], "LOGG_ERR": [0.1, 0.1, 0.1], "FE_H": [-0.5, 0.1, -1.5],
                    "FE_H_ERR": [0.05, 0.05, 0.05]})
    apogee.write(tmp_path / "allStar.fits")
    galah = pd.DataFrame({"sobject_id": [1, 2], "dr3_source_id": ids[:2], "teff": [5100.0, 5200.0],
                          "e_teff": [80.0, 90.0], "logg": [4.4, 4.3], "e_logg": [0.2, 0.2], "fe_h": [-0.2, 0.3],
                          "e_fe_h": [0.1, 0.1]})
    write(galah, tmp_path / "galah.csv")
    db_path = tmp_path / "labels.duckdb"
    ingest.run(db_path, "sos", [tmp_path / "allStar.fits"])
    ingest.run(db_path, "sos", [tmp_path / "galah.csv"], preset="galah-dr3")
    got = query(db_path, "select survey, source_id, teff, logg, feh, e_feh from sos order by survey, source_id")
    apo = got[got["survey"] == "APOGEE-DR17"].set_index("source_id")
    assert apo.loc[ids[0], "teff"] == 5000.0 and pd.isna(apo.loc[ids[1], "teff"])
    assert pd.isna(apo.loc[ids[2], "logg"]) and apo.loc[ids[2], "feh"] == -1.5
    gal = got[got["survey"] == "GALAH-DR3"].set_index("source_id")
    assert gal.loc[ids[1], "feh"] == 0.3 and gal.loc[ids[0], "e_feh"] == 0.1
    assert query(db_path, "select preset from ingests order by ingest_id")["preset"].tolist() == ["apogee-dr17", "galah-dr3"]


def test_position_only_label_csv(tmp_path):
    """A label CSV without Gaia ids (PASTEL columns RA, DEC, TEFF, LOGG, FEH) ingests into sos."""
    frame = pd.DataFrame({"RA": [10.0, 20.0], "DEC": [-10.0, -20.0], "TEFF": [5000.0, 6000.0],
                          "LOGG": [4.0, 4.5], "FEH": [-0.5, 0.0]})
    db_path = tmp_path / "p.duckdb"
    ingest.run(db_path, "sos", [write(frame, tmp_path / "pastel.csv")], preset="pastel")
    got = query(db_path, "select ra, dec, teff, survey, source_id from sos order by ra")
    assert got["teff"].tolist() == [5000.0, 6000.0]
    assert got["source_id"].isna().all() and (got["survey"] == "PASTEL").all()


# ---------------------------------------------------------------- real files


def test_real_gaia_ecsv_153_columns(data_path, tmp_path):
    """The real 5-row Gaia DR3 ECSV (153 columns) ingests into gaia with the values astropy reads."""
    path = data_path(GAIA_ECSV)
    t = Table.read(path, format="ascii.ecsv")
    assert len(t.colnames) == 153
    db_path = tmp_path / "g.duckdb"
    result = invoke(db_path, "ingest", "gaia", path)
    assert result.exit_code == 0, result.output
    got = query(db_path, "select * from gaia order by source_id")
    order = np.argsort(np.asarray(t["source_id"]))
    assert got["source_id"].tolist() == np.asarray(t["source_id"])[order].tolist()
    for col in ("ra", "dec", "parallax", "pmra", "pmdec", "ref_epoch"):
        np.testing.assert_array_equal(got[col], filled(t[col])[order], err_msg=col)
    for col in ("phot_g_mean_mag", "teff_gspphot", "ruwe"):
        np.testing.assert_allclose(got[col], filled(t[col])[order], rtol=1e-6, err_msg=col)
        assert got[col].isna().tolist() == np.isnan(filled(t[col])[order]).tolist()
    assert got["designation"].tolist() == [str(x) for x in np.asarray(t["designation"])[order]]
    np.testing.assert_array_equal(got["healpix_12"], got["source_id"] // 2**35)


@pytest.fixture(scope="module")
def gbs_db(data_path, tmp_path_factory):
    """GBS v3 ingested into gaia, distances and sos (presets gbs-v3-gaia, gbs-v3-distances, gbs-v3)."""
    path = tmp_path_factory.mktemp("gbs") / "gbs.duckdb"
    outputs = {}
    for table, preset in (("gaia", "gbs-v3-gaia"), ("distances", "gbs-v3-distances"), ("sos", "gbs-v3")):
        result = invoke(path, "ingest", table, data_path(GBS), "--preset", preset)
        assert result.exit_code == 0, result.output
        outputs[table] = result.output
    return path, outputs


def test_gbs_gaia_rows(gbs_db, data_path):
    """GBS v3 into gaia: the 180 rows with a Gaia id are stored; the 12 without are reported, not stored."""
    path, outputs = gbs_db
    t = read_fits(data_path(GBS))
    has_id = ~np.ma.getmaskarray(t["source_id_gaiadr3"])
    n_missing = int((~has_id).sum())
    assert n_missing == 12
    assert f"{n_missing} rows without source_id not stored" in outputs["gaia"]
    got = query(path, "select source_id, ra, dec, pmra, phot_g_mean_mag, teff_gspphot from gaia order by source_id")
    ref = t[has_id]
    ref = ref[np.argsort(np.asarray(ref["source_id_gaiadr3"]))]
    assert got["source_id"].tolist() == np.asarray(ref["source_id_gaiadr3"]).tolist()
    np.testing.assert_array_equal(got["ra"], filled(ref["ra"]))
    np.testing.assert_allclose(got["pmra"], filled(ref["pmra"]), rtol=1e-12)
    assert got["teff_gspphot"].notna().sum() == int((~np.ma.getmaskarray(ref["teff_gspphot"])).sum())
    np.testing.assert_array_equal(got["source_id"] // 2**35, query(path, "select healpix_12 from gaia order by source_id")["healpix_12"])


def test_gbs_distances_and_labels(gbs_db, data_path):
    """GBS v3 into distances (180 rows) and sos (all 192 label rows, survey GBS-v3), values as in the FITS file."""
    path, _ = gbs_db
    t = read_fits(data_path(GBS))
    has_id = ~np.ma.getmaskarray(t["source_id_gaiadr3"])
    d = query(path, "select source_id, r_med_geo, r_hi_geo from distances order by source_id")
    ref = t[has_id]
    ref = ref[np.argsort(np.asarray(ref["source_id_gaiadr3"]))]
    assert d["source_id"].tolist() == np.asarray(ref["source_id_gaiadr3"]).tolist()
    np.testing.assert_allclose(d["r_med_geo"], filled(ref["r_med_geo"]), rtol=1e-6)
    np.testing.assert_allclose(d["r_hi_geo"], filled(ref["r_hi_geo"]), rtol=1e-6)
    s = query(path, "select survey, source_id, ra, dec, teff, logg, feh from sos order by ra, dec")
    assert len(s) == len(t) == 192
    assert (s["survey"] == "GBS-v3").all()
    assert s["source_id"].notna().sum() == 180
    order = np.lexsort((filled(t["dec_j2000"]), filled(t["ra_j2000"])))
    np.testing.assert_array_equal(s["ra"], filled(t["ra_j2000"])[order])
    np.testing.assert_allclose(s["teff"], filled(t["teff"])[order], rtol=1e-6)
    np.testing.assert_allclose(s["feh"], filled(t["fe_h"])[order], rtol=1e-6)


def test_gbs_label_epoch_is_that_of_their_positions(gbs_db):
    """GBS v3 label rows carry J2000 positions (ra_j2000/dec_j2000), so sos.ref_epoch is 2000 for all of them."""
    path, _ = gbs_db
    s = query(path, "select coalesce(ref_epoch, 2000.0) as epoch from sos where survey = 'GBS-v3'")
    assert (s["epoch"] == 2000.0).all()


def test_pastel_matched_by_position_to_gbs_gaia(gbs_db, data_path, tmp_path):
    """PASTEL (J2000, no ids) matches GBS Gaia rows as astropy does once Gaia is moved back to J2000."""
    path = tmp_path / "pastel.duckdb"
    shutil.copy(gbs_db[0], path)
    result = invoke(path, "ingest", "sos", data_path(PASTEL), "--preset", "pastel")
    assert result.exit_code == 0, result.output

    # our own match: astropy's space motion to J2000, nearest Gaia within 1", a Gaia source keeps its nearest label
    gbs = read_fits(data_path(GBS))
    gbs = gbs[~np.ma.getmaskarray(gbs["source_id_gaiadr3"])]
    gaia = SkyCoord(ra=filled(gbs["ra"]) * u.deg, dec=filled(gbs["dec"]) * u.deg,
                    pm_ra_cosdec=filled(gbs["pmra"], 0.0) * u.mas / u.yr, pm_dec=filled(gbs["pmdec"], 0.0) * u.mas / u.yr,
                    obstime=Time(2016.0, format="jyear"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gaia_2000 = gaia.apply_space_motion(new_obstime=Time(2000.0, format="jyear"))
    pastel = read_fits(data_path(PASTEL))
    labels = SkyCoord(filled(pastel["RA"]) * u.deg, filled(pastel["DEC"]) * u.deg)
    li, gi, sep, _ = search_around_sky(labels, SkyCoord(gaia_2000.ra, gaia_2000.dec), 1.0 * u.arcsec)
    pairs = pd.DataFrame({"label": li, "gaia": gi, "sep": sep.arcsec})
    pairs = pairs.sort_values(["label", "sep"]).drop_duplicates("label")
    pairs = pairs.sort_values(["gaia", "sep"]).drop_duplicates("gaia")
    want = sorted(zip(filled(pastel["RA"])[pairs["label"]].tolist(),
                      np.asarray(gbs["source_id_gaiadr3"])[pairs["gaia"]].tolist()))
    assert len(want) >= 150

    got = query(path, "select label_ra, gaia_source_id, sep_arcsec from xmatch_labels where survey = 'PASTEL'")
    assert sorted(zip(got["label_ra"].tolist(), got["gaia_source_id"].tolist())) == want
    assert got["sep_arcsec"].max() <= 1.0
    # the matched labels reach the labels view under their Gaia ids, with PASTEL's Teff
    lab = query(path, "select source_id, teff from labels where survey = 'PASTEL' order by source_id")
    assert sorted(lab["source_id"].tolist()) == sorted(g for _, g in want)
    # position-only rows get their HEALPix index from (ra, dec)
    hp = query(path, "select ra, dec, healpix_12 from sos where survey = 'PASTEL'")
    np.testing.assert_array_equal(hp["healpix_12"], healpy.ang2pix(4096, hp["ra"], hp["dec"], nest=True, lonlat=True))


def test_sweetcat_needs_on_duplicate_skip(data_path, tmp_path):
    """SWEET-Cat: HD 41004 A/B share a gaia_dr3 id, so the plain ingest refuses, naming the id and both rows."""
    frame = pd.read_csv(data_path(SWEETCAT))
    dup = frame[(frame["gaia_dr3"] != -1) & frame.duplicated("gaia_dr3", keep=False)]
    assert dup["Name"].str.startswith("HD 41004").all()
    db_path = tmp_path / "sc.duckdb"
    line = error_line(invoke(db_path, "ingest", "sos", data_path(SWEETCAT), "--preset", "sweetcat"))
    gaia_id = int(dup["gaia_dr3"].iloc[0])
    assert str(gaia_id) in line and "sweetcat_subset.csv" in line and "--on-duplicate skip" in line
    rows = (dup.index + 1).tolist()  # 1-based data rows
    assert f"data rows {rows[0]} and {rows[1]}" in line


def test_sweetcat_ingest(data_path, tmp_path):
    """SWEET-Cat with --on-duplicate skip: -1 ids become NULL, [Fe/H] and Teff kept as written, skips reported."""
    frame = pd.read_csv(data_path(SWEETCAT))
    db_path = tmp_path / "sc.duckdb"
    result = invoke(db_path, "ingest", "sos", data_path(SWEETCAT), "--preset", "sweetcat", "--on-duplicate", "skip")
    assert result.exit_code == 0, result.output
    with_id = frame[frame["gaia_dr3"] != -1]
    without = frame[frame["gaia_dr3"] == -1]
    id_dups = int(with_id.duplicated("gaia_dr3").sum())
    positioned = without.dropna(subset=["RA_EU", "DEC_EU"])
    pos_dups = int(positioned.duplicated(["RA_EU", "DEC_EU"]).sum())
    assert f"{id_dups + pos_dups} duplicate rows skipped" in result.output
    # stars with neither a Gaia id nor coordinates can never be matched: left out, and said so
    unplaced = len(without) - len(positioned)
    assert unplaced > 0
    assert f"{unplaced} rows with neither a Gaia source_id nor ra/dec not stored" in result.output
    got = query(db_path, "select * from sos")
    assert len(got) == len(frame) - id_dups - pos_dups - unplaced
    assert (got["survey"] == "SWEET-Cat").all()
    assert not (got["source_id"] == -1).any()
    assert got["source_id"].isna().sum() == len(positioned) - pos_dups
    assert got[got["source_id"].isna()][["ra", "dec"]].notna().all().all()
    # labels of stars with a Gaia id, first occurrence kept, exactly as written ([Fe/H] includes negatives)
    first = with_id.drop_duplicates("gaia_dr3").set_index("gaia_dr3")
    by_id = got.dropna(subset=["source_id"]).set_index("source_id").sort_index()
    first = first.loc[by_id.index]
    np.testing.assert_array_equal(by_id["feh"].to_numpy(), first["[Fe/H]"].to_numpy())
    np.testing.assert_array_equal(by_id["teff"].to_numpy(), first["Teff"].to_numpy())
    np.testing.assert_array_equal(by_id["e_feh"].to_numpy(), first["e[Fe/H]"].to_numpy())
    assert (by_id["feh"] < -0.5).sum() >= 5
    hd41004 = frame[frame["Name"] == "HD 41004 A"].iloc[0]
    assert by_id.loc[int(hd41004["gaia_dr3"]), "feh"] == hd41004["[Fe/H]"]
    # rows without a Gaia id keep their J2000 position (RA_EU/DEC_EU)
    pos = got[got["source_id"].isna() & got["ra"].notna()]
    assert sorted(pos["ra"].tolist()) == sorted(positioned.drop_duplicates(["RA_EU", "DEC_EU"])["RA_EU"].tolist())


# ---------------------------------------------------------------- bad input


def _bad_skymapper(tmp_path, edit, name="bad.csv", n=8) -> Path:
    """A new SkyMapper file (ids not yet stored) with one defect applied by ``edit``."""
    rng = np.random.default_rng(3)
    frame = skymapper_frame(rng.uniform(0, 360, n), rng.uniform(-80, 0, n), 57000.0, first=500_000_001)
    frame = edit(frame)
    path = tmp_path / name
    if isinstance(frame, str):
        path.write_text(frame)
    else:
        frame.to_csv(path, index=False, na_rep="")
    return path


def _set(col, row, value):
    def edit(frame):
        frame[col] = frame[col].astype(object)
        frame.loc[row, col] = value
        return frame
    return edit


BAD_SKYMAPPER = {
    # name: (edit, words the one-line message must contain)
    "missing_required_column": (lambda f: f.drop(columns=["dej2000"]), ["dej2000", "--rename"]),
    "wrong_dtype": (_set("dej2000", 4, "minus ten"), ["dej2000", "data row 5", "minus ten"]),
    "ra_360": (_set("raj2000", 2, 360.0), ["raj2000", "data row 3", "[0, 360)"]),
    "ra_negative": (_set("raj2000", 6, -0.5), ["raj2000", "data row 7"]),
    "dec_below_minus_90": (_set("dej2000", 1, -90.5), ["dej2000", "data row 2", "[-90, 90]"]),
    "dec_above_90": (_set("dej2000", 0, 91.0), ["dej2000", "data row 1"]),
    "nan_position": (_set("raj2000", 3, "nan"), ["raj2000", "data row 4", "NaN"]),
    "empty_position": (_set("dej2000", 5, np.nan), ["dej2000", "data row 6"]),
    "duplicate_id_in_file": (_set("object_id", 7, 500_000_002), ["500000002", "data rows 2 and 8"]),
    "duplicate_id_in_table": (_set("object_id", 6, 100_000_005), ["100000005", "data row 7", "already in table skymapper"]),
    "header_only": (lambda f: "object_id,raj2000,dej2000,mean_epoch\n", ["no data rows"]),
}


@pytest.mark.parametrize("case", list(BAD_SKYMAPPER))
def test_bad_skymapper_file_is_refused_and_db_unchanged(case, db, tmp_path):
    """Bad SkyMapper input: one-line error naming file and column/row, non-zero exit, database unchanged."""
    edit, words = BAD_SKYMAPPER[case]
    path = _bad_skymapper(tmp_path, edit)
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "skymapper", path))
    assert "bad.csv" in line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert snapshot(db) == before


def test_bad_file_among_good_ones_loads_nothing(db, tmp_path):
    """One command with a good file then a bad one: the good file's rows are rolled back too."""
    good = _bad_skymapper(tmp_path, lambda f: f, name="good.csv")
    bad = _bad_skymapper(tmp_path, _set("raj2000", 2, 400.0), name="bad.csv")
    bad.write_text(bad.read_text().replace("50000000", "60000000"))  # other ids than good.csv
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "skymapper", good, bad))
    assert "bad.csv" in line and "raj2000" in line
    assert snapshot(db) == before


def test_duplicate_across_files_in_one_command(db, tmp_path):
    """Two files of one command sharing a source_id: refused, naming the id and the other file; nothing stored."""
    gaia, *_ = small_sky(6, seed=5)
    gaia["source_id"] += 10**6
    first = write(gaia.iloc[:4], tmp_path / "first.csv")
    second = write(gaia.iloc[3:], tmp_path / "second.csv")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", first, second))
    sid = str(gaia["source_id"].iloc[3])
    assert "second.csv" in line and sid in line and "first.csv" in line
    assert snapshot(db) == before


def test_duplicate_across_two_commands(db, tmp_path):
    """A later command repeating a stored source_id is refused, naming the file it came from; the first load stays."""
    gaia, *_ = small_sky(6, seed=6)
    gaia["source_id"] += 10**6
    first = write(gaia.iloc[:4], tmp_path / "first.csv")
    assert invoke(db, "ingest", "gaia", first).exit_code == 0
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", write(gaia.iloc[2:], tmp_path / "second.csv")))
    assert "second.csv" in line and str(gaia["source_id"].iloc[2]) in line and "first.csv" in line
    assert "data row 1" in line
    assert snapshot(db) == before


def test_duplicate_source_id_within_gaia_file(db, tmp_path):
    """A Gaia file repeating a source_id is refused, naming the id and both data rows."""
    gaia, *_ = small_sky(5, seed=7)
    gaia["source_id"] += 10**6
    gaia.loc[4, "source_id"] = gaia.loc[1, "source_id"]
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", write(gaia, tmp_path / "dups.csv")))
    assert "dups.csv" in line and str(gaia.loc[1, "source_id"]) in line and "data rows 2 and 5" in line
    assert snapshot(db) == before


def test_truncated_gzip(sky, db, tmp_path):
    """The Gaia .csv.gz cut in half: refused as truncated, naming the file; database unchanged."""
    data = Path(sky.files["gaia"]).read_bytes()
    cut = tmp_path / "GaiaSource_cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", cut))
    assert "GaiaSource_cut.csv.gz" in line and "truncated" in line
    assert snapshot(db) == before


def test_empty_file(db, tmp_path):
    """A zero-byte file is refused as empty; database unchanged."""
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", empty))
    assert "empty.csv" in line and "empty" in line.replace("empty.csv", "")
    assert snapshot(db) == before


def test_gaia_file_given_to_skymapper(db, data_path):
    """A Gaia file given to `ingest skymapper` is refused with a hint to use `ingest gaia`."""
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "skymapper", data_path(GAIA_ECSV)))
    assert "gaia_dr3_fixture_5rows.ecsv" in line and "stellardb ingest gaia" in line
    assert snapshot(db) == before


@pytest.mark.parametrize("kind, table, hint", [
    ("skymapper", "gaia", "stellardb ingest skymapper"),
    ("distances", "gaia", "stellardb ingest distances"),
    ("gaia", "distances", "stellardb ingest gaia"),
])
def test_file_for_another_table(kind, table, hint, db, tmp_path):
    """A file of one catalogue given to another table's ingest: refused with the right `ingest` command."""
    gaia, sm, dist, _ = small_sky(5, seed=11)
    frame = {"gaia": gaia, "skymapper": sm, "distances": dist}[kind]
    path = write(frame, tmp_path / f"{kind}_file.csv")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", table, path))
    assert f"{kind}_file.csv" in line and hint in line
    assert snapshot(db) == before

def test_wrong_dtype_in_a_gaia_ecsv(db, data_path, tmp_path):
    """Text in a float64 column of an ECSV file: refused naming the file and the line; database unchanged."""
    text = data_path(GAIA_ECSV).read_text().splitlines()
    body_start = next(i for i, line in enumerate(text) if not line.startswith("#"))
    header = text[body_start].split(",")
    assert header.index("source_id") < 3
    # the third data row: replace its ra (unquoted number) with text
    row = text[body_start + 3].split(",")
    row[header.index("ra")] = "north"
    text[body_start + 3] = ",".join(row)
    path = tmp_path / "bad_gaia.ecsv"
    path.write_text("\n".join(text) + "\n")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", path))
    assert "bad_gaia.ecsv" in line
    assert f"Line: {body_start + 4}" in line or "data row 3" in line
    assert snapshot(db) == before


def _big_skymapper_with_text(tmp_path) -> Path:
    """30,000 SkyMapper rows with text in u_psf at data row 25,001 (beyond DuckDB's type sniffing sample)."""
    rng = np.random.default_rng(8)
    n = 30_000
    frame = skymapper_frame(rng.uniform(0, 360, n), rng.uniform(-80, 0, n), 57000.0, first=700_000_001)
    frame["u_psf"] = frame["u_psf"].astype(object)
    frame.loc[25_000, "u_psf"] = "abc"
    return write(frame, tmp_path / "big.csv")


def test_wrong_dtype_deep_in_a_big_csv(db, tmp_path):
    """Text in a numeric column far down a big CSV: one-line error naming the file and the line; unchanged."""
    path = _big_skymapper_with_text(tmp_path)
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "skymapper", path))
    assert "big.csv" in line and "25002" in line  # line 25,002 of the file = data row 25,001
    assert snapshot(db) == before


def test_wrong_dtype_deep_in_a_big_csv_names_the_column(db, tmp_path):
    """The error for text deep in a big CSV names the column and the offending value too, like a small file's."""
    line = error_line(invoke(db, "ingest", "skymapper", _big_skymapper_with_text(tmp_path)))
    assert "u_psf" in line and "abc" in line


def test_locked_database(db, tmp_path):
    """A database held open for writing by another process: one-line 'in use' error, database unchanged."""
    good = _bad_skymapper(tmp_path, lambda f: f, name="good.csv")
    before = snapshot(db)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        line = error_line(invoke(db, "ingest", "skymapper", good))
        assert "db.duckdb" in line and "in use by another process" in line and str(holder.pid) in line
        line = error_line(invoke(db, "query", "select count(*) from gaia"))
        assert "in use by another process" in line
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "args, words",
    [
        (["--preset", "nope"], ["Unknown preset 'nope'", "skymapper-master"]),
        (["--preset", "pastel"], ["Preset 'pastel' is for table 'sos'"]),
        (["--rename", "raj2000"], ["--rename expects OLD=NEW", "'raj2000'"]),
        (["--rename", "=ra"], ["--rename expects OLD=NEW"]),
        # OLD= leaves a column out: here a required one
        (["--rename", "raj2000="], ["missing required column raj2000"]),
    ],
)
def test_bad_options(args, words, db, tmp_path):
    """Unknown or mismatched preset and malformed --rename: one-line error, database unchanged."""
    good = _bad_skymapper(tmp_path, lambda f: f, name="good.csv")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "skymapper", good, *args))
    for word in words:
        assert word in line
    assert snapshot(db) == before


def test_missing_file(db, tmp_path):
    """A file that does not exist is refused before the database is touched."""
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", tmp_path / "nowhere.csv.gz"))
    assert "nowhere.csv.gz" in line
    assert snapshot(db) == before


def test_on_duplicate_skip_reports_what_it_skipped(db, tmp_path):
    """--on-duplicate skip keeps the first row of each key and reports how many it skipped (never silent)."""
    path = _bad_skymapper(tmp_path, _set("object_id", 7, 500_000_002), name="dups.csv")
    frame = pd.read_csv(path)
    frame.loc[6, "object_id"] = 100_000_005  # already stored
    frame.to_csv(path, index=False)
    result = invoke(db, "ingest", "skymapper", path, "--on-duplicate", "skip")
    assert result.exit_code == 0, result.output
    assert "2 duplicate rows skipped" in result.output
    got = query(db, "select object_id, raj2000 from skymapper where object_id = 500000002")
    assert got["raj2000"].tolist() == [frame.loc[1, "raj2000"]]
    assert int(query(db, "select count(*) as n from skymapper")["n"][0]) == 30 + 6
