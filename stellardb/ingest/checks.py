"""Checks a staged file must pass before its rows are stored: columns, types, positions, units, keys.

Each raises a one-line :class:`stellardb.errors.UserError` that names the file, the column, the
offending values and rows, and the likely mistake (a unit, a swapped column) with its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stellardb.catalog import db
from stellardb.catalog.healpix import GAIA_SOURCE_ID_SHIFT, radec_to_healpix
from stellardb.errors import UserError
from stellardb.catalog.surveys import NEW_SURVEYS, SURVEYS
from stellardb.ingest.specs import STAGE, NUMERIC_TYPES, FLOAT_TYPES, DERIVED, TableSpec, TABLES


def check_mapping(mapping: dict[str, str], renames: dict[str, str], header: list[str], targets, path) -> None:
    """--rename must name a file column, and no two file columns may land in one stored column."""
    lower = {h.lower() for h in header}
    renamed = {old.lower() for old in renames}
    for old, new in renames.items():
        if old not in header and old.lower() not in lower:
            shown = ", ".join(header[:12]) + (" ..." if len(header) > 12 else "")
            raise UserError(f"{path}: --rename {old}=... names no column of the file (columns: {shown}).")
        if new == "":
            continue  # OLD= : the column is left out on purpose
        if new in DERIVED:
            raise UserError(f"{path}: --rename {old}={new}: {new} is computed by stellardb and cannot come from a file.")
        if new not in targets:
            shown = ", ".join(c for c in targets if c not in DERIVED)
            raise UserError(f"{path}: --rename {old}={new}: the table has no column {new} (its columns: {shown}); "
                            "to store a column under its own name, use --keep.")
        if new.lower() in lower and new.lower() != old.lower() and new.lower() not in renamed:
            raise UserError(f"{path}: --rename {old}={new}: the file already has a column {new}, which would be "
                            f"discarded; leave it out (--rename {new}=) or store it elsewhere (--rename {new}=OTHER).")
    seen: dict[str, str] = {}
    for old, new in mapping.items():
        if new in targets and new not in DERIVED:
            if new in seen:
                raise UserError(
                    f"{path}: columns {seen[new]!r} and {old!r} both map to {new}; drop one mapping "
                    f"(--rename {old}=something_else)."
                )
            seen[new] = old


def check_required(spec: TableSpec, present: dict[str, str], header: list[str], path: Path) -> None:
    missing = [c for c in spec.required if c not in present]
    if spec.name == "sos":
        if "source_id" not in present and not ("ra" in present and "dec" in present):
            missing = ["source_id (or ra and dec)"]
        elif not ({"teff", "logg", "feh"} & set(present)):
            missing = ["teff, logg or feh"]
    if not missing:
        return
    hint = which_table(header)
    if hint and hint != spec.name:
        raise UserError(
            f"{path} looks like a {hint} file, not {spec.name}: it lacks {', '.join(missing)}. "
            f"Use `stellardb ingest {hint} {path.name}`."
        )
    raise UserError(
        f"{path}: missing required column {', '.join(missing)} for table {spec.name}. If it is spelled differently, "
        f"use --rename OLD=NEW or --preset (see `stellardb ingest --help`)."
    )


def which_table(header: list[str]) -> str | None:
    lower = {h.lower() for h in header}
    best, best_score = None, 0
    for spec in TABLES.values():
        if spec.name == "sos":
            continue
        score = sum(c.lower() in lower for c in spec.signature) / len(spec.signature)
        if score > best_score:
            best, best_score = spec.name, score
    return best if best_score >= 0.6 else None


def check_types(con, spec, present, stage_types, targets, path, row: str) -> None:
    """Every value converts to the column's type, or the file is refused naming the first bad row."""
    for key in dict.fromkeys(("source_id", "object_id", *spec.key)):  # the survey ids: objID reaches 1.2e18
        if key not in present or targets.get(key) not in ("BIGINT", "UBIGINT"):
            continue
        old = present[key]
        q = db.quote_identifier(old)
        have = stage_types[old]
        if have in FLOAT_TYPES or have.startswith("DECIMAL"):
            raise UserError(
                f"{path}: column {old!r} (-> {key}) is floating point ({have}); 19-digit ids lose their last digits "
                f"as floats - re-export it as a 64-bit integer (or as text)."
            )
        if have == "VARCHAR":
            bad = con.execute(
                f"select {row} + 1, {q} from {STAGE} where {q} is not null "
                f"and not regexp_full_match(trim({q}), '-?[0-9]+') order by {row} limit 1"
            ).fetchone()
            if bad is not None:
                raise UserError(
                    f"{path}: column {old!r} (-> {key}) has {bad[1]!r} in data row {bad[0]}, not a whole number; ids "
                    f"must be written as integers (a float like 3.9e18 has lost digits) - re-export the column as int64."
                )
    checks = []
    for new, old in present.items():
        have, want = stage_types[old], targets[new]
        if have == want or (want in NUMERIC_TYPES and have in NUMERIC_TYPES and want in FLOAT_TYPES):
            continue
        if want == "VARCHAR":
            continue
        checks.append((new, old, want))
    for new, old, want in checks:
        q = db.quote_identifier(old)
        bad = con.execute(
            f"select {row} + 1, {q}::varchar from {STAGE} "
            f"where {q} is not null and try_cast({q} as {want}) is null order by {row} limit 1"
        ).fetchone()
        if bad is not None:
            raise UserError(
                f"{path}: column {old!r} (-> {new}, {want}) has a value {bad[1]!r} in data row {bad[0]} that is not "
                f"{want}; fix the file or map another column with --rename."
            )


