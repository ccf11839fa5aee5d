"""Colour model of the simulated sky: Gaia G/BP/RP and SkyMapper uvgriz.

Model
-----
**Gaia colour.**  The intrinsic colour X0 = (BP-RP)_0 of a star with (Teff, log g,
[Fe/H]) is found by inverting the IRFM colour-Teff relation of Casagrande et al.
2021 (MNRAS 507, 2684; coefficients in docs/catalogues.md), which carries the gravity
and metallicity terms real stars have.  Outside its validity range (X0 in
[0.20, 2.00] for dwarfs, [0.20, 2.55] for giants) Teff(X0) is continued linearly.
Then ``G - RP = 0.02 + 0.67 X0 - 0.09 X0^2`` and ``BP - G = X0 - (G - RP)``.

**SkyMapper colours** (AB, our illustrative relations, smooth in X0):

* ``r - G = 0.05 + 0.20 X0 + 0.04 X0^2``
* ``g - r = -0.22 + 0.80 X0 - 0.10 X0^2 + 0.02 [Fe/H]``
* ``r - i = -0.08 + 0.30 X0 + 0.07 X0^2``;  ``i - z = -0.05 + 0.12 X0 + 0.05 X0^2``
* ``v - g = 0.25 + 0.45 X0 + 0.10 X0^2 + S(X0) f([Ca/H]) - 0.03 (4.4 - log g) X0``:
  v sits on Ca II H&K, so it measures [Ca/H] ~ [Fe/H] + 0.5 [alpha/Fe], with
  sensitivity S = clip(0.08 + 0.26 X0, 0.10, 0.45) mag/dex, halved below
  [Ca/H] = -1 where the lines weaken (f(m) = m above -1, -1 + 0.55 (m + 1) below);
* ``u - v = 0.35 + 0.05 X0 + B(Teff) (log g - 4.2) + 0.06 [Fe/H]``: u straddles
  the Balmer jump, B = 0.04 + 0.10 clip((Teff - 5200 K) / 1500 K, 0, 1.6) mag/dex,
  so log g shows most in hot stars.

**What keeps the information imperfect** (hidden from every catalogue): a cosmic
scatter of 0.008 mag per colour and 0.012 mag in X0 (age, rotation, spots, the
real relation's 60-80 K scatter), [alpha/Fe] in v, and unresolved binaries (30 per
cent of dwarfs): a redder companion adding a flux fraction f_G = 0.8 U^3 in G and
``f_G 10^(0.4 k_band c)`` elsewhere, with k = (-1.5, -1.2, -0.6, -0.5, 0, 0.1, 0.4,
0.5, 0.7) for (u, v, g, BP, G, r, RP, i, z) and c ~ U(0, 1.5).

**Extinction.**  Gaia: colour-dependent R_G, R_BP, R_RP per E(B-V) of Casagrande
et al. 2021 (Fitzpatrick law), evaluated at X0.  SkyMapper: Wolf et al. 2018
A_band / E(B-V) = 4.294, 4.026, 2.986, 2.288, 1.588, 1.206 for u, v, g, r, i, z.

**2MASS, AllWISE, Pan-STARRS1 and SDSS** (:func:`survey_absolute_magnitudes`).  What
each band can know follows the physics of where it sits:

* infrared colours (2MASS J, H, Ks; WISE W1-W4) sample the Rayleigh-Jeans side of the
  spectrum and measure Teff almost free of metallicity and gravity (why V-Ks is the
  IRFM's favourite colour).  They are built on ``xt = X0(Teff, log g = 4.4, [Fe/H] = 0)``,
  the colour a solar-metallicity dwarf of that Teff has, so that they carry Teff but not
  the gravity and metallicity terms BP-RP carries; together with BP-RP that difference is
  the (weak) metallicity information real optical-infrared colours have.  Vega system:
  ``G - J = -0.02 + 1.39 xt - 0.08 xt^2 + 0.03 [Fe/H]``, ``G - H = -0.10 + 2.01 xt -
  0.18 xt^2 + 0.045 [Fe/H]``, ``G - Ks = -0.10 + 2.09 xt - 0.16 xt^2 + 0.05 [Fe/H]``
  (shaped like the published Gaia-2MASS colour relations; the [Fe/H] terms are line
  blanketing in G).  Cool giants have redder J - H than dwarfs (H- opacity and CO/H2O
  bands): H and Ks brighter by ``0.12 clip((xt - 1.4), 0, 1) clip((3.5 - log g)/1.5, 0, 1)``.
  ``Ks - W1 = 0.02 + 0.05 clip(xt - 1.4, 0, 2)``; ``W1 - W2 = -0.01 - 0.05 clip(xt - 1.2,
  0, 1.5) (1 + 0.6 giant) (1 + 0.3 clip([Fe/H], -2, 0.5))`` (the 4.6 micron CO band,
  deeper at low gravity and high metallicity); ``W2 - W3 = 0.02 + 0.03 clip(xt - 1.5, 0, 2)``;
  ``W3 - W4 = 0.01``.
* Pan-STARRS1 grizy and SDSS griz (AB) follow X0 like SkyMapper's griz, with the weak
  0.03 mag/dex metal-line term in g - r; z - y = -0.02 + 0.07 X0 + 0.03 X0^2.  No gravity.
* SDSS u (AB) is the metallicity band of SDSS (Ivezic et al. 2008, ApJ 684, 287: u - g at
  fixed g - r moves 0.2-0.3 mag per dex for F/G stars): ``u - g = 0.80 + 1.10 X0 + S_u f([Fe/H])
  + 0.7 B(Teff) (log g - 4.2)``, S_u = clip(0.06 + 0.20 X0, 0.10, 0.30) mag/dex with the
  same weakening below -1 dex as SkyMapper v, and 70 % of SkyMapper u's Balmer-jump
  gravity term.  SkyMapper v (Ca II H&K, up to 0.45 mag/dex) stays the most
  metallicity-sensitive band of all.

Each of these bands gets its own 0.008 mag cosmic scatter and the binary companion's
light (k = 0.9, 1.0, 1.1 for J, H, Ks; 1.2 for W1-W4; -1.4, -0.6, 0.1, 0.5, 0.7, 0.8 for
u, g, r, i, z, y).  Extinction: A_band = (A/E(B-V) of stellardb.catalog.surveys) E(B-V).

**Errors.**  Gaia: sigma_G = sqrt(0.3 mmag^2 + (0.6 mmag 10^(0.4 (G - 17)))^2),
BP: floor 0.8 mmag, 6 mmag at BP = 17; RP: floor 0.8 mmag, 4 mmag at RP = 16.
SkyMapper: sigma^2 = floor^2 + (0.217 10^(0.4 (m - m5)))^2 (0.217 mag is S/N = 5),
floors 0.015 (u, v) and 0.010 mag, 5-sigma depths m5 = 20.0, 20.2, 22.0, 21.8,
21.0, 20.4 for u, v, g, r, i, z: u and v are the shallow bands.
"""

