"""``stellardb ingest``: load catalogue files into the database, safely.

One call is one transaction: every file is read into a temporary table, renamed
to stellardb's columns (a preset, auto-detected or given, plus ``--rename``),
checked (required columns, values of the right type, positions on the sky, no
duplicate keys within the file or against what is stored), given its HEALPix
index and appended; then the materialised
crossmatches are brought up to date.  Any failure rolls everything back, so the
database is exactly as before.  A file whose content (sha256) is already
recorded in ``ingests`` for the same table is skipped, so re-running an ingest
never duplicates rows.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from . import db, readers
from .arrow import to_arrow
from .errors import UserError
from .healpix import GAIA_SOURCE_ID_SHIFT, radec_to_healpix
from .presets import PRESETS, Preset, presets_for, resolve_names

STAGE = "_ingest_stage"

NUMERIC_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
FLOAT_TYPES = {"FLOAT", "DOUBLE"}
#: stellardb's own columns, computed here, never read from a file
DERIVED = {"healpix_12", "ingest_id"}


@dataclass(frozen=True)
class TableSpec:
    name: str
    #: columns that identify a row (checked for duplicates)
    key: tuple[str, ...]
    #: columns a file must have (after renaming)
    required: tuple[str, ...]
    #: (lon, lat) columns in degrees, if the table is positional
    position: tuple[str, str] | None
    #: how healpix_12 is computed: from Gaia's source_id, from the position, or either
    healpix_from: str
    #: columns a file needs to look like this table, to tell users which table a file belongs to
    signature: tuple[str, ...] = field(default=())


TABLES: dict[str, TableSpec] = {
    "gaia": TableSpec(
        "gaia", ("source_id",), ("source_id", "ra", "dec"), ("ra", "dec"), "source_id",
        signature=("source_id", "ra", "dec", "phot_g_mean_mag", "parallax", "pmra"),
    ),
    "skymapper": TableSpec(
        "skymapper", ("object_id",), ("object_id", "raj2000", "dej2000", "mean_epoch"), ("raj2000", "dej2000"), "position",
        signature=("object_id", "raj2000", "dej2000", "mean_epoch", "g_psf", "u_psf"),
    ),
    "distances": TableSpec(
        "distances", ("source_id",), ("source_id", "r_med_geo"), None, "source_id",
        signature=("source_id", "r_med_geo", "r_lo_geo", "r_hi_geo"),
    ),
    "sos": TableSpec(
        "sos", ("survey", "source_id"), (), ("ra", "dec"), "source_id_or_position",
        signature=("teff", "logg", "feh"),
    ),
}


@dataclass
class FileResult:
    path: Path
    table: str
    rows: int
    seconds: float
    format: str
    preset: str | None
    skipped: str | None = None
    dropped_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    files: list[FileResult]
    xmatch_pairs: int | None = None
    label_matches: int | None = None
    seconds: float = 0.0


def sha256_of(path: Path, stop: threading.Event | None = None) -> str | None:
    """Hex sha256 of a file's bytes; None if ``stop`` is set before it is done."""
    h = hashlib.sha256()
    block = bytearray(1 << 22)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(block):
            if stop is not None and stop.is_set():
                return None
            h.update(view[:n])
    return h.hexdigest()


def parse_renames(items) -> dict[str, str]:
    """``["OLD=NEW", ...]`` -> {OLD: NEW}; raises UserError on a malformed item."""
    out = {}
    for item in items or ():
        old, sep, new = item.partition("=")
        if not sep or not old.strip():
            raise UserError(f"--rename expects OLD=NEW (e.g. --rename Source=source_id; OLD= leaves OLD out), got {item!r}.")
        out[old.strip()] = new.strip()  # "" : do not store the column
    return out


