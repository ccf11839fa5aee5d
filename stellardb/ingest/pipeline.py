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
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from stellardb.catalog import db, xmatch
from stellardb.ingest import readers
from stellardb.errors import UserError
from stellardb.ingest import staging
from stellardb.ingest.presets import PRESETS
from stellardb.catalog.surveys import SURVEYS
from stellardb.ingest.specs import TableSpec, TABLES


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
    #: pairs of each survey crossmatch refreshed by this ingest
    survey_pairs: dict = field(default_factory=dict)
    seconds: float = 0.0


def sha256_of(path: Path, stop: threading.Event | None = None) -> str | None:
    """Hex sha256 of a file's bytes; None if ``stop`` is set before it is done.

    A folder (a HATS catalogue): the sha256 of its files' relative paths and sha256s, in
    sorted order, so the same catalogue copied elsewhere has the same checksum."""
    if Path(path).is_dir():
        h = hashlib.sha256()
        for file in sorted(f for f in Path(path).rglob("*") if f.is_file()):
            digest = sha256_of(file, stop)
            if digest is None:
                return None
            h.update(f"{file.relative_to(path).as_posix()}\0{digest}\n".encode())
        return h.hexdigest()
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
    table : {"gaia", "skymapper", "tmass", "allwise", "ps1", "sdss", "distances", "sos"}
    files : list of paths
        Gaia archive ECSV (.csv.gz), CSV (gzipped or not), FITS, VOTable or Parquet.
    preset : str, optional
        A name from :data:`stellardb.ingest.presets.PRESETS`; detected from the columns if None.
    renames : dict, optional
        Extra ``{file column: stellardb column}`` renames, applied after the preset.
    survey : str, optional
        ``sos`` only: survey name for files without a ``survey`` column.
    refresh_crossmatch : bool
        Re-materialise the survey crossmatches (``xmatch``, ``xmatch_tmass``, ...) and
        ``xmatch_labels`` that the load touches.
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
                staging.sort_by_healpix(con, table)
            if refresh_crossmatch:
                for name in xmatch.surveys_touched_by(table):
                    if db.row_count(con, "gaia") and db.row_count(con, SURVEYS[name].table):
                        pairs = xmatch.refresh_survey(con, name)
                        result.survey_pairs[name] = pairs
                        if name == "skymapper":
                            result.xmatch_pairs = pairs
                if table in ("gaia", "sos") and db.row_count(con, "gaia"):
                    result.label_matches = xmatch.refresh_label_match(con)
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


def _ingest_file(con, spec: TableSpec, source: readers.SourceFile, digest_future: Future, preset_name, renames,
                 survey, seen_hashes, on_duplicate="error", speculative=False, keep=(), epoch=None) -> FileResult:
    """Stage, check and insert one file, unless its content was ingested before.

    Normally the file's sha256 is awaited first and an already-ingested file is skipped
    before anything is done with it (whatever this command's options: another --rename
    that would make it fail does not matter).  ``speculative`` (the table had no file
    when the command started, so only a copy named earlier in this same command can
    repeat it) stages, checks and inserts while the hash is still running (the trade-off
    and its measurements: docs/decisions.md).  A repeated copy then either fails a
    check on its keys (already in the table), which the hash turns into a skip, or
    inserts nothing (--on-duplicate skip).
    """
    t0 = time.perf_counter()

    def skip(reason: str) -> FileResult:
        staging.drop_staging(con, spec, source)
        return FileResult(source.path, spec.name, 0, time.perf_counter() - t0, source.format, preset_name,
                          skipped=reason)

    if (not speculative or digest_future.done()) \
            and (reason := _already_ingested(spec, _digest(digest_future, source), seen_hashes)):
        return skip(reason)
    try:
        staged = staging.stage_and_check(con, spec, source, preset_name, renames, survey, on_duplicate, keep, epoch)
    except (UserError, duckdb.Error):
        if speculative and (reason := _already_ingested(spec, _digest(digest_future, source), seen_hashes)) \
                and _transaction_usable(con):
            return skip(reason)
        raise
    ingest_id = staging.insert_staged(con, spec, source, staged)
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
    staging.drop_staging(con, spec, source)
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