def check_gaia_release(con, header: list[str], present: dict[str, str], stage_types: dict[str, str], path) -> None:
    """Refuse a Gaia DR2 (or DR1) file given as DR3.

    DR2 source_ids are not DR3's (many differ, and DR3 joins on them), and its
    positions are at J2015.5, so a DR2 row stored as DR3 would be matched wrongly
    and silently.  Told by its own columns, designations or epoch.
    """
    fix = ("stellardb's gaia table holds Gaia DR3 (gaiadr3.gaia_source, epoch J2016.0); download the DR3 rows, "
           "e.g. through gaiadr3.dr2_neighbourhood for a DR2 list.")
    dr2 = [h for h in header if h.lower() in GAIA_DR2_ONLY]
    if dr2:
        raise UserError(f"{path} is Gaia DR2, not DR3 (it has DR2's {', '.join(dr2[:3])} column{'s' if len(dr2) > 1 else ''}); {fix}")
    if "designation" in present and stage_types[present["designation"]] == "VARCHAR":
        q = db.quote_identifier(present["designation"])
        found = con.execute(f"select {q} from {STAGE} where upper(trim({q})) similar to 'GAIA DR[12] .*' limit 1").fetchone()
        if found:
            raise UserError(f"{path} is not Gaia DR3: its designations say {found[0]!r}; {fix}")
    if "ref_epoch" in present and stage_types[present["ref_epoch"]] in NUMERIC_TYPES:
        q = db.quote_identifier(present["ref_epoch"])
        found = con.execute(f"select {q} from {STAGE} where {q} in (2015.0, 2015.5) limit 1").fetchone()
        if found:
            release = "DR2" if found[0] == 2015.5 else "DR1"
            raise UserError(f"{path} has ref_epoch {found[0]}, Gaia {release}'s, not DR3's 2016.0; {fix}")


