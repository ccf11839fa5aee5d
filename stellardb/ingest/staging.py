"""Staging one file: read it into a scratch table, map its columns, check it, insert its rows.

The rows get stellardb's column names (a preset plus ``--rename``), stellardb's types, an
``ingest_id`` and their ``healpix_12``; a table is kept in HEALPix order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from stellardb.catalog import db
from stellardb.catalog.arrow import to_arrow
from stellardb.catalog.healpix import GAIA_SOURCE_ID_SHIFT, radec_to_healpix
from stellardb.errors import UserError
from stellardb.ingest import readers
from stellardb.ingest.presets import PRESETS, Preset, presets_for, resolve_names
from stellardb.ingest import checks
from stellardb.ingest.specs import STAGE, NUMERIC_TYPES, FLOAT_TYPES, DERIVED, TableSpec, KEEP_ROW


@dataclass
class Staged:
    """A staged file that passed every check, ready for the insert."""
    preset: Preset | None
    targets: dict[str, str]
    dropped: list[str]
    notes: list[str]
    n_rows: int


def stage_and_check(con, spec: TableSpec, source: readers.SourceFile, preset_name, renames, survey,
                     on_duplicate, keep=(), epoch=None) -> Staged:
    """Stage ``source`` (temporary views and tables only) and run every check."""
    path = source.path
    header = readers.column_names(con, source)
    targets = dict(db.table_columns(con, spec.name))
    # --rename teff=Teff means stellardb's teff (its names are lower case)
    renames = {old: next((t for t in targets if t.lower() == new.lower()), new) for old, new in renames.items()}
    preset, mapping = choose_preset(spec, header, preset_name, renames, path, set(targets) - DERIVED)
    mapping = canonical_names(mapping, targets)
    id_positions = [i for i, col in enumerate(header) if mapping.get(col) in ("source_id", "object_id", *spec.key)]
    sniffed = readers.staged_names(con, source) if id_positions and source.format == "csv" else []
    id_columns = [sniffed[i] for i in id_positions if i < len(sniffed)]
    columns = readers.load(con, source, STAGE, varchar_columns=id_columns)
    n_rows = con.execute(f"select count(*) from {STAGE}").fetchone()[0]
    if n_rows == 0:
        raise UserError(f"{path} has no data rows; nothing to ingest.")
    if len(columns) != len(header):
        raise UserError(f"{path}: the header names {len(header)} columns but rows have {len(columns)}; fix the file's header.")
    # staged column i is file column i (DuckDB renames case-insensitive duplicates)
    mapping = {staged: mapping[real] for staged, real in zip(columns, header) if real in mapping}
    checks.check_mapping(mapping, renames, header, targets, path)
    stage_types = {r[0]: r[1] for r in con.execute(f"describe {STAGE}").fetchall()}
    if keep:
        add_kept_columns(con, spec, keep, mapping, dict(zip(header, columns)), stage_types, targets, path)
    present = {new: old for old, new in mapping.items() if new in targets and new not in DERIVED}
    dropped = [old for old, new in mapping.items() if new not in targets or new in DERIVED]
    checks.check_required(spec, present, header, path)
    survey_value = survey or (preset.survey if preset else None)
    if spec.name == "sos" and "survey" not in present and not survey_value:
        raise UserError(f"{path} has no survey column; name the survey with --survey NAME (e.g. --survey GALAH-DR3).")

    row = readers.row_expression(source, STAGE)
    if spec.name == "gaia":
        checks.check_gaia_release(con, header, present, stage_types, path)
    checks.check_types(con, spec, present, stage_types, targets, path, row)
    epoch_note, epoch_value = assumed_epoch(spec, present, preset, epoch)
    exprs = column_expressions(spec, present, stage_types, targets, preset, survey_value, epoch_value)
    apply_fallbacks(exprs, preset, dict(zip(header, columns)), targets)
    flagged = apply_quality_flags(con, exprs, preset, dict(zip(header, columns)))
    select_list = ", ".join(f"{e} as {db.quote_identifier(c)}" for c, e in exprs.items())
    # Views, not tables, over the staged rows: each check reads only the columns it
    # needs, and the one full copy is the final insert.  _row is the 0-based data row
    # (a transaction's uncommitted rows have offset rowids).
    con.execute(f"create or replace temp view _ingest_all as select {row} as _row, {select_list} from {STAGE}")
    keep = KEEP_ROW.get(spec.name, f"{spec.key[0]} is not null")
    con.execute(f"create or replace temp view _ingest_typed as select * from _ingest_all where {keep}")
    what = "labels" if spec.name == "sos" else "flagged columns"
    notes = [f"{flagged:,} rows flagged by the survey: their {what} are NULL"] if flagged else []
    # (for labels the epoch matters only to rows matched by position)
    if epoch_note and (spec.name != "sos" or
                       con.execute("select count(*) from _ingest_typed where ra is not null").fetchone()[0]):
        notes.append(epoch_note)
    keyless = checks.count_keyless_rows(con, spec, path, n_rows)
    if keyless and spec.name == "sos":
        notes.append(f"{keyless:,} rows with neither a Gaia source_id nor ra/dec not stored (they cannot be matched)")
    elif keyless:
        notes.append(f"{keyless:,} rows without {spec.key[0]} not stored (not {spec.name} sources)")
    checks.check_positions(con, spec, present, path)
    checks.check_ranges(con, spec, present, path, targets)
    checks.check_survey_magnitudes(con, spec, present, path)
    duplicates = checks.check_keys(con, spec, path, on_duplicate)
    if spec.name == "gaia":
        checks.check_gaia_positions(con, path)
    if duplicates:
        notes.append(f"{duplicates:,} duplicate rows skipped (--on-duplicate skip; first occurrence kept)")
    n_rows = con.execute("select count(*) from _ingest_typed").fetchone()[0]
    return Staged(preset, targets, dropped, notes, n_rows)


def insert_staged(con, spec: TableSpec, source: readers.SourceFile, staged: Staged) -> int:
    """Insert the checked rows in HEALPix order under a new ingest_id; returns the id."""
    ingest_id = con.execute("select coalesce(max(ingest_id), 0) + 1 from ingests").fetchone()[0]
    healpix, from_rows, ordered = healpix_index(con, spec)
    cols = [c for c in staged.targets if c not in DERIVED]
    col_sql = ", ".join(db.quote_identifier(c) for c in cols)
    # Archive files come in source_id (= HEALPix) order: skip the wide-row sort then
    order = "" if ordered else "order by healpix_12"
    try:
        con.execute(
            f"insert into {spec.name} ({col_sql}, healpix_12, ingest_id) "
            f"select {col_sql}, {healpix} as healpix_12, $id from {from_rows} {order}",
            {"id": ingest_id},
        )
    except duckdb.ConstraintException as exc:
        # a column the table needs that no earlier check covers (e.g. an empty mean_epoch)
        found = re.search(r"NOT NULL constraint failed: \w+\.(\w+)", str(exc))
        what = (f"some rows have no {found.group(1)}, which table {spec.name} requires" if found
                else str(exc).splitlines()[0])
        raise UserError(f"{source.path}: {what}; fill it in, or map another column to it with --rename.") from None
    # The rows stored must be the rows read minus those reported left out; anything else
    # is a bug that would silently duplicate or lose rows, so the whole ingest rolls back.
    stored = con.execute(f"select count(*) from {spec.name} where ingest_id = $id", {"id": ingest_id}).fetchone()[0]
    if stored != staged.n_rows:
        raise RuntimeError(f"{source.path}: stored {stored:,} rows but {staged.n_rows:,} passed the checks; nothing "
                           "was ingested (please report this with the file).")
    return ingest_id


def drop_staging(con, spec: TableSpec, source: readers.SourceFile) -> None:
    """Drop whatever staging exists (also after a check failed half-way)."""
    con.execute("drop view if exists _ingest_typed")
    con.execute("drop view if exists _ingest_all")
    con.execute("drop table if exists _ingest_kept")
    if spec.healpix_from != "source_id":
        con.unregister("_ingest_healpix")
    readers.drop_stage(con, source, STAGE)


def choose_preset(spec: TableSpec, header: list[str], preset_name, renames, path,
                   targets=()) -> tuple[Preset | None, dict[str, str]]:
    """The preset (given, or the one whose spellings cover most required columns) and the final mapping."""
    if preset_name is not None:
        preset = PRESETS[preset_name]
        return preset, resolve_names(header, {**preset.rename, **renames})
    targets = set(targets)

    def score(preset: Preset) -> tuple[int, int, int]:
        mapped = set(canonical_names(resolve_names(header, {**preset.rename, **renames}), targets).values())
        want = set(spec.required) | set(spec.signature)
        # then by how many file columns the preset stores: GBS's preset renames ref_epoch
        # away (its file's ref_epoch is Gaia's), which must not win over the identity
        # preset for a file whose ref_epoch is its own
        stored = len(mapped & targets)
        # then by the renames the file spells exactly as the preset does (a lower-case
        # "ra" does not make a file PASTEL's "RA"); identity presets win ties
        hits = sum(1 for old, new in preset.rename.items() if old in header and old != new)
        return (len(want & mapped), stored, hits)

    candidates = presets_for(spec.name)
    best = max(candidates, key=score)
    return best, resolve_names(header, {**best.rename, **renames})


def canonical_names(mapping: dict[str, str], targets) -> dict[str, str]:
    """Map onto the stored column's own spelling: Pan-STARRS's ``gMeanPSFMag`` and SDSS's ``objID``
    are stored as the surveys write them, and a file's ``gmeanpsfmag`` is the same column
    (SQL names ignore case; :func:`resolve_names` lower-cases the names it does not rename)."""
    own = {t.lower(): t for t in targets}
    return {old: own.get(new.lower(), new) if new else new for old, new in mapping.items()}


def add_kept_columns(con, spec: TableSpec, keep, mapping: dict[str, str], staged_of: dict[str, str],
                      stage_types: dict[str, str], targets: dict[str, str], path) -> None:
    """``--keep COL``: store a file column no stellardb column takes, as a new column of the table.

    The column is added inside the ingest's transaction (a failed ingest takes it back)
    with the type the file gives it; rows of other files have NULL there.
    """
    by_lower = {real.lower(): real for real in staged_of}
    for wanted in keep:
        real = wanted if wanted in staged_of else by_lower.get(str(wanted).lower())
        if real is None:
            shown = ", ".join(list(staged_of)[:12]) + (" ..." if len(staged_of) > 12 else "")
            raise UserError(f"{path}: --keep {wanted} names no column of the file (columns: {shown}).")
        staged = staged_of[real]
        name = mapping.get(staged, real.lower())
        if name in DERIVED:
            raise UserError(f"{path}: --keep {wanted}: {name} is computed by stellardb and cannot come from a file.")
        if name in targets:
            if any(new == name for new in mapping.values()):
                continue  # already stored under that name: nothing to add
            raise UserError(f"{path}: --keep {wanted}: table {spec.name} already has a column {name}; "
                            f"rename the file column with --rename {real}=NEW first.")
        kind = stage_types[staged]
        con.execute(f"alter table {spec.name} add column {db.quote_identifier(name)} {kind}")
        targets[name] = kind
        mapping[staged] = name


def assumed_epoch(spec, present, preset, epoch) -> tuple[str | None, float | None]:
    """The epoch a file without a ref_epoch column is given, and the note that says so in the report."""
    if "ref_epoch" in present:
        if epoch is not None:
            raise UserError(f"--epoch {epoch:g} is for label files without an epoch, but this file has a ref_epoch column "
                            f"(from {present['ref_epoch']!r}), which is used; drop --epoch.")
        return None, None
    if spec.name == "gaia":
        if preset is not None and preset.ref_epoch is not None:
            return (f"no ref_epoch column: positions taken at J{preset.ref_epoch:.1f} (the {preset.name} catalogue's; "
                    "no proper motion moves them)", float(preset.ref_epoch))
        return "no ref_epoch column: J2016.0 (Gaia DR3) assumed", 2016.0
    if spec.name != "sos":
        return None, None
    if epoch is not None:
        return f"no ref_epoch column: positions taken at J{float(epoch):.1f} (--epoch)", float(epoch)
    if preset is not None and preset.ref_epoch is not None:
        return f"no ref_epoch column: positions taken at J{preset.ref_epoch:.1f} (the {preset.name} catalogue's)", \
            float(preset.ref_epoch)
    return "no ref_epoch column: positions taken at J2000.0 (the default; --epoch YEAR to change)", 2000.0


def column_expressions(spec, present, stage_types, targets, preset, survey_value, epoch_value=None) -> dict[str, str]:
    """SQL expression for each stored column: cast, NaN and sentinels to NULL, defaults."""
    exprs = {}
    null_values = preset.null_values if preset else {}
    for col, want in targets.items():
        sentinels = null_values.get(col, null_values.get("*", ()))
        if col in DERIVED:
            continue
        if col not in present:
            if col == "ref_epoch" and epoch_value is not None:
                # Gaia: every DR3 gaia_source row has 2016.0; labels: --epoch, the preset's, or J2000
                exprs[col] = f"{float(epoch_value)!r}::double"
            elif spec.name == "sos" and col == "survey":
                exprs[col] = f"'{sql_string(survey_value)}'"
            else:
                exprs[col] = f"null::{want}"
            continue
        src = db.quote_identifier(present[col])
        have = stage_types[present[col]]
        value = src if have == want else f"try_cast({src} as {want})"
        if want in FLOAT_TYPES:
            # FITS and VOTable write missing floats as NaN; SQL wants NULL
            value = f"case when isnan({value}) then null else {value} end"
        if sentinels and want in NUMERIC_TYPES:
            value = f"case when {value} in ({', '.join(repr(float(s)) for s in sentinels)}) then null else {value} end"
        if want == "VARCHAR":
            value = f"nullif(trim({src}::varchar), '')"
        exprs[col] = value
    return exprs


def apply_fallbacks(exprs: dict[str, str], preset, staged_of: dict[str, str], targets: dict[str, str]) -> None:
    """Where a column's value is empty, take the preset's fallback file columns' (in order)."""
    if preset is None or not preset.fallbacks:
        return
    for col, alternatives in preset.fallbacks.items():
        staged = [staged_of[a] for a in alternatives if a in staged_of]
        if col in exprs and staged:
            want = targets[col]
            others = ", ".join(f"try_cast({db.quote_identifier(a)} as {want})" for a in staged)
            exprs[col] = f"coalesce({exprs[col]}, {others})"


