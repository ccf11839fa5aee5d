"""Helpers shared by test modules (imported; fixtures live in conftest.py): small skies, CLI calls,
snapshots of a database, and independent computations (brute-force crossmatch, splitmix64) to compare with."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

import duckdb
import healpy
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from astropy.coordinates import angular_separation
from click.testing import CliRunner

from stellardb.catalog import astrometry
from stellardb.cli.main import cli


def fetch(db_path, sql: str, params=None) -> list[tuple]:
    """``sql`` on a plain read-only duckdb connection to ``db_path``: the rows as tuples."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()


GAIA_ECSV = "real/gaia_dr3_fixture_5rows.ecsv"


GBS = "real/gbs_v3_lite_subset.fits"


PASTEL = "real/pastel_v1.2_subset.fits"


SWEETCAT = "real/sweetcat_subset.csv"


def invoke(db_path, *args):
    """Run the CLI on ``db_path`` (wide terminal, so rich tables do not wrap)."""
    return CliRunner().invoke(cli, ["--db", str(db_path), *map(str, args)], env={"COLUMNS": "300"})


def query(db_path, sql, params=None):
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, params or {}).df()
    finally:
        con.close()


def snapshot(db_path) -> dict:
    """Row count and content checksums of every table, and the view definitions."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        out = {}
        for (table,) in con.execute("select table_name from duckdb_tables() order by 1").fetchall():
            out[table] = con.execute(
                f'select count(*), sum(hash(t)), sum(hash(t)::hugeint * (rowid + 1)) from "{table}" as t'
            ).fetchone()
        out["views"] = con.execute("select view_name, sql from duckdb_views() where not internal order by 1").fetchall()
        return out
    finally:
        con.close()


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` (e.g. "64k") mounted on ``folder`` (needs root and mount), unmounted
    afterwards; skips the test loudly where it cannot be made."""
    import subprocess

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip()}): disk-full NOT checked")
    try:
        yield folder
    finally:
        # -l: a handle DuckDB keeps must not leave it mounted
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def error_line(result) -> str:
    """The CLI's error: a non-zero exit, no traceback, and exactly one line saying 'Error: ...'."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert lines[-1] == errors[0], "the error should be the last thing printed"
    return errors[0]


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def small_sky(n: int = 30, seed: int = 0):
    """Small Gaia, SkyMapper, distance and label tables of the same stars."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-89, 0, n)
    gaia = gaia_frame(ra, dec, rng.normal(0, 20, n), rng.normal(0, 20, n))
    sm = skymapper_frame(ra, dec, MJD_J2016)
    dist = pd.DataFrame({"source_id": gaia["source_id"], "r_med_geo": rng.uniform(50, 3000, n),
                         "r_lo_geo": 40.0, "r_hi_geo": 4000.0, "flag": "10033"})
    k = min(n, 10)
    labels = pd.DataFrame({"source_id": gaia["source_id"][:k], "teff": rng.uniform(4000, 7000, k),
                           "logg": rng.uniform(1, 5, k), "feh": rng.uniform(-2, 0.4, k), "survey": "GALAH"})
    return gaia, sm, dist, labels


#: MJD of J2000.0 and J2016.0 (Gaia DR3's reference epoch).
SKYMAPPER_BANDS = ("u", "v", "g", "r", "i", "z")
MJD_J2000 = 51544.5


MJD_J2016 = 57388.5


#: a candidate this close to the radius could fall either side by rounding
EDGE_ARCSEC = 1e-6


#: separations closer than this (arcsec) are treated as equal: a tie, broken by id
TIE_ARCSEC = 1e-9


def jyear(mjd):
    """Julian epoch of a Modified Julian Date (our own arithmetic, not the library's)."""
    return 2000.0 + (np.asarray(mjd, dtype=float) - MJD_J2000) / 365.25


def gaia_source_ids(ra, dec, first: int = 1) -> np.ndarray:
    """Gaia-style source_ids: order-12 nested HEALPix index * 2**35 + a running number."""
    pix = healpy.ang2pix(4096, np.asarray(ra, float), np.asarray(dec, float), nest=True, lonlat=True)
    return pix.astype(np.int64) * 2**35 + np.arange(first, first + len(pix), dtype=np.int64)


def gaia_frame(ra, dec, pmra=None, pmdec=None, first: int = 1) -> pd.DataFrame:
    """A Gaia DR3 table (archive column names) at J2016.0; NaN proper motion = NULL."""
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    n = len(ra)
    zeros = np.zeros(n)
    return pd.DataFrame(
        {
            "source_id": gaia_source_ids(ra, dec, first),
            "ref_epoch": np.full(n, 2016.0),
            "ra": ra,
            "dec": dec,
            "parallax": np.full(n, 1.0),
            "pmra": zeros if pmra is None else np.asarray(pmra, dtype=float),
            "pmdec": zeros if pmdec is None else np.asarray(pmdec, dtype=float),
            "phot_g_mean_mag": np.full(n, 15.0),
            "phot_bp_mean_mag": np.full(n, 15.4),
            "phot_rp_mean_mag": np.full(n, 14.5),
        }
    )


def skymapper_frame(ra, dec, mean_epoch, first: int = 100_000_001) -> pd.DataFrame:
    """A SkyMapper master table (SkyMapper's column names); positions at mean_epoch (MJD)."""
    ra = np.asarray(ra, dtype=float)
    n = len(ra)
    frame = pd.DataFrame(
        {
            "object_id": np.arange(first, first + n, dtype=np.int64),
            "raj2000": ra,
            "dej2000": np.asarray(dec, dtype=float),
            "e_raj2000": np.full(n, 0.1),
            "e_dej2000": np.full(n, 0.1),
            "mean_epoch": np.broadcast_to(np.asarray(mean_epoch, dtype=float), (n,)).copy(),
            "flags": np.zeros(n, dtype=np.int64),
            "class_star": np.full(n, 0.9),
        }
    )
    for i, band in enumerate(SKYMAPPER_BANDS):
        frame[f"{band}_psf"] = 15.0 + 0.1 * i
        frame[f"e_{band}_psf"] = 0.01
    frame["ebmv_sfd"] = 0.05
    return frame


