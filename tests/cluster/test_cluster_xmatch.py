"""stellardb xmatch --engine dask (issue 16): the crossmatch SQL per HATS partition on a local
Dask cluster gives the embedded crossmatch's pairs, which equal an all-pairs brute force.

The sky is every hand-built sky of tests/catalog/test_crossmatch.py at once (the south pole,
RA 0/360, HEALPix corners at orders 10 and 12, zone borders, close pairs, fast movers, NULL
proper motions, a footprint edge), released in partitions of at most 40 rows, so partitions
of several orders meet among the pairs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stellardb.cli.main import cli
from stellardb.cluster import catalogues, xmatch as cluster_xmatch
from stellardb.errors import UserError
from stellardb.release.writer import write_release

from ..catalog.test_crossmatch import SKIES, ingest_sky, offset, sky
from ..helpers import brute_force_xmatch, dictionary_encoded, gaia_frame, gaia_source_ids, jyear, skymapper_frame
from ..release.conftest import add_predictions

MAX_ROWS = 40
#: wider than the 5 arcsec/yr movers' reach (1 + 5 x 3.6 = 19 arcsec)
MARGIN_ARCSEC = 20.0


def all_skies():
    """Every hand-built sky, ids renumbered so they do not collide."""
    gaias, sms = [], []
    for k, name in enumerate(SKIES):
        g, s = sky(name)
        g, s = g.copy(), s.copy()
        g["source_id"] = gaia_source_ids(g["ra"].to_numpy(), g["dec"].to_numpy(), first=(k + 1) * 10_000)
        s["object_id"] = s["object_id"] + (k + 1) * 10**10
        gaias.append(g), sms.append(s)
    return pd.concat(gaias, ignore_index=True), pd.concat(sms, ignore_index=True)


@pytest.fixture(scope="module")
def hard_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_xm")
    gaia, sm = all_skies()
    db_path = root / "hard.duckdb"
    ingest_sky(db_path, gaia, sm)  # ingest refreshes table xmatch: the embedded crossmatch
    add_predictions(db_path)
    result = write_release(db_path, "hard", max_rows=MAX_ROWS, margin_arcsec=MARGIN_ARCSEC)
    return root, db_path, result.path, gaia, sm


def embedded_pairs(db_path) -> pd.DataFrame:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute("select skymapper_object_id, gaia_source_id, sep_arcsec, n_candidates, dt_yr from xmatch "
                           "order by 1").df()
    finally:
        con.close()


def cluster_pairs(folder: Path) -> pd.DataFrame:
    return duckdb.sql(f"select * from read_parquet('{folder}/xmatch/xmatch/dataset/Norder=*/*/*.parquet') "
                      "order by skymapper_object_id").df()


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["skymapper_object_id"].tolist() == want["skymapper_object_id"].tolist()
    assert got["gaia_source_id"].tolist() == want["gaia_source_id"].tolist()
    np.testing.assert_array_equal(got["n_candidates"].to_numpy(), want["n_candidates"].to_numpy())
    # the same SQL on the same rows: the same doubles
    np.testing.assert_array_equal(got["sep_arcsec"].to_numpy(), want["sep_arcsec"].to_numpy())
    np.testing.assert_array_equal(got["dt_yr"].to_numpy(), want["dt_yr"].to_numpy())


def run(release, out, **kw):
    gaia = catalogues.release_catalogue(release, "gaia")
    survey = catalogues.release_catalogue(release, "skymapper")
    return cluster_xmatch.run(gaia, survey, "skymapper", out, workers=2, **kw)


def test_the_release_has_partitions_of_several_orders_among_the_pairs(hard_release):
    """A test of border handling proves something only if borders of several orders run among the pairs."""
    _, _, release, _, _ = hard_release
    gaia = catalogues.release_catalogue(release, "gaia")
    orders = {p.order for p in gaia.pixels}
    assert len(orders) >= 3, orders
    assert gaia.margin_arcsec == MARGIN_ARCSEC and gaia.margin_files


@pytest.fixture(scope="module")
def dask_result(hard_release, tmp_path_factory):
    _, _, release, _, _ = hard_release
    out = tmp_path_factory.mktemp("cluster_out")
    return run(release, out), out


def test_dask_pairs_equal_embedded_and_brute_force(hard_release, dask_result):
    _, db_path, _, gaia, sm = hard_release
    result, out = dask_result
    got = cluster_pairs(out)
    want = embedded_pairs(db_path)
    assert len(want) > 300
    assert_same(got, want)
    brute, ambiguous = brute_force_xmatch(gaia, sm, 1.0)
    assert not ambiguous
    assert sorted(zip(got["skymapper_object_id"], got["gaia_source_id"])) == \
        sorted(zip(brute["skymapper_object_id"], brute["gaia_source_id"]))
    assert result.pairs == len(want)


def test_pairs_straddle_partition_borders(hard_release, dask_result):
    """Pairs whose survey row lies in another Gaia partition than its Gaia source exist, and are kept."""
    _, _, release, _, _ = hard_release
    _, out = dask_result
    gaia = catalogues.release_catalogue(release, "gaia")
    got = cluster_pairs(out)
    sm = duckdb.sql(f"select object_id, _healpix_29 as sm_hp from read_parquet("
                    f"'{release}/skymapper/skymapper/dataset/Norder=*/*/*.parquet')").df()
    both = got.merge(sm, left_on="skymapper_object_id", right_on="object_id")
    los = np.array([p.lo for p in gaia.pixels])
    part_of = lambda hp: np.searchsorted(los, hp, side="right") - 1  # noqa: E731
    straddling = part_of(both["_healpix_29"].to_numpy()) != part_of(both["sm_hp"].to_numpy())
    assert straddling.sum() >= 5, straddling.sum()


def test_output_is_a_hats_catalogue_co_partitioned_with_gaia_that_lsdb_reads(hard_release, dask_result):
    import hats
    import lsdb
    from hats.io.validation import is_valid_catalog

    _, _, release, _, _ = hard_release
    result, out = dask_result
    gaia = catalogues.release_catalogue(release, "gaia")
    catalogue = hats.read_hats(out / "xmatch")
    assert sorted((p.order, p.pixel) for p in catalogue.get_healpix_pixels()) == \
        sorted((p.order, p.pixel) for p in gaia.pixels)
    assert is_valid_catalog(out / "xmatch", strict=True)
    frame = lsdb.open_catalog(out / "xmatch").compute()
    assert len(frame) == result.pairs
    # each pair sits in the partition of its Gaia source
    gaia_hp = duckdb.sql(f"select source_id, _healpix_29 from read_parquet("
                         f"'{release}/gaia/gaia/dataset/Norder=*/*/*.parquet')").df()
    merged = frame.reset_index().merge(gaia_hp, left_on="gaia_source_id", right_on="source_id")
    assert (merged["_healpix_29_x"] == merged["_healpix_29_y"]).all()


def test_output_files_are_dictionary_encoded_only_in_their_strings(dask_result):
    """Ids, positions and separations are written plain: a dictionary of nearly distinct values
    cost about 3x the write time (docs/cluster.md)."""
    result, out = dask_result
    seen = dictionary_encoded(out / "xmatch")
    assert set(seen) >= {"_healpix_29", "skymapper_object_id", "gaia_source_id", "sep_arcsec", "ra", "dec"}
    assert not any(seen.values()), seen


def test_a_worker_killed_mid_run_still_gives_the_complete_result(hard_release, dask_result, tmp_path, monkeypatch):
    _, _, release, _, _ = hard_release
    marker = tmp_path / "killed"
    monkeypatch.setenv("STELLARDB_TEST_KILL_ONCE", str(marker))
    run(release, tmp_path / "out")
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert_same(cluster_pairs(tmp_path / "out"), cluster_pairs(dask_result[1]))


def test_partitions_cut_to_the_memory_budget_give_the_same_pairs(hard_release, dask_result, tmp_path, monkeypatch):
    """With a budget of a few rows per task, every Gaia partition is cut into sub-pixels (each
    reading only the Gaia rows within reach of it): the plan's tasks fit the budget, and the
    pairs are the same."""
    from stellardb.release import writer

    _, db_path, _, _, _ = hard_release
    # the row-group statistics count rows per row group: small ones resolve small pixels
    monkeypatch.setattr(writer, "ROW_GROUP_ROWS", 2)
    release = write_release(db_path, "small-groups", max_rows=MAX_ROWS, margin_arcsec=MARGIN_ARCSEC,
                            out=tmp_path / "rel").path
    # 2GB x 0.5 / 50,000,000 bytes a row: 20 rows per task
    monkeypatch.setattr(cluster_xmatch, "BYTES_PER_ROW", 50_000_000)
    result = run(release, tmp_path / "out", memory_per_worker="2GB")
    assert result.nearest_tasks > len(catalogues.release_catalogue(release, "gaia").pixels)
    assert_same(cluster_pairs(tmp_path / "out"), cluster_pairs(dask_result[1]))


def test_the_proper_motion_bound_from_row_group_statistics(tmp_path):
    """Per row group, the largest |pmra| and |pmdec| together: never below the fastest star's total
    motion, and near it when the fastest in pmra and in pmdec sit in different row groups (the
    bound of the whole file's largest |pmra| and |pmdec| would be sqrt(2) x 3 arcsec/yr)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stellardb.cluster.stats import column_ranges

    dataset = tmp_path / "cat" / "dataset"
    (dataset / "Norder=0" / "Dir=0").mkdir(parents=True)
    table = pa.table({"_healpix_29": pa.array(np.arange(6), pa.int64()),
                      "pmra": pa.array([3000.0, 10.0, None, -5.0, 1.0, 2.0]),
                      "pmdec": pa.array([-20.0, 1.0, None, -3000.0, 4.0, None])})
    collected = []
    pq.write_table(table, dataset / "Norder=0" / "Dir=0" / "Npix=0.parquet", row_group_size=2,
                   metadata_collector=collected)
    collected[0].set_file_path("Norder=0/Dir=0/Npix=0.parquet")
    pq.write_metadata(table.schema, dataset / "_metadata", metadata_collector=collected)
    ranges = column_ranges(tmp_path / "cat", ["pmra", "pmdec"], per_group=True)
    assert ranges["pmra"][:2] == ([10.0, -5.0, 1.0], [3000.0, -5.0, 2.0])
    assert ranges["pmdec"][:2] == ([-20.0, -3000.0, 4.0], [1.0, -3000.0, 4.0])
    fastest = np.hypot(table["pmra"].to_numpy(zero_copy_only=False), table["pmdec"].to_numpy(zero_copy_only=False))
    pm = cluster_xmatch._pm_bound(ranges)
    assert np.nanmax(fastest) / 1000.0 <= pm < 3.001  # the whole file's: 4.24
    # a NaN statistic (written by tools that break the Parquet rule) bounds nothing: the scan decides
    for column, side in (("pmra", 1), ("pmdec", 0)):
        broken = {c: tuple(list(v) if i < 2 else v for i, v in enumerate(ranges[c])) for c in ranges}
        broken[column][side][0] = float("nan")
        assert cluster_xmatch._pm_bound(broken) is None


def test_a_margin_narrower_than_the_reach_is_refused_before_any_work(hard_release, tmp_path):
    root, db_path, _, gaia, sm = hard_release
    # the reach, computed here from the frames: radius + 1 mas + fastest motion x widest epoch gap
    pm = np.nanmax(np.hypot(gaia["pmra"].fillna(0), gaia["pmdec"].fillna(0))) / 1000.0
    span = np.max(np.abs(jyear(sm["mean_epoch"].to_numpy()) - 2016.0))
    needed = int(np.ceil(1.0 + 0.001 + pm * span))
    narrow = write_release(db_path, "narrow", max_rows=MAX_ROWS, margin_arcsec=5.0, out=tmp_path / "rel")
    with pytest.raises(UserError) as err:
        run(narrow.path, tmp_path / "out")
    message = str(err.value)
    assert "5 arcsec margin" in message and f"--margin-arcsec {needed}`" in message and "\n" not in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_command_line(hard_release, tmp_path):
    root, db_path, release, _, _ = hard_release
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--release", str(release),
                                 "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Gaia-skymapper pairs" in result.output
    assert_same(cluster_pairs(out), embedded_pairs(db_path))
    # the same folder again: refused, the result kept
    again = runner.invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--release", str(release),
                                "--workers", "1", "--out", str(out)])
    assert again.exit_code != 0 and "already exists" in again.output
    assert_same(cluster_pairs(out), embedded_pairs(db_path))
    # cluster options without the engine, and no release: one-line errors
    bad = runner.invoke(cli, ["--db", str(db_path), "xmatch", "--workers", "2"])
    assert bad.exit_code != 0 and "--workers needs --engine dask" in bad.output
    none = runner.invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask"])
    assert none.exit_code != 0 and "--release" in none.output
    inside = runner.invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--release", str(release),
                                 "--out", str(release / "x")])
    assert inside.exit_code != 0 and "immutable" in inside.output
    shutil.rmtree(out)