def apply_quality_flags(con, exprs: dict[str, str], preset, staged_of: dict[str, str]) -> int:
    """NULL the labels that the survey's own flags mark bad; returns how many rows were flagged."""
    if preset is None or not preset.quality_flags:
        return 0
    tests = []
    by_lower = {real.lower(): staged for real, staged in staged_of.items()}
    for file_column, bad_if, columns in preset.quality_flags:
        # a flag spelled CLEAN or Clean is the same flag (file names are matched ignoring case everywhere)
        staged = staged_of.get(file_column) or by_lower.get(file_column.lower())
        if staged is None:
            continue  # a file without the flag column is taken as it is
        test = f"coalesce({db.quote_identifier(staged)} {bad_if}, false)"
        tests.append(test)
        for col in columns:
            if col in exprs:
                exprs[col] = f"case when {test} then null else {exprs[col]} end"
    if not tests:
        return 0
    return con.execute(f"select count(*) from {STAGE} where {' or '.join(tests)}").fetchone()[0]


def sql_string(s: str) -> str:
    return str(s).replace("'", "''")


def healpix_index(con, spec: TableSpec) -> tuple[str, str, bool]:
    """SQL for each row's ``healpix_12``, the rows to select it from, and whether the rows
    already come in HEALPix order.

    Gaia's index is the top bits of ``source_id``.  Positions go through
    :func:`radec_to_healpix` in one vectorised call over the whole file and are joined
    back on the row number: a per-chunk Python UDF held the GIL and took a third of a
    SkyMapper ingest.
    """
    by_id = f"(source_id >> {GAIA_SOURCE_ID_SHIFT})"
    if spec.healpix_from == "source_id":
        ids = con.execute("select source_id from _ingest_typed").fetchnumpy()["source_id"]
        return by_id, "_ingest_typed", checks.nondecreasing(np.asarray(ids, dtype=np.int64) >> GAIA_SOURCE_ID_SHIFT)
    lon, lat = spec.position
    need = f"{lon} is not null and {lat} is not null"
    if spec.healpix_from != "position":
        need += " and source_id is null"
    rows = con.execute(f"select _row, {lon} as lon, {lat} as lat from _ingest_typed where {need}").fetchnumpy()
    pix = radec_to_healpix(np.asarray(rows["lon"], dtype=float), np.asarray(rows["lat"], dtype=float))
    con.register("_ingest_healpix", pa.Table.from_arrays(
        [arrow_int64(rows["_row"]), arrow_int64(pix)], names=["_row", "healpix_12"]))
    from_rows = "_ingest_typed left join _ingest_healpix using (_row)"
    # (a join does not promise to keep row order, so these rows are always sorted)
    if spec.healpix_from == "position":
        return "_ingest_healpix.healpix_12", from_rows, False
    return f"coalesce({by_id}, _ingest_healpix.healpix_12)", from_rows, False


def arrow_int64(values: np.ndarray) -> pa.Array:
    """An Arrow int64 array over the NumPy buffer (not ``pa.array``: see stellardb.catalog.arrow)."""
    return to_arrow(np.asarray(values, dtype=np.int64))


def sort_by_healpix(con, table: str) -> None:
    """Rewrite ``table`` ordered by healpix_12 so DuckDB's zone maps prune by sky region."""
    con.execute(f"create temp table _sorted as select * from {table} order by healpix_12")
    con.execute(f"delete from {table}")
    con.execute(f"insert into {table} select * from _sorted")
    con.execute("drop table _sorted")
