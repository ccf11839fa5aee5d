"""Inputs real users hit that the first review found: float ids, other delimiters, flags, units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from stellardb.simulate import output_names, simulate

from ..helpers import GAIA_ECSV, error_line, invoke, query, small_sky, snapshot, write



def test_float_source_ids_are_refused(db, tmp_path):
    """A float64 source_id column (ids lose digits) is refused, and nothing changes."""
    _, _, dist, _ = small_sky()
    table = pa.table({"source_id": dist["source_id"].astype(float).to_numpy(), "r_med_geo": dist["r_med_geo"].to_numpy()})
    path = tmp_path / "float_ids.parquet"
    pq.write_table(table, path)
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "distances", path))
    assert "floating point" in line and "source_id" in line
    assert snapshot(db) == before


def test_scientific_notation_ids_are_refused(db, tmp_path):
    """Ids written as 3.9e18 in a CSV are refused, naming the row."""
    path = tmp_path / "sci.csv"
    path.write_text("source_id,r_med_geo\n4000000000000000001,100\n3.946945413106334e+18,200\n")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "distances", path))
    assert "data row 2" in line and "whole number" in line
    assert snapshot(db) == before


def test_astropy_ecsv_with_space_delimiter(tmp_path):
    """An ECSV written by astropy (space-delimited, as the standard allows) ingests."""
    gaia, _, _, _ = small_sky(n=8)
    path = tmp_path / "gaia.ecsv"
    Table.from_pandas(gaia).write(path, format="ascii.ecsv")
    dbp = tmp_path / "t.duckdb"
    result = invoke(dbp, "ingest", "gaia", path)
    assert result.exit_code == 0, result.output
    got = query(dbp, "select source_id, ra from gaia order by source_id")
    want = gaia.sort_values("source_id")
    np.testing.assert_array_equal(got["source_id"].to_numpy(), want["source_id"].to_numpy())
    np.testing.assert_allclose(got["ra"].to_numpy(), want["ra"].to_numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sep,bom", [(";", False), ("\t", False), (",", True)])
def test_other_delimiters_and_byte_order_mark(sep, bom, tmp_path):
    """Semicolon- and tab-separated files (VizieR) and a UTF-8 BOM (spreadsheets) ingest."""
    _, _, dist, _ = small_sky()
    path = tmp_path / "dist.csv"
    text = dist.to_csv(index=False, sep=sep)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    dbp = tmp_path / "t.duckdb"
    result = invoke(dbp, "ingest", "distances", path)
    assert result.exit_code == 0, result.output
    got = query(dbp, "select source_id, r_med_geo from distances order by source_id")
    want = dist.sort_values("source_id")
    np.testing.assert_array_equal(got["source_id"].to_numpy(), want["source_id"].to_numpy())
    np.testing.assert_allclose(got["r_med_geo"].to_numpy(), want["r_med_geo"].to_numpy(), rtol=1e-6)


def test_rename_collision_and_unknown_column(db, tmp_path):
    """Two columns mapped to one stored column, or --rename of a column the file lacks, are refused."""
    path = tmp_path / "vizier.csv"
    pd.DataFrame({"Source": [4000000000000000001], "rgeo": [10.0], "rpgeo": [11.0]}).to_csv(path, index=False)
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "distances", path, "--preset", "bailer-jones-vizier", "--rename", "rpgeo=r_med_geo"))
    assert "both map to r_med_geo" in line
    line = error_line(invoke(db, "ingest", "distances", path, "--preset", "bailer-jones-vizier", "--rename", "Nope=r_med_geo"))
    assert "Nope" in line and "names no column" in line
    assert snapshot(db) == before


def test_galah_flags_null_the_flagged_labels(tmp_path):
    """GALAH DR3 rows with flag_sp != 0 lose all labels, flag_fe_h != 0 loses [Fe/H] (as Buder+2021 advise)."""
    rng = np.random.default_rng(3)
    n = 40
    frame = pd.DataFrame({
        "dr3_source_id": 4000000000000000000 + np.arange(n),
        "flag_sp": rng.choice([0, 0, 1, 16], n),
        "flag_fe_h": rng.choice([0, 0, 2], n),
        "teff": rng.uniform(4000, 6500, n), "e_teff": 50.0,
        "logg": rng.uniform(1, 4.5, n), "e_logg": 0.1,
        "fe_h": rng.uniform(-1, 0.3, n), "e_fe_h": 0.05,
    })
    path = write(frame, tmp_path / "galah.csv")
    dbp = tmp_path / "t.duckdb"
    result = invoke(dbp, "ingest", "sos", path, "--preset", "galah-dr3")
    assert result.exit_code == 0, result.output
    got = query(dbp, "select source_id, teff, feh from sos order by source_id")
    sp_ok = frame["flag_sp"].to_numpy() == 0
    fe_ok = sp_ok & (frame["flag_fe_h"].to_numpy() == 0)
    np.testing.assert_array_equal(got["teff"].notna().to_numpy(), sp_ok)
    np.testing.assert_array_equal(got["feh"].notna().to_numpy(), fe_ok)
    np.testing.assert_allclose(got["feh"].to_numpy()[fe_ok], frame["fe_h"].to_numpy()[fe_ok])


@pytest.mark.parametrize("table,column,value,words", [
    ("skymapper", "mean_epoch", 2015.5, "Modified Julian Date"),
    ("distances", "r_med_geo", 0.0, "must be positive"),
])
def test_values_in_the_wrong_unit_are_refused(db, tmp_path, table, column, value, words):
    """mean_epoch given in years, or a zero distance, is refused with the unit to use."""
    gaia, sm, dist, _ = small_sky(seed=5)
    frame = {"skymapper": sm, "distances": dist}[table].copy()
    frame[column] = frame[column].astype(float)
    frame.loc[frame.index[3], column] = value
    path = write(frame, tmp_path / f"{table}.csv")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", table, path))
    assert words in line and "data row 4" in line
    assert snapshot(db) == before


def test_failed_ingest_into_a_new_database_leaves_no_file(tmp_path):
    """A first ingest that fails does not leave an empty database behind."""
    path = tmp_path / "bad.csv"
    path.write_text("source_id,r_med_geo\n1,10\n1,12\n")
    dbp = tmp_path / "new.duckdb"
    error_line(invoke(dbp, "ingest", "distances", path))
    assert not dbp.exists()


def test_query_output_into_a_missing_folder(db, tmp_path):
    """--output into a folder that does not exist is a one-line error, not a traceback."""
    for fmt in ("csv", "json", "parquet"):
        line = error_line(invoke(db, "query", "select 1", "--format", fmt, "--output", tmp_path / "nope" / f"x.{fmt}"))
        assert "does not exist" in line


def test_overwrite_removes_files_of_an_earlier_run(tmp_path):
    """simulate --overwrite leaves no file of an earlier run in the other format, nor its truth table."""
    out = tmp_path / "sky"
    simulate(out, stars=300, seed=1, truth=True)
    simulate(out, stars=300, seed=2, fmt="parquet", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(output_names("parquet").values())


def test_label_rows_mixing_ids_and_positions_get_the_right_healpix(tmp_path):
    """sos rows with a Gaia id take source_id >> 35; rows with only a position take healpy's index."""
    import healpy

    from stellardb.ingest import pipeline as ingest

    gaia, _, _, _ = small_sky(n=12, seed=3)
    rng = np.random.default_rng(3)
    labels = pd.DataFrame({
        "source_id": pd.array(list(gaia["source_id"][:6]) + [None] * 6, dtype="Int64"),
        "ra": rng.uniform(0, 360, 12), "dec": rng.uniform(-89, 89, 12),
        "teff": 5000.0, "logg": 4.0, "feh": 0.0, "survey": "TEST",
    })
    dbp = tmp_path / "t.duckdb"
    ingest.run(dbp, "sos", [write(labels, tmp_path / "labels.csv")])
    got = query(dbp, "select source_id, ra, dec, healpix_12 from sos order by rowid")
    with_id = got["source_id"].notna()
    assert with_id.sum() == 6
    np.testing.assert_array_equal(got.loc[with_id, "healpix_12"], got.loc[with_id, "source_id"].astype("int64") // 2**35)
    np.testing.assert_array_equal(got.loc[~with_id, "healpix_12"],
                                  healpy.ang2pix(4096, got.loc[~with_id, "ra"], got.loc[~with_id, "dec"], nest=True, lonlat=True))


@pytest.mark.parametrize("good", [True, False])
def test_inflated_scratch_copy_is_removed(good, tmp_path, monkeypatch):
    """A gzipped catalogue is inflated to a scratch file that is gone afterwards, on success and on failure."""
    import gzip

    from stellardb.ingest import readers

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(readers, "_scratch_dir", lambda needed: str(scratch))
    _, sm, _, _ = small_sky(n=50)
    text = sm.to_csv(index=False).encode()
    path = tmp_path / "sm.csv.gz"
    data = gzip.compress(text)
    path.write_bytes(data if good else data[: len(data) // 2])
    result = invoke(tmp_path / "t.duckdb", "ingest", "skymapper", path)
    assert (result.exit_code == 0) == good, result.output
    if not good:
        assert "truncated" in error_line(result)
    assert list(scratch.iterdir()) == []


def test_scratch_goes_to_disk_when_memory_is_short():
    """The inflated copy goes to RAM only when it needs less than half of the free memory."""
    from stellardb.ingest import readers

    import os

    assert readers._scratch_dir(1 << 60) is None
    if os.access("/dev/shm", os.W_OK):  # Linux: RAM-backed, and 1 MB always fits
        assert readers._scratch_dir(1 << 20) == "/dev/shm"


def test_labels_without_any_id_or_position_are_refused(db, tmp_path):
    """A label file whose rows have neither a Gaia id nor ra/dec cannot be matched: refused, unchanged."""
    path = tmp_path / "labels.csv"
    path.write_text("source_id,ra,dec,teff,logg,feh\n,,,5000,4.0,0.0\n,10.0,,5100,4.1,-0.1\n")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "sos", path, "--survey", "TEST"))
    assert "labels.csv" in line and "no row has a Gaia source_id or ra/dec" in line
    assert snapshot(db) == before


def test_reingest_with_other_options_is_still_skipped(db, tmp_path):
    """A file ingested with --rename and named again without it: skipped as already ingested, not refused."""
    _, _, dist, _ = small_sky(n=10, seed=21)
    dist["source_id"] += 10**7  # new ids
    path = tmp_path / "dist_gid.csv"
    dist.rename(columns={"source_id": "gid"}).to_csv(path, index=False)
    first = invoke(db, "ingest", "distances", path, "--rename", "gid=source_id")
    assert first.exit_code == 0, first.output
    before = snapshot(db)
    again = invoke(db, "ingest", "distances", path)
    assert again.exit_code == 0, again.output
    assert "already ingested" in again.output
    assert snapshot(db) == before



def test_reingest_that_would_fail_in_duckdb_is_skipped_and_the_new_file_loads(db, tmp_path, monkeypatch):
    """An already-ingested file is skipped on its hash before it is read again: even if reading
    it with this command's options would fail inside DuckDB (which aborts the transaction), the
    new file named with it still loads."""
    from stellardb.ingest import readers

    _, _, dist, _ = small_sky(n=10, seed=22)
    dist["source_id"] += 2 * 10**7  # new ids
    old = tmp_path / "dist_again.csv"
    dist.to_csv(old, index=False)
    assert invoke(db, "ingest", "distances", old).exit_code == 0
    new = tmp_path / "dist_new.csv"
    dist.assign(source_id=dist["source_id"] + 10**6).to_csv(new, index=False)
    n_before = query(db, "select count(*) as n from distances")["n"][0]
    real_load = readers.load

    def load_failing_on_old(con, source, stage, varchar_columns=()):
        if source.path.name == old.name:
            con.execute("select cast('not a number' as integer)")  # aborts the transaction
        return real_load(con, source, stage, varchar_columns)

    monkeypatch.setattr(readers, "load", load_failing_on_old)
    result = invoke(db, "ingest", "distances", old, new)
    assert result.exit_code == 0, result.output
    assert "already ingested" in result.output
    assert query(db, "select count(*) as n from distances")["n"][0] == n_before + 10


def test_a_rerun_does_not_read_already_ingested_files_again(db, tmp_path, monkeypatch):
    """Re-running an ingest over a folder skips the known files on their hash alone (no
    inflating or parsing them again)."""
    from stellardb.ingest import readers

    _, _, dist, _ = small_sky(n=10, seed=25)
    dist["source_id"] += 5 * 10**7
    path = tmp_path / "dist_rerun.csv"
    dist.to_csv(path, index=False)
    assert invoke(db, "ingest", "distances", path).exit_code == 0
    loaded = []
    real_load = readers.load
    monkeypatch.setattr(readers, "load", lambda con, source, *a, **k: loaded.append(source.path) or
                        real_load(con, source, *a, **k))
    result = invoke(db, "ingest", "distances", path)
    assert result.exit_code == 0 and "already ingested" in result.output
    assert loaded == []


def test_a_new_table_loads_while_hashing_and_a_repeated_copy_is_skipped(tmp_path, monkeypatch):
    """Into a table with no file yet, files are staged, checked and inserted while their hash is
    still computed; a second copy of the same content in the command is still skipped, with
    either --on-duplicate mode, and is not recorded twice."""
    import shutil
    import threading

    from stellardb.ingest import pipeline as ingest
    from stellardb.ingest import staging

    _, _, dist, _ = small_sky(n=10, seed=24)
    first = tmp_path / "dist_a.csv"
    dist.to_csv(first, index=False)
    copy = tmp_path / "dist_b.csv"
    shutil.copy(first, copy)
    real_hash, real_insert = ingest.sha256_of, staging.insert_staged
    for mode in ("error", "skip"):
        inserted = threading.Event()

        def late_hash(p, stop=None):
            assert inserted.wait(10)  # the first digest is ready only after its rows went in
            return real_hash(p, stop)

        def insert_then_release(con, spec, source, staged):
            ingest_id = real_insert(con, spec, source, staged)
            inserted.set()
            return ingest_id

        monkeypatch.setattr(ingest, "sha256_of", late_hash)
        monkeypatch.setattr(staging, "insert_staged", insert_then_release)
        dbp = tmp_path / f"new_{mode}.duckdb"
        result = invoke(dbp, "ingest", "distances", first, copy, "--on-duplicate", mode)
        assert result.exit_code == 0, result.output
        assert "earlier in this command" in result.output
        got = query(dbp, "select (select count(*) from distances) as n, (select count(*) from ingests) as files")
        assert (got["n"][0], got["files"][0]) == (10, 1)


def test_new_file_failing_a_check_is_refused_while_an_ingested_one_is_skipped(db, tmp_path):
    """The skip decision rests on the content hash, not on the order of work: in one command an
    already-ingested file that now fails the checks is skipped, a new failing file is refused."""
    _, _, dist, _ = small_sky(n=10, seed=23)
    dist["source_id"] += 3 * 10**7
    old = tmp_path / "dist_gid_old.csv"
    dist.rename(columns={"source_id": "gid"}).to_csv(old, index=False)
    assert invoke(db, "ingest", "distances", old, "--rename", "gid=source_id").exit_code == 0
    before = snapshot(db)
    new = tmp_path / "dist_gid_new.csv"
    dist.assign(source_id=dist["source_id"] + 10**6).rename(columns={"source_id": "gid"}).to_csv(new, index=False)
    line = error_line(invoke(db, "ingest", "distances", old, new))
    assert "dist_gid_new.csv" in line and "source_id" in line
    assert snapshot(db) == before


def test_an_empty_required_value_no_check_covers_is_a_one_line_error(db, tmp_path):
    """A NOT NULL column left empty (SkyMapper mean_epoch) is refused in one line naming the
    file and the column; nothing changes."""
    _, sm, _, _ = small_sky(n=10, seed=26)
    sm["object_id"] += 7 * 10**8
    sm.loc[3, "mean_epoch"] = np.nan
    path = write(sm, tmp_path / "sm_no_epoch.csv")
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "skymapper", path))
    assert "sm_no_epoch.csv" in line and "no mean_epoch" in line
    assert snapshot(db) == before