from __future__ import annotations

import numpy as np

SKYMAPPER_BANDS = ("u", "v", "g", "r", "i", "z")
#: Wolf et al. 2018 (PASA 35, e010), A_band / E(B-V).
SKYMAPPER_R = {"u": 4.294, "v": 4.026, "g": 2.986, "r": 2.288, "i": 1.588, "z": 1.206}
SKYMAPPER_M5 = {"u": 20.0, "v": 20.2, "g": 22.0, "r": 21.8, "i": 21.0, "z": 20.4}
SKYMAPPER_FLOOR = {"u": 0.015, "v": 0.015, "g": 0.010, "r": 0.010, "i": 0.010, "z": 0.010}

#: Casagrande et al. 2021, Teff(X0, log g, [Fe/H]) coefficients c0..c14.
_C21 = (
    7980.8845, -4138.3457, 1264.9366, -130.4388, 0.0, 285.8393, -324.2196, 106.8511,
    -4.9825, 0.0, 4.5138, -203.7774, 126.6981, -14.7442, 40.7376,
)
_BINARY_K = {"u": -1.5, "v": -1.2, "g": -0.6, "bp": -0.5, "G": 0.0, "r": 0.1, "rp": 0.4, "i": 0.5, "z": 0.7}


def _c21_cubic(logg, feh):
    """Per-star coefficients (a0..a3) of Teff = a0 + a1 X + a2 X^2 + a3 X^3 (c4 = c9 = 0)."""
    c = _C21
    logg = np.asarray(logg, dtype=float)
    feh = np.asarray(feh, dtype=float)
    return (
        c[0] + c[5] * logg + c[10] * feh,
        c[1] + c[6] * logg + c[11] * feh + c[14] * feh * logg,
        c[2] + c[7] * logg + c[12] * feh,
        c[3] + c[8] * logg + c[13] * feh,
    )


def _cubic(a, x):
    return a[0] + x * (a[1] + x * (a[2] + x * a[3]))


def _cubic_slope(a, x):
    # beyond the validity range keep the edge slope, but never flatter than -800 K/mag
    return np.minimum(a[1] + x * (2 * a[2] + x * 3 * a[3]), -800.0)


def _validity_edges(logg):
    return 0.20, np.where(np.asarray(logg) > 3.2, 2.00, 2.55)


def casagrande_teff(x0, logg, feh) -> np.ndarray:
    """Teff (K) from (BP-RP)_0, log g and [Fe/H] by Casagrande et al. 2021, linearly continued."""
    x0 = np.asarray(x0, dtype=float)
    a = _c21_cubic(logg, feh)
    x_lo, x_hi = _validity_edges(logg)
    xc = np.clip(x0, x_lo, x_hi)
    return _cubic(a, xc) + _cubic_slope(a, xc) * (x0 - xc)


