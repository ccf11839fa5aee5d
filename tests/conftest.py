"""Shared fixtures: one simulated sky per test session, and a data_path helper."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from stellardb.ingest import pipeline as ingest
from stellardb.simulate import simulate

from .helpers import DATA, SKY_SEED, SKY_STARS, gaia_read_csv, small_sky, write


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


@pytest.fixture(scope="session")
def sky_db_path(sky, tmp_path_factory):
    """A stellardb DuckDB file with the 40k-star simulated sky ingested and crossmatched.

    Tests must not write to it; copy it (``copy_db``) for tests that change the database.
    """
    from stellardb.ingest import pipeline as ingest

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


@pytest.fixture(scope="module")
def base_db(tmp_path_factory):
    """A small database with all four tables filled (copy it before writing)."""
    folder = tmp_path_factory.mktemp("base")
    path = folder / "base.duckdb"
    gaia, sm, dist, labels = small_sky()
    for table, frame in (("gaia", gaia), ("skymapper", sm), ("distances", dist), ("sos", labels)):
        ingest.run(path, table, [write(frame, folder / f"{table}.csv")])
    return path


@pytest.fixture
def db(base_db, tmp_path):
    """A private copy of the small database."""
    path = tmp_path / "db.duckdb"
    shutil.copy(base_db, path)
    return path