def check_positions(con, spec, present, path) -> None:
    if spec.position is None:
        return
    lon, lat = spec.position
    if lon not in present or lat not in present:
        return
    optional = spec.name == "sos"  # labels with a Gaia id need no position
    null_test = "false" if optional else f"{lon} is null or {lat} is null"
    checks = [
        (f"{null_test} or isnan({lon}) or isnan({lat})", f"a missing or NaN {lon}/{lat}", "every row needs a position"),
        (f"{lon} < 0 or {lon} >= 360", f"{lon} outside [0, 360) deg", "give positions in degrees, 0 <= ra < 360"),
        (f"{lat} < -90 or {lat} > 90", f"{lat} outside [-90, 90] deg", "give positions in degrees"),
    ]
    for cond, what, fix in checks:
        bad = con.execute(
            f"select _row + 1, {lon}, {lat}, count(*) over () from _ingest_typed where {cond} order by _row limit 1"
        ).fetchone()
        if bad is not None:
            raise UserError(
                f"{path}: {bad[3]} row(s) with {what}, first at data row {bad[0]} ({lon}={bad[1]}, {lat}={bad[2]}); {fix}."
            )


_MAG = "{c} < -2 or {c} > 30"


_MAG_FIX = "magnitudes lie between about -1 and 25; is the column a flux, or another column?"


def _survey_checks(s) -> list[tuple[str, str, str, str]]:
    """Range checks of a declared photometric survey: magnitudes, their errors, the epoch."""
    out = []
    for band in s.bands:
        # the brightest stars are far brighter in the infrared (Betelgeuse: Ks = -4.4, W1 about -5)
        lo = -2 if band.system == "AB" else -7
        out.append((s.name, band.mag, f"{db.quote_identifier(band.mag)} < {lo} or {db.quote_identifier(band.mag)} > 30",
                    f"{s.title} magnitudes lie between about {lo + 1} and 25; is the column a flux, or another column?"))
        out.append((s.name, band.err, f"{db.quote_identifier(band.err)} < 0 or {db.quote_identifier(band.err)} > 10",
                    "magnitude errors are positive and in mag (a few hundredths to about 1)"))
    if s.epoch_unit == "jd":
        out.append((s.name, s.epoch_column, f"{s.epoch_column} < 2415020 or {s.epoch_column} > 2488070",
                    f"{s.epoch_column} must be a Julian Date ({s.title}: about 2450600-2451900), not a year or an MJD"))
    elif s.epoch_unit == "mjd":
        out.append((s.name, s.epoch_column, f"{s.epoch_column} < 40000 or {s.epoch_column} > 70000",
                    f"{s.epoch_column} must be a Modified Julian Date (about 50000-60000), not a year or a Julian Date"))
    return out