def run(
    db_path,
    table: str,
    files,
    preset: str | None = None,
    renames: dict[str, str] | None = None,
    survey: str | None = None,
    refresh_crossmatch: bool = True,
    progress=None,
    on_duplicate: str = "error",
    keep=(),
    epoch: float | None = None,
    hdu: int | str | None = None,
) -> IngestResult:
    """Ingest ``files`` into ``table`` in one transaction.

    Parameters
    ----------
    db_path : path
        The stellardb DuckDB file (created if missing).
    table : {"gaia", "skymapper", "distances", "sos"}
    files : list of paths
        Gaia archive ECSV (.csv.gz), CSV (gzipped or not), FITS, VOTable or Parquet.
    preset : str, optional
        A name from :data:`stellardb.presets.PRESETS`; detected from the columns if None.
    renames : dict, optional
        Extra ``{file column: stellardb column}`` renames, applied after the preset.
    survey : str, optional
        ``sos`` only: survey name for files without a ``survey`` column.
    refresh_crossmatch : bool
        Re-materialise ``xmatch`` / ``xmatch_labels`` after the load.
    on_duplicate : {"error", "skip"}
        A key repeated inside a file or already stored: refuse the whole ingest
        (default), or keep the first/stored row and report how many were skipped.
    progress : callable(done_files, total_files) or None
    epoch : float, optional
        ``sos`` only: the epoch (Julian year) of label positions in files without a
        ``ref_epoch`` column; default the preset's, else J2000.0.  Stated in the report.
    hdu : int or str, optional
        Which table of a FITS file (extension number or EXTNAME) or VOTable (index)
        to read; required when a file holds several.
    keep : sequence of str
        File columns that no stellardb column takes, to store anyway: each becomes
        a new column of ``table`` (lower-cased, the file's type; NULL for rows of other
        files), e.g. SWEET-Cat's ``SWFlag``.

    Raises
    ------
    UserError
        Any bad input; the database is left exactly as it was.
    """
    if table not in TABLES:
        raise UserError(f"Unknown table {table!r}; choose one of {', '.join(TABLES)}.")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    if preset is not None and PRESETS[preset].table != table:
        raise UserError(f"Preset {preset!r} is for table {PRESETS[preset].table!r}, not {table!r}.")
    if not files:
        raise UserError("No files given; name at least one catalogue file.")
    if on_duplicate not in ("error", "skip"):
        raise UserError(f"--on-duplicate must be error or skip, got {on_duplicate!r}.")
    if epoch is not None and (table != "sos" or not 1900.0 <= float(epoch) <= 2100.0):
        raise UserError(f"--epoch is the Julian year of label positions (sos only, 1900-2100), got {epoch!r} for {table}.")
    spec = TABLES[table]
    paths = [Path(f) for f in files]
    sources = [readers.detect(p, hdu) for p in paths]  # fails fast, before the database is opened

    started = time.perf_counter()
    created = str(db_path) != ":memory:" and not Path(db_path).exists()
    try:
        con = db.connect(db_path, read_only=False, create=True)
    except BaseException:
        if created:  # e.g. a full disk while the new file's tables were made: leave no file behind
            for leftover in (Path(db_path), Path(f"{db_path}.wal")):
                leftover.unlink(missing_ok=True)
        raise
    results: list[FileResult] = []
    result = IngestResult(files=results)
    # Files are hashed in a thread while DuckDB (which releases the GIL) loads the previous
    # one; a file's hash is checked before anything is done with it, except in a table
    # that had no file yet (see _ingest_file).
    stop_hashing = threading.Event()
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stellardb-ingest")
    begun = False
    try:
        digests = [background.submit(sha256_of, source.path, stop_hashing) for source in sources]
        con.begin()
        begun = True
        rows_before = db.row_count(con, table)
        seen_hashes = dict(con.execute(
            "select sha256, max(ingested_at) from ingests where table_name = $t group by sha256", {"t": table}
        ).fetchall())
        speculative = not seen_hashes
        for i, source in enumerate(sources):
            results.append(_ingest_file(con, spec, source, digests[i], preset, renames or {}, survey, seen_hashes,
                                        on_duplicate, speculative, keep, epoch))
            if progress is not None:
                progress(i + 1, len(sources))
        loaded = sum(r.rows for r in results if r.skipped is None)
        if loaded:
            if rows_before or sum(r.skipped is None for r in results) > 1:
                _sort_by_healpix(con, table)
            if refresh_crossmatch:
                if table in ("gaia", "skymapper") and db.row_count(con, "gaia") and db.row_count(con, "skymapper"):
                    result.xmatch_pairs = db.refresh_xmatch(con)
                if table in ("gaia", "sos") and db.row_count(con, "gaia"):
                    result.label_matches = db.refresh_label_match(con)
        con.commit()
    except BaseException as exc:
        stop_hashing.set()
        background.shutdown(wait=False, cancel_futures=True)
        try:
            db.undo_or_report(con, exc, f"the ingest of {len(sources)} file(s) into {table}", begun)
        finally:
            con.close()
        if created:
            # the database did not exist before this ingest: "exactly as before" is no file
            for leftover in (Path(db_path), Path(f"{db_path}.wal")):
                leftover.unlink(missing_ok=True)
        raise
    background.shutdown()
    con.close()
    result.seconds = time.perf_counter() - started
    return result