def _candidate_pairs(gaia: pd.DataFrame, skymapper: pd.DataFrame, search_arcsec: float | None):
    """Index arrays (gaia row, skymapper row): every pair, or a KD-tree pre-selection that
    provably keeps every pair that can end within the radius (``search_arcsec``)."""
    ng, ns = len(gaia), len(skymapper)
    if search_arcsec is None:
        gi, si = np.meshgrid(np.arange(ng), np.arange(ns), indexing="ij")
        return gi.ravel(), si.ravel()
    from scipy.spatial import cKDTree

    def unit(ra, dec):
        ra, dec = np.radians(ra), np.radians(dec)
        return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])

    tree = cKDTree(unit(gaia["ra"].to_numpy(), gaia["dec"].to_numpy()))
    chord = 2 * np.sin(np.radians(search_arcsec / 3600.0) / 2)
    lists = tree.query_ball_point(unit(skymapper["raj2000"].to_numpy(), skymapper["dej2000"].to_numpy()), chord)
    si = np.repeat(np.arange(ns), [len(x) for x in lists])
    gi = np.fromiter((i for x in lists for i in x), dtype=np.int64, count=len(si))
    return gi, si


def _nearest(pairs: pd.DataFrame, group: str, tiebreak: str) -> pd.DataFrame:
    """Per ``group``: the smallest separation; equal separations go to the smallest ``tiebreak``."""
    best = pairs.groupby(group)["sep_arcsec"].transform("min")
    tied = pairs[pairs["sep_arcsec"] <= best + TIE_ARCSEC]
    return tied.sort_values([group, tiebreak]).drop_duplicates(group, keep="first")


def brute_force_xmatch(gaia: pd.DataFrame, skymapper: pd.DataFrame, radius_arcsec: float = 1.0,
                       kdtree: bool = False) -> tuple[pd.DataFrame, bool]:
    """The Gaia x SkyMapper crossmatch of the issue, all pairs in NumPy.

    Returns (pairs with skymapper_object_id, gaia_source_id, sep_arcsec, n_candidates,
    and whether any candidate lies within EDGE_ARCSEC of the radius (a pair that
    rounding could put on either side).
    """
    search = None
    if kdtree:
        dt_max = np.abs(jyear(skymapper["mean_epoch"]) - 2016.0).max() + 1.0
        pm_max = np.nanmax(np.hypot(gaia["pmra"].fillna(0), gaia["pmdec"].fillna(0))) / 1000.0
        search = radius_arcsec + pm_max * dt_max + 1.0
    gi, si = _candidate_pairs(gaia, skymapper, search)
    dt = jyear(skymapper["mean_epoch"].to_numpy()[si]) - gaia["ref_epoch"].to_numpy()[gi]
    ra, dec = astrometry.propagate(gaia["ra"].to_numpy()[gi], gaia["dec"].to_numpy()[gi],
                                   gaia["pmra"].to_numpy()[gi], gaia["pmdec"].to_numpy()[gi], dt)
    sep = np.degrees(angular_separation(
        np.radians(ra), np.radians(dec),
        np.radians(skymapper["raj2000"].to_numpy()[si]), np.radians(skymapper["dej2000"].to_numpy()[si]),
    )) * 3600.0
    ambiguous = bool(np.any(np.abs(sep - radius_arcsec) < EDGE_ARCSEC))
    keep = sep <= radius_arcsec
    candidates = pd.DataFrame({
        "skymapper_object_id": skymapper["object_id"].to_numpy()[si][keep],
        "gaia_source_id": gaia["source_id"].to_numpy()[gi][keep],
        "sep_arcsec": sep[keep],
    })
    candidates["n_candidates"] = candidates.groupby("skymapper_object_id")["gaia_source_id"].transform("size")
    nearest = _nearest(candidates, "skymapper_object_id", "gaia_source_id")
    final = _nearest(nearest, "gaia_source_id", "skymapper_object_id")
    return final.sort_values("skymapper_object_id").reset_index(drop=True), ambiguous


SKY_STARS = 40_000


SKY_SEED = 7


DATA = Path(__file__).parent / "data"


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


def splitmix64_bucket(source_id: int) -> int:
    """Independent pure-Python splitmix64(source_id) % 100, written from the published algorithm."""
    mask = (1 << 64) - 1
    z = (source_id + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z % 100


class InterruptAfterCommit:
    """A connection whose commit succeeds and is then interrupted (Ctrl-C between two statements)."""

    def __init__(self, con):
        self._con = con

    def commit(self):
        self._con.commit()
        raise KeyboardInterrupt

    def execute(self, sql, *args, **kwargs):
        result = self._con.execute(sql, *args, **kwargs)
        if str(sql).strip().lower() == "commit":
            raise KeyboardInterrupt
        return result

    def __getattr__(self, name):
        return getattr(self._con, name)


def dictionary_encoded(folder: Path) -> dict:
    """Column -> whether any row group of any partition file under ``folder`` is dictionary-encoded."""
    seen = {}
    for file in sorted(folder.rglob("Npix=*.parquet")):
        meta = pq.ParquetFile(file).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                column = meta.row_group(g).column(c)
                used = any("DICTIONARY" in e for e in column.encodings)
                seen[column.path_in_schema] = seen.get(column.path_in_schema, False) or used
    return seen
