"""A release of the 40k-star simulated sky, made once per module (tests must not change it)."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from stellardb.release.writer import write_release

#: small partitions, so the 40k stars are cut at several HEALPix orders
MAX_ROWS = 2000
MODEL = "m1"


def add_predictions(db_path, model: str = MODEL, seed_offset: float = 0.0) -> None:
    """Predictions for the stars with G <= 18 (deterministic functions of the star: no training needed)."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute(
            "insert into predictions (source_id, teff, teff_err, logg, logg_err, feh, feh_err, model, scored_at, "
            "teff_outside_training, logg_outside_training, feh_outside_training, inputs_outside_training) "
            "select source_id, 4000 + 10 * ra + $o, 60, 1 + abs(dec) / 30, 0.1, -2 + parallax / 10, 0.08, $m, "
            "timestamp '2026-12-01 12:00:00' + to_seconds($o::bigint), ra > 300, false, false, (ra > 350)::smallint "
            "from gaia where phot_g_mean_mag <= 18", {"m": model, "o": seed_offset})
    finally:
        con.close()


@pytest.fixture(scope="module")
def scored_db(sky_db_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("release_db") / "sky.duckdb"
    shutil.copy(sky_db_path, path)
    add_predictions(path)
    return path


@pytest.fixture(scope="module")
def release(scored_db):
    """(release folder, database path, write result)."""
    result = write_release(scored_db, "r1", max_rows=MAX_ROWS)
    return result.path, scored_db, result
