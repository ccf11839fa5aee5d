"""Shared fixtures: one simulated sky per test session, and a data_path helper."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from stellardb.simulate import simulate

DATA = Path(__file__).parent / "data"
SKY_STARS = 40_000
SKY_SEED = 7


@pytest.fixture(scope="session")
def data_path():
    """Path of a committed test file under tests/data."""
    return lambda name: DATA / name


@pytest.fixture(scope="session")
def sky(tmp_path_factory):
    """A 40k-star simulated sky (CSV) with its truth table."""
    out = tmp_path_factory.mktemp("sky") / "sky"
    summary = simulate(out, stars=SKY_STARS, seed=SKY_SEED, truth=True)
    return summary


@pytest.fixture(scope="session")
def sky_db(sky):
    """DuckDB connection with views gaia, skymapper, distances, sos, truth over the simulated files."""
    con = duckdb.connect()
    con.execute(f"create view gaia as select * from {gaia_read_csv(sky.files['gaia'])}")
    for key in ("skymapper", "distances", "sos"):
        con.execute(f"create view {key} as select * from read_csv('{sky.files[key]}', header = true)")
    con.execute(f"create view truth as select * from read_parquet('{sky.files['truth']}')")
    return con


def ecsv_header_lines(path) -> int:
    """Number of '#' header lines at the top of a (gzipped) ECSV file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    n = 0
    with opener(path, "rt") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            n += 1
    return n


def gaia_read_csv(path) -> str:
    """DuckDB read_csv call for a Gaia archive bulk file (ECSV header, 'null' for missing)."""
    return (
        f"read_csv('{path}', skip = {ecsv_header_lines(path)}, header = true, nullstr = 'null', "
        "delim = ',', quote = '\"', escape = '\"')"
    )


def read_truth(sky):
    return pq.read_table(sky.files["truth"]).to_pandas()


@pytest.fixture(scope="session")
def sky_db_path(sky, tmp_path_factory):
    """A stellardb DuckDB file with the 40k-star simulated sky ingested and crossmatched.

    Tests must not write to it; copy it (``copy_db``) for tests that change the database.
    """
    from stellardb import ingest

    path = tmp_path_factory.mktemp("skydb") / "sky.duckdb"
    for table in ("gaia", "skymapper", "distances", "sos"):
        ingest.run(path, table, [sky.files[table]])
    return path


@pytest.fixture
def copy_db(sky_db_path, tmp_path):
    """A private copy of the ingested simulated sky, free to modify."""
    import shutil

    dest = tmp_path / "copy.duckdb"
    shutil.copy(sky_db_path, dest)
    return dest


@pytest.fixture(scope="session")
def stilts():
    """The STILTS command (Debian package `stilts`), the reference reader of VOTable/FITS/ECSV.

    CI installs it (.ci/run); elsewhere a missing STILTS skips the test with a loud
    reason, and under CI (CI=true) it fails instead, so a broken install cannot pass quietly."""
    import os
    import shutil

    path = shutil.which("stilts")
    if path is None:
        reason = "STILTS is not installed (apt-get install stilts): the exports are NOT checked against a real client"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path