def test_two_fields_without_a_margin_cache_and_the_stored_radius(tmp_path):
    """Two small fields far apart: the release has no margin cache (no row near a border), and its
    margin width still holds; the database's stored radius (2 arcsec) is the cluster's default too."""
    import healpy

    rng = np.random.default_rng(5)
    ra, dec = [], []
    for pixel in (600, 700):
        c_ra, c_dec = healpy.pix2ang(8, pixel, nest=True, lonlat=True)
        ra.append(c_ra + rng.normal(0, 0.01, 20)), dec.append(c_dec + rng.normal(0, 0.01, 20))
    ra, dec = np.concatenate(ra) % 360, np.concatenate(dec)
    gaia = gaia_frame(ra, dec, rng.normal(0, 30, ra.size), rng.normal(0, 30, ra.size))
    epochs = rng.uniform(56650, 58700, ra.size)
    s_ra, s_dec = offset(ra, dec, rng.uniform(0, 360, ra.size), rng.uniform(0.0, 1.9, ra.size))
    sm = skymapper_frame(s_ra, s_dec, epochs)
    db_path = tmp_path / "two.duckdb"
    ingest_sky(db_path, gaia, sm)
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", str(db_path), "xmatch", "--radius-arcsec", "2"]).exit_code == 0
    add_predictions(db_path)
    release = write_release(db_path, "two", max_rows=30, margin_arcsec=20.0).path
    gaia_cat = catalogues.release_catalogue(release, "gaia")
    assert len(gaia_cat.pixels) >= 2 and not gaia_cat.margin_files, "the test needs a release without margin rows"
    result = runner.invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--release", "two", "--workers",
                                 "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    want = embedded_pairs(db_path)
    assert (want["sep_arcsec"] > 1.0).sum() >= 5, "pairs beyond 1 arcsec prove the stored radius is used"
    assert_same(cluster_pairs(tmp_path / "out"), want)