def intrinsic_bp_rp(teff_k, logg, feh, iterations: int = 30) -> np.ndarray:
    """Invert :func:`casagrande_teff` for X0 (Teff falls with X0 over the validity range)."""
    teff_k = np.asarray(teff_k, dtype=float)
    a = _c21_cubic(logg, feh)
    x_lo, x_hi = _validity_edges(logg)
    x_lo = np.full(teff_k.shape, x_lo)
    x_hi = np.broadcast_to(x_hi, teff_k.shape).astype(float)
    t_lo, t_hi = _cubic(a, x_lo), _cubic(a, x_hi)
    lo, hi = x_lo.copy(), x_hi.copy()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_hot = _cubic(a, mid) > teff_k
        lo = np.where(too_hot, mid, lo)
        hi = np.where(too_hot, hi, mid)
    x = 0.5 * (lo + hi)
    x = np.where(teff_k > t_lo, x_lo + (teff_k - t_lo) / _cubic_slope(a, x_lo), x)
    return np.where(teff_k < t_hi, x_hi + (teff_k - t_hi) / _cubic_slope(a, x_hi), x)


def gaia_extinction_coefficients(x0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R_G, R_BP, R_RP) per E(B-V), Casagrande et al. 2021, at X0 = (BP-RP)_0."""
    x = np.clip(x0, 0.0, 3.0)
    r_g = 2.609 - 0.475 * x + 0.053 * x**2
    r_bp = 2.998 - 0.140 * x - 0.175 * x**2 + 0.062 * x**3
    r_rp = 1.689 - 0.059 * x
    return r_g, r_bp, r_rp


def absolute_magnitudes(rng, abs_g, x0, teff_k, logg, feh, alpha_fe, is_dwarf) -> dict[str, np.ndarray]:
    """Absolute magnitudes in G, BP, RP and u..z (no extinction), with the hidden effects."""
    n = len(abs_g)
    x = x0 + rng.normal(0.0, 0.012, n)
    g_rp = 0.02 + 0.67 * x - 0.09 * x**2
    mags = {"G": abs_g.copy(), "rp": abs_g - g_rp, "bp": abs_g - g_rp + x}
    r = abs_g + 0.05 + 0.20 * x + 0.04 * x**2 + rng.normal(0, 0.008, n)
    g = r + (-0.22 + 0.80 * x - 0.10 * x**2 + 0.02 * feh) + rng.normal(0, 0.008, n)
    i = r - (-0.08 + 0.30 * x + 0.07 * x**2) + rng.normal(0, 0.008, n)
    z = i - (-0.05 + 0.12 * x + 0.05 * x**2) + rng.normal(0, 0.008, n)
    ca_h = feh + 0.5 * alpha_fe
    f_ca = np.where(ca_h > -1.0, ca_h, -1.0 + 0.55 * (ca_h + 1.0))
    sens = np.clip(0.08 + 0.26 * x, 0.10, 0.45)
    v = g + (0.25 + 0.45 * x + 0.10 * x**2 + sens * f_ca - 0.03 * (4.4 - logg) * x) + rng.normal(0, 0.008, n)
    balmer = 0.04 + 0.10 * np.clip((teff_k - 5200.0) / 1500.0, 0.0, 1.6)
    u = v + (0.35 + 0.05 * x + balmer * (logg - 4.2) + 0.06 * feh) + rng.normal(0, 0.008, n)
    mags.update(u=u, v=v, g=g, r=r, i=i, z=z)

    binary = is_dwarf & (rng.uniform(size=n) < 0.30)
    f_g = np.where(binary, 0.8 * rng.uniform(size=n) ** 3, 0.0)
    redness = rng.uniform(0.0, 1.5, n)
    for band, k in _BINARY_K.items():
        mags[band] = mags[band] - 2.5 * np.log10(1.0 + f_g * 10 ** (0.4 * k * redness))
    # what survey_absolute_magnitudes needs to give the same star the same hidden traits
    mags["_x"], mags["_abs_g_single"], mags["_f_g"], mags["_redness"] = x, abs_g, f_g, redness
    return mags


#: light of an unresolved companion per band, as _BINARY_K (J, H, Ks, W1-W4; ugrizy of PS1/SDSS)
_SURVEY_BINARY_K = {"j": 0.9, "h": 1.0, "ks": 1.1, "w1": 1.2, "w2": 1.2, "w3": 1.2, "w4": 1.2,
                    "u": -1.4, "g": -0.6, "r": 0.1, "i": 0.5, "z": 0.7, "y": 0.8}


def survey_absolute_magnitudes(rng, base: dict, teff_k, logg, feh) -> dict[str, dict[str, np.ndarray]]:
    """Absolute magnitudes of 2MASS, AllWISE, Pan-STARRS1 and SDSS bands (no extinction), for the
    stars of ``base`` (what :func:`absolute_magnitudes` returned), with this module's model.

    ``rng`` is a stream of its own, so adding these surveys leaves every Gaia and SkyMapper
    value of a seed as it was.  Returns {survey: {band: magnitudes}}.
    """
    x = base["_x"]
    n = x.size
    g = base["_abs_g_single"]
    feh = np.asarray(feh, dtype=float)
    logg = np.asarray(logg, dtype=float)
    xt = intrinsic_bp_rp(teff_k, np.full(n, 4.4), np.zeros(n))

    def scatter():
        return rng.normal(0.0, 0.008, n)

    giant = np.clip((3.5 - logg) / 1.5, 0.0, 1.0)
    jh_giant = 0.12 * np.clip(xt - 1.4, 0.0, 1.0) * giant
    j = g - (-0.02 + 1.39 * xt - 0.08 * xt**2 + 0.03 * feh) + scatter()
    h = g - (-0.10 + 2.01 * xt - 0.18 * xt**2 + 0.045 * feh) - jh_giant + scatter()
    ks = g - (-0.10 + 2.09 * xt - 0.16 * xt**2 + 0.05 * feh) - jh_giant + scatter()
    w1 = ks - (0.02 + 0.05 * np.clip(xt - 1.4, 0.0, 2.0)) + scatter()
    w2 = w1 - (-0.01 - 0.05 * np.clip(xt - 1.2, 0.0, 1.5) * (1.0 + 0.6 * giant) * (1.0 + 0.3 * np.clip(feh, -2.0, 0.5))) \
        + scatter()
    w3 = w2 - (0.02 + 0.03 * np.clip(xt - 1.5, 0.0, 2.0)) + scatter()
    w4 = w3 - 0.01 + scatter()

    def griz(r_g, gr_0, ri, iz):
        r = g + r_g[0] + r_g[1] * x + r_g[2] * x**2 + scatter()
        gg = r + (gr_0 + 0.83 * x - 0.10 * x**2 + 0.03 * feh) + scatter()
        i = r - (ri[0] + ri[1] * x + ri[2] * x**2) + scatter()
        z = i - (iz[0] + iz[1] * x + iz[2] * x**2) + scatter()
        return gg, r, i, z

    ps_g, ps_r, ps_i, ps_z = griz((0.10, 0.17, 0.04), -0.25, (-0.08, 0.32, 0.06), (-0.04, 0.13, 0.05))
    ps_y = ps_z - (-0.02 + 0.07 * x + 0.03 * x**2) + scatter()
    sd_g, sd_r, sd_i, sd_z = griz((0.07, 0.19, 0.04), -0.23, (-0.09, 0.30, 0.07), (-0.05, 0.12, 0.05))
    f_fe = np.where(feh > -1.0, feh, -1.0 + 0.55 * (feh + 1.0))
    s_u = np.clip(0.06 + 0.20 * x, 0.10, 0.30)
    balmer = 0.04 + 0.10 * np.clip((np.asarray(teff_k) - 5200.0) / 1500.0, 0.0, 1.6)
    sd_u = sd_g + (0.80 + 1.10 * x + s_u * f_fe + 0.7 * balmer * (logg - 4.2)) + scatter()

    out = {
        "tmass": {"j": j, "h": h, "ks": ks},
        "allwise": {"w1": w1, "w2": w2, "w3": w3, "w4": w4},
        "ps1": {"g": ps_g, "r": ps_r, "i": ps_i, "z": ps_z, "y": ps_y},
        "sdss": {"u": sd_u, "g": sd_g, "r": sd_r, "i": sd_i, "z": sd_z},
    }
    f_g, redness = base["_f_g"], base["_redness"]
    for bands in out.values():
        for band, m in bands.items():
            bands[band] = m - 2.5 * np.log10(1.0 + f_g * 10 ** (0.4 * _SURVEY_BINARY_K[band] * redness))
    return out


def gaia_mag_error(band: str, mag) -> np.ndarray:
    """1-sigma error (mag) of Gaia mean G, BP or RP at magnitude ``mag``."""
    floor, scale, ref = {"G": (0.0003, 0.0006, 17.0), "bp": (0.0008, 0.006, 17.0), "rp": (0.0008, 0.004, 16.0)}[band]
    return np.hypot(floor, scale * 10 ** (0.4 * (mag - ref)))


def skymapper_mag_error(band: str, mag) -> np.ndarray:
    """1-sigma PSF-magnitude error (mag) of SkyMapper ``band`` at ``mag``."""
    return np.hypot(SKYMAPPER_FLOOR[band], 0.217 * 10 ** (0.4 * (mag - SKYMAPPER_M5[band])))
