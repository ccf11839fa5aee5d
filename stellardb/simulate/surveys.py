"""Turn true stars into what each survey would publish about them.

Model
-----
**Gaia DR3 astrometry.**  Parallax error sigma_plx(G) = sqrt(40 + 800 z + 30 z^2)
micro-arcsec with z = 10^(0.4 (max(G, 13) - 15)): about 0.03 mas at G = 15,
0.08 at 17, 0.6 at 20, 1.4 at 21, as in DR3 (Lindegren et al. 2021).  Observed
parallax = 1000/d - 0.017 mas (the DR3 zero point) + noise.  Proper-motion errors
are 1.0 sigma_plx per year; position errors 0.8 sigma_plx.  Faint sources
(G > 19.5) get two-parameter solutions (no parallax or proper motion,
``astrometric_params_solved = 3``) with a probability rising to 60 per cent at
G = 21.  RUWE ~ 1 + |N(0, 0.05)|, with 6 per cent of sources in a log-normal tail
above 1.4.  BP/RP are missing with probability 0.005 + 0.5 / (1 + exp(-(G -
20.2) / 0.25)).

**GSP-Phot.**  Published for 92 per cent of sources with G < 19 and BP/RP.  Its
faults are modelled on the published validation (Andrae et al. 2023, A&A 674, A27):
an extinction error dA0 ~ 0.04 + N(0, 0.09 s + 0.20 A0) (s = clip(1 + (G-13)/4,
0.6, 2.5) grows for faint stars) drives Teff up by 900 K per mag of dA0 times
(Teff/5500)^2 (the Teff-extinction degeneracy), log g by 0.25 dA0 and [M/H] down by
0.3 dA0; on top sit N(0, 0.034 Teff s), N(0, 0.25 s) dex and N(0, 0.20 s) dex, a
[M/H] scale compression 0.8 and bias -0.20 dex (GSP-Phot [M/H] runs low),
and 2-3 per cent catastrophic outliers.  The published 16th/84th percentiles are
about half as wide as the real errors (GSP-Phot under-estimates them).
``distance_gspphot`` is pulled in by extinction over-estimates (10^(-0.16 dA0)).

**Bailer-Jones distances.**  ``r_*_geo`` are quantiles of the posterior
r^2 exp(-r/L) N(parallax + 0.017 | 1000/r, sigma_plx) (the exponentially decreasing
space density prior of Bailer-Jones 2015, L = 1.35 kpc) on a per-star grid;
``r_*_photogeo`` multiplies in a log-normal photometric distance (0.2 dex in ln r)
for sources with BP/RP.  Sources without parallax, and 2 per cent more at random,
are absent from the file.

**SkyMapper.**  A star is in SkyMapper unless it is lost at random (3 per cent,
chip gaps and masks) or detected in fewer than two of g, r, i.  Each row has its
own ``mean_epoch`` (MJD 56650-58700, 2014-2019); its position is the star's J2016.0
position moved by its true proper motion to that epoch, plus astrometric scatter
sigma = hypot(0.06, 0.2 * 10^(0.4 (r - 20.5))) arcsec per coordinate.  Magnitudes
fainter than a per-band, per-star limit near the 5-sigma depth are null (u and v
go first).  SkyMapper-only objects (galaxies, ``class_star`` < 0.4) add 3 per
cent.  ``flags`` has bit 2 (blended) for sources with a neighbour within 3 arcsec.
0.8 per cent of stars are placed 1-3 arcsec from another star, so that about
1.5 per cent have a close neighbour and the nearest match matters.

**Reference labels.**  About 5 per cent of stars, chosen with probability
∝ 1 / (1 + exp((G - 15.5) / 0.7)), carry labels from one of APOGEE, GALAH, GES,
RAVE, LAMOST (LAMOST only north of dec -10): truth plus that survey's offset and
noise (40-80 K, 0.06-0.15 dex, 0.04-0.10 dex; on average about 50 K, 0.08, 0.06).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from stellardb.catalog.astrometry import icrs_to_galactic, mjd_to_jyear, propagate, tangent_offset, unit_to_lonlat, lonlat_to_unit
from stellardb.catalog.healpix import GAIA_SOURCE_ID_DIVISOR, radec_to_healpix
from stellardb.simulate import galaxy, photometric_surveys, photometry
from stellardb.simulate.gaia_schema import GAIA_DR3_SOLUTION_ID, GAIA_DR3_ZP

GAIA_REF_EPOCH = 2016.0
CLOSE_PAIR_FRACTION = 0.008
SKYMAPPER_LOST_FRACTION = 0.03
GALAXY_FRACTION = 0.03
LABEL_FRACTION = 0.05
BLEND_RADIUS_ARCSEC = 3.0
#: obliquity of the ecliptic at J2000 (IAU 1976), as used for Gaia's ecl_lon/ecl_lat
_OBLIQUITY_DEG = 23.4392911

#: name: (dec_max, weight, d_teff K, d_logg, d_feh, sigma_teff K, sigma_logg, sigma_feh)
LABEL_SURVEYS = {
    "APOGEE": (90.0, 0.25, 15.0, 0.03, 0.02, 40.0, 0.06, 0.04),
    "GALAH": (90.0, 0.35, -10.0, -0.02, -0.03, 60.0, 0.09, 0.06),
    "GES": (90.0, 0.15, 5.0, 0.02, 0.00, 55.0, 0.09, 0.06),
    "RAVE": (90.0, 0.15, 20.0, -0.05, 0.04, 80.0, 0.15, 0.10),
    "LAMOST": (-10.0, 0.10, -15.0, 0.01, -0.02, 60.0, 0.08, 0.06),
}


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _masked(x, missing, dtype=None):
    """pyarrow array of x with nulls where ``missing``."""
    x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    return pa.array(x, mask=np.asarray(missing, dtype=bool))


def place_close_pairs(rng, stars: galaxy.Stars) -> np.ndarray:
    """Move a few stars 1-3 arcsec from another star (chance alignments); returns moved indices."""
    n = len(stars)
    n_pairs = int(round(CLOSE_PAIR_FRACTION * n))
    if n_pairs == 0 or n < 4:
        return np.array([], dtype=np.int64)
    idx = rng.choice(n, size=2 * n_pairs, replace=False)
    movers, hosts = idx[:n_pairs], idx[n_pairs:]
    sep = rng.uniform(1.0, 3.0, n_pairs)
    pa_ = rng.uniform(0.0, 2 * np.pi, n_pairs)
    ra, dec = tangent_offset(stars.ra_deg[hosts], stars.dec_deg[hosts], sep * np.sin(pa_), sep * np.cos(pa_))
    stars.ra_deg[movers], stars.dec_deg[movers] = ra, dec
    l_deg, b_deg = icrs_to_galactic(ra, dec)
    stars.l_deg[movers], stars.b_deg[movers] = l_deg, b_deg
    stars.ebv_sfd[movers] = galaxy.sfd_ebv(l_deg, b_deg)
    # a chance-aligned star keeps the dust column it had, capped by the new sight line's total
    stars.ebv_true[movers] = np.minimum(stars.ebv_true[movers], stars.ebv_sfd[movers] / galaxy.SFD_OVERESTIMATE)
    return movers


def apparent_magnitudes(rng, stars: galaxy.Stars) -> dict[str, np.ndarray]:
    """True apparent magnitudes (before measurement noise) in all nine bands."""
    absmag = photometry.absolute_magnitudes(
        rng, stars.abs_g_mag, stars.bp_rp0_mag, stars.teff_k, stars.logg, stars.feh, stars.alpha_fe,
        stars.stage == galaxy.DWARF,
    )
    dm = 5.0 * np.log10(stars.distance_pc / 10.0)
    r_g, r_bp, r_rp = photometry.gaia_extinction_coefficients(stars.bp_rp0_mag)
    # a little R_V-like variation of the extinction law from star to star
    law = 1.0 + rng.normal(0.0, 0.03, len(stars))
    e = stars.ebv_true * law
    out = {"G": absmag["G"] + dm + r_g * e, "bp": absmag["bp"] + dm + r_bp * e, "rp": absmag["rp"] + dm + r_rp * e}
    for band in photometry.SKYMAPPER_BANDS:
        out[band] = absmag[band] + dm + photometry.SKYMAPPER_R[band] * e
    # for the other photometric surveys: the same star's hidden traits and reddening
    out["_base"], out["_ebv"] = absmag, e
    return out


def parallax_error_mas(g_mag) -> np.ndarray:
    z = 10 ** (0.4 * (np.maximum(g_mag, 13.0) - 15.0))
    return np.sqrt(40.0 + 800.0 * z + 30.0 * z**2) / 1000.0


def _ecliptic(ra_deg, dec_deg):
    eps = np.radians(_OBLIQUITY_DEG)
    x, y, z = lonlat_to_unit(ra_deg, dec_deg)
    return unit_to_lonlat(np.stack([x, np.cos(eps) * y + np.sin(eps) * z, -np.sin(eps) * y + np.cos(eps) * z]))


def make_source_ids(ra_deg, dec_deg, global_index, seed: int) -> np.ndarray:
    """Gaia-style source_id: order-12 nested HEALPix * 2**35 + a unique 35-bit number.

    The low bits are an odd-multiplier bijection of the global star index modulo
    2**35, so ids are unique across chunks and runs of the same seed.
    """
    pix = radec_to_healpix(ra_deg, dec_deg, order=12)
    low = (np.asarray(global_index, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(seed % 2**35)) % np.uint64(
        GAIA_SOURCE_ID_DIVISOR
    )
    return pix * GAIA_SOURCE_ID_DIVISOR + low.astype(np.int64)


def _flux_columns(rng, band: str, mag_obs, sigma_mag, missing, n_obs_mean):
    zp = GAIA_DR3_ZP[band]
    flux = 10 ** (-0.4 * (mag_obs - zp))
    flux_err = flux * sigma_mag / 1.0857
    n_obs = np.maximum(rng.normal(n_obs_mean, 0.25 * n_obs_mean, len(mag_obs)), 8).astype(np.int16)
    return {
        "n_obs": _masked(n_obs, missing),
        "flux": _masked(flux, missing),
        "flux_error": _masked(_f32(flux_err), missing),
        "flux_over_error": _masked(_f32(flux / flux_err), missing),
        "mag": _masked(_f32(mag_obs), missing),
    }


def gsp_phot(rng, stars: galaxy.Stars, g_mag, has_xp):
    """GSP-Phot-like astrophysical parameters (see module docstring); NaN where not published."""
    n = len(stars)
    published = has_xp & (g_mag < 19.0) & (rng.uniform(size=n) < 0.92)
    s = np.clip(1.0 + (g_mag - 13.0) / 4.0, 0.6, 2.5)
    a0_true = 3.1 * stars.ebv_true
    d_a0 = 0.04 + rng.normal(0.0, 1.0, n) * (0.09 * s + 0.20 * a0_true)
    a0 = np.maximum(a0_true + d_a0, 0.0)
    d_a0 = a0 - a0_true
    t = stars.teff_k
    teff = t + 900.0 * d_a0 * (t / 5500.0) ** 2 + rng.normal(0.0, 0.034 * t * s)
    logg = stars.logg + 0.25 * d_a0 + rng.normal(0.0, 0.25 * s)
    mh = 0.8 * stars.feh - 0.20 - 0.3 * d_a0 + rng.normal(0.0, 0.20 * s)
    out_t = rng.uniform(size=n) < 0.02
    teff = np.where(out_t, teff + rng.normal(0.0, 500.0, n), teff)
    out_g = rng.uniform(size=n) < 0.03
    logg = np.where(out_g, logg + rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.2, n), logg)
    out_m = rng.uniform(size=n) < 0.03
    mh = np.where(out_m, mh + rng.normal(0.0, 0.6, n), mh)
    teff = np.clip(teff, 2500.0, 9900.0)
    logg = np.clip(logg, -0.5, 5.5)
    mh = np.clip(mh, -4.0, 0.8)
    dist = stars.distance_pc * 10 ** (-0.16 * d_a0) * np.exp(rng.normal(0.0, 0.08 * s))

    def interval(value, half_width, lo=-np.inf, hi=np.inf):
        # published percentiles: asymmetric, about half the real scatter
        w_lo = half_width * np.exp(rng.normal(0.0, 0.3, n))
        w_hi = half_width * np.exp(rng.normal(0.0, 0.3, n))
        return np.clip(value - w_lo, lo, hi), np.clip(value + w_hi, lo, hi)

    cols = {}
    for name, value, half, lo, hi in (
        ("teff_gspphot", teff, 0.5 * np.hypot(0.034 * t * s, 900.0 * 0.09 * s), 2500.0, 10000.0),
        ("logg_gspphot", logg, 0.5 * 0.25 * s, -0.5, 5.5),
        ("mh_gspphot", mh, 0.5 * 0.20 * s, -4.0, 0.8),
        ("distance_gspphot", dist, 0.5 * 0.08 * s * dist, 0.0, np.inf),
        ("azero_gspphot", a0, 0.5 * (0.09 * s + 0.2 * a0), 0.0, np.inf),
    ):
        lower, upper = interval(value, half, lo, hi)
        cols[name], cols[name + "_lower"], cols[name + "_upper"] = value, lower, upper
    x0 = stars.bp_rp0_mag
    ag_per_a0 = 0.84 - 0.07 * np.clip(x0, 0, 3)
    ebprp_per_a0 = 0.43 - 0.03 * np.clip(x0, 0, 3)
    for name, factor in (("ag_gspphot", ag_per_a0), ("ebpminrp_gspphot", ebprp_per_a0)):
        for suffix in ("", "_lower", "_upper"):
            cols[name + suffix] = cols["azero_gspphot" + suffix] * factor
    cols = {k: _masked(_f32(v), ~published) for k, v in cols.items()}
    lib = np.where(rng.uniform(size=n) < 0.7, "MARCS", "PHOENIX")
    cols["libname_gspphot"] = pa.array(lib.astype(object), mask=~published)
    return cols


def _edsd_quantiles(plx_mas, sigma_mas, length_pc, extra_ln_mu=None, extra_ln_sigma=None):
    """16/50/84 per cent distance quantiles (pc) of the EDSD posterior.

    Where the parallax is better than 5 per cent (and no photometric term is
    given) the prior does not matter and the quantiles are 1000 / (plx -+ sigma);
    elsewhere the posterior is evaluated on a per-star grid in ln r.
    """
    n = len(plx_mas)
    out = np.empty((3, n))
    precise = (plx_mas > 20.0 * sigma_mas) if extra_ln_mu is None else np.zeros(n, bool)
    p, s = plx_mas[precise], sigma_mas[precise]
    out[:, precise] = 1000.0 / np.stack([p + s, p, p - s])
    rest = np.flatnonzero(~precise)
    k = np.linspace(0.0, 1.0, 64)
    step = 50_000
    for lo in range(0, rest.size, step):
        idx_rows = rest[lo : lo + step]
        p, s = plx_mas[idx_rows], sigma_mas[idx_rows]
        r_a = 1000.0 / np.maximum(p + 6 * s, 1e-3)
        r_b = np.where(p - 6 * s > 0, 1000.0 / np.maximum(p - 6 * s, 1e-6), 1.0e5)
        r_b = np.minimum(np.maximum(r_b, r_a * 1.01), 1.0e5)
        r_a = np.minimum(r_a, r_b / 1.01)
        ln_r = np.log(r_a)[:, None] + k * np.log(r_b / r_a)[:, None]
        r = np.exp(ln_r)
        # posterior per ln r: r^3 exp(-r/L) * likelihood
        log_post = 3 * ln_r - r / length_pc - 0.5 * ((p[:, None] - 1000.0 / r) / s[:, None]) ** 2
        if extra_ln_mu is not None:
            log_post += -0.5 * ((ln_r - extra_ln_mu[idx_rows, None]) / extra_ln_sigma) ** 2
        log_post -= log_post.max(axis=1, keepdims=True)
        cdf = np.cumsum(np.exp(log_post), axis=1)
        cdf /= cdf[:, -1:]
        rows = np.arange(len(idx_rows))
        for j, q in enumerate((0.16, 0.5, 0.84)):
            idx = np.clip((cdf < q).sum(axis=1), 1, len(k) - 1)
            c0, c1 = cdf[rows, idx - 1], cdf[rows, idx]
            frac = np.clip((q - c0) / np.maximum(c1 - c0, 1e-12), 0, 1)
            out[j, idx_rows] = np.exp(ln_r[rows, idx - 1] + frac * (ln_r[rows, idx] - ln_r[rows, idx - 1]))
    return out


def build_chunk(rng: np.random.Generator, n: int, first_index: int, first_object_id: int, seed: int,
                dec_max_deg: float | None = None):
    """Simulate ``n`` stars and return the survey tables plus the truth table.

    Returns
    -------
    dict with pyarrow Tables ``gaia``, ``skymapper``, ``tmass``, ``allwise``, ``ps1``, ``sdss``,
    ``distances``, ``sos``, ``truth`` (``truth`` links source_id and each survey's id to the
    true parameters; it is written only on request and never used by stellardb itself).
    """
    stars = galaxy.simulate_stars(rng, n, dec_max_deg)
    place_close_pairs(rng, stars)
    mags = apparent_magnitudes(rng, stars)

    # ------------------------------------------------------------------ Gaia
    g_true = mags["G"]
    sig_plx = parallax_error_mas(g_true)
    two_param = rng.uniform(size=n) < 0.6 * np.clip((g_true - 19.5) / 1.5, 0.0, 1.0)
    six_param = ~two_param & (g_true > 18.0) & (rng.uniform(size=n) < 0.3)
    sig_plx = np.where(six_param, 1.3 * sig_plx, sig_plx)
    parallax = 1000.0 / stars.distance_pc - 0.017 + rng.normal(0.0, 1.0, n) * sig_plx
    sig_pm = 1.0 * sig_plx
    pmra = stars.pmra_mas_yr + rng.normal(0.0, 1.0, n) * sig_pm
    pmdec = stars.pmdec_mas_yr + rng.normal(0.0, 1.0, n) * sig_pm
    # two-parameter solutions have much larger position errors (Lindegren et al. 2021)
    sig_pos = np.where(two_param, 5.0, 0.8) * sig_plx
    ra_g, dec_g = tangent_offset(
        stars.ra_deg, stars.dec_deg, rng.normal(0, 1, n) * sig_pos / 1000.0, rng.normal(0, 1, n) * sig_pos / 1000.0
    )
    source_id = make_source_ids(ra_g, dec_g, first_index + np.arange(n), seed)

    sig = {b: photometry.gaia_mag_error(b, mags[b]) for b in ("G", "bp", "rp")}
    obs = {b: mags[b] + rng.normal(0.0, 1.0, n) * sig[b] for b in ("G", "bp", "rp")}
    no_xp = rng.uniform(size=n) < 0.005 + 0.5 / (1.0 + np.exp(-(g_true - 20.2) / 0.25))
    g_cols = _flux_columns(rng, "G", obs["G"], sig["G"], np.zeros(n, bool), 330)
    bp_cols = _flux_columns(rng, "bp", obs["bp"], sig["bp"], no_xp, 36)
    rp_cols = _flux_columns(rng, "rp", obs["rp"], sig["rp"], no_xp, 37)
    bp_rp = obs["bp"] - obs["rp"]
    excess = 1.16 + 0.04 * bp_rp + 0.012 * bp_rp**2 + np.abs(rng.normal(0, 1, n)) * (0.01 + 0.1 * 10 ** (0.4 * (g_true - 21)))
    ruwe = 1.0 + np.abs(rng.normal(0.0, 0.05, n))
    ruwe = np.where(rng.uniform(size=n) < 0.06, 1.4 * np.exp(np.abs(rng.normal(0.0, 0.5, n))), ruwe)
    nan_astrometry = two_param
    l_deg, b_deg = icrs_to_galactic(ra_g, dec_g)
    ecl_lon, ecl_lat = _ecliptic(ra_g, dec_g)
    pm_total = np.hypot(pmra, pmdec)
    variable = np.where((rng.uniform(size=n) < 0.02) & (g_true < 20.0), "VARIABLE", "NOT_AVAILABLE")
    has_xp = ~no_xp
    gsp = gsp_phot(rng, stars, g_true, has_xp)
    random_index = ((np.arange(n, dtype=np.int64) + first_index) * 1103515245 + seed) % 2**31

    gaia = {
        "solution_id": pa.array(np.full(n, GAIA_DR3_SOLUTION_ID, dtype=np.int64)),
        "designation": pa.array([f"Gaia DR3 {s}" for s in source_id.tolist()]),
        "source_id": pa.array(source_id),
        "random_index": pa.array(random_index),
        "ref_epoch": pa.array(np.full(n, GAIA_REF_EPOCH)),
        "ra": pa.array(ra_g),
        "ra_error": pa.array(_f32(sig_pos)),
        "dec": pa.array(dec_g),
        "dec_error": pa.array(_f32(0.9 * sig_pos)),
        "parallax": _masked(parallax, nan_astrometry),
        "parallax_error": _masked(_f32(sig_plx), nan_astrometry),
        "parallax_over_error": _masked(_f32(parallax / sig_plx), nan_astrometry),
        "pm": _masked(_f32(pm_total), nan_astrometry),
        "pmra": _masked(pmra, nan_astrometry),
        "pmra_error": _masked(_f32(sig_pm), nan_astrometry),
        "pmdec": _masked(pmdec, nan_astrometry),
        "pmdec_error": _masked(_f32(0.9 * sig_pm), nan_astrometry),
        "astrometric_params_solved": pa.array(np.where(two_param, 3, np.where(six_param, 95, 31)).astype(np.int16)),
        "ruwe": _masked(_f32(ruwe), nan_astrometry),
    }
    for band, cols in (("g", g_cols), ("bp", bp_cols), ("rp", rp_cols)):
        gaia[f"phot_{band}_n_obs"] = cols["n_obs"]
        gaia[f"phot_{band}_mean_flux"] = cols["flux"]
        gaia[f"phot_{band}_mean_flux_error"] = cols["flux_error"]
        gaia[f"phot_{band}_mean_flux_over_error"] = cols["flux_over_error"]
        gaia[f"phot_{band}_mean_mag"] = cols["mag"]
    gaia.update(
        {
            "phot_bp_rp_excess_factor": _masked(_f32(excess), no_xp),
            "bp_rp": _masked(_f32(bp_rp), no_xp),
            "bp_g": _masked(_f32(obs["bp"] - obs["G"]), no_xp),
            "g_rp": _masked(_f32(obs["G"] - obs["rp"]), no_xp),
            "phot_variable_flag": pa.array(variable.astype(object)),
            "l": pa.array(l_deg),
            "b": pa.array(b_deg),
            "ecl_lon": pa.array(ecl_lon),
            "ecl_lat": pa.array(ecl_lat),
            "has_xp_continuous": pa.array(np.where(has_xp & (g_true < 17.65), "True", "False").astype(object)),
        }
    )
    gaia.update(gsp)
    order = np.argsort(source_id, kind="stable")  # archive files are ordered by source_id
    gaia_table = pa.table(gaia).take(pa.array(order))

    # ------------------------------------------------------------ distances
    has_plx = ~two_param
    in_bj = has_plx & (rng.uniform(size=n) >= 0.02)
    geo = _edsd_quantiles(parallax[in_bj] + 0.017, sig_plx[in_bj], 1350.0)
    d_phot = stars.distance_pc[in_bj] * np.exp(rng.normal(0.0, 0.2, in_bj.sum()))
    photogeo = _edsd_quantiles(parallax[in_bj] + 0.017, sig_plx[in_bj], 1350.0, np.log(d_phot), 0.2)
    no_photo = no_xp[in_bj]
    frac_err = sig_plx[in_bj] / np.maximum(np.abs(parallax[in_bj]), 1e-6)
    flag = np.where(frac_err < 0.2, "10033", np.where(frac_err < 1.0, "10023", "20022"))
    flag = np.where(no_photo, np.char.add(np.char.replace(flag, "33", "30"), ""), flag)
    distances = pa.table(
        {
            "source_id": pa.array(source_id[in_bj]),
            "r_med_geo": pa.array(_f32(geo[1])),
            "r_lo_geo": pa.array(_f32(geo[0])),
            "r_hi_geo": pa.array(_f32(geo[2])),
            "r_med_photogeo": _masked(_f32(photogeo[1]), no_photo),
            "r_lo_photogeo": _masked(_f32(photogeo[0]), no_photo),
            "r_hi_photogeo": _masked(_f32(photogeo[2]), no_photo),
            "flag": pa.array(flag.astype(object)),
        }
    )

    # ------------------------------------------------------------ SkyMapper
    sm_mag, sm_err, sm_missing = {}, {}, {}
    for band in photometry.SKYMAPPER_BANDS:
        sig_b = photometry.skymapper_mag_error(band, mags[band])
        m_obs = mags[band] + rng.normal(0.0, 1.0, n) * sig_b
        limit = photometry.SKYMAPPER_M5[band] + rng.normal(0.0, 0.15, n)
        # A star far below the limit is not detected whatever its noise: with errors that grow
        # as 10^(0.4 m), its "observed" magnitude scattered to -240 mag (u) and was published.
        # More than 0.75 mag beyond the limit the S/N is below 2.5.
        sm_missing[band] = (m_obs > limit) | (mags[band] > limit + 0.75) | (rng.uniform(size=n) < 0.01)
        sm_mag[band], sm_err[band] = m_obs, sig_b * np.exp(rng.normal(0.0, 0.05, n))
    detected_gri = sum((~sm_missing[b]).astype(int) for b in "gri")
    in_sm = (detected_gri >= 2) & (rng.uniform(size=n) >= SKYMAPPER_LOST_FRACTION) & (stars.dec_deg < galaxy.DEC_MAX_DEG)
    k = np.flatnonzero(in_sm)
    epoch_mjd = rng.uniform(56650.0, 58700.0, k.size)
    ra_sm, dec_sm = propagate(
        stars.ra_deg[k], stars.dec_deg[k], stars.pmra_mas_yr[k], stars.pmdec_mas_yr[k],
        mjd_to_jyear(epoch_mjd) - GAIA_REF_EPOCH,
    )
    r_for_pos = np.where(sm_missing["r"][k], 21.5, sm_mag["r"][k])
    sig_pos_sm = np.hypot(0.06, 0.2 * 10 ** (0.4 * (r_for_pos - 20.5)))
    ra_sm, dec_sm = tangent_offset(ra_sm, dec_sm, rng.normal(0, 1, k.size) * sig_pos_sm, rng.normal(0, 1, k.size) * sig_pos_sm)
    class_star = np.clip(0.985 - 0.25 * np.clip((r_for_pos - 19.0) / 3.0, 0, 1) + rng.normal(0, 0.01, k.size), 0, 1)
    sm = {
        "raj2000": ra_sm, "dej2000": dec_sm,
        "e_raj2000": sig_pos_sm * np.exp(rng.normal(0, 0.15, k.size)),
        "e_dej2000": sig_pos_sm * np.exp(rng.normal(0, 0.15, k.size)),
        "mean_epoch": epoch_mjd, "class_star": class_star,
        "ebmv_sfd": galaxy.sfd_ebv(*icrs_to_galactic(ra_sm, dec_sm)),
    }
    for band in photometry.SKYMAPPER_BANDS:
        sm[f"{band}_psf"] = np.where(sm_missing[band][k], np.nan, sm_mag[band][k])
        sm[f"e_{band}_psf"] = np.where(sm_missing[band][k], np.nan, sm_err[band][k])
    truth_object_of_star = np.full(n, -1, dtype=np.int64)

    # SkyMapper-only objects: galaxies
    n_gal = int(round(GALAXY_FRACTION * k.size))
    gal_ra, gal_dec, _, _ = galaxy.sample_directions(rng, n_gal)
    gal_r = rng.uniform(17.0, 21.0, n_gal)
    gal_colour = {"u": 1.9, "v": 1.5, "g": 0.7, "r": 0.0, "i": -0.35, "z": -0.55}
    gal = {"raj2000": gal_ra, "dej2000": gal_dec}
    gal_sig = np.hypot(0.1, 0.3 * 10 ** (0.4 * (gal_r - 20.5)))
    gal.update(
        e_raj2000=gal_sig, e_dej2000=gal_sig, mean_epoch=rng.uniform(56650.0, 58700.0, n_gal),
        class_star=rng.uniform(0.0, 0.4, n_gal), ebmv_sfd=galaxy.sfd_ebv(*icrs_to_galactic(gal_ra, gal_dec)),
    )
    for band in photometry.SKYMAPPER_BANDS:
        m = gal_r + gal_colour[band] + rng.normal(0, 0.2, n_gal) + photometry.SKYMAPPER_R[band] * gal["ebmv_sfd"]
        e = photometry.skymapper_mag_error(band, m) * 1.5
        gal[f"{band}_psf"] = np.where(m > photometry.SKYMAPPER_M5[band], np.nan, m)
        gal[f"e_{band}_psf"] = np.where(m > photometry.SKYMAPPER_M5[band], np.nan, e)
    sm_all = {key: np.concatenate([sm[key], gal[key]]) for key in sm}
    n_sm = len(sm_all["raj2000"])
    # rows appear in SkyMapper's own order, unrelated to Gaia's
    perm = rng.permutation(n_sm)
    object_id = np.empty(n_sm, dtype=np.int64)
    object_id[perm] = first_object_id + np.arange(n_sm)
    truth_object_of_star[k] = object_id[: k.size]
    blended = _has_neighbour(sm_all["raj2000"], sm_all["dej2000"], BLEND_RADIUS_ARCSEC)
    flags = np.where(blended, 2, 0) | np.where(rng.uniform(size=n_sm) < 0.02, 1, 0)
    bright = np.nan_to_num(sm_all["g_psf"], nan=99.0) < 9.5
    flags = (flags | np.where(bright, 4, 0)).astype(np.int16)
    sm_table = {
        "object_id": object_id,
        "raj2000": sm_all["raj2000"], "dej2000": sm_all["dej2000"],
        "e_raj2000": _f32(sm_all["e_raj2000"]), "e_dej2000": _f32(sm_all["e_dej2000"]),
        "mean_epoch": sm_all["mean_epoch"], "flags": flags, "class_star": _f32(sm_all["class_star"]),
    }
    for band in photometry.SKYMAPPER_BANDS:
        sm_table[f"{band}_psf"] = _f32(sm_all[f"{band}_psf"])
        sm_table[f"e_{band}_psf"] = _f32(sm_all[f"e_{band}_psf"])
    sm_table["ebmv_sfd"] = _f32(sm_all["ebmv_sfd"])
    skymapper = pa.table({key: pa.array(v, from_pandas=True) for key, v in sm_table.items()}).take(
        pa.array(np.argsort(object_id))
    )

    # ------------------------------------------------------------ reference labels
    w = 1.0 / (1.0 + np.exp((g_true - 15.5) / 0.7))
    p = np.minimum(1.0, w * LABEL_FRACTION * n / max(w.sum(), 1e-9))
    labelled = np.flatnonzero(rng.uniform(size=n) < p)
    names = list(LABEL_SURVEYS)
    weights = np.array([LABEL_SURVEYS[s][1] for s in names])
    choice = rng.choice(len(names), size=labelled.size, p=weights / weights.sum())
    # LAMOST only observes north of its dec limit: hand those stars to GALAH instead
    dec_max = np.array([LABEL_SURVEYS[s][0] for s in names])
    choice = np.where(stars.dec_deg[labelled] <= dec_max[choice], choice, names.index("GALAH"))
    par = np.array([LABEL_SURVEYS[s][2:] for s in names])[choice]
    m = labelled.size
    teff = stars.teff_k[labelled] + par[:, 0] + rng.normal(0, 1, m) * par[:, 3]
    logg = stars.logg[labelled] + par[:, 1] + rng.normal(0, 1, m) * par[:, 4]
    feh = stars.feh[labelled] + par[:, 2] + rng.normal(0, 1, m) * par[:, 5]
    sos = pa.table(
        {
            "source_id": source_id[labelled],
            "ra": ra_g[labelled],
            "dec": dec_g[labelled],
            "teff": _f32(np.round(teff, 1)),
            "e_teff": _f32(np.round(par[:, 3] * np.exp(rng.normal(0, 0.2, m)), 1)),
            "logg": _f32(np.round(logg, 3)),
            "e_logg": _f32(np.round(par[:, 4] * np.exp(rng.normal(0, 0.2, m)), 3)),
            "feh": _f32(np.round(feh, 3)),
            "e_feh": _f32(np.round(par[:, 5] * np.exp(rng.normal(0, 0.2, m)), 3)),
            "survey": pa.array(np.array(names, dtype=object)[choice]),
        }
    )

    # ------------------------------------------------------------ 2MASS, AllWISE, Pan-STARRS1, SDSS
    # a random stream of their own: adding them changed no Gaia or SkyMapper value of a seed
    survey_rng = np.random.default_rng(np.random.SeedSequence([seed, first_index, 15]))
    survey_tables, survey_ids = photometric_surveys.build(
        survey_rng, stars, mags["_base"], mags["_ebv"], first_index + np.arange(n, dtype=np.int64))

    truth = pa.table(
        {
            "source_id": source_id,
            "skymapper_object_id": pa.array(truth_object_of_star, mask=truth_object_of_star < 0),
            **{f"{name}_id": pa.array(ids, mask=ids < 0) for name, ids in survey_ids.items()},
            "ra_2016_deg": stars.ra_deg, "dec_2016_deg": stars.dec_deg,
            "pmra_mas_yr": stars.pmra_mas_yr, "pmdec_mas_yr": stars.pmdec_mas_yr,
            "teff_k": stars.teff_k, "logg": stars.logg, "feh": stars.feh, "alpha_fe": stars.alpha_fe,
            "population": pa.array(np.array(galaxy.POPULATION_NAMES, dtype=object)[stars.population]),
            "stage": pa.array(np.array(galaxy.STAGE_NAMES, dtype=object)[stars.stage]),
            "mass_msun": stars.mass_msun, "distance_pc": stars.distance_pc,
            "ebv_true": stars.ebv_true, "ebv_sfd": stars.ebv_sfd, "g_true_mag": g_true,
        }
    )
    return {"gaia": gaia_table, "skymapper": skymapper, **survey_tables, "distances": distances, "sos": sos,
            "truth": truth}


def _has_neighbour(ra_deg, dec_deg, radius_arcsec: float) -> np.ndarray:
    """True for rows with another row within ``radius_arcsec`` (KD-tree on unit vectors)."""
    from scipy.spatial import cKDTree

    xyz = lonlat_to_unit(ra_deg, dec_deg).T
    chord = 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)
    tree = cKDTree(xyz)
    counts = tree.query_ball_point(xyz, chord, return_length=True)
    return counts > 1
