"""Coordinate frames and epoch propagation shared by the simulator and the crossmatch.

Everything here works on unit vectors, not on (ra, dec) differences, so that it
stays exact across RA 0/360 and at the celestial poles, where ``pmra / cos(dec)``
blows up.
"""

from __future__ import annotations

import numpy as np

#: Rotation matrix from ICRS to Galactic Cartesian coordinates (Hipparcos
#: definition, ESA 1997 vol. 1 sect. 1.5.3; the same matrix astropy uses).
#: ``r_gal = ICRS_TO_GAL @ r_icrs``.
ICRS_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
    ]
)

MAS_PER_DEG = 3.6e6
DAYS_PER_JULIAN_YEAR = 365.25
#: MJD of J2000.0 (2000-01-01T12:00 TT).
MJD_J2000 = 51544.5


def lonlat_to_unit(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    """Unit vectors, shape (3, n), from longitude/latitude in degrees."""
    lon = np.radians(lon_deg)
    lat = np.radians(lat_deg)
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)])


def unit_to_lonlat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [0, 360) and latitude in [-90, 90] degrees from vectors (3, n)."""
    x, y, z = xyz
    lon = np.degrees(np.arctan2(y, x)) % 360.0
    # % 360 can return exactly 360.0 for tiny negative angles; fold it back.
    lon = np.where(lon >= 360.0, 0.0, lon)
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return lon, lat


def galactic_to_icrs(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees from Galactic (l, b) in degrees."""
    return unit_to_lonlat(ICRS_TO_GAL.T @ lonlat_to_unit(l_deg, b_deg))


def icrs_to_galactic(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) in degrees from (ra, dec) in degrees."""
    return unit_to_lonlat(ICRS_TO_GAL @ lonlat_to_unit(ra_deg, dec_deg))


def mjd_to_jyear(mjd: np.ndarray) -> np.ndarray:
    """Julian epoch (e.g. 2016.0) from a Modified Julian Date."""
    return 2000.0 + (np.asarray(mjd, dtype=float) - MJD_J2000) / DAYS_PER_JULIAN_YEAR


def jyear_to_mjd(jyear: np.ndarray) -> np.ndarray:
    """Modified Julian Date from a Julian epoch."""
    return MJD_J2000 + (np.asarray(jyear, dtype=float) - 2000.0) * DAYS_PER_JULIAN_YEAR


def propagate(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    pmra_mas_yr: np.ndarray,
    pmdec_mas_yr: np.ndarray,
    dt_yr: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Move positions along their proper motion by ``dt_yr`` years.

    Linear motion in 3D along the local tangent plane, then renormalised:
    ``p(t) = normalise(p + dt * (pmra * e_ra + pmdec * e_dec))``, with ``pmra``
    already including the cos(dec) factor, as Gaia's ``pmra`` does.  Parallax and
    radial velocity terms are neglected (below 1 mas over a few years for all but
    the nearest stars).  Exact at the poles and across RA 0/360.

    Parameters
    ----------
    ra_deg, dec_deg : array
        Positions at the reference epoch, degrees.
    pmra_mas_yr, pmdec_mas_yr : array
        Proper motion, mas/yr (``pmra`` is mu_alpha* = mu_alpha cos dec). NaN is treated as 0.
    dt_yr : array or float
        Target epoch minus reference epoch, Julian years.

    Returns
    -------
    ra_deg, dec_deg : arrays at the target epoch.
    """
    ra = np.radians(ra_deg)
    dec = np.radians(dec_deg)
    sin_ra, cos_ra = np.sin(ra), np.cos(ra)
    sin_dec, cos_dec = np.sin(dec), np.cos(dec)
    p = np.stack([cos_dec * cos_ra, cos_dec * sin_ra, sin_dec])
    e_ra = np.stack([-sin_ra, cos_ra, np.zeros_like(ra)])
    e_dec = np.stack([-sin_dec * cos_ra, -sin_dec * sin_ra, cos_dec])
    to_rad = np.radians(1.0 / MAS_PER_DEG)
    mu_a = np.nan_to_num(np.asarray(pmra_mas_yr, dtype=float)) * to_rad * dt_yr
    mu_d = np.nan_to_num(np.asarray(pmdec_mas_yr, dtype=float)) * to_rad * dt_yr
    moved = p + mu_a * e_ra + mu_d * e_dec
    moved /= np.linalg.norm(moved, axis=0)
    return unit_to_lonlat(moved)


def tangent_offset(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    d_east_arcsec: np.ndarray,
    d_north_arcsec: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift positions by small east/north offsets in arcsec (exact at the poles)."""
    mas = 1000.0
    return propagate(ra_deg, dec_deg, d_east_arcsec * mas, d_north_arcsec * mas, 1.0)


def angular_separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation in arcsec (Vincenty formula, stable at all scales)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra), np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0