#: Rows that can be stored: a source of gaia/skymapper/distances needs its id; a label
#: needs a Gaia id or a position, else it can never be matched to a star.
KEEP_ROW = {"sos": "source_id is not null or (ra is not null and dec is not null)"}


def _count_keyless_rows(con, spec: TableSpec, path, n_rows: int) -> int:
    """Rows without their id (e.g. GBS stars that have no Gaia DR3 row; SWEET-Cat stars with
    neither Gaia id nor coordinates) are left out and reported."""
    n = n_rows - con.execute("select count(*) from _ingest_typed").fetchone()[0]
    if n == n_rows:
        need = "a Gaia source_id or ra/dec" if spec.name == "sos" else f"a {spec.key[0]}"
        raise UserError(f"{path}: no row has {need}; check the column mapping (--preset, --rename).")
    return n


def _ingest_file(con, spec: TableSpec, source: readers.SourceFile, digest_future: Future, preset_name, renames,
                 survey, seen_hashes, on_duplicate="error", speculative=False, keep=(), epoch=None) -> FileResult:
    """Stage, check and insert one file, unless its content was ingested before.

    Normally the file's sha256 is awaited first and an already-ingested file is skipped
    before anything is done with it (whatever this command's options: another --rename
    that would make it fail does not matter).  ``speculative`` (the table had no file
    when the command started, so only a copy named earlier in this same command can
    repeat it) stages, checks and inserts while the hash is still running: 0.5-1.5 s of
    a 2 M-row Gaia Parquet ingest on 2 busy cores.  A repeated copy then either fails a
    check on its keys (already in the table), which the hash turns into a skip, or
    inserts nothing (--on-duplicate skip).
    """
    t0 = time.perf_counter()

    def skip(reason: str) -> FileResult:
        _drop_staging(con, spec, source)
        return FileResult(source.path, spec.name, 0, time.perf_counter() - t0, source.format, preset_name,
                          skipped=reason)

    if (not speculative or digest_future.done()) \
            and (reason := _already_ingested(spec, _digest(digest_future, source), seen_hashes)):
        return skip(reason)
    try:
        staged = _stage_and_check(con, spec, source, preset_name, renames, survey, on_duplicate, keep, epoch)
    except (UserError, duckdb.Error):
        if speculative and (reason := _already_ingested(spec, _digest(digest_future, source), seen_hashes)) \
                and _transaction_usable(con):
            return skip(reason)
        raise
    ingest_id = _insert_staged(con, spec, source, staged)
    digest = _digest(digest_future, source)
    if reason := _already_ingested(spec, digest, seen_hashes):
        # (speculative only) a copy of a file loaded earlier in this command
        con.execute(f"delete from {spec.name} where ingest_id = $id", {"id": ingest_id})
        return skip(reason)
    seen_hashes[digest] = None
    preset = staged.preset
    con.execute(
        "insert into ingests values ($id, $t, $f, $h, $fmt, $p, $n, now()::timestamp)",
        {"id": ingest_id, "t": spec.name, "f": str(source.path.resolve()), "h": digest, "fmt": source.format,
         "p": preset.name if preset else None, "n": staged.n_rows},
    )
    _drop_staging(con, spec, source)
    return FileResult(source.path, spec.name, staged.n_rows, time.perf_counter() - t0, source.format,
                      preset.name if preset else None, dropped_columns=staged.dropped, notes=staged.notes)


