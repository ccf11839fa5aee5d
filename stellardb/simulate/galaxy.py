"""The simulated Milky Way: where stars are, what they are, how far, how reddened.

The model (all numbers are our choices unless a reference is given)
--------------------------------------------------------------------
**Sky.**  Directions are drawn from a star-count surface density in Galactic
coordinates that rises toward the plane and the inner Galaxy,

    Sigma(l, b) = 0.12 + exp(-|b| / 9 deg) * (1 + 1.2 exp(-(l_w / 40 deg)^2)),

with ``l_w`` the longitude wrapped to (-180, 180]; only directions with
dec < +2 deg are kept (SkyMapper is a southern survey), or every direction with
``stellardb simulate --sky all`` (Pan-STARRS1 and SDSS cover the north).  The whole sky
south of +2 deg is covered, the south celestial pole and the RA 0/360 line included.

**Populations.**  Thin disk, thick disk and halo, with halo and thick-disk
fractions rising with |sin b| (0.06 + 0.20|sin b| and 0.15 + 0.20|sin b|).
[Fe/H] ~ N(-0.10, 0.20) thin, N(-0.55, 0.25) thick, N(-1.5, 0.5) halo, clipped to
[-2.5, +0.5]; [alpha/Fe] is 0.0 for the thin disk and 0.3 for thick disk and halo
(+-0.05).  [alpha/Fe] is hidden from every catalogue: it shifts SkyMapper v (Ca II
H&K measures [Ca/H], not [Fe/H]), one of the ways the photometry carries realistic,
imperfect information.

**Evolutionary stages** (fractions of a magnitude-limited sample): dwarfs 0.62,
subgiants 0.12, red giants 0.17, red clump 0.09 (clump stars with [Fe/H] < -1 are
made red giants, as the metal-poor clump is bluer, on the horizontal branch).

* dwarfs: Teff = 3500 + (Tmax - 3500) * Beta(2.5, b), Tmax 7800 K (thin),
  6500 K (thick), 6600 K (halo turn-off); log g from a zero-age relation
  interpolated through (3500 K, 4.90) ... (8000 K, 4.20) minus main-sequence
  evolution up to 0.45 dex for F stars, plus 0.06 * -[Fe/H];
* subgiants: Teff 4900..6300 K, log g = 3.45 + 0.6 (Teff - 4900)/1400 +- 0.08;
* red giants: log g = 3.5 - 3.0 * Beta(1.6, 2.2) (0.5..3.5), and
  Teff = 4650 + 260 (log g - 2.5) - 190 [Fe/H] +- 50 K (metal-poor giants are hotter);
* red clump: log g ~ N(2.45, 0.08), Teff = 4680 - 230 [Fe/H] +- 60 K.

Teff is clipped to [3500, 8000] K and log g to [0.5, 5.0].

**Luminosity.**  With mass M (dwarfs: (Teff/5772)^1.75 * 10^(0.08 [Fe/H]) Msun;
giants 0.8-2 Msun by population),
``log L/Lsun = log M + 4 log(Teff/5772) - (log g - 4.438)``,
``M_bol = 4.74 - 2.5 log L`` and ``M_G = M_bol - BC_G(Teff)`` with the BC_G
polynomials of Andrae et al. 2018 (A&A 616, A8, eq. 7 and table 4).

**Distances.**  Given its population and direction, a star's distance is drawn
from p(d) ∝ d^2 rho(d) on 5 pc .. 100 kpc, truncated where its apparent G (with
extinction) passes its detection limit G_lim ~ N(20.9, 0.25).  Densities (Juric et
al. 2008 shapes, R0 = 8 kpc, Z_sun = 25 pc): thin exp(-(R-R0)/2.6 kpc - |Z|/300 pc),
thick exp(-(R-R0)/3.6 kpc - |Z|/900 pc), halo (sqrt(R^2 + (Z/0.64)^2)/R0)^-2.8.

**Dust.**  The SFD-like map E(B-V)_SFD(l, b) = min(0.018 / max(|sin b|, 0.025), 4)
* (1 + 1.5 exp(-(l_w/25 deg)^2 - (b/3 deg)^2)) * patch, where ``patch`` is a fixed
log-normal (sigma 0.35) value per order-7 HEALPix pixel (27 arcmin), so nearby stars
share their dust.  The dust a star really sits behind is
``E(B-V) = 0.86 E_SFD (1 - exp(-d max(|sin b|, 0.025) / 125 pc))``: an exponential
dust layer 125 pc thick, and SFD's 14 per cent over-estimate (Schlafly &
Finkbeiner 2011).  SFD is the whole line of sight, so it over-corrects nearby
stars, as on the real sky.

**Motions.**  Isotropic velocity dispersions 35 (thin), 60 (thick), 180 km/s
(halo) per component, plus an asymmetric drift of 10, 40, 200 km/s toward
l = 270 deg, b = 0; ``mu = v_t / (4.74047 d_kpc)`` mas/yr.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stellardb.catalog.astrometry import ICRS_TO_GAL, galactic_to_icrs
from stellardb.simulate import photometry

THIN, THICK, HALO = 0, 1, 2
POPULATION_NAMES = ("thin_disk", "thick_disk", "halo")
DWARF, SUBGIANT, GIANT, CLUMP = 0, 1, 2, 3
STAGE_NAMES = ("dwarf", "subgiant", "red_giant", "red_clump")
STAGE_FRACTIONS = (0.62, 0.12, 0.17, 0.09)

DEC_MAX_DEG = 2.0
R0_PC = 8000.0
ZSUN_PC = 25.0
DUST_SCALE_HEIGHT_PC = 125.0
SFD_OVERESTIMATE = 1.0 / 0.86
K_PM = 4.740470446  # km/s per (mas/yr * kpc)

TEFF_RANGE_K = (3500.0, 8000.0)
LOGG_RANGE = (0.5, 5.0)
FEH_RANGE = (-2.5, 0.5)

_DUST_ORDER = 7
_DUST_MAP_SEED = 20240708  # fixed: the dust map is a property of the simulated sky


@dataclass
class Stars:
    """True properties of a batch of simulated stars (arrays of equal length)."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    l_deg: np.ndarray
    b_deg: np.ndarray
    population: np.ndarray
    stage: np.ndarray
    teff_k: np.ndarray
    logg: np.ndarray
    feh: np.ndarray
    alpha_fe: np.ndarray
    mass_msun: np.ndarray
    abs_g_mag: np.ndarray
    bp_rp0_mag: np.ndarray
    distance_pc: np.ndarray
    ebv_sfd: np.ndarray
    ebv_true: np.ndarray
    pmra_mas_yr: np.ndarray
    pmdec_mas_yr: np.ndarray

    def __len__(self) -> int:
        return len(self.ra_deg)

    def take(self, idx) -> "Stars":
        return Stars(**{k: v[idx] for k, v in self.__dict__.items()})