def test_bad_scheduler_options_are_one_line_errors(hard_release, tmp_path):
    import socket

    root, db_path, release, _, _ = hard_release
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = CliRunner()
    base = ["--db", str(db_path), "xmatch", "--engine", "dask", "--release", str(release), "--out", str(tmp_path / "o")]
    both = runner.invoke(cli, base + ["--scheduler", f"tcp://127.0.0.1:{port}", "--workers", "2"])
    assert both.exit_code != 0 and "give one of them" in both.output
    gone = runner.invoke(cli, base + ["--scheduler", f"tcp://127.0.0.1:{port}"])
    assert gone.exit_code != 0 and "No Dask scheduler answered" in gone.output
    zero = runner.invoke(cli, base + ["--workers", "0"])
    assert zero.exit_code != 0 and "--workers must be at least 1" in zero.output
    tmass = runner.invoke(cli, base + ["--survey", "tmass"])
    assert tmass.exit_code != 0 and "SkyMapper only" in tmass.output
    for bad in (both, gone, zero, tmass):
        assert len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "o").exists()


def test_hats_catalogues_given_by_path(hard_release, tmp_path):
    """Gaia and SkyMapper as HATS catalogues by path (any HATS folders, not only a release): the same pairs."""
    root, db_path, release, _, _ = hard_release
    result = CliRunner().invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--gaia-catalogue",
                                      str(release / "gaia"), "--survey-catalogue", str(release / "skymapper" / "skymapper"),
                                      "--workers", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert_same(cluster_pairs(tmp_path / "o"), embedded_pairs(db_path))
    half = CliRunner().invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--gaia-catalogue",
                                    str(release / "gaia")])
    assert half.exit_code != 0 and "together" in half.output
    wrong = CliRunner().invoke(cli, ["--db", str(db_path), "xmatch", "--engine", "dask", "--gaia-catalogue",
                                     str(release / "gaia"), "--survey-catalogue", str(release / "xmatch"),
                                     "--out", str(tmp_path / "w")])
    assert wrong.exit_code != 0 and "has no column object_id" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1 and not (tmp_path / "w").exists()