def _digest(future: Future, source: readers.SourceFile) -> str:
    """The file's sha256 from the hashing thread, or a one-line error if it could not be read."""
    try:
        return future.result()
    except OSError as exc:
        raise UserError(f"{source.path}: cannot read it to compute its checksum ({exc.strerror or exc}); "
                        "check that the file is still there and readable.") from None


def _already_ingested(spec: TableSpec, digest: str, seen_hashes: dict) -> str | None:
    """Why a file with this content is skipped, or None if it is new to ``spec``'s table.

    ``seen_hashes`` maps sha256 to when it was ingested (None: earlier in this command);
    a dict read before the first file, so that the answer needs no query: after a failed
    read the transaction accepts none."""
    if digest not in seen_hashes:
        return None
    when = seen_hashes[digest]
    when = f" on {when:%Y-%m-%d %H:%M}" if when is not None else " earlier in this command"
    return f"same content already ingested into {spec.name}{when}"


def _transaction_usable(con) -> bool:
    """False once a failed statement has aborted the transaction (only a rollback is left)."""
    try:
        con.execute("select 1").fetchone()
    except duckdb.Error:
        return False
    return True


@dataclass
class _Staged:
    """A staged file that passed every check, ready for the insert."""
    preset: Preset | None
    targets: dict[str, str]
    dropped: list[str]
    notes: list[str]
    n_rows: int


def _stage_and_check(con, spec: TableSpec, source: readers.SourceFile, preset_name, renames, survey,
                     on_duplicate, keep=(), epoch=None) -> _Staged:
    """Stage ``source`` (temporary views and tables only) and run every check."""
    path = source.path
    header = readers.column_names(con, source)
    targets = dict(db.table_columns(con, spec.name))
    # --rename teff=Teff means stellardb's teff (its names are lower case)
    renames = {old: next((t for t in targets if t.lower() == new.lower()), new) for old, new in renames.items()}
    preset, mapping = _choose_preset(spec, header, preset_name, renames, path, set(targets) - DERIVED)
    id_positions = [i for i, col in enumerate(header) if mapping.get(col) in ("source_id", "object_id")]
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
    _check_mapping(mapping, renames, header, targets, path)
    stage_types = {r[0]: r[1] for r in con.execute(f"describe {STAGE}").fetchall()}
    if keep:
        _add_kept_columns(con, spec, keep, mapping, dict(zip(header, columns)), stage_types, targets, path)
    present = {new: old for old, new in mapping.items() if new in targets and new not in DERIVED}
    dropped = [old for old, new in mapping.items() if new not in targets or new in DERIVED]
    _check_required(spec, present, header, path)
    survey_value = survey or (preset.survey if preset else None)
    if spec.name == "sos" and "survey" not in present and not survey_value:
        raise UserError(f"{path} has no survey column; name the survey with --survey NAME (e.g. --survey GALAH-DR3).")

    row = readers.row_expression(source, STAGE)
    if spec.name == "gaia":
        _check_gaia_release(con, header, present, stage_types, path)
    _check_types(con, spec, present, stage_types, targets, path, row)
    epoch_note, epoch_value = _assumed_epoch(spec, present, preset, epoch)
    exprs = _column_expressions(spec, present, stage_types, targets, preset, survey_value, epoch_value)
    flagged = _apply_quality_flags(con, exprs, preset, dict(zip(header, columns)))
    select_list = ", ".join(f"{e} as {db.quote_identifier(c)}" for c, e in exprs.items())
    # Views, not tables, over the staged rows: each check reads only the columns it
    # needs, and the one full copy is the final insert.  _row is the 0-based data row
    # (a transaction's uncommitted rows have offset rowids).
    con.execute(f"create or replace temp view _ingest_all as select {row} as _row, {select_list} from {STAGE}")
    keep = KEEP_ROW.get(spec.name, f"{spec.key[0]} is not null")
    con.execute(f"create or replace temp view _ingest_typed as select * from _ingest_all where {keep}")
    notes = [f"{flagged:,} rows flagged by the survey: their labels are NULL"] if flagged else []
    # (for labels the epoch matters only to rows matched by position)
    if epoch_note and (spec.name != "sos" or
                       con.execute("select count(*) from _ingest_typed where ra is not null").fetchone()[0]):
        notes.append(epoch_note)
    keyless = _count_keyless_rows(con, spec, path, n_rows)
    if keyless and spec.name == "sos":
        notes.append(f"{keyless:,} rows with neither a Gaia source_id nor ra/dec not stored (they cannot be matched)")
    elif keyless:
        notes.append(f"{keyless:,} rows without {spec.key[0]} not stored (not {spec.name} sources)")
    _check_positions(con, spec, present, path)
    _check_ranges(con, spec, present, path, targets)
    duplicates = _check_keys(con, spec, path, on_duplicate)
    if spec.name == "gaia":
        _check_gaia_positions(con, path)
    if duplicates:
        notes.append(f"{duplicates:,} duplicate rows skipped (--on-duplicate skip; first occurrence kept)")
    n_rows = con.execute("select count(*) from _ingest_typed").fetchone()[0]
    return _Staged(preset, targets, dropped, notes, n_rows)


