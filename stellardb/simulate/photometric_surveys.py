"""What 2MASS, AllWISE, Pan-STARRS1 and SDSS would publish about the simulated stars.

The colours come from :func:`stellardb.simulate.photometry.survey_absolute_magnitudes`
(which band carries what, and why); here are each survey's sky, epochs, depth,
errors and missing-value conventions, with the column names, units and nulls of the
real catalogues (:mod:`stellardb.catalog.surveys`).

Model
-----
**2MASS PSC** (all sky; jdate JD 2450600-2451900, mid-1997 to early 2001; Vega).
sigma^2 = 0.02^2 + (0.1086 10^(0.4 (m - m10)))^2 with the 10-sigma limits J 15.8,
H 15.1, Ks 14.3 (Skrutskie et al. 2006).  A source is in the catalogue when one band
reaches S/N 7; a band below S/N 5 is an upper limit, written as the survey does: *_m
holds the limit, *_msigcom is empty and ph_qual has U (A: S/N >= 10, B: >= 7, C: >= 5).
Positions: the star moved by its proper motion from J2016.0 back to jdate (15-19
years), plus 0.07-0.3 arcsec of scatter (0.1 arcsec at Ks = 14.3).

**AllWISE** (all sky; w1mjdmean MJD 55200-55600, 2010; Vega).  5-sigma limits W1 16.9,
W2 15.9, W3 11.4, W4 8.0; floors 0.02, 0.02, 0.03, 0.05 mag.  In the catalogue with
S/N >= 5 in W1 or W2; S/N < 2 is an upper limit (w?mpro the limit, w?sigmpro empty,
U in ph_qual).  Position scatter 0.05-0.5 arcsec.

**Pan-STARRS1 DR2** (dec > -30 deg; epochMean MJD 55000-56800; AB).  5-sigma depths of
the mean photometry g 22.0, r 21.8, i 21.5, z 20.9, y 19.7 (Chambers et al. 2016,
single-epoch), floor 0.01 mag.  Saturated (true magnitude brighter than 13.5 in a band)
or undetected (S/N < 5) bands are -999, as MAST writes them; 13.5-14.5 mag gets 0.03 mag
more scatter (the onset of saturation).

**SDSS DR17** (the north Galactic cap, b > 30 deg and dec > -5 deg, and Stripe 82, |dec| <
1.25 deg with ra > 310 or < 60 deg; mjd 51075-54560; AB).  Depths u 22.0, g 22.2, r 22.2,
i 21.3, z 20.5, floors 0.02 (u) and 0.01.  Asinh magnitudes are always published, so a
faint band has a large error instead of a null; a star brighter than 14 mag in any band
is saturated and gets ``clean = 0`` (stellardb then stores no photometry for it).

Each survey loses 1 per cent of its stars at random (masks, artefacts).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from stellardb.catalog.astrometry import mjd_to_jyear, propagate, tangent_offset
from stellardb.catalog.surveys import SURVEYS

GAIA_REF_EPOCH = 2016.0
LOST_FRACTION = 0.01
#: first id of each survey's rows (ids are this plus the star's global index)
FIRST_ID = {"tmass": 1_000_000_000, "allwise": 3_000_000_000_000, "ps1": 100_000_000_000_000_000,
            "sdss": 1_237_650_000_000_000_000}

TMASS_M10 = {"j": 15.8, "h": 15.1, "ks": 14.3}
WISE_M5 = {"w1": 16.9, "w2": 15.9, "w3": 11.4, "w4": 8.0}
WISE_FLOOR = {"w1": 0.02, "w2": 0.02, "w3": 0.03, "w4": 0.05}
PS1_M5 = {"g": 22.0, "r": 21.8, "i": 21.5, "z": 20.9, "y": 19.7}
SDSS_M5 = {"u": 22.0, "g": 22.2, "r": 22.2, "i": 21.3, "z": 20.5}
PS1_NULL = -999.0
SDSS_NULL = -9999.0


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _positions(rng, stars, k, epoch_yr, sigma_arcsec):
    """True J2016.0 positions of stars ``k`` moved to ``epoch_yr``, plus Gaussian scatter."""
    ra, dec = propagate(stars.ra_deg[k], stars.dec_deg[k], stars.pmra_mas_yr[k], stars.pmdec_mas_yr[k],
                        epoch_yr - GAIA_REF_EPOCH)
    return tangent_offset(ra, dec, rng.normal(0, 1, k.size) * sigma_arcsec, rng.normal(0, 1, k.size) * sigma_arcsec)


def _apparent(absmag: dict, survey: str, dm, ebv) -> dict:
    s = SURVEYS[survey]
    return {b.name: absmag[b.name] + dm + b.r_ebv * ebv for b in s.bands}


def tmass(rng, stars, mags, dm, ebv, gidx):
    true = _apparent(mags["tmass"], "tmass", dm, ebv)
    n = dm.size
    obs, sig, snr = {}, {}, {}
    for b, m10 in TMASS_M10.items():
        sig[b] = np.hypot(0.02, 0.1086 * 10 ** (0.4 * (true[b] - m10)))
        snr[b] = 1.0857 / (0.1086 * 10 ** (0.4 * (true[b] - m10)))
        obs[b] = true[b] + rng.normal(0, 1, n) * sig[b]
    keep = np.flatnonzero((np.maximum.reduce([snr[b] for b in TMASS_M10]) >= 7.0) & (rng.uniform(size=n) >= LOST_FRACTION))
    jdate = rng.uniform(2450600.5, 2451900.5, keep.size)
    pos_sig = np.hypot(0.07, 0.1 * 10 ** (0.4 * (np.minimum(true["ks"][keep], 16.0) - 14.3)))
    ra, dec = _positions(rng, stars, keep, 2000.0 + (jdate - 2451545.0) / 365.25, pos_sig)
    cols = {"pts_key": FIRST_ID["tmass"] + gidx[keep], "ra": ra, "dec": dec,
            "err_maj": _f32(pos_sig * 1.15), "err_min": _f32(pos_sig * 0.85),
            "err_ang": rng.integers(0, 180, keep.size).astype(np.int16), "jdate": np.round(jdate, 4)}
    qual = []
    for b, col in (("j", "j"), ("h", "h"), ("ks", "k")):
        s = snr[b][keep]
        detected = s >= 5.0
        limit = TMASS_M10[b] + 0.75 + rng.normal(0, 0.1, keep.size)
        cols[f"{col}_m"] = _f32(np.round(np.where(detected, obs[b][keep], limit), 3))
        cols[f"{col}_msigcom"] = pa.array(_f32(np.round(sig[b][keep], 3)), mask=~detected)
        qual.append(np.where(s >= 10, "A", np.where(s >= 7, "B", np.where(detected, "C", "U"))))
    cols["ph_qual"] = pa.array(np.char.add(np.char.add(qual[0], qual[1]), qual[2]).astype(object))
    cols["cc_flg"] = pa.array(np.full(keep.size, "000", dtype=object))
    cols["designation"] = pa.array(_designations(ra, dec))
    order = ["designation", "pts_key", "ra", "dec", "err_maj", "err_min", "err_ang", "j_m", "j_msigcom", "h_m",
             "h_msigcom", "k_m", "k_msigcom", "ph_qual", "cc_flg", "jdate"]
    return pa.table({c: cols[c] for c in order}), keep


def allwise(rng, stars, mags, dm, ebv, gidx):
    true = _apparent(mags["allwise"], "allwise", dm, ebv)
    n = dm.size
    obs, sig, snr = {}, {}, {}
    for b, m5 in WISE_M5.items():
        noise = 0.217 * 10 ** (0.4 * (true[b] - m5))
        sig[b] = np.hypot(WISE_FLOOR[b], noise)
        snr[b] = 1.0857 / noise
        obs[b] = true[b] + rng.normal(0, 1, n) * sig[b]
    keep = np.flatnonzero(((snr["w1"] >= 5) | (snr["w2"] >= 5)) & (rng.uniform(size=n) >= LOST_FRACTION))
    mjd = rng.uniform(55200.0, 55600.0, keep.size)
    pos_sig = np.hypot(0.05, 0.5 * 10 ** (0.4 * (np.minimum(true["w1"][keep], 19.0) - 16.9)))
    ra, dec = _positions(rng, stars, keep, mjd_to_jyear(mjd), pos_sig)
    cols = {"cntr": FIRST_ID["allwise"] + gidx[keep], "ra": ra, "dec": dec, "sigra": _f32(pos_sig),
            "sigdec": _f32(pos_sig), "w1mjdmean": np.round(mjd, 5)}
    qual = []
    for b, m5 in WISE_M5.items():
        s = snr[b][keep]
        detected = s >= 2.0
        limit = m5 + 1.0 + rng.normal(0, 0.1, keep.size)
        cols[f"{b}mpro"] = _f32(np.round(np.where(detected, obs[b][keep], limit), 3))
        cols[f"{b}sigmpro"] = pa.array(_f32(np.round(sig[b][keep], 3)), mask=~detected)
        qual.append(np.where(s >= 10, "A", np.where(s >= 3, "B", np.where(detected, "C", "U"))))
    q = qual[0]
    for more in qual[1:]:
        q = np.char.add(q, more)
    cols["ph_qual"] = pa.array(q.astype(object))
    cols["cc_flags"] = pa.array(np.full(keep.size, "0000", dtype=object))
    cols["ext_flg"] = np.zeros(keep.size, np.int16)
    cols["designation"] = pa.array(_designations(ra, dec, decimals=True))
    order = ["cntr", "designation", "ra", "dec", "sigra", "sigdec", "w1mpro", "w1sigmpro", "w2mpro", "w2sigmpro",
             "w3mpro", "w3sigmpro", "w4mpro", "w4sigmpro", "ph_qual", "cc_flags", "ext_flg", "w1mjdmean"]
    return pa.table({c: cols[c] for c in order}), keep


def ps1(rng, stars, mags, dm, ebv, gidx):
    true = _apparent(mags["ps1"], "ps1", dm, ebv)
    n = dm.size
    obs, sig, usable = {}, {}, {}
    for b, m5 in PS1_M5.items():
        noise = 0.217 * 10 ** (0.4 * (true[b] - m5))
        extra = np.where((true[b] > 13.5) & (true[b] < 14.5), 0.03, 0.0)
        sig[b] = np.sqrt(0.01**2 + noise**2 + extra**2)
        obs[b] = true[b] + rng.normal(0, 1, n) * sig[b]
        usable[b] = (1.0857 / noise >= 5.0) & (true[b] >= 13.5)
    in_sky = stars.dec_deg > -30.0
    detected = np.logical_or.reduce([1.0857 / (0.217 * 10 ** (0.4 * (true[b] - m5))) >= 5 for b, m5 in PS1_M5.items()])
    keep = np.flatnonzero(in_sky & detected & (rng.uniform(size=n) >= LOST_FRACTION))
    mjd = rng.uniform(55000.0, 56800.0, keep.size)
    pos_sig = np.hypot(0.015, 0.1 * 10 ** (0.4 * (np.clip(true["r"][keep], 14.0, 23.0) - 21.0)))
    ra, dec = _positions(rng, stars, keep, mjd_to_jyear(mjd), pos_sig)
    cols = {"objID": FIRST_ID["ps1"] + gidx[keep], "raMean": ra, "decMean": dec,
            "raMeanErr": _f32(pos_sig), "decMeanErr": _f32(pos_sig), "epochMean": np.round(mjd, 5),
            "nDetections": rng.integers(3, 90, keep.size).astype(np.int16)}
    for b in PS1_M5:
        ok = usable[b][keep]
        cols[f"{b}MeanPSFMag"] = _f32(np.where(ok, np.round(obs[b][keep], 4), PS1_NULL))
        cols[f"{b}MeanPSFMagErr"] = _f32(np.where(ok, np.round(sig[b][keep], 4), PS1_NULL))
    return pa.table(cols), keep


def sdss_footprint(ra_deg, dec_deg, b_deg) -> np.ndarray:
    stripe82 = (np.abs(dec_deg) < 1.25) & ((ra_deg > 310.0) | (ra_deg < 60.0))
    return ((b_deg > 30.0) & (dec_deg > -5.0)) | stripe82


def sdss(rng, stars, mags, dm, ebv, gidx):
    true = _apparent(mags["sdss"], "sdss", dm, ebv)
    n = dm.size
    obs, sig = {}, {}
    for b, m5 in SDSS_M5.items():
        noise = 0.217 * 10 ** (0.4 * (np.minimum(true[b], m5 + 2.5) - m5))
        sig[b] = np.hypot(0.02 if b == "u" else 0.01, noise)
        # asinh magnitudes stay finite for faint sources: at most 2.5 mag past the depth, and the
        # noise of a luptitude saturates too (Lupton et al. 1999): never beyond depth + 4 mag
        obs[b] = np.minimum(np.minimum(true[b], m5 + 2.5) + rng.normal(0, 1, n) * sig[b], m5 + 4.0)
    detected = (1.0857 / (0.217 * 10 ** (0.4 * (true["r"] - SDSS_M5["r"]))) >= 5)
    keep = np.flatnonzero(sdss_footprint(stars.ra_deg, stars.dec_deg, stars.b_deg) & detected
                          & (rng.uniform(size=n) >= LOST_FRACTION))
    mjd = rng.uniform(51075.0, 54560.0, keep.size)
    pos_sig = np.hypot(0.03, 0.1 * 10 ** (0.4 * (np.clip(true["r"][keep], 14.0, 23.0) - 21.0)))
    ra, dec = _positions(rng, stars, keep, mjd_to_jyear(mjd), pos_sig)
    saturated = np.logical_or.reduce([true[b][keep] < 14.0 for b in SDSS_M5])
    cols = {"objID": FIRST_ID["sdss"] + gidx[keep], "ra": ra, "dec": dec, "raErr": _f32(pos_sig),
            "decErr": _f32(pos_sig), "mjd": np.round(mjd, 3), "type": np.full(keep.size, 6, np.int16),
            "clean": (~saturated).astype(np.int16)}
    for b in SDSS_M5:
        cols[f"psfMag_{b}"] = _f32(np.round(obs[b][keep], 3))
        cols[f"psfMagErr_{b}"] = _f32(np.round(sig[b][keep], 3))
    return pa.table(cols), keep


def _designations(ra_deg, dec_deg, decimals: bool = False) -> list[str]:
    """2MASS (hhmmssss+ddmmsss) or AllWISE (Jhhmmss.ss+ddmmss.s) style names of the positions."""
    out = []
    for ra, dec in zip(np.asarray(ra_deg).tolist(), np.asarray(dec_deg).tolist()):
        h = ra / 15.0
        hh, mm = int(h), int((h * 60) % 60)
        ss = (h * 3600) % 60
        sign = "+" if dec >= 0 else "-"
        d = abs(dec)
        dd, dm_ = int(d), int((d * 60) % 60)
        ds = (d * 3600) % 60
        if decimals:
            out.append(f"J{hh:02d}{mm:02d}{ss:05.2f}{sign}{dd:02d}{dm_:02d}{ds:04.1f}")
        else:
            out.append(f"{hh:02d}{mm:02d}{int(ss * 100):04d}{sign}{dd:02d}{dm_:02d}{int(ds * 10):03d}")
    return out


BUILDERS = {"tmass": tmass, "allwise": allwise, "ps1": ps1, "sdss": sdss}


def build(rng, stars, base_mags, ebv, gidx) -> tuple[dict[str, pa.Table], dict[str, np.ndarray]]:
    """The four survey tables for ``stars`` and, per survey, each star's id (-1: not in it)."""
    from stellardb.simulate.photometry import survey_absolute_magnitudes

    absmag = survey_absolute_magnitudes(rng, base_mags, stars.teff_k, stars.logg, stars.feh)
    dm = 5.0 * np.log10(stars.distance_pc / 10.0)
    tables, ids = {}, {}
    for name, builder in BUILDERS.items():
        table, keep = builder(rng, stars, absmag, dm, ebv, gidx)
        tables[name] = table
        star_id = np.full(dm.size, -1, dtype=np.int64)
        star_id[keep] = FIRST_ID[name] + gidx[keep]
        ids[name] = star_id
    return tables, ids