def sample_directions(rng: np.random.Generator, n: int, dec_max_deg: float = None) -> tuple[np.ndarray, ...]:
    """Draw (ra, dec, l, b) in degrees from Sigma(l, b), south of ``dec_max_deg`` (default +2 deg;
    90 for the whole sky)."""
    dec_max_deg = DEC_MAX_DEG if dec_max_deg is None else dec_max_deg
    out_l, out_b, out_ra, out_dec = [np.empty(0)], [np.empty(0)], [np.empty(0)], [np.empty(0)]
    have = 0
    sigma_max = 0.12 + 2.2
    while have < n:
        m = max(4 * (n - have), 1000)
        l_deg = rng.uniform(0.0, 360.0, m)
        b_deg = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, m)))
        l_w = (l_deg + 180.0) % 360.0 - 180.0
        sigma = 0.12 + np.exp(-np.abs(b_deg) / 9.0) * (1.0 + 1.2 * np.exp(-((l_w / 40.0) ** 2)))
        ra, dec = galactic_to_icrs(l_deg, b_deg)
        keep = (rng.uniform(0.0, sigma_max, m) < sigma) & (dec <= dec_max_deg)
        out_l.append(l_deg[keep])
        out_b.append(b_deg[keep])
        out_ra.append(ra[keep])
        out_dec.append(dec[keep])
        have += int(keep.sum())
    cat = lambda parts: np.concatenate(parts)[:n]  # noqa: E731
    return cat(out_ra), cat(out_dec), cat(out_l), cat(out_b)