def _insert_staged(con, spec: TableSpec, source: readers.SourceFile, staged: _Staged) -> int:
    """Insert the checked rows in HEALPix order under a new ingest_id; returns the id."""
    ingest_id = con.execute("select coalesce(max(ingest_id), 0) + 1 from ingests").fetchone()[0]
    healpix, from_rows, ordered = _healpix_index(con, spec)
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


def _drop_staging(con, spec: TableSpec, source: readers.SourceFile) -> None:
    """Drop whatever staging exists (also after a check failed half-way)."""
    con.execute("drop view if exists _ingest_typed")
    con.execute("drop view if exists _ingest_all")
    con.execute("drop table if exists _ingest_kept")
    if spec.healpix_from != "source_id":
        con.unregister("_ingest_healpix")
    readers.drop_stage(con, source, STAGE)


def _choose_preset(spec: TableSpec, header: list[str], preset_name, renames, path,
                   targets=()) -> tuple[Preset | None, dict[str, str]]:
    """The preset (given, or the one whose spellings cover most required columns) and the final mapping."""
    if preset_name is not None:
        preset = PRESETS[preset_name]
        return preset, resolve_names(header, {**preset.rename, **renames})
    targets = set(targets)

    def score(preset: Preset) -> tuple[int, int, int]:
        mapped = set(resolve_names(header, {**preset.rename, **renames}).values())
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


def _check_mapping(mapping: dict[str, str], renames: dict[str, str], header: list[str], targets, path) -> None:
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


