"""Gaia x SkyMapper and label x Gaia crossmatches against brute-force computations (issue 3).

Every expected pair here comes from an all-pairs NumPy computation: each Gaia source
is moved along its proper motion (stellardb.catalog.astrometry.propagate) to the epoch of
each SkyMapper row (mean_epoch, MJD), the separation is taken with astropy's
``angular_separation``, and the match rules of the issue are applied in pandas.
The hand-built skies sit where HEALPix joins go wrong: the south pole, RA 0/360,
pixel corners and edges at orders 10 and 12, close pairs, fast movers and sources
without a proper motion.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import healpy
import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, angular_separation
from astropy.table import Table
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import stellardb
from stellardb.catalog import astrometry
from stellardb.ingest import pipeline as ingest
from stellardb.cli.main import cli

from ..helpers import MJD_J2016, _nearest, brute_force_xmatch, ecsv_header_lines, gaia_frame, jyear, skymapper_frame




# ---------------------------------------------------------------- building skies


def offset(ra, dec, pa_deg, sep_arcsec) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``sep_arcsec`` away along position angle ``pa_deg`` (astropy)."""
    c = SkyCoord(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg)
    moved = c.directional_offset_by(np.asarray(pa_deg, float) * u.deg, np.asarray(sep_arcsec, float) * u.arcsec)
    return np.asarray(moved.ra.deg) % 360.0, np.asarray(moved.dec.deg)


def counterparts(gaia: pd.DataFrame, mean_epoch, pa_deg, sep_arcsec) -> tuple[np.ndarray, np.ndarray]:
    """Where SkyMapper would see each Gaia source at ``mean_epoch``, displaced by (pa, sep)."""
    dt = jyear(mean_epoch) - gaia["ref_epoch"].to_numpy()
    ra, dec = astrometry.propagate(gaia["ra"].to_numpy(), gaia["dec"].to_numpy(),
                                   gaia["pmra"].to_numpy(), gaia["pmdec"].to_numpy(), dt)
    return offset(ra, dec, pa_deg, sep_arcsec)


def write_csv(frame: pd.DataFrame, path: Path, rng: np.random.Generator | None = None) -> Path:
    """Write ``frame`` as CSV (rows shuffled, so that file order never decides a tie)."""
    if rng is not None:
        frame = frame.iloc[rng.permutation(len(frame))]
    frame.to_csv(path, index=False)
    return path


def ingest_sky(db_path: Path, gaia: pd.DataFrame, skymapper: pd.DataFrame, seed: int = 0) -> None:
    """Ingest the two tables (which refreshes table xmatch at the stored radius)."""
    rng = np.random.default_rng(seed)
    folder = Path(db_path).parent
    ingest.run(db_path, "gaia", [write_csv(gaia, folder / f"{Path(db_path).stem}_gaia.csv", rng)])
    ingest.run(db_path, "skymapper", [write_csv(skymapper, folder / f"{Path(db_path).stem}_sm.csv", rng)])


def read_xmatch(db_path) -> pd.DataFrame:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(
            "select skymapper_object_id, gaia_source_id, sep_arcsec, n_candidates from xmatch order by 1"
        ).df()
    finally:
        con.close()


# ---------------------------------------------------------------- the brute force