#: (table, column, SQL condition that is wrong, what is wrong and the likely unit mistake).
#: Physical bounds with room to spare: a value outside cannot be right in these units.
RANGE_CHECKS = [
    ("skymapper", "mean_epoch", "mean_epoch < 40000 or mean_epoch > 70000",
     "mean_epoch must be a Modified Julian Date (SkyMapper's unit, about 56000-60000), not a year"),
    *[("skymapper", f"{b}_psf", _MAG.format(c=f"{b}_psf"), _MAG_FIX) for b in "uvgriz"],
    *[("skymapper", f"e_{b}_psf", f"e_{b}_psf < 0 or e_{b}_psf > 10",
       "magnitude errors are positive and in mag (a few hundredths to about 1)") for b in "uvgriz"],
    *[check for name in NEW_SURVEYS for check in _survey_checks(SURVEYS[name])],
    ("distances", "r_med_geo", "r_med_geo <= 0", "distances are in pc and must be positive"),
    ("distances", "r_med_geo", "r_med_geo < 1 or r_med_geo > 1000000",
     "distances are in pc (the nearest star is 1.3 pc away, the Milky Way about 30,000 pc across); kpc or parsec "
     "of another scale?"),
    ("gaia", "ref_epoch", "ref_epoch < 1900 or ref_epoch > 2100", "ref_epoch must be a Julian year (2016.0 for DR3)"),
    ("gaia", "parallax", "abs(parallax) > 1000",
     "parallax is in mas (the largest, Proxima Centauri, is 768 mas); another unit, or a shifted column?"),
    *[("gaia", c, f"abs({c}) > 20000",
       "proper motions are in mas/yr (the fastest star, Barnard's, moves 10,400 mas/yr); another unit, or a shifted "
       "column?") for c in ("pmra", "pmdec")],
    *[("gaia", c, _MAG.format(c=c), _MAG_FIX) for c in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag")],
    # (brown dwarfs in SWEET-Cat have 1,000 K; Y dwarfs 300 K)
    ("sos", "teff", "teff < 100 or teff > 100000",
     "Teff is in K (100-100,000): values of 3-5 are log10(Teff), negative ones missing-value codes (write NULL, or "
     "use a --preset that knows them)"),
    ("sos", "logg", "logg < -1.5 or logg > 10",
     "log g is log10 of the gravity in cm/s^2 (-1 for supergiants to 9 for white dwarfs); values above 100 are g "
     "itself, not its logarithm"),
    ("sos", "feh", "feh < -10 or feh > 2.5",
     "[Fe/H] is in dex relative to the Sun (-7 to +1); is it Z, a linear ratio, or a sentinel such as -99?"),
    # (errors only need to be positive and finite: real catalogues publish a few huge ones)
    ("sos", "e_teff", "e_teff < 0 or e_teff > 100000", "e_teff is a 1-sigma error in K (positive)"),
    ("sos", "e_logg", "e_logg < 0 or e_logg > 10", "e_logg is a 1-sigma error in dex (positive)"),
    ("sos", "e_feh", "e_feh < 0 or e_feh > 10", "e_feh is a 1-sigma error in dex (positive)"),
    ("sos", "ref_epoch", "ref_epoch < 1900 or ref_epoch > 2100",
     "ref_epoch is a Julian year (2000.0, 2016.0), not a Julian or Modified Julian Date"),
]


def check_ranges(con, spec, present, path, targets=None) -> None:
    """Values in the wrong unit would silently break the crossmatch or the features
    (Teff in log10 once won every label and gave "MAD 0.0 K"); inf is never a value.

    Every condition is counted in one pass over the rows (one query per check cost a
    2 M-row Gaia ingest several seconds); only a failing one is looked at again, to
    name its first row.
    """
    inf_fix = "infinity is not a measurement: write an empty value (NULL) for a missing one."
    checks = [(column, f"isinf({db.quote_identifier(column)})", inf_fix)
              for column, kind in (targets or {}).items() if column in present and kind in FLOAT_TYPES]
    checks += [(column, bad_if, fix) for table, column, bad_if, fix in RANGE_CHECKS
               if table == spec.name and column in present]
    if not checks:
        return
    counts = con.execute("select " + ", ".join(f"count_if({cond})" for _, cond, _ in checks)
                         + " from _ingest_typed").fetchone()
    for (column, cond, fix), n in zip(checks, counts):
        if not n:
            continue
        row, value = con.execute(f"select _row + 1, {db.quote_identifier(column)} from _ingest_typed where {cond} "
                                 "order by _row limit 1").fetchone()
        end = "" if fix.endswith(("?", ".")) else "."
        raise UserError(f"{path}: {n} row(s) with {column} = {value}, first at data row {row}; {fix}{end}")


#: How far (deg) a Gaia position may lie from the centre of the order-12 HEALPix pixel
#: its source_id encodes (pixels are 0.86 arcmin across; sources move by mas).
GAIA_POSITION_TOLERANCE_DEG = 0.5


def check_gaia_positions(con, path) -> None:
    """Refuse Gaia rows whose ra/dec contradict the sky position in their own source_id
    (ra/dec in radians, or columns shifted by one): such rows would be matched to the
    wrong stars with no sign of it."""
    rows = con.execute("select _row, source_id, ra, dec from _ingest_typed").fetchnumpy()
    sid = np.asarray(rows["source_id"], dtype=np.int64)
    ra, dec = np.asarray(rows["ra"], dtype=np.float64), np.asarray(rows["dec"], dtype=np.float64)
    encoded = sid >> GAIA_SOURCE_ID_SHIFT
    invalid = np.flatnonzero((encoded < 0) | (encoded >= 12 * 4 ** 12))
    if invalid.size:
        i = invalid[np.argmin(np.asarray(rows["_row"])[invalid])]
        raise UserError(f"{path}: {invalid.size:,} row(s) with a source_id that is no Gaia DR3 id (it must encode a "
                        f"HEALPix pixel: 0 <= source_id < {12 * 4 ** 12 * 2 ** 35}), first at data row "
                        f"{int(rows['_row'][i]) + 1} (source_id {int(sid[i])}); is it the right column?")
    differ = np.flatnonzero(radec_to_healpix(ra, dec) != encoded)
    if differ.size == 0:
        return
    import healpy  # only for the rare rows on a pixel edge, or the wrong ones

    lon, lat = healpy.pix2ang(4096, encoded[differ], nest=True, lonlat=True)
    cos_sep = (np.sin(np.radians(dec[differ])) * np.sin(np.radians(lat))
               + np.cos(np.radians(dec[differ])) * np.cos(np.radians(lat)) * np.cos(np.radians(ra[differ] - lon)))
    # (written as "not within": a NaN separation is not within the tolerance either)
    far = differ[~(np.degrees(np.arccos(np.clip(cos_sep, -1, 1))) <= GAIA_POSITION_TOLERANCE_DEG)]
    if far.size:
        i = far[np.argmin(np.asarray(rows["_row"])[far])]
        raise UserError(
            f"{path}: {far.size:,} row(s) whose ra/dec lie more than {GAIA_POSITION_TOLERANCE_DEG} deg from the sky "
            f"position their source_id encodes, first at data row {int(rows['_row'][i]) + 1} (source_id {int(sid[i])}, "
            f"ra={ra[i]}, dec={dec[i]}); are ra/dec in radians, or the columns shifted?")


def key_condition(spec) -> list[tuple[str, str]]:
    """(key columns, where-clause) groups whose keys must be unique."""
    if spec.name == "sos":
        return [
            ("survey, source_id", "source_id is not null"),
            ("survey, ra, dec", "source_id is null and ra is not null and dec is not null"),
        ]
    return [(", ".join(spec.key), " and ".join(f"{k} is not null" for k in spec.key))]


def check_keys(con, spec, path, on_duplicate: str = "error") -> int:
    """Refuse (or with ``skip``, drop and count) keys repeated in the file or already stored."""
    skipped = 0
    for key, where in key_condition(spec):
        cols = [c.strip() for c in key.split(",")]
        where_s = " and ".join("s." + w.strip() for w in where.split(" and "))
        join = " and ".join(f"t.{c} = s.{c}" for c in cols)
        if on_duplicate == "skip":
            # the rare path: materialise the rows so that duplicates can be deleted
            con.execute("create temp table if not exists _ingest_kept as select * from _ingest_typed")
            con.execute("create or replace temp view _ingest_typed as select * from _ingest_kept")
            before = con.execute("select count(*) from _ingest_kept").fetchone()[0]
            con.execute(
                f"delete from _ingest_kept where _row in (select _row from _ingest_kept where {where} "
                f"qualify row_number() over (partition by {key} order by _row) > 1)"
            )
            con.execute(
                f"delete from _ingest_kept where _row in (select s._row from _ingest_kept s "
                f"join {spec.name} t on {join} where {where_s})"
            )
            skipped += before - con.execute("select count(*) from _ingest_kept").fetchone()[0]
            continue
        dup = None if surely_unique(con, cols, where) else con.execute(
            f"select {key}, count(*) as n, min(_row) + 1, max(_row) + 1 from _ingest_typed where {where} "
            f"group by {key} having count(*) > 1 order by min(_row) limit 1"
        ).fetchone()
        if dup is not None:
            k = len(cols)
            raise UserError(
                f"{path}: duplicate {key} {fmt_key(dup[:k])} in data rows {dup[k + 1]} and {dup[k + 2]} "
                f"({dup[k]} rows); remove the repeated rows, or pass --on-duplicate skip to keep the first."
            )
        clash = con.execute(
            f"select {', '.join('s.' + c for c in cols)}, s._row + 1, i.file from _ingest_typed s "
            f"join {spec.name} t on {join} left join ingests i on i.ingest_id = t.ingest_id "
            f"where {where_s} order by s._row limit 1"
        ).fetchone()
        if clash is not None:
            k = len(cols)
            origin = clash[k + 1] or "an earlier file of this command"
            raise UserError(
                f"{path}: {key} {fmt_key(clash[:k])} (data row {clash[k]}) is already in table {spec.name}, "
                f"from {origin}; each row may be ingested once - remove it, or pass --on-duplicate skip."
            )
    return skipped


def surely_unique(con, cols: list[str], where: str) -> bool:
    """True if a single integer key has no repeat in the staged rows (NumPy: archive files
    come sorted by id, so mostly one pass over adjacent ids; DuckDB's group by took 0.4 s
    of a 2 M-row Gaia ingest).  False means: ask DuckDB, which also names the rows."""
    if len(cols) != 1:
        return False
    ids = con.execute(f"select {cols[0]} from _ingest_typed where {where}").fetchnumpy()[cols[0]]
    if np.ma.isMaskedArray(ids) or ids.dtype.kind not in "iu":
        return False
    if not nondecreasing(ids):
        ids = np.sort(ids)
    return not bool(np.any(ids[1:] == ids[:-1]))


def fmt_key(values) -> str:
    return "/".join(str(v) for v in values)


def count_keyless_rows(con, spec: TableSpec, path, n_rows: int) -> int:
    """Rows without their id (e.g. GBS stars that have no Gaia DR3 row; SWEET-Cat stars with
    neither Gaia id nor coordinates) are left out and reported."""
    n = n_rows - con.execute("select count(*) from _ingest_typed").fetchone()[0]
    if n == n_rows:
        need = "a Gaia source_id or ra/dec" if spec.name == "sos" else f"a {spec.key[0]}"
        raise UserError(f"{path}: no row has {need}; check the column mapping (--preset, --rename).")
    return n


#: Columns only Gaia DR2's gaia_source has (DR3 moved astrophysical parameters to other
#: tables and renamed the rest): a file with any of them is DR2.
GAIA_DR2_ONLY = ("teff_val", "teff_percentile_lower", "teff_percentile_upper", "a_g_val", "e_bp_min_rp_val",
                 "radius_val", "lum_val", "lum_percentile_lower", "lum_percentile_upper", "astrometric_pseudo_colour",
                 "priam_flags", "flame_flags")


def nondecreasing(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def check_survey_magnitudes(con, spec, present, path) -> None:
    """A flux column given as a magnitude: every value may lie in [-2, 30] (fluxes in Jy are tiny
    numbers), but a catalogue's magnitudes never have a median below 1 mag (the benchmark stars,
    among the brightest in the sky, have a median J of 3.6), while fluxes in Jy or maggies do."""
    if spec.name not in SURVEYS:
        return
    for band in SURVEYS[spec.name].bands:
        if band.mag not in present:
            continue
        col = db.quote_identifier(band.mag)
        median, n = con.execute(f"select median({col}), count({col}) from _ingest_typed").fetchone()
        if n >= 5 and median is not None and median < 1.0:
            raise UserError(
                f"{path}: {present[band.mag]} (stored as {band.mag}) has a median of {median:.3g}, which is no "
                f"{SURVEYS[spec.name].title} magnitude ({band.system}, about 5-25 mag); is it a flux? Give the "
                f"magnitude column, or convert (m = -2.5 log10(flux / zero point)).")