def _add_kept_columns(con, spec: TableSpec, keep, mapping: dict[str, str], staged_of: dict[str, str],
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


def _check_required(spec: TableSpec, present: dict[str, str], header: list[str], path: Path) -> None:
    missing = [c for c in spec.required if c not in present]
    if spec.name == "sos":
        if "source_id" not in present and not ("ra" in present and "dec" in present):
            missing = ["source_id (or ra and dec)"]
        elif not ({"teff", "logg", "feh"} & set(present)):
            missing = ["teff, logg or feh"]
    if not missing:
        return
    hint = _which_table(header)
    if hint and hint != spec.name:
        raise UserError(
            f"{path} looks like a {hint} file, not {spec.name}: it lacks {', '.join(missing)}. "
            f"Use `stellardb ingest {hint} {path.name}`."
        )
    raise UserError(
        f"{path}: missing required column {', '.join(missing)} for table {spec.name}. If it is spelled differently, "
        f"use --rename OLD=NEW or --preset (see `stellardb ingest --help`)."
    )


def _which_table(header: list[str]) -> str | None:
    lower = {h.lower() for h in header}
    best, best_score = None, 0
    for spec in TABLES.values():
        if spec.name == "sos":
            continue
        score = sum(c in lower for c in spec.signature) / len(spec.signature)
        if score > best_score:
            best, best_score = spec.name, score
    return best if best_score >= 0.6 else None


def _check_types(con, spec, present, stage_types, targets, path, row: str) -> None:
    """Every value converts to the column's type, or the file is refused naming the first bad row."""
    for key in ("source_id", "object_id"):
        if key not in present:
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


#: Columns only Gaia DR2's gaia_source has (DR3 moved astrophysical parameters to other
#: tables and renamed the rest): a file with any of them is DR2.
GAIA_DR2_ONLY = ("teff_val", "teff_percentile_lower", "teff_percentile_upper", "a_g_val", "e_bp_min_rp_val",
                 "radius_val", "lum_val", "lum_percentile_lower", "lum_percentile_upper", "astrometric_pseudo_colour",
                 "priam_flags", "flame_flags")


def _check_gaia_release(con, header: list[str], present: dict[str, str], stage_types: dict[str, str], path) -> None:
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


def _assumed_epoch(spec, present, preset, epoch) -> tuple[str | None, float | None]:
    """The epoch a file without a ref_epoch column is given, and the note that says so in the report."""
    if "ref_epoch" in present:
        if epoch is not None:
            raise UserError(f"--epoch {epoch:g} is for label files without an epoch, but this file has a ref_epoch column "
                            f"(from {present['ref_epoch']!r}), which is used; drop --epoch.")
        return None, None
    if spec.name == "gaia":
        return "no ref_epoch column: J2016.0 (Gaia DR3) assumed", 2016.0
    if spec.name != "sos":
        return None, None
    if epoch is not None:
        return f"no ref_epoch column: positions taken at J{float(epoch):.1f} (--epoch)", float(epoch)
    if preset is not None and preset.ref_epoch is not None:
        return f"no ref_epoch column: positions taken at J{preset.ref_epoch:.1f} (the {preset.name} catalogue's)", \
            float(preset.ref_epoch)
    return "no ref_epoch column: positions taken at J2000.0 (the default; --epoch YEAR to change)", 2000.0


def _column_expressions(spec, present, stage_types, targets, preset, survey_value, epoch_value=None) -> dict[str, str]:
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
                exprs[col] = f"'{_sql_string(survey_value)}'"
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


def _apply_quality_flags(con, exprs: dict[str, str], preset, staged_of: dict[str, str]) -> int:
    """NULL the labels that the survey's own flags mark bad; returns how many rows were flagged."""
    if preset is None or not preset.quality_flags:
        return 0
    tests = []
    for file_column, bad_if, columns in preset.quality_flags:
        staged = staged_of.get(file_column)
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


def _sql_string(s: str) -> str:
    return str(s).replace("'", "''")


def _check_positions(con, spec, present, path) -> None:
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

#: (table, column, SQL condition that is wrong, what is wrong and the likely unit mistake).
#: Physical bounds with room to spare: a value outside cannot be right in these units.
RANGE_CHECKS = [
    ("skymapper", "mean_epoch", "mean_epoch < 40000 or mean_epoch > 70000",
     "mean_epoch must be a Modified Julian Date (SkyMapper's unit, about 56000-60000), not a year"),
    *[("skymapper", f"{b}_psf", _MAG.format(c=f"{b}_psf"), _MAG_FIX) for b in "uvgriz"],
    *[("skymapper", f"e_{b}_psf", f"e_{b}_psf < 0 or e_{b}_psf > 10",
       "magnitude errors are positive and in mag (a few hundredths to about 1)") for b in "uvgriz"],
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


def _check_ranges(con, spec, present, path, targets=None) -> None:
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


def _check_gaia_positions(con, path) -> None:
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


def _key_condition(spec) -> list[tuple[str, str]]:
    """(key columns, where-clause) groups whose keys must be unique."""
    if spec.name == "sos":
        return [
            ("survey, source_id", "source_id is not null"),
            ("survey, ra, dec", "source_id is null and ra is not null and dec is not null"),
        ]
    return [(", ".join(spec.key), " and ".join(f"{k} is not null" for k in spec.key))]


def _check_keys(con, spec, path, on_duplicate: str = "error") -> int:
    """Refuse (or with ``skip``, drop and count) keys repeated in the file or already stored."""
    skipped = 0
    for key, where in _key_condition(spec):
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
        dup = None if _surely_unique(con, cols, where) else con.execute(
            f"select {key}, count(*) as n, min(_row) + 1, max(_row) + 1 from _ingest_typed where {where} "
            f"group by {key} having count(*) > 1 order by min(_row) limit 1"
        ).fetchone()
        if dup is not None:
            k = len(cols)
            raise UserError(
                f"{path}: duplicate {key} {_fmt_key(dup[:k])} in data rows {dup[k + 1]} and {dup[k + 2]} "
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
                f"{path}: {key} {_fmt_key(clash[:k])} (data row {clash[k]}) is already in table {spec.name}, "
                f"from {origin}; each row may be ingested once - remove it, or pass --on-duplicate skip."
            )
    return skipped


def _surely_unique(con, cols: list[str], where: str) -> bool:
    """True if a single integer key has no repeat in the staged rows (NumPy: archive files
    come sorted by id, so mostly one pass over adjacent ids; DuckDB's group by took 0.4 s
    of a 2 M-row Gaia ingest).  False means: ask DuckDB, which also names the rows."""
    if len(cols) != 1:
        return False
    ids = con.execute(f"select {cols[0]} from _ingest_typed where {where}").fetchnumpy()[cols[0]]
    if np.ma.isMaskedArray(ids) or ids.dtype.kind not in "iu":
        return False
    if not _nondecreasing(ids):
        ids = np.sort(ids)
    return not bool(np.any(ids[1:] == ids[:-1]))


def _fmt_key(values) -> str:
    return "/".join(str(v) for v in values)


def _healpix_index(con, spec: TableSpec) -> tuple[str, str, bool]:
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
        return by_id, "_ingest_typed", _nondecreasing(np.asarray(ids, dtype=np.int64) >> GAIA_SOURCE_ID_SHIFT)
    lon, lat = spec.position
    need = f"{lon} is not null and {lat} is not null"
    if spec.healpix_from != "position":
        need += " and source_id is null"
    rows = con.execute(f"select _row, {lon} as lon, {lat} as lat from _ingest_typed where {need}").fetchnumpy()
    pix = radec_to_healpix(np.asarray(rows["lon"], dtype=float), np.asarray(rows["lat"], dtype=float))
    con.register("_ingest_healpix", pa.Table.from_arrays(
        [_arrow_int64(rows["_row"]), _arrow_int64(pix)], names=["_row", "healpix_12"]))
    from_rows = "_ingest_typed left join _ingest_healpix using (_row)"
    # (a join does not promise to keep row order, so these rows are always sorted)
    if spec.healpix_from == "position":
        return "_ingest_healpix.healpix_12", from_rows, False
    return f"coalesce({by_id}, _ingest_healpix.healpix_12)", from_rows, False


def _arrow_int64(values: np.ndarray) -> pa.Array:
    """An Arrow int64 array over the NumPy buffer (not ``pa.array``: see stellardb.arrow)."""
    return to_arrow(np.asarray(values, dtype=np.int64))


def _nondecreasing(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def _sort_by_healpix(con, table: str) -> None:
    """Rewrite ``table`` ordered by healpix_12 so DuckDB's zone maps prune by sky region."""
    con.execute(f"create temp table _sorted as select * from {table} order by healpix_12")
    con.execute(f"delete from {table}")
    con.execute(f"insert into {table} select * from _sorted")
    con.execute("drop table _sorted")