_dust_patch_cache: np.ndarray | None = None


def sfd_ebv(l_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """The simulated SFD E(B-V) map (whole line of sight) at Galactic (l, b)."""
    import healpy

    global _dust_patch_cache
    if _dust_patch_cache is None:
        npix = 12 * 4**_DUST_ORDER
        _dust_patch_cache = np.exp(np.random.default_rng(_DUST_MAP_SEED).normal(0.0, 0.35, npix))
    pix = healpy.ang2pix(2**_DUST_ORDER, l_deg, b_deg, nest=True, lonlat=True)
    l_w = (l_deg + 180.0) % 360.0 - 180.0
    sin_b = np.maximum(np.abs(np.sin(np.radians(b_deg))), 0.025)
    smooth = np.minimum(0.018 / sin_b, 4.0) * (1.0 + 1.5 * np.exp(-((l_w / 25.0) ** 2) - (b_deg / 3.0) ** 2))
    return smooth * _dust_patch_cache[pix]


def sample_populations(rng: np.random.Generator, b_deg: np.ndarray) -> np.ndarray:
    sin_b = np.abs(np.sin(np.radians(b_deg)))
    f_halo = 0.06 + 0.20 * sin_b
    f_thick = 0.15 + 0.20 * sin_b
    u = rng.uniform(size=len(b_deg))
    return np.where(u < f_halo, HALO, np.where(u < f_halo + f_thick, THICK, THIN)).astype(np.int8)


def sample_chemistry(rng: np.random.Generator, pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(pop)
    mean = np.array([-0.10, -0.55, -1.5])[pop]
    sd = np.array([0.20, 0.25, 0.50])[pop]
    feh = np.clip(rng.normal(mean, sd), *FEH_RANGE)
    alpha = np.where(pop == THIN, 0.0, 0.3) + rng.normal(0.0, 0.05, n)
    return feh, alpha


_ZAMS_T = np.array([3500.0, 4000.0, 5000.0, 5800.0, 6500.0, 7500.0, 8000.0])
_ZAMS_LOGG = np.array([4.90, 4.75, 4.62, 4.52, 4.38, 4.25, 4.20])
_EVOL_T = np.array([3500.0, 5000.0, 5800.0, 6500.0, 8000.0])
_EVOL_DLOGG = np.array([0.0, 0.05, 0.25, 0.40, 0.45])


def sample_stellar_parameters(rng: np.random.Generator, pop: np.ndarray, feh: np.ndarray):
    """Stage, Teff (K), log g (dex) and mass (Msun) of each star, correlated as in real populations."""
    n = len(pop)
    stage = rng.choice(4, size=n, p=STAGE_FRACTIONS).astype(np.int8)
    stage[(stage == CLUMP) & (feh < -1.0)] = GIANT
    teff = np.empty(n)
    logg = np.empty(n)
    mass = np.empty(n)

    d = stage == DWARF
    tmax = np.array([7800.0, 6500.0, 6600.0])[pop[d]]
    beta_b = np.where(pop[d] == THIN, 2.2, 1.8)
    teff[d] = 3500.0 + (tmax - 3500.0) * rng.beta(2.5, beta_b)
    evol = np.interp(teff[d], _EVOL_T, _EVOL_DLOGG) * rng.uniform(size=d.sum()) ** 1.5
    logg[d] = np.interp(teff[d], _ZAMS_T, _ZAMS_LOGG) - evol - 0.06 * feh[d] + rng.normal(0, 0.02, d.sum())
    mass[d] = (teff[d] / 5772.0) ** 1.75 * 10 ** (0.08 * feh[d])

    s = stage == SUBGIANT
    ttop = np.where(pop[s] == THIN, 6300.0, 6100.0)
    teff[s] = rng.uniform(4900.0, ttop)
    logg[s] = 3.45 + 0.6 * (teff[s] - 4900.0) / 1400.0 + rng.normal(0, 0.08, s.sum())
    mass[s] = np.array([1.15, 0.95, 0.82])[pop[s]] * np.exp(rng.normal(0, 0.08, s.sum()))

    g = stage == GIANT
    logg[g] = 3.5 - 3.0 * rng.beta(1.6, 2.2, g.sum())
    teff[g] = 4650.0 + 260.0 * (logg[g] - 2.5) - 190.0 * feh[g] + rng.normal(0, 50.0, g.sum())

    c = stage == CLUMP
    logg[c] = rng.normal(2.45, 0.08, c.sum())
    teff[c] = 4680.0 - 230.0 * feh[c] + rng.normal(0, 60.0, c.sum())

    gc = g | c
    mass[gc] = np.array([1.3, 0.95, 0.82])[pop[gc]] * np.exp(rng.normal(0, 0.2 * (pop[gc] == THIN) + 0.05, gc.sum()))

    teff = np.clip(teff, *TEFF_RANGE_K)
    logg = np.clip(logg, *LOGG_RANGE)
    return stage, teff, logg, mass


def bolometric_correction_g(teff_k: np.ndarray) -> np.ndarray:
    """BC_G(Teff), Andrae et al. 2018 (A&A 616, A8) polynomials in (Teff - 5772 K)."""
    x = teff_k - 5772.0
    hot = np.polyval([-7.197e-15, 2.859e-11, -6.647e-08, 6.731e-05, 6.000e-02], x)
    cool = np.polyval([-4.183e-14, -8.966e-11, 3.737e-07, 1.977e-03, 1.749e00], x)
    return np.where(teff_k >= 4000.0, hot, cool)


def absolute_g(teff_k, logg, mass_msun) -> np.ndarray:
    log_l = np.log10(mass_msun) + 4.0 * np.log10(teff_k / 5772.0) - (logg - 4.438)
    return 4.74 - 2.5 * log_l - bolometric_correction_g(teff_k)


def _log_density(pop: np.ndarray, d_pc: np.ndarray, cos_b, sin_b, cos_l, sin_l) -> np.ndarray:
    """ln of the relative space density of each star's population along its sight line (stars x grid)."""
    x = R0_PC - d_pc * (cos_b * cos_l)[:, None]
    y = d_pc * (cos_b * sin_l)[:, None]
    z = np.abs(d_pc * sin_b[:, None] + ZSUN_PC)
    r_cyl = np.sqrt(x * x + y * y)
    h_r = np.array([2600.0, 3600.0, 1.0], dtype=d_pc.dtype)[pop][:, None]
    h_z = np.array([300.0, 900.0, 1.0], dtype=d_pc.dtype)[pop][:, None]
    out = -(r_cyl - R0_PC) / h_r - z / h_z
    halo = pop == HALO
    if halo.any():
        r_q = np.maximum(np.sqrt(r_cyl[halo] ** 2 + (z[halo] / 0.64) ** 2), 500.0)
        out[halo] = -2.8 * np.log(r_q / R0_PC)
    return out


_LN_D_GRID = np.linspace(np.log(5.0), np.log(1.0e5), 64)


def sample_distances(
    rng: np.random.Generator,
    pop, l_deg, b_deg, abs_g_mag, r_g, ebv_sfd, g_lim_mag,
) -> np.ndarray:
    """Distance (pc) from p(d) ∝ d^2 rho(d), truncated at the star's detection limit."""
    n = len(pop)
    out = np.empty(n)
    ln_d = _LN_D_GRID.astype(np.float32)
    d_grid = np.exp(ln_d)
    five_log_d = (5.0 * np.log10(d_grid / 10.0)).astype(np.float32)
    sin_b_abs = np.maximum(np.abs(np.sin(np.radians(b_deg))), 0.025)
    half = 0.5 * (_LN_D_GRID[1] - _LN_D_GRID[0])
    step = 50_000
    for lo in range(0, n, step):
        sl = slice(lo, min(lo + step, n))
        m = sl.stop - sl.start
        d = np.broadcast_to(d_grid, (m, len(d_grid)))
        lr, br = np.radians(l_deg[sl]), np.radians(b_deg[sl])
        f32 = lambda a: a.astype(np.float32)  # noqa: E731
        log_dens = _log_density(pop[sl], d, f32(np.cos(br)), f32(np.sin(br)), f32(np.cos(lr)), f32(np.sin(lr)))
        ebv = true_ebv(f32(ebv_sfd[sl])[:, None], d, f32(sin_b_abs[sl])[:, None])
        g_app = f32(abs_g_mag[sl])[:, None] + five_log_d + f32(r_g[sl])[:, None] * ebv
        # weight per ln d cell: d^3 rho(d) (d^2 from the volume element, d from d ln d)
        log_w = 3.0 * ln_d + log_dens
        log_w = np.where(g_app <= f32(g_lim_mag[sl])[:, None], log_w, -np.inf)
        peak = log_w.max(axis=1, keepdims=True)
        # a star too faint even at 5 pc (never happens for Teff >= 3500 K) sits at 5 pc
        peak = np.where(np.isfinite(peak), peak, 0.0)
        cdf = np.cumsum(np.exp(log_w - peak), axis=1)
        total = np.where(cdf[:, -1] > 0, cdf[:, -1], 1.0)
        u = rng.uniform(size=m) * total
        k = np.minimum((cdf < u[:, None]).sum(axis=1), len(d_grid) - 1)
        # jitter within the grid cell so distances are continuous
        out[sl] = np.exp(_LN_D_GRID[k] + rng.uniform(-half, half, m))
    return out


def true_ebv(ebv_sfd, distance_pc, sin_b_abs) -> np.ndarray:
    """E(B-V) in front of a star: SFD corrected for its over-estimate, times the dust layer fraction."""
    return ebv_sfd / SFD_OVERESTIMATE * (1.0 - np.exp(-distance_pc * sin_b_abs / DUST_SCALE_HEIGHT_PC))


def sample_proper_motions(rng, pop, l_deg, b_deg, ra_deg, dec_deg, distance_pc):
    """Proper motions (mas/yr) in ICRS, pmra including cos(dec)."""
    n = len(pop)
    sigma_v = np.array([35.0, 60.0, 180.0])[pop]
    drift = np.array([10.0, 40.0, 200.0])[pop]
    # 3D velocity in Galactic Cartesian (x to GC, y to l=90); the drift points to l=270 (-y).
    v_gal = rng.normal(0.0, 1.0, (3, n)) * sigma_v
    v_gal[1] -= drift
    v_icrs = ICRS_TO_GAL.T @ v_gal
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    e_ra = np.stack([-np.sin(ra), np.cos(ra), np.zeros(n)])
    e_dec = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    d_kpc = distance_pc / 1000.0
    pmra = (v_icrs * e_ra).sum(axis=0) / (K_PM * d_kpc)
    pmdec = (v_icrs * e_dec).sum(axis=0) / (K_PM * d_kpc)
    return pmra, pmdec


def simulate_stars(rng: np.random.Generator, n: int, dec_max_deg: float = None) -> Stars:
    """Draw ``n`` stars of the simulated southern sky, or of the sky south of ``dec_max_deg``
    (90: the whole sky) (see the module docstring)."""
    ra, dec, l_deg, b_deg = sample_directions(rng, n, dec_max_deg)
    pop = sample_populations(rng, b_deg)
    feh, alpha = sample_chemistry(rng, pop)
    stage, teff, logg, mass = sample_stellar_parameters(rng, pop, feh)
    abs_g = absolute_g(teff, logg, mass)
    bp_rp0 = photometry.intrinsic_bp_rp(teff, logg, feh)
    r_g = photometry.gaia_extinction_coefficients(bp_rp0)[0]
    ebv_sfd = sfd_ebv(l_deg, b_deg)
    g_lim = np.minimum(rng.normal(20.9, 0.25, n), 21.3)
    dist = sample_distances(rng, pop, l_deg, b_deg, abs_g, r_g, ebv_sfd, g_lim)
    sin_b_abs = np.maximum(np.abs(np.sin(np.radians(b_deg))), 0.025)
    ebv = true_ebv(ebv_sfd, dist, sin_b_abs)
    pmra, pmdec = sample_proper_motions(rng, pop, l_deg, b_deg, ra, dec, dist)
    return Stars(
        ra_deg=ra, dec_deg=dec, l_deg=l_deg, b_deg=b_deg, population=pop, stage=stage,
        teff_k=teff, logg=logg, feh=feh, alpha_fe=alpha, mass_msun=mass, abs_g_mag=abs_g,
        bp_rp0_mag=bp_rp0, distance_pc=dist, ebv_sfd=ebv_sfd, ebv_true=ebv,
        pmra_mas_yr=pmra, pmdec_mas_yr=pmdec,
    )
