"""Epoch propagation, frames and the HEALPix contract against astropy and healpy."""

from __future__ import annotations

import healpy
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import Galactic, SkyCoord
from astropy.time import Time

from stellardb.catalog import astrometry
from stellardb.catalog import healpix


def _astropy_propagate(ra, dec, pmra, pmdec, dt_yr):
    c = SkyCoord(
        ra=ra * u.deg, dec=dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr, pm_dec=pmdec * u.mas / u.yr,
        obstime=Time(2016.0, format="jyear"), frame="icrs",
    )
    with np.errstate(all="ignore"):
        moved = c.apply_space_motion(dt=dt_yr * u.yr)
    return moved.ra.deg, moved.dec.deg


@pytest.mark.parametrize(
    "ra, dec",
    [
        (0.0005, -30.0),  # just east of RA 0
        (359.9995, -30.0),  # just west of RA 360
        (123.4, -89.9995),  # 1.8 arcsec from the south pole
        (10.0, -89.99),
        (250.0, 1.9),
    ],
)
def test_propagate_matches_astropy(ra, dec):
    """Linear proper-motion propagation agrees with astropy to 0.1 mas, at the pole and across RA 0."""
    rng = np.random.default_rng(1)
    pmra = rng.normal(0, 2000, 50)
    pmdec = rng.normal(0, 2000, 50)
    dt = rng.uniform(-3, 3, 50)
    ra_a, dec_a = _astropy_propagate(np.full(50, ra), np.full(50, dec), pmra, pmdec, dt)
    ra_s, dec_s = astrometry.propagate(np.full(50, ra), np.full(50, dec), pmra, pmdec, dt)
    sep_mas = astrometry.angular_separation_arcsec(ra_a, dec_a, ra_s, dec_s) * 1000
    assert sep_mas.max() < 0.1
    assert np.all((ra_s >= 0) & (ra_s < 360))


def test_separation_matches_astropy():
    """Vincenty separations equal astropy's, from micro-arcsec to degrees."""
    rng = np.random.default_rng(2)
    ra1, dec1 = rng.uniform(0, 360, 200), rng.uniform(-90, 2, 200)
    ra2 = (ra1 + rng.normal(0, 1e-3, 200)) % 360
    dec2 = np.clip(dec1 + rng.normal(0, 1e-3, 200), -90, 90)
    ours = astrometry.angular_separation_arcsec(ra1, dec1, ra2, dec2)
    theirs = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).arcsec
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)


def test_galactic_matches_astropy():
    """ICRS <-> Galactic rotation equals astropy's Galactic frame to 0.05 arcsec.

    Gaia's l, b use the Hipparcos ICRS->Galactic matrix; astropy's Galactic frame goes
    through FK5 and differs from it by a few tens of mas, hence the tolerance.
    """
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 500), np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))
    l_deg, b_deg = astrometry.icrs_to_galactic(ra, dec)
    g = SkyCoord(ra * u.deg, dec * u.deg).transform_to(Galactic())
    sep = astrometry.angular_separation_arcsec(l_deg, b_deg, g.l.deg, g.b.deg)
    assert sep.max() < 0.05
    ra2, dec2 = astrometry.galactic_to_icrs(l_deg, b_deg)
    assert astrometry.angular_separation_arcsec(ra, dec, ra2, dec2).max() < 1e-6


def test_tangent_offset_separation():
    """An east/north offset of (3, 4) arcsec lands 5 arcsec away, even at the pole."""
    ra = np.array([0.0, 359.99, 45.0, 200.0])
    dec = np.array([-30.0, 0.0, -89.9999, -89.999])
    ra2, dec2 = astrometry.tangent_offset(ra, dec, np.full(4, 3.0), np.full(4, 4.0))
    np.testing.assert_allclose(astrometry.angular_separation_arcsec(ra, dec, ra2, dec2), 5.0, rtol=1e-6)


def test_mjd_jyear_roundtrip():
    """MJD <-> Julian year agrees with astropy Time."""
    mjd = np.array([51544.5, 57388.5, 58000.25])
    np.testing.assert_allclose(astrometry.mjd_to_jyear(mjd), Time(mjd, format="mjd").jyear, atol=1e-9)
    np.testing.assert_allclose(astrometry.jyear_to_mjd(astrometry.mjd_to_jyear(mjd)), mjd, atol=1e-7)


def test_source_id_healpix_levels():
    """Coarser orders from source_id are the right shift of order 12 (and of healpy's own nest index)."""
    rng = np.random.default_rng(4)
    ra, dec = rng.uniform(0, 360, 1000), rng.uniform(-90, 2, 1000)
    pix12 = healpix.radec_to_healpix(ra, dec)
    sid = pix12 * healpix.GAIA_SOURCE_ID_DIVISOR + rng.integers(0, 2**35, 1000)
    np.testing.assert_array_equal(healpix.source_id_to_healpix(sid), pix12)
    np.testing.assert_array_equal(
        healpix.source_id_to_healpix(sid, order=5), healpy.ang2pix(2**5, ra, dec, nest=True, lonlat=True)
    )
    with pytest.raises(ValueError, match="order 12"):
        healpix.source_id_to_healpix(sid, order=13)


@pytest.mark.parametrize("order", [0, 1, 5, 12, 20, 29])
def test_radec_to_healpix_equals_healpy(order):
    """stellardb's NumPy loc2pix equals healpy.ang2pix(nest=True, lonlat=True): random positions,
    pixel centres and corners (edges of the equatorial belt and the caps), poles, RA 0/360."""
    rng = np.random.default_rng(order)
    ra = [rng.uniform(0, 360, 200_000)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, 200_000)))]
    for k in (0, 2, 12):
        pix = np.arange(12 * 4**k) if k < 12 else rng.integers(0, 12 * 4**12, 5000)
        theta, phi = healpy.pix2ang(2**k, pix, nest=True)
        corners = np.moveaxis(healpy.boundaries(2**k, pix, nest=True, step=1), 1, -1).reshape(-1, 3)
        theta_c, phi_c = healpy.vec2ang(corners)
        ra += [np.degrees(phi), np.degrees(phi_c)]
        dec += [90 - np.degrees(theta), 90 - np.degrees(theta_c)]
    special = np.array([90, -90, 89.99999, -89.99999, 89.5, -89.5, np.degrees(np.arcsin(2 / 3)),
                        -np.degrees(np.arcsin(2 / 3)), 0.0])
    for lon in (0.0, 90.0, 359.9999999999):
        ra.append(np.full(special.size, lon))
        dec.append(special)
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    np.testing.assert_array_equal(healpix.radec_to_healpix(ra, dec, order=order),
                                  healpy.ang2pix(2**order, ra, dec, nest=True, lonlat=True))


def test_radec_to_healpix_keeps_shape_across_blocks():
    """Inputs larger than one block (threaded) keep their shape and equal healpy; scalars stay scalars."""
    rng = np.random.default_rng(11)
    ra = rng.uniform(0, 360, (3, 70_001))
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, (3, 70_001))))
    pix = healpix.radec_to_healpix(ra, dec)
    assert pix.shape == (3, 70_001)
    np.testing.assert_array_equal(pix, healpy.ang2pix(2**12, ra, dec, nest=True, lonlat=True))
    one = healpix.radec_to_healpix(12.5, -30.0)
    assert np.ndim(one) == 0 and one == healpy.ang2pix(2**12, 12.5, -30.0, nest=True, lonlat=True)
