"""Rebuild the small real-data fixtures in tests/data/real/ from the full public files.

The tests read only what the repository holds, so we commit small, deterministic cuts
of the real public files whose origins tests/data/real/SOURCE.md gives:

- ``gbs_v3_lite_subset.fits``: all 192 rows of the GBS v3 "lite" FITS, only the columns
  stellardb needs (Gaia DR3, GSP-Phot, Bailer-Jones, reference labels).
- ``sweetcat_subset.csv``: SWEET-Cat rows, all 48 columns, lines copied byte for byte.
- ``pastel_v1.2_subset.fits``: ~1500 PASTEL rows, all 5 columns, including every row
  that matches a GBS star within 3 arcsec.

FITS cuts copy the stored bytes of each kept cell unchanged (big-endian values, TNULL
integers, NaN floats, NULL logicals, blank strings) and the column keywords (TFORM,
TUNIT, TNULL, TUCD, TCOMM, ...), so the copy reads exactly like the original.

Usage::

    .venv/bin/python tests/data/make_real_fixtures.py --src DIR            # rewrite the fixtures
    .venv/bin/python tests/data/make_real_fixtures.py --src DIR --check    # rebuild in memory, compare
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
OUT = HERE / "real"

GBS_SRC = "gbs_v3/gbs_v3_tmass_gaiadr3_hip_allwise_all_lite.fits"
GBS_FULL_SRC = "gbs_v3/gbs_v3_tmass_gaiadr3_hip_allwise_all_columns.fits"
SWEETCAT_SRC = "sweetcat/SWEETCAT_Dataframe.csv"
PASTEL_SRC = "pristine_training_inputs/pastel_v1.2.fits"

GBS_OUT = "gbs_v3_lite_subset.fits"
SWEETCAT_OUT = "sweetcat_subset.csv"
PASTEL_OUT = "pastel_v1.2_subset.fits"
GBS_PHOT_OUT = "gbs_v3_tmass_allwise_subset.fits"
#: the 2MASS (Gaia archive copy, gaiadr1.tmass_original_valid) and AllWISE (allwise_original_valid)
#: columns of the full GBS v3 table, with the Gaia id that pairs them with the lite file
GBS_PHOT_COLUMNS = [
    "source_id", "tmass_oid", "designation_tmass", "ra", "dec", "err_maj", "err_min", "err_ang", "j_m", "j_msigcom",
    "h_m", "h_msigcom", "ks_m", "ks_msigcom", "ph_qual_tmass", "j_date",
    "allwise_oid", "designation_allwise", "ra_allwise", "dec_allwise", "ra_error", "dec_error", "w1mpro",
    "w1mpro_error", "w2mpro", "w2mpro_error", "w3mpro", "w3mpro_error", "w4mpro", "w4mpro_error", "ph_qual_allwise",
    "w1mjd_mean",
]

# Columns kept from the GBS lite FITS, in the file's own order and spelling.
GBS_COLUMNS = [
    # ids and the 2MASS (J2000) position
    "hip", "hd", "ra_j2000", "dec_j2000",
    # reference labels (Soubiran et al. 2024); no [Fe/H] error in this file
    "teff", "e_teff", "logg", "e_logg", "fe_h",
    # Bailer-Jones 2021 distances (archive spelling)
    "r_med_geo", "r_lo_geo", "r_hi_geo",
    "r_med_photogeo", "r_lo_photogeo", "r_hi_photogeo", "flag",
    # Gaia DR3 gaia_source (source_id is spelled source_id_gaiadr3 here)
    "source_id_gaiadr3", "ref_epoch", "ra", "ra_error", "dec", "dec_error",
    "parallax", "parallax_error", "pmra", "pmra_error", "pmdec", "pmdec_error",
    "ruwe", "duplicated_source",
    "phot_g_mean_flux", "phot_g_mean_flux_error", "phot_g_mean_mag",
    "phot_bp_mean_flux", "phot_bp_mean_flux_error", "phot_bp_mean_mag",
    "phot_rp_mean_flux", "phot_rp_mean_flux_error", "phot_rp_mean_mag",
    "bp_rp", "l", "b",
    # GSP-Phot
    "teff_gspphot", "teff_gspphot_lower", "teff_gspphot_upper",
    "logg_gspphot", "logg_gspphot_lower", "logg_gspphot_upper",
    "mh_gspphot", "mh_gspphot_lower", "mh_gspphot_upper",
    "distance_gspphot", "ag_gspphot", "ebpminrp_gspphot",
]

SWEETCAT_HEAD_ROWS = 400
PASTEL_ROWS = 1500
MATCH_RADIUS_ARCSEC = 3.0
# PASTEL stars this close to a GBS star are kept too: near neighbours that a
# careless positional match could pick instead of the right star.
NEIGHBOUR_RADIUS_ARCSEC = 60.0
# Gaia DR3 epoch minus PASTEL's (J2000) epoch, for moving Gaia positions back.
GAIA_TO_J2000_YR = -16.0

# Column keywords copied per column (renumbered); anything else about a column is lost.
_COLUMN_KEYS = ("TTYPE", "TFORM", "TUNIT", "TNULL", "TSCAL", "TZERO", "TDISP", "TDIM",
                "TUCD", "TUTYP", "TCOMM")
_RAW_CODES = {"L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


# ----------  FITS: byte-exact row/column cuts


def _raw_dtype(header):
    """The on-disk record layout of a binary table (big-endian, L as 1 byte)."""
    names, formats = [], []
    for i in range(1, header["TFIELDS"] + 1):
        tform = header[f"TFORM{i}"].strip()
        match = re.fullmatch(r"(\d*)([A-Z])(.*)", tform)
        if match is None or match.group(2) not in _RAW_CODES and match.group(2) != "A":
            raise ValueError(f"TFORM{i} = {tform!r} is not supported by this copier")
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        if code == "A":
            formats.append(f"S{repeat}")
        else:
            formats.append((_RAW_CODES[code], (repeat,)) if repeat > 1 else _RAW_CODES[code])
        names.append(header[f"TTYPE{i}"])
    dtype = np.dtype({"names": names, "formats": formats})
    if dtype.itemsize != header["NAXIS1"]:
        raise ValueError(f"row width {dtype.itemsize} != NAXIS1 {header['NAXIS1']}")
    return dtype


def read_raw_bintable(path, ext=1):
    """Read a FITS binary table as stored: raw bytes, no null masking or byte swapping.

    Parameters
    ----------
    path : str or Path
        FITS file.
    ext : int
        HDU index of the binary table.

    Returns
    -------
    (numpy.ndarray, astropy.io.fits.Header)
        Structured array with the on-disk dtypes (``S1`` for logicals, so a NULL
        logical reads ``b''``), and the table header.
    """
    with fits.open(path, memmap=False) as hdul:
        hdu = hdul[ext]
        header = hdu.header.copy()
        start = hdu.fileinfo()["datLoc"]
    dtype = _raw_dtype(header)
    nbytes = header["NAXIS1"] * header["NAXIS2"]
    with open(path, "rb") as fh:
        fh.seek(start)
        buf = fh.read(nbytes)
    return np.frombuffer(buf, dtype=dtype), header


def cut_bintable(path, columns=None, rows=None, history=()):
    """Cut rows and/or columns out of a FITS binary table, bytes unchanged.

    Parameters
    ----------
    path : str or Path
        Source FITS file (table in HDU 1).
    columns : list of str, optional
        Columns to keep, by exact name; default all, in file order.
    rows : array of int, optional
        Row indices to keep (kept in the given order); default all.
    history : iterable of str
        HISTORY cards to add to the table header.

    Returns
    -------
    bytes
        A complete FITS file: an empty primary HDU and the cut table.
    """
    raw, header = read_raw_bintable(path)
    names = list(raw.dtype.names)
    columns = names if columns is None else list(columns)
    missing = [c for c in columns if c not in names]
    if missing:
        raise KeyError(f"columns not in {path}: {missing}")
    rows = np.arange(len(raw)) if rows is None else np.asarray(rows, dtype=np.int64)

    dtype = np.dtype([(c, raw.dtype.fields[c][0]) for c in columns])
    table = np.empty(len(rows), dtype=dtype)
    for c in columns:
        table[c] = raw[c][rows]

    new = fits.Header()
    new["XTENSION"] = ("BINTABLE", "binary table extension")
    new["BITPIX"] = (8, "8-bit bytes")
    new["NAXIS"] = (2, "2-dimensional table")
    new["NAXIS1"] = (dtype.itemsize, "width of table in bytes")
    new["NAXIS2"] = (len(rows), "number of rows in table")
    new["PCOUNT"] = (0, "size of special data area")
    new["GCOUNT"] = (1, "one data group")
    new["TFIELDS"] = (len(columns), "number of columns")
    for j, c in enumerate(columns, start=1):
        i = names.index(c) + 1
        for key in _COLUMN_KEYS:
            if f"{key}{i}" in header:
                card = header.cards[f"{key}{i}"]
                # STIL writes comments like "label for column 104": renumber them.
                comment = re.sub(rf"\bcolumn {i}$", f"column {j}", card.comment)
                new[f"{key}{j}"] = (card.value, comment)
    if "EXTNAME" in header:
        new["EXTNAME"] = header["EXTNAME"]
    for line in history:
        new.add_history(line)

    primary = io.BytesIO()
    fits.PrimaryHDU().writeto(primary)
    data = table.tobytes()
    data += b"\0" * (-len(data) % 2880)
    return primary.getvalue() + new.tostring().encode("ascii") + data


# ----------  selections


def _unit_vectors(ra_deg, dec_deg):
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _nearest(ra_deg, dec_deg, cat_ra_deg, cat_dec_deg):
    """Index of and separation (arcsec) to the nearest catalogue row, per position."""
    cat = _unit_vectors(cat_ra_deg, cat_dec_deg)
    pos = _unit_vectors(ra_deg, dec_deg)
    dots = np.clip(pos @ cat.T, -1.0, 1.0)
    idx = np.argmax(dots, axis=1)
    sep = np.degrees(np.arccos(dots[np.arange(len(pos)), idx])) * 3600.0
    return idx, sep


def _within(ra_deg, dec_deg, cat_ra_deg, cat_dec_deg, radius_arcsec):
    """Catalogue row indices within radius_arcsec of any of the positions."""
    cat = _unit_vectors(cat_ra_deg, cat_dec_deg)
    pos = _unit_vectors(ra_deg, dec_deg)
    cos_r = np.cos(np.radians(radius_arcsec / 3600.0))
    return np.flatnonzero(((pos @ cat.T) >= cos_r).any(axis=0))


def _gbs_positions(src):
    """GBS positions to match PASTEL against: 2MASS J2000, Gaia 2016, Gaia moved to 2000."""
    with fits.open(src / GBS_SRC) as hdul:
        d = hdul[1].data
        ra_j2000, dec_j2000 = np.array(d["ra_j2000"]), np.array(d["dec_j2000"])
        ra, dec = np.array(d["ra"], dtype=float), np.array(d["dec"], dtype=float)
        pmra, pmdec = np.array(d["pmra"], dtype=float), np.array(d["pmdec"], dtype=float)
    has_gaia = np.isfinite(ra)
    ra, dec, pmra, pmdec = ra[has_gaia], dec[has_gaia], pmra[has_gaia], pmdec[has_gaia]
    # Linear proper motion is plenty at 16 yr for a 3" match; pmra includes cos(dec).
    dec_2000 = dec + pmdec * GAIA_TO_J2000_YR / 3.6e6
    ra_2000 = ra + pmra * GAIA_TO_J2000_YR / 3.6e6 / np.cos(np.radians(dec))
    return {
        "tmass_j2000": (ra_j2000, dec_j2000),
        "gaia_2016": (ra, dec),
        "gaia_moved_to_2000": (ra_2000 % 360.0, dec_2000),
    }


def _gbs_source_ids(src):
    """Gaia DR3 source_ids of the GBS stars (TNULL rows dropped)."""
    raw, header = read_raw_bintable(src / GBS_SRC)
    i = raw.dtype.names.index("source_id_gaiadr3") + 1
    sid = raw["source_id_gaiadr3"].astype(np.int64)
    return set(sid[sid != header[f"TNULL{i}"]].tolist())


def sweetcat_lines(src):
    """Select SWEET-Cat lines, byte for byte, in file order.

    Kept: the header; the first SWEETCAT_HEAD_ROWS rows; every row holding a -1
    sentinel (64 of them have gaia_dr3 = -1); rows sharing a gaia_dr3 with another
    row (HD 41004 A and B); the rows whose gaia_dr3 is a GBS star (for a source_id
    join to the GBS fixture); rows with non-ASCII text (UTF-8, some double-encoded).

    Parameters
    ----------
    src : Path
        Folder holding the full public files.

    Returns
    -------
    (bytes, list of int)
        The CSV file content and the 0-based data-row indices kept.
    """
    raw = (src / SWEETCAT_SRC).read_bytes()
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines = lines[:-1]
    header, body = lines[0], lines[1:]
    records = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    fields, rows = records[0], records[1:]
    if len(rows) != len(body):
        raise ValueError("a SWEET-Cat field holds a newline; line-based copy would split it")
    gaia_col = fields.index("gaia_dr3")
    gbs_ids = _gbs_source_ids(src)

    counts = Counter(row[gaia_col] for row in rows)
    shared = {g for g, n in counts.items() if g != "-1" and n > 1}
    keep = set(range(min(SWEETCAT_HEAD_ROWS, len(rows))))
    for i, row in enumerate(rows):
        if row[gaia_col] in shared:
            keep.add(i)
        if any(v in ("-1", "-1.0") for v in row):
            keep.add(i)
        if row[gaia_col].lstrip("-").isdigit() and int(row[gaia_col]) in gbs_ids:
            keep.add(i)
        if any(b > 127 for b in body[i]):
            keep.add(i)
    keep = sorted(keep)
    return b"\n".join([header] + [body[i] for i in keep]) + b"\n", keep


def pastel_rows(src, sweetcat_rows):
    """Select PASTEL rows: GBS matches and neighbours, SWEET-Cat matches, then a thin fill.

    Parameters
    ----------
    src : Path
        Folder holding the full public files.
    sweetcat_rows : list of int
        SWEET-Cat data rows in the SWEET-Cat fixture (their PASTEL matches are kept).

    Returns
    -------
    (numpy.ndarray, dict)
        Sorted PASTEL row indices, and counts per selection reason.
    """
    raw, _ = read_raw_bintable(src / PASTEL_SRC)
    p_ra, p_dec = raw["RA"].astype(float), raw["DEC"].astype(float)
    keep, counts = set(), {}

    for name, (ra, dec) in _gbs_positions(src).items():
        idx, sep = _nearest(ra, dec, p_ra, p_dec)
        hit = idx[sep < MATCH_RADIUS_ARCSEC]
        counts[f"gbs_{name}_within_3arcsec"] = int(len(hit))
        keep.update(hit.tolist())
        near = _within(ra, dec, p_ra, p_dec, NEIGHBOUR_RADIUS_ARCSEC)
        keep.update(near.tolist())
    counts["gbs_any"] = len(keep)

    import pandas as pd  # only here: the rest of the script needs numpy + astropy only

    sw = pd.read_csv(src / SWEETCAT_SRC).iloc[sweetcat_rows]
    n_before = len(keep)
    for ra_col, dec_col in (("RA_EU", "DEC_EU"), ("RA_NASA", "DEC_NASA")):
        ok = sw[ra_col].notna() & sw[dec_col].notna()
        idx, sep = _nearest(sw.loc[ok, ra_col].to_numpy(float), sw.loc[ok, dec_col].to_numpy(float),
                            p_ra, p_dec)
        keep.update(idx[sep < MATCH_RADIUS_ARCSEC].tolist())
    counts["sweetcat_fixture_matches_added"] = len(keep) - n_before

    rest = np.setdiff1d(np.arange(len(raw)), np.fromiter(keep, dtype=np.int64))
    n_fill = max(PASTEL_ROWS - len(keep), 0)
    fill = rest[np.linspace(0, len(rest) - 1, n_fill).round().astype(np.int64)] if n_fill else []
    keep.update(np.asarray(fill).tolist())
    counts["evenly_spaced_fill"] = int(n_fill)
    return np.array(sorted(keep), dtype=np.int64), counts


# ----------  build


def build(src):
    """Build every fixture in memory.

    Parameters
    ----------
    src : Path
        Folder holding the full public files.

    Returns
    -------
    (dict, dict)
        File name -> bytes, and a summary of what was selected.
    """
    out, summary = {}, {}
    out[GBS_OUT] = cut_bintable(
        src / GBS_SRC,
        columns=GBS_COLUMNS,
        history=[f"Column subset of {Path(GBS_SRC).name}",
                 "(github.com/svenbuder/gbs_v3, MIT) made by stellardb",
                 "tests/data/make_real_fixtures.py: all rows, cell bytes unchanged."],
    )
    summary[GBS_OUT] = f"192 rows x {len(GBS_COLUMNS)} columns"
    out[GBS_PHOT_OUT] = cut_bintable(
        src / GBS_FULL_SRC,
        columns=GBS_PHOT_COLUMNS,
        history=[f"Column subset of {Path(GBS_FULL_SRC).name}",
                 "(github.com/svenbuder/gbs_v3, MIT) made by stellardb",
                 "tests/data/make_real_fixtures.py: all rows, cell bytes unchanged."],
    )
    summary[GBS_PHOT_OUT] = f"192 rows x {len(GBS_PHOT_COLUMNS)} columns (2MASS and AllWISE)"

    csv_bytes, sw_rows = sweetcat_lines(src)
    out[SWEETCAT_OUT] = csv_bytes
    summary[SWEETCAT_OUT] = f"{len(sw_rows)} rows x 48 columns"

    rows, counts = pastel_rows(src, sw_rows)
    out[PASTEL_OUT] = cut_bintable(
        src / PASTEL_SRC,
        rows=rows,
        history=[f"Row subset ({len(rows)} of 17922) of pastel_v1.2.fits",
                 "(github.com/ankearentsen/Pristine_code) made by stellardb",
                 "tests/data/make_real_fixtures.py: file order, cell bytes unchanged."],
    )
    summary[PASTEL_OUT] = f"{len(rows)} rows x 5 columns; " + ", ".join(
        f"{k}={v}" for k, v in counts.items())
    return out, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=os.environ.get("STELLARDB_REAL_DATA"),
                        help="folder holding the full public files, laid out as SOURCE.md names them "
                             "(env STELLARDB_REAL_DATA)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory and fail if a committed file differs")
    args = parser.parse_args(argv)
    if args.src is None or not Path(args.src).is_dir():
        parser.error(f"{args.src} not found. Pass --src FOLDER with the full public files (see SOURCE.md).")
    args.src = Path(args.src)

    files, summary = build(args.src)
    stale = []
    for name, content in files.items():
        path = OUT / name
        if len(content) > 500_000:
            raise SystemExit(f"{name} is {len(content)} bytes; committed data must stay < 500 kB")
        if args.check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(name)
        else:
            path.write_bytes(content)
        print(f"{name}: {len(content):,} B, {summary[name]}")
    if stale:
        raise SystemExit(f"out of date: {stale}. Run tests/data/make_real_fixtures.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