def assert_same_pairs(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same (SkyMapper, Gaia) pairs, separations to 1 mas, same candidate counts."""
    got_pairs = sorted(zip(got["skymapper_object_id"].tolist(), got["gaia_source_id"].tolist()))
    want_pairs = sorted(zip(want["skymapper_object_id"].tolist(), want["gaia_source_id"].tolist()))
    missing = sorted(set(want_pairs) - set(got_pairs))
    extra = sorted(set(got_pairs) - set(want_pairs))
    assert not missing and not extra, f"pairs lost: {missing[:10]}; pairs not expected: {extra[:10]}"
    g = got.set_index("skymapper_object_id").sort_index()
    w = want.set_index("skymapper_object_id").sort_index()
    np.testing.assert_allclose(g["sep_arcsec"].to_numpy(), w["sep_arcsec"].to_numpy(), rtol=0, atol=1e-3)
    np.testing.assert_array_equal(g["n_candidates"].to_numpy(), w["n_candidates"].to_numpy())


# ---------------------------------------------------------------- hand-built skies


def sky_south_pole(rng):
    """40 Gaia sources within 36 arcsec of the south pole (one exactly on it, one moving
    across it), their SkyMapper counterparts, six more pairs crowded within 0.5 arcsec of
    the pole on opposite sides of it, and SkyMapper sources on the pole."""
    n = 40
    ra = rng.uniform(0, 360, n)
    dec = -90.0 + rng.uniform(0, 0.01, n)
    ra[:4], dec[:4] = [0.0, 200.0, 17.0, 359.9], [-90.0, -89.99995, -89.9999, -89.99]
    pmra, pmdec = rng.normal(0, 150, n), rng.normal(0, 150, n)
    pmra[5:9] = np.nan
    pmdec[5:9] = np.nan
    pmdec[9] = -3000.0  # moves across the pole between 2014 and 2019
    dec[9] = -89.9997
    gaia = gaia_frame(ra, dec, pmra, pmdec)
    epochs = rng.uniform(56650, 58700, n)
    sra, sdec = counterparts(gaia, epochs, rng.uniform(0, 360, n), rng.uniform(0, 1.3, n))
    # pairs straddling the pole itself: Gaia at (a, -90 + d), SkyMapper at (a + 180, -90 + d)
    k = 6
    a = rng.uniform(0, 180, k)
    d = rng.uniform(0.00002, 0.00013, k)
    gaia2 = gaia_frame(a, -90 + d, np.zeros(k), np.zeros(k), first=n + 1)
    sm_ra = np.concatenate([sra, a + 180.0, [0.0, 90.0]])
    sm_dec = np.concatenate([sdec, -90 + d, [-90.0, -89.99998]])
    sm_epoch = np.concatenate([epochs, rng.uniform(56650, 58700, k), [MJD_J2016, 57000.0]])
    return pd.concat([gaia, gaia2], ignore_index=True), skymapper_frame(sm_ra, sm_dec, sm_epoch)


def sky_pole_straddle(rng):
    """One pair on opposite sides of the south pole (RAs 150-210 deg apart), and a ring of
    pairs 3-30 arcsec from the pole."""
    a = rng.uniform(0, 360)
    d_gaia, d_sm = rng.uniform(0.05, 0.45, 2) / 3600.0
    m = 20
    ring_ra = rng.uniform(0, 360, m)
    ring_dec = -90.0 + rng.uniform(3, 30, m) / 3600.0
    gaia = gaia_frame(np.concatenate([[a], ring_ra]), np.concatenate([[-90.0 + d_gaia], ring_dec]),
                      np.concatenate([[0.0], rng.normal(0, 100, m)]), np.concatenate([[0.0], rng.normal(0, 100, m)]))
    epochs = rng.uniform(56650, 58700, m + 1)
    sra, sdec = counterparts(gaia, epochs, rng.uniform(0, 360, m + 1), rng.uniform(0, 0.9, m + 1))
    sra[0], sdec[0] = (a + 180.0 + rng.uniform(-30, 30)) % 360.0, -90.0 + d_sm
    return gaia, skymapper_frame(sra, sdec, epochs)

def sky_ra_wrap(rng):
    """Pairs straddling RA 0/360 from the equator to the pole, a Gaia source at RA exactly 0."""
    # six pairs per declination, 11 arcsec apart so that they do not compete
    decs = (np.array([1.5, -0.2, -30.0, -60.0, -80.0, -89.0, -89.9])[:, None] - np.arange(6) * 0.003).ravel()
    n = len(decs)
    east = rng.random(n) < 0.5
    pa_gaia = np.where(east, 90.0, 270.0) + rng.uniform(-40, 40, n)
    g_ra, g_dec = offset(np.zeros(n), decs, pa_gaia, rng.uniform(0.02, 0.45, n))
    g_ra[0], g_dec[0] = 0.0, -45.0
    gaia = gaia_frame(g_ra, g_dec, rng.normal(0, 20, n), rng.normal(0, 20, n))
    s_ra, s_dec = offset(np.zeros(n), decs, pa_gaia + 180.0 + rng.uniform(-40, 40, n), rng.uniform(0.02, 0.45, n))
    s_ra[0], s_dec[0] = offset(0.0, -45.0, 270.0, 0.4)
    return gaia, skymapper_frame(s_ra, s_dec, rng.uniform(56650, 58700, n))


def _healpix_points(nside: int, n_pixels: int, rng) -> np.ndarray:
    """Corners and edge midpoints (unit vectors, shape (3, k)) of random southern pixels,
    plus the vertices of the 12 base pixels (where only three pixels meet)."""
    ra, dec = rng.uniform(0, 360, n_pixels), rng.uniform(-89, 2, n_pixels)
    pix = np.unique(healpy.ang2pix(nside, ra, dec, nest=True, lonlat=True))
    corners_and_midpoints = healpy.boundaries(nside, pix, step=2, nest=True)  # (k, 3, 8)
    points = np.concatenate(list(corners_and_midpoints), axis=1)
    base = np.concatenate(list(healpy.boundaries(1, np.arange(12), step=1, nest=True)), axis=1)
    points = np.concatenate([points, base], axis=1)
    return np.unique(np.round(points, 12), axis=1)


def sky_healpix_corners(order: int):
    def build(rng):
        """Pairs straddling corners and edges of order-``order`` HEALPix pixels."""
        points = _healpix_points(2**order, 25, rng)
        lon, lat = astrometry.unit_to_lonlat(points)
        keep = lat < 5  # SkyMapper's sky; the base-pixel vertices of the north stay out
        lon, lat = lon[keep], lat[keep]
        n = len(lon)
        pa = rng.uniform(0, 360, n)
        g_ra, g_dec = offset(lon, lat, pa, rng.uniform(0.05, 0.45, n))
        gaia = gaia_frame(g_ra, g_dec, rng.normal(0, 20, n), rng.normal(0, 20, n))
        s_ra, s_dec = offset(lon, lat, pa + 180 + rng.uniform(-60, 60, n), rng.uniform(0.05, 0.45, n))
        return gaia, skymapper_frame(s_ra, s_dec, rng.uniform(56650, 58700, n))

    return build


#: zone height of the crossmatch's zone cells (sql/10_macros/zone_*.sql), deg
ZONE_DEG = 30.0 / 3600.0


def sky_zone_borders(rng):
    """Pairs straddling the declination-zone and RA-bucket borders of the crossmatch's
    zone cells (30 arcsec zones from dec -90), from the polar zones to the equator."""
    g_ra, g_dec, s_ra, s_dec = [], [], [], []
    # zone borders: dec = -90 + k * 30 arcsec
    for k in (1, 2, 3, 5, 10, 100, 1000, 5400, 10799, 10800):
        dec_b = -90.0 + k * ZONE_DEG
        ra = rng.uniform(0, 360, 3) if k > 3 else rng.uniform(0, 360) + np.array([0.0, 120.0, 240.0])
        north = rng.random(3) < 0.5
        d_g = rng.uniform(0.02, 0.85, 3)
        d_g, d_s = d_g / 3600.0, rng.uniform(0.02, 0.92 - d_g) / 3600.0
        g_ra.append(ra), g_dec.append(dec_b + np.where(north, d_g, -d_g))
        s_ra.append(ra + rng.normal(0, 0.1 / 3600, 3)), s_dec.append(dec_b - np.where(north, d_s, -d_s))
    # RA bucket borders: zone z has n buckets, each at least one zone height wide at its highest |dec|
    for z in (1, 2, 3, 4, 10, 1000, 10000, 10799):
        edge = max(abs(z * ZONE_DEG - 90.0), abs((z + 1) * ZONE_DEG - 90.0))
        n = max(1, int(np.floor(360.0 * np.cos(np.radians(min(90.0, edge))) / ZONE_DEG)))
        j = rng.choice(n, size=min(n, 3), replace=False)
        dec = -90.0 + (z + rng.uniform(0.2, 0.8, len(j))) * ZONE_DEG
        east = rng.random(len(j)) < 0.5
        ra_b = j * 360.0 / n
        sep_g = rng.uniform(0.02, 0.85, len(j))  # up to 0.85 arcsec from the border: the RA reach must be whole
        r1, d1 = offset(ra_b, dec, np.where(east, 90.0, 270.0), sep_g)
        r2, d2 = offset(ra_b, dec, np.where(east, 270.0, 90.0), rng.uniform(0.02, 0.92 - sep_g))
        g_ra.append(r1), g_dec.append(d1), s_ra.append(r2), s_dec.append(d2)
    g_ra, g_dec = np.concatenate(g_ra) % 360.0, np.concatenate(g_dec)
    s_ra, s_dec = np.concatenate(s_ra) % 360.0, np.concatenate(s_dec)
    n = len(g_ra)
    gaia = gaia_frame(g_ra, g_dec, rng.normal(0, 10, n), rng.normal(0, 10, n))
    return gaia, skymapper_frame(s_ra, s_dec, rng.uniform(56650, 58700, n))

def sky_close_pairs(rng):
    """Two or three Gaia sources within 1 arcsec of one SkyMapper source, a Gaia source
    wanted by two SkyMapper sources, and exact ties (identical positions)."""
    centres_ra, centres_dec = rng.uniform(0, 360, 24), rng.uniform(-85, 0, 24)
    g_ra, g_dec, s_ra, s_dec = [], [], [], []
    for i, (ra, dec) in enumerate(zip(centres_ra, centres_dec)):
        kind = i % 4
        s_ra.append([ra]), s_dec.append([dec])
        if kind == 0:  # two candidates, the nearer one wins
            r, d = offset([ra, ra], [dec, dec], rng.uniform(0, 360, 2), [rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.95)])
        elif kind == 1:  # three candidates
            r, d = offset([ra] * 3, [dec] * 3, rng.uniform(0, 360, 3), rng.uniform(0.1, 0.95, 3))
        elif kind == 2:  # one Gaia source, two SkyMapper sources that both want it
            r, d = offset([ra], [dec], [0.0], [0.2])
            r2, d2 = offset([ra], [dec], [180.0], [rng.uniform(0.3, 0.6)])
            s_ra.append(r2), s_dec.append(d2)
        else:  # two Gaia sources at the same place: a tie broken by the smaller source_id
            r, d = offset([ra], [dec], [rng.uniform(0, 360)], [0.3])
            r, d = np.repeat(r, 2), np.repeat(d, 2)
        g_ra.append(r), g_dec.append(d)
    # two SkyMapper sources at the same place and epoch: a tie broken by the smaller object_id
    s_ra.append([42.0, 42.0]), s_dec.append([-42.0, -42.0])
    r, d = offset([42.0], [-42.0], [10.0], [0.5])
    g_ra.append(r), g_dec.append(d)
    g_ra, g_dec = np.concatenate(g_ra), np.concatenate(g_dec)
    s_ra, s_dec = np.concatenate(s_ra), np.concatenate(s_dec)
    return gaia_frame(g_ra, g_dec), skymapper_frame(s_ra, s_dec, MJD_J2016 - 700.0)


def sky_high_proper_motion(rng):
    """Gaia sources moving 5 arcsec/yr (one across the pole), seen by SkyMapper 1.5-3 yr
    from J2016: 7-15 arcsec from their J2016 positions, so only propagation pairs them."""
    n = 20
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-88, 0, n)
    ra[0], dec[0] = 30.0, -89.9995
    pa = np.radians(rng.uniform(0, 360, n))
    pmra, pmdec = 5000.0 * np.sin(pa), 5000.0 * np.cos(pa)
    pmra[0], pmdec[0] = 0.0, -5000.0
    gaia = gaia_frame(ra, dec, pmra, pmdec)
    dt = rng.uniform(1.5, 3.0, n) * np.where(rng.random(n) < 0.5, -1, 1)
    epochs = MJD_J2016 + dt * 365.25
    s_ra, s_dec = counterparts(gaia, epochs, rng.uniform(0, 360, n), rng.uniform(0, 0.5, n))
    return gaia, skymapper_frame(s_ra, s_dec, epochs)


def sky_null_proper_motion(rng):
    """Gaia sources with NULL pmra and/or pmdec (two-parameter solutions) stay put; a fast
    neighbour that leaves its J2016 place does not take their SkyMapper partners."""
    n = 18
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-85, 0, n)
    pmra, pmdec = np.full(n, np.nan), np.full(n, np.nan)
    pmra[12:15] = 30.0  # pmdec alone missing
    pmdec[15:18] = -30.0  # pmra alone missing
    gaia = gaia_frame(ra, dec, pmra, pmdec)
    epochs = MJD_J2016 + rng.uniform(-2, 2.5, n) * 365.25
    s_ra, s_dec = offset(ra, dec, rng.uniform(0, 360, n), rng.uniform(0.05, 0.9, n))
    # a fast mover at the same J2016 place as the first three: gone by the SkyMapper epoch
    fast = gaia_frame(ra[:3], dec[:3], [2000.0] * 3, [0.0] * 3, first=n + 1)
    return pd.concat([gaia, fast], ignore_index=True), skymapper_frame(s_ra, s_dec, epochs)


def sky_footprint_edge(rng):
    """SkyMapper rows only in a declination band; Gaia all over the sky, with fast movers that
    start outside the band (J2016) and move into it by the SkyMapper epoch: the crossmatch
    skips Gaia sources that cannot reach the band, but never one that can."""
    n = 30
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-10.0, -5.0, n)
    # the last 10 sit just outside the band at J2016 and move 5 arcsec/yr towards it
    dec[20:25] = -5.0 + rng.uniform(0.0008, 0.002, 5)
    dec[25:30] = -10.0 - rng.uniform(0.0008, 0.002, 5)
    pmdec = np.zeros(n)
    pmdec[20:25], pmdec[25:30] = -5000.0, 5000.0
    gaia = gaia_frame(ra, dec, np.zeros(n), pmdec)
    epochs = MJD_J2016 + rng.uniform(2.5, 3.0, n) * 365.25
    s_ra, s_dec = counterparts(gaia, epochs, rng.uniform(0, 360, n), rng.uniform(0, 0.5, n))
    assert (s_dec >= -10.0).all() and (s_dec <= -5.0).all()
    # Gaia sources far from the band (north and south) with no partner
    far = gaia_frame(rng.uniform(0, 360, 20), np.r_[rng.uniform(10, 80, 10), rng.uniform(-80, -20, 10)],
                     first=n + 1)
    return pd.concat([gaia, far], ignore_index=True), skymapper_frame(s_ra, s_dec, epochs)


SKIES = {
    "footprint_edge": sky_footprint_edge,
    "south_pole": sky_south_pole,
    "south_pole_straddle": sky_pole_straddle,
    "ra_0_360": sky_ra_wrap,
    "healpix_order10_corners": sky_healpix_corners(10),
    "healpix_order12_corners": sky_healpix_corners(12),
    "zone_borders": sky_zone_borders,
    "close_pairs": sky_close_pairs,
    "high_proper_motion": sky_high_proper_motion,
    "null_proper_motion": sky_null_proper_motion,
}


@pytest.mark.parametrize("name", list(SKIES))
def test_xmatch_equals_brute_force(name, tmp_path):
    """Table xmatch equals the all-pairs NumPy crossmatch: same pairs, separations to 1 mas, candidate counts."""
    gaia, skymapper = sky(name)
    want, ambiguous = brute_force_xmatch(gaia, skymapper, 1.0)
    assert not ambiguous, "test sky has a candidate on the radius; change the seed"
    assert len(want) >= 0.4 * len(skymapper), "test sky should produce many pairs"
    db_path = tmp_path / "x.duckdb"
    ingest_sky(db_path, gaia, skymapper)
    assert_same_pairs(read_xmatch(db_path), want)


def sky(name: str):
    """The hand-built sky ``name`` with its own fixed seed."""
    return SKIES[name](np.random.default_rng(sum(map(ord, name))))


def matched_positions(name: str) -> pd.DataFrame:
    """Brute-force pairs of sky ``name`` with both positions."""
    gaia, sm = sky(name)
    want, _ = brute_force_xmatch(gaia, sm)
    return want.merge(gaia, left_on="gaia_source_id", right_on="source_id").merge(
        sm, left_on="skymapper_object_id", right_on="object_id")


def test_pole_skies_pair_across_the_pole():
    """The pole test skies pair sources on opposite sides of the pole and within 1 arcsec of it."""
    both = matched_positions("south_pole_straddle")
    dra = np.abs((both["ra"] - both["raj2000"] + 180) % 360 - 180)
    assert ((dra > 120) & (both["dec"] > -90 + 0.5 / 3600)).sum() == 0  # only the pole pair is far in RA
    assert ((dra > 120) & (both["dec"] < -90 + 0.5 / 3600)).sum() == 1
    crowded = matched_positions("south_pole")
    assert (crowded["dec"] < -90 + 1.0 / 3600).sum() >= 3


def test_ra_wrap_sky_pairs_straddle_ra_0():
    """Most pairs of the RA 0/360 test sky have one member just below 360 deg and the other just above 0."""
    both = matched_positions("ra_0_360")
    assert (np.abs(both["ra"] - both["raj2000"]) > 180).sum() >= 20


def test_corner_skies_pairs_straddle_pixel_corners():
    """Pairs of the corner skies sit in different pixels of their order, several touching only at a corner."""
    both = matched_positions("healpix_order10_corners")
    pix_g = healpy.ang2pix(1024, both["ra"], both["dec"], nest=True, lonlat=True)
    pix_s = healpy.ang2pix(1024, both["raj2000"], both["dej2000"], nest=True, lonlat=True)
    assert (pix_g != pix_s).mean() > 0.6
    # pixels that only touch at a corner: the W, N, E, S neighbours of a nested pixel
    corner_only = sum(
        b in healpy.get_all_neighbours(1024, a, nest=True)[[1, 3, 5, 7]] for a, b in zip(pix_g, pix_s) if a != b
    )
    assert corner_only >= 5
    both = matched_positions("healpix_order12_corners")
    pix_g = healpy.ang2pix(4096, both["ra"], both["dec"], nest=True, lonlat=True)
    pix_s = healpy.ang2pix(4096, both["raj2000"], both["dej2000"], nest=True, lonlat=True)
    assert (pix_g != pix_s).mean() > 0.6


def test_zone_sky_pairs_straddle_zone_cells():
    """Most pairs of the zone-border sky sit in different zone cells (cells as sql/10_macros/zone_*.sql computes them)."""
    both = matched_positions("zone_borders")
    con = stellardb.connect(":memory:")
    try:
        con.register("pairs", both[["ra", "dec", "raj2000", "dej2000"]])
        differ = con.execute(
            "select avg((zone_cell_of(ra, dec) <> zone_cell_of(raj2000, dej2000))::int) from pairs"
        ).fetchone()[0]
    finally:
        con.close()
    assert len(both) >= 40
    assert differ > 0.6

def test_close_pairs_choose_nearest_and_count_candidates(tmp_path):
    """Two or three Gaia candidates: the nearest wins, n_candidates counts them, exact ties go to the smaller id."""
    gaia, sm = sky_close_pairs(np.random.default_rng(5))
    db_path = tmp_path / "c.duckdb"
    ingest_sky(db_path, gaia, sm, seed=3)
    got = read_xmatch(db_path)
    assert set(got["n_candidates"]) >= {1, 2, 3}
    # each SkyMapper centre row of kind 0 (two candidates): the nearer Gaia source, by our own separations
    centres = sm.iloc[[0]]
    g2 = gaia.iloc[:2]
    seps = SkyCoord(g2["ra"].to_numpy() * u.deg, g2["dec"].to_numpy() * u.deg).separation(
        SkyCoord(centres["raj2000"].to_numpy() * u.deg, centres["dej2000"].to_numpy() * u.deg)).arcsec
    row = got.set_index("skymapper_object_id").loc[centres["object_id"].iloc[0]]
    assert row["gaia_source_id"] == g2["source_id"].iloc[int(np.argmin(seps))]
    assert row["n_candidates"] == 2
    assert row["sep_arcsec"] == pytest.approx(seps.min(), abs=1e-3)
    # identical Gaia positions: the smaller source_id; identical SkyMapper rows: the smaller object_id
    twins = gaia[gaia.duplicated(["ra", "dec"], keep=False)]
    for _, pair in twins.groupby(["ra", "dec"]):
        assert pair["source_id"].min() in set(got["gaia_source_id"])
        assert pair["source_id"].max() not in set(got["gaia_source_id"])
    same_place = sm[(sm["raj2000"] == 42.0) & (sm["dej2000"] == -42.0)]["object_id"]
    assert same_place.min() in set(got["skymapper_object_id"])
    assert same_place.max() not in set(got["skymapper_object_id"])
    # a Gaia source wanted by two SkyMapper sources is paired once
    assert got["gaia_source_id"].is_unique


def test_high_proper_motion_needs_propagation(tmp_path):
    """Fast movers are 7-15 arcsec from their SkyMapper partner at J2016 yet all pair up once propagated."""
    gaia, sm = sky_high_proper_motion(np.random.default_rng(7))
    naive = SkyCoord(gaia["ra"].to_numpy() * u.deg, gaia["dec"].to_numpy() * u.deg).separation(
        SkyCoord(sm["raj2000"].to_numpy() * u.deg, sm["dej2000"].to_numpy() * u.deg)).arcsec
    assert naive.min() > 5.0
    db_path = tmp_path / "pm.duckdb"
    ingest_sky(db_path, gaia, sm)
    got = read_xmatch(db_path)
    assert sorted(zip(got["skymapper_object_id"], got["gaia_source_id"])) == sorted(
        zip(sm["object_id"], gaia["source_id"]))
    assert got["sep_arcsec"].max() <= 0.5 + 1e-3


def test_xmatch_radius_option(tmp_path):
    """`stellardb xmatch --radius-arcsec 2` changes the pairs exactly as the brute force says, and keeps the radius."""
    rng = np.random.default_rng(11)
    n = 40
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-85, 0, n)
    gaia = gaia_frame(ra, dec, rng.normal(0, 40, n), rng.normal(0, 40, n))
    epochs = rng.uniform(56650, 58700, n)
    s_ra, s_dec = counterparts(gaia, epochs, rng.uniform(0, 360, n), rng.uniform(0.05, 2.4, n))
    sm = skymapper_frame(s_ra, s_dec, epochs)
    db_path = tmp_path / "r.duckdb"
    ingest_sky(db_path, gaia, sm)
    want_1, amb1 = brute_force_xmatch(gaia, sm, 1.0)
    want_2, amb2 = brute_force_xmatch(gaia, sm, 2.0)
    assert not (amb1 or amb2)
    assert len(want_2) > len(want_1) + 5
    assert_same_pairs(read_xmatch(db_path), want_1)

    result = CliRunner().invoke(cli, ["--db", str(db_path), "xmatch", "--radius-arcsec", "2"])
    assert result.exit_code == 0, result.output
    assert f"{len(want_2):,} Gaia-skymapper pairs within 2 arcsec" in result.output
    assert_same_pairs(read_xmatch(db_path), want_2)

    # the radius is stored: a later SkyMapper ingest refreshes xmatch at 2 arcsec
    more_ra, more_dec = counterparts(gaia.iloc[:5], epochs[:5], rng.uniform(0, 360, 5), [1.5] * 5)
    more = skymapper_frame(more_ra, more_dec, epochs[:5], first=200_000_001)
    ingest.run(db_path, "skymapper", [write_csv(more, tmp_path / "more.csv")])
    want_3, _ = brute_force_xmatch(gaia, pd.concat([sm, more], ignore_index=True), 2.0)
    assert_same_pairs(read_xmatch(db_path), want_3)


def test_simulated_sky_xmatch_equals_brute_force(sky, sky_db_path):
    """On the 40k-star simulated sky, table xmatch equals the exact computation (KD-tree pre-selection, then all rules)."""
    path = sky.files["gaia"]
    gaia = pd.read_csv(path, skiprows=ecsv_header_lines(path), na_values=["null"],
                       usecols=["source_id", "ref_epoch", "ra", "dec", "pmra", "pmdec"])
    sm = pd.read_csv(sky.files["skymapper"], usecols=["object_id", "raj2000", "dej2000", "mean_epoch"])
    want, ambiguous = brute_force_xmatch(gaia, sm, 1.0, kdtree=True)
    assert not ambiguous
    got = read_xmatch(sky_db_path)
    assert len(got) > 0.9 * len(sm)
    assert_same_pairs(got, want)


# ---------------------------------------------------------------- property test


@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    ra0=st.floats(0, 360, exclude_max=True),
    dec0=st.floats(-90, 90),
    spread_arcsec=st.floats(0.5, 20),
    n_gaia=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
@example(ra0=0.0, dec0=-90.0, spread_arcsec=3.0, n_gaia=10, seed=1)
@example(ra0=359.9999, dec0=-41.8103149, spread_arcsec=2.0, n_gaia=10, seed=2)
def test_xmatch_property(ra0, dec0, spread_arcsec, n_gaia, seed):
    """Random skies anywhere: every sep_arcsec <= radius and the pairs equal the brute force."""
    rng = np.random.default_rng(seed)
    g_ra, g_dec = offset(np.full(n_gaia, ra0), np.full(n_gaia, dec0), rng.uniform(0, 360, n_gaia),
                         spread_arcsec * np.sqrt(rng.random(n_gaia)))
    pm = rng.normal(0, 300, (2, n_gaia))
    pm[:, rng.random(n_gaia) < 0.2] = np.nan
    gaia = gaia_frame(g_ra, g_dec, pm[0], pm[1])
    n_near = rng.integers(0, n_gaia + 1)
    epochs = rng.uniform(56650, 58700, n_gaia + 4)
    near_ra, near_dec = counterparts(gaia.iloc[:n_near], epochs[:n_near], rng.uniform(0, 360, n_near),
                                     rng.uniform(0, 1.5, n_near))
    far_ra, far_dec = offset(np.full(n_gaia + 4 - n_near, ra0), np.full(n_gaia + 4 - n_near, dec0),
                             rng.uniform(0, 360, n_gaia + 4 - n_near),
                             spread_arcsec * np.sqrt(rng.random(n_gaia + 4 - n_near)))
    sm = skymapper_frame(np.concatenate([near_ra, far_ra]), np.concatenate([near_dec, far_dec]), epochs)
    want, ambiguous = brute_force_xmatch(gaia, sm, 1.0)
    assume(not ambiguous)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "h.duckdb"
        ingest_sky(db_path, gaia, sm, seed=seed)
        got = read_xmatch(db_path)
    assert (got["sep_arcsec"] <= 1.0).all()
    assert_same_pairs(got, want)


# ---------------------------------------------------------------- labels by position


def brute_force_label_match(gaia: pd.DataFrame, labels: pd.DataFrame, epoch_yr: float, survey: str,
                            radius_arcsec: float = 1.0) -> pd.DataFrame:
    """Position-only labels x Gaia: Gaia moved to the label epoch, nearest within the radius,
    each Gaia source keeps its nearest label row."""
    gi, li = np.meshgrid(np.arange(len(gaia)), np.arange(len(labels)), indexing="ij")
    gi, li = gi.ravel(), li.ravel()
    dt = epoch_yr - gaia["ref_epoch"].to_numpy()[gi]
    ra, dec = astrometry.propagate(gaia["ra"].to_numpy()[gi], gaia["dec"].to_numpy()[gi],
                                   gaia["pmra"].to_numpy()[gi], gaia["pmdec"].to_numpy()[gi], dt)
    lra, ldec = labels["RA"].to_numpy()[li], labels["DEC"].to_numpy()[li]
    sep = np.degrees(angular_separation(np.radians(ra), np.radians(dec), np.radians(lra), np.radians(ldec))) * 3600
    keep = sep <= radius_arcsec
    cand = pd.DataFrame({"label": li[keep], "gaia_source_id": gaia["source_id"].to_numpy()[gi][keep],
                         "sep_arcsec": sep[keep]})
    cand["n_candidates"] = cand.groupby("label")["gaia_source_id"].transform("size")
    nearest = _nearest(cand, "label", "gaia_source_id")
    final = _nearest(nearest, "gaia_source_id", "label")
    final = final.assign(survey=survey, label_ra=labels["RA"].to_numpy()[final["label"]],
                         label_dec=labels["DEC"].to_numpy()[final["label"]])
    return final


def test_position_only_labels_match_gaia_moved_to_j2000(tmp_path):
    """PASTEL-style labels (J2000, no Gaia id) pair with fast-moving Gaia sources 30 arcsec away at J2016."""
    rng = np.random.default_rng(21)
    n = 25
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-89.9, 0, n)
    pa = np.radians(rng.uniform(0, 360, n))
    gaia = gaia_frame(ra, dec, 2000 * np.sin(pa), 2000 * np.cos(pa))
    gaia.loc[20:, ["pmra", "pmdec"]] = np.nan
    dt = np.full(n, 2000.0 - 2016.0)
    l_ra, l_dec = astrometry.propagate(ra, dec, gaia["pmra"].to_numpy(), gaia["pmdec"].to_numpy(), dt)
    l_ra, l_dec = offset(l_ra, l_dec, rng.uniform(0, 360, n), rng.uniform(0, 1.4, n))
    labels = pd.DataFrame({"RA": l_ra, "DEC": l_dec, "TEFF": rng.uniform(4000, 7000, n),
                           "LOGG": rng.uniform(1, 5, n), "FEH": rng.uniform(-2, 0.5, n)})
    want = brute_force_label_match(gaia, labels, 2000.0, "PASTEL")
    assert 8 <= len(want) < n
    db_path = tmp_path / "l.duckdb"
    ingest.run(db_path, "gaia", [write_csv(gaia, tmp_path / "g.csv", rng)])
    Table.from_pandas(labels.iloc[rng.permutation(n)]).write(tmp_path / "pastel.fits")
    ingest.run(db_path, "sos", [tmp_path / "pastel.fits"], preset="pastel")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        got = con.execute("select survey, label_ra, label_dec, gaia_source_id, sep_arcsec, n_candidates "
                          "from xmatch_labels").df()
        labelled = con.execute("select source_id, teff from labels where survey = 'PASTEL'").df()
    finally:
        con.close()
    key = ["label_ra", "label_dec", "gaia_source_id"]
    got, want = got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True)
    assert got[key].values.tolist() == want[key].values.tolist()
    np.testing.assert_allclose(got["sep_arcsec"], want["sep_arcsec"], atol=1e-3)
    np.testing.assert_array_equal(got["n_candidates"], want["n_candidates"])
    assert (got["survey"] == "PASTEL").all()
    # the labels view hands each matched Gaia source its label's Teff
    teff = labels["TEFF"].to_numpy()[want["label"]]
    expected = dict(zip(want["gaia_source_id"], teff))
    assert dict(zip(labelled["source_id"], labelled["teff"])) == pytest.approx(expected)