def test_a_file_that_cannot_be_hashed_is_a_one_line_error(db, tmp_path, monkeypatch):
    """If the file cannot be read for its checksum (removed or unreadable mid-way): one line."""
    from stellardb.ingest import pipeline as ingest

    _, _, dist, _ = small_sky(n=10, seed=27)
    dist["source_id"] += 6 * 10**7
    path = tmp_path / "dist_gone.csv"
    dist.to_csv(path, index=False)

    def gone(p, stop=None):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(ingest, "sha256_of", gone)
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "distances", path))
    assert "dist_gone.csv" in line and "cannot read it to compute its checksum" in line
    assert snapshot(db) == before


def _corrupt_deflate(tmp_path, text: bytes):
    """A gzip file with a bad deflate block: ISA-L raises its own IsalError (not OSError) for it."""
    import gzip
    import io
    import random

    from isal import igzip

    good = gzip.compress(text, compresslevel=1)
    rng = random.Random(1)
    for _ in range(1000):
        data = bytearray(good)
        start = rng.randrange(len(data) // 2, len(data) - 100)  # past the header
        for k in range(start, start + 50):
            data[k] = rng.randrange(256)
        try:
            with igzip.open(io.BytesIO(bytes(data)), "rb") as fh:
                fh.read()
        except OSError:
            continue  # a CRC or length error: the truncated-file case, tested elsewhere
        except Exception:  # noqa: BLE001 - the IsalError this test wants
            path = tmp_path / "bad_block.csv.gz"
            path.write_bytes(bytes(data))
            return path
    raise AssertionError("no corruption gave an invalid deflate block")


def test_corrupt_deflate_block_is_one_line_and_leaves_no_scratch(db, tmp_path, monkeypatch):
    """A damaged deflate block in a gzipped ECSV: the one-line corrupt-file error, no traceback, no
    scratch copy left, database unchanged."""
    import io

    from stellardb.ingest import readers

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(readers, "_scratch_dir", lambda needed: str(scratch))
    gaia, _, _, _ = small_sky(n=3000, seed=5)
    buffer = io.StringIO()
    Table.from_pandas(gaia).write(buffer, format="ascii.ecsv", delimiter=",")
    path = _corrupt_deflate(tmp_path, buffer.getvalue().encode())
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", path))
    assert "bad_block.csv.gz" in line and "corrupt" in line
    assert list(scratch.iterdir()) == []
    assert snapshot(db) == before


def test_interrupted_inflate_leaves_no_scratch(tmp_path, monkeypatch):
    """Ctrl-C while a gzipped file is inflated: the scratch copy is removed."""
    import gzip
    import shutil as _shutil

    from stellardb.ingest import readers

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(readers, "_scratch_dir", lambda needed: str(scratch))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_shutil, "copyfileobj", interrupted)
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"source_id,r_med_geo\n1,2\n"))
    with pytest.raises(KeyboardInterrupt):
        with readers._inflated(readers.detect(path)):
            pass
    assert list(scratch.iterdir()) == []


def test_bad_value_in_a_gzipped_file_names_the_users_file(db, data_path, tmp_path):
    """A parse error inside a gzipped Gaia ECSV names that file, not the scratch copy it was inflated to."""
    import gzip


    text = data_path(GAIA_ECSV).read_text().splitlines()
    body = next(i for i, line in enumerate(text) if not line.startswith("#"))
    header = text[body].split(",")
    row = text[body + 3].split(",")
    row[header.index("ra")] = "north"
    text[body + 3] = ",".join(row)
    path = tmp_path / "gaia_bad.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(text) + "\n").encode()))
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", path))
    assert "gaia_bad.csv.gz" in line and "stellardb-" not in line
    assert snapshot(db) == before
