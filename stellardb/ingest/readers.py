"""Read a catalogue file of any supported format into a DuckDB temporary table.

The format is detected from the file's first bytes, never from its name:

* Gaia archive bulk files and other ECSV (``# %ECSV``), gzipped or not: the YAML
  header gives every column's datatype, so DuckDB's CSV reader parses with exact
  types; ``null`` and empty fields are missing (the archive writes ``null``).
* plain CSV, gzipped or not: DuckDB's CSV reader with type detection.
* Parquet (``PAR1``): DuckDB's Parquet reader.
* FITS (``SIMPLE  =``) and VOTable (XML): astropy, then Arrow (masked values and
  FITS TNULL become NULL, big-endian columns are byte-swapped, bytes become text).
* a HATS catalogue folder (``hats.properties``, or a collection's ``collection.properties``;
  made by hats-import, a stellardb release, or a download such as Gaia DR3 in HATS): hats
  lists its partitions, DuckDB reads their Parquet; the HATS columns (``_healpix_29``, and
  ``Norder``/``Dir``/``Npix`` of older catalogues) are left out.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from stellardb.cores import pid_alive
from stellardb.errors import UserError

#: Strings that mean "missing" in CSV/ECSV files.
CSV_NULLS = ["null", "NULL", ""]

#: Column of a staged view holding the 0-based row number in the file (Parquet).
ROW_COLUMN = "_file_row"

#: ECSV datatype -> DuckDB type.
ECSV_TYPES = {
    "bool": "BOOLEAN",
    "int8": "TINYINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "uint8": "UTINYINT",
    "uint16": "USMALLINT",
    "uint32": "UINTEGER",
    "uint64": "UBIGINT",
    "float16": "FLOAT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
}


@dataclass
class SourceFile:
    path: Path
    format: str  # ecsv | csv | parquet | fits | votable | hats
    gzipped: bool
    header_lines: int = 0
    ecsv_columns: dict | None = None
    #: field separator: ECSV's header says (space by default, the archive writes ','); CSV sniffed
    delimiter: str | None = None
    _arrow: object = None  # FITS/VOTable read once by astropy
    #: set by load(): the staged column holding the 0-based file row (a Parquet view), or
    #: None when the stage is a table whose rowid is the file row
    row_column: str | None = None
    staged_as: str = "table"
    #: FITS extension (index or EXTNAME) or VOTable table index to read (--hdu); None: the only one
    hdu: int | str | None = None
    #: a HATS catalogue's Parquet files, in partition order
    hats_files: list | None = None


def _peek(path: Path, n: int = 65536) -> tuple[bytes, bool]:
    """First ``n`` (decompressed) bytes and whether the file is gzipped."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
    except IsADirectoryError:
        raise UserError(f"{path} is a directory; give the catalogue files inside it.") from None
    except OSError as exc:
        raise UserError(f"Cannot read {path}: {exc.strerror}.") from None
    if head[:2] != b"\x1f\x8b":
        return head, False
    try:
        # a partial decompress: fine for the header even if the file is truncated later
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, n), True
    except zlib.error as exc:
        raise UserError(f"{path}: not a valid gzip file ({exc}); download it again.") from None


def detect(path: str | Path, hdu: int | str | None = None) -> SourceFile:
    """Detect the format of ``path`` from its content (``hdu``: which table of a FITS or VOTable file)."""
    source = _detect(Path(path))
    if hdu is not None and source.format not in ("fits", "votable"):
        raise UserError(f"{path}: --hdu chooses a table of a FITS or VOTable file; this is {source.format.upper()}.")
    source.hdu = hdu
    return source


def _detect(path: Path) -> SourceFile:
    if not path.exists():
        raise UserError(f"{path}: no such file.")
    if not path.is_file() and not path.is_dir():
        # a device or a pipe (/dev/zero would be read for ever)
        raise UserError(f"{path} is not a regular file; give a catalogue file.")
    if path.is_dir():
        return _detect_hats(path)
    head, gzipped = _peek(path)
    if not head.strip():
        raise UserError(f"{path} is empty; nothing to ingest.")
    if head.startswith(b"PAR1"):
        return SourceFile(path, "parquet", False)
    if head.startswith(b"SIMPLE  ="):
        return SourceFile(path, "fits", gzipped)
    stripped = head.lstrip()
    if stripped.startswith(b"<?xml") or stripped[:200].lower().find(b"<votable") >= 0:
        return SourceFile(path, "votable", gzipped)
    if head.startswith(b"# %ECSV"):
        header, columns, delimiter = _ecsv_header(path, gzipped)
        if not columns:
            raise UserError(f"{path}: the ECSV header lists no columns (no 'datatype:' section); is the file complete?")
        return SourceFile(path, "ecsv", gzipped, header_lines=header, ecsv_columns=columns, delimiter=delimiter)
    return SourceFile(path, "csv", gzipped)


#: columns HATS adds to a catalogue, which are not the survey's
HATS_COLUMNS = ("_healpix_29", "Norder", "Dir", "Npix")


def _detect_hats(path: Path) -> SourceFile:
    """A HATS catalogue folder (or a collection: its primary catalogue) and its data files."""
    if not ((path / "hats.properties").is_file() or (path / "collection.properties").is_file()
            or (path / "properties").is_file()):
        raise UserError(f"{path} is a folder but not a HATS catalogue (no hats.properties or collection.properties); "
                        "give a catalogue file, or the folder of a HATS catalogue.")
    import hats
    from hats.catalog.catalog_collection import CatalogCollection

    try:
        catalog = hats.read_hats(path)
    except Exception as exc:  # hats raises many kinds for a broken folder
        raise UserError(f"{path}: not a readable HATS catalogue ({type(exc).__name__}: {_first_line(exc)}); "
                        "check that the folder is complete.") from None
    if isinstance(catalog, CatalogCollection):
        catalog = catalog.main_catalog
    kind = str(getattr(catalog.catalog_info.catalog_type, "value", catalog.catalog_info.catalog_type))
    if kind not in ("object", "source"):
        raise UserError(f"{path} is a HATS {kind} catalogue, not a catalogue of rows to ingest; give the folder of "
                        "the object catalogue (its collection, or the primary catalogue).")
    from hats.io import paths as hats_paths

    suffix = catalog.catalog_info.npix_suffix or ".parquet"
    files, missing = [], []
    for pixel in catalog.get_healpix_pixels():
        where = Path(str(hats_paths.pixel_catalog_file(catalog.catalog_base_dir, pixel, npix_suffix=suffix)))
        if suffix == "/":  # a folder per partition (hats_npix_suffix=/): every Parquet file in it
            found = sorted(f for f in where.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
            files.extend(found)
            if not found:
                missing.append(where)
        else:
            files.append(where)
            if not where.is_file():
                missing.append(where)
    if not files or missing:
        raise UserError(f"{path}: the HATS catalogue lists {len(catalog.get_healpix_pixels())} partitions but "
                        f"{'has none' if not files else f'{missing[0]} is missing'}; the folder is incomplete.")
    return SourceFile(path, "hats", False, hats_files=files)


def _ecsv_header(path: Path, gzipped: bool) -> tuple[int, dict]:
    """Number of ``#`` header lines and {column: DuckDB type} from an ECSV header."""
    import yaml

    opener = gzip.open if gzipped else open
    lines = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.startswith("#"):
                    break
                lines.append(line)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read the ECSV header ({exc}); the file may be truncated - download it again.") from None
    body = "".join(line[2:] if line.startswith("# ") else line[1:] for line in lines[1:])
    try:
        meta = yaml.safe_load(body) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed ECSV header ({str(exc).splitlines()[0]}).") from None
    columns = {}
    for col in meta.get("datatype", []):
        columns[col["name"]] = ECSV_TYPES.get(col.get("datatype", "string"), "VARCHAR")
    return len(lines), columns, meta.get("delimiter", " ")


def column_names(con: duckdb.DuckDBPyConnection, source: SourceFile) -> list[str]:
    """The file's column names exactly as written, in order.

    DuckDB's own names are unique only ignoring case (VizieR's ``b_rgeo`` and
    ``B_rgeo`` would come back as ``b_rgeo`` and ``B_rgeo_1``), so the header is
    read here and matched to the loaded columns by position.
    """
    try:
        if source.format == "ecsv":
            return list(source.ecsv_columns)
        if source.format == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(source.path).names)
        if source.format == "hats":
            import pyarrow.parquet as pq

            return [n for n in pq.read_schema(source.hats_files[0]).names if n not in HATS_COLUMNS]
        if source.format == "csv":
            import csv

            source.delimiter = _sniff_delimiter(source)
            opener = gzip.open if source.gzipped else open
            # utf-8-sig: spreadsheet exports start with a byte-order mark
            with opener(source.path, "rt", encoding="utf-8-sig", errors="replace", newline="") as fh:
                return next(csv.reader(fh, delimiter=source.delimiter))
        return _astropy_to_arrow(source).column_names
    except UserError:
        raise
    except (OSError, EOFError, StopIteration, zlib.error) as exc:
        raise UserError(f"{source.path}: cannot read its header ({exc or 'empty file'}).") from None
    except Exception as exc:  # pyarrow raises its own types for a broken Parquet file
        raise UserError(f"{source.path}: cannot read it as {source.format.upper()} ({type(exc).__name__}: {exc}).") from None


def _sniff_delimiter(source: SourceFile) -> str:
    """The field separator DuckDB detects (VizieR writes ';' and tabs as often as ',').

    Sniffed on a throw-away in-memory connection: a file DuckDB cannot sniff (a
    truncated gzip) must not abort the ingest's transaction; reading it fails later
    with a clear message.
    """
    try:
        with duckdb.connect() as scratch:
            row = scratch.execute("select delimiter from sniff_csv($p)", {"p": str(source.path)}).fetchone()
    except duckdb.Error:
        return ","
    sniffed = row[0] if row and row[0] else ","
    # A ragged file (a row with fewer fields) defeats the sniffer, which then falls back
    # to a delimiter the header does not use; the header's own delimiter reads the file
    # and names the bad row instead.
    header = _header_line(source)
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    if counts[best] and counts.get(sniffed, 0) < counts[best]:
        return best
    return sniffed


def _header_line(source: SourceFile) -> str:
    opener = gzip.open if source.gzipped else open
    try:
        with opener(source.path, "rt", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.startswith("#"):
                    return line
    except (OSError, EOFError, zlib.error):
        pass
    return ""


def staged_names(con: duckdb.DuckDBPyConnection, source: SourceFile) -> list[str]:
    """Column names DuckDB's CSV reader will give a plain CSV file (for the types option)."""
    try:
        rows = con.execute(
            "describe select * from read_csv($p, header = true, nullstr = $nulls, compression = $comp, delim = $d)",
            {"p": str(source.path), "nulls": CSV_NULLS, "comp": "gzip" if source.gzipped else "none",
             "d": source.delimiter or ","},
        ).fetchall()
    except duckdb.Error as exc:
        raise _read_error(source, exc) from None
    return [r[0] for r in rows]


def _read_error(source: SourceFile, exc: duckdb.Error) -> UserError:
    """One line for a file DuckDB cannot read, with what to do about it."""
    text = str(exc)
    if source.gzipped and "gzip" in text.lower():
        return _corrupt_gzip(source, _first_line(exc))
    if "not utf-8 encoded" in text.lower():
        line = re.search(r"on Line: (\d+)", text)
        where = f" (line {line.group(1)})" if line else ""
        return UserError(f"{source.path} is not UTF-8 text{where}, perhaps Latin-1; convert it, e.g. "
                         f"`iconv -f latin1 -t utf-8 {source.path.name} > utf8.csv`, and ingest the copy.")
    if source.format in ("csv", "ecsv") and ("sniff" in text.lower() or "expected number of columns" in text.lower()
                                               or "too many columns" in text.lower()):
        ragged = _first_ragged_line(source)
        if ragged is not None:
            line, found, expected = ragged
            return UserError(f"{source.path}: line {line} has {found} fields but the header has {expected}; fix or "
                             "remove that row (a missing value is an empty field between delimiters).")
    return UserError(f"{source.path}: cannot read it as {source.format.upper()}: {_first_line(exc)}")


def _first_ragged_line(source: SourceFile) -> tuple[int, int, int] | None:
    """(line number, fields, header fields) of the first row whose field count differs from the header's."""
    import csv

    opener = gzip.open if source.gzipped else open
    try:
        with opener(source.path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            lines = (line for line in fh)
            number = 0
            for line in lines:  # the ECSV header and comments
                number += 1
                if not line.startswith("#"):
                    break
            else:
                return None
            reader = csv.reader([line], delimiter=source.delimiter or ",")
            expected = len(next(reader))
            for record in csv.reader(lines, delimiter=source.delimiter or ","):
                number += 1
                if record and len(record) != expected:
                    return number, len(record), expected
    except (OSError, EOFError, zlib.error, csv.Error):
        return None
    return None


def _corrupt_gzip(source: SourceFile, detail) -> UserError:
    return UserError(f"{source.path}: the gzip stream is truncated or corrupt ({detail}); download the file again.")


def load(con: duckdb.DuckDBPyConnection, source: SourceFile, stage: str, varchar_columns=()) -> list[str]:
    """Create temporary table ``stage`` with the rows of ``source``; returns its column names.

    ``varchar_columns`` of a plain CSV are read as text, so that 19-digit Gaia ids
    in a column that DuckDB would guess to be DOUBLE keep every digit.

    Raises
    ------
    UserError
        The file cannot be parsed (truncated gzip, bad CSV row, wrong value for an
        ECSV datatype, unreadable FITS); the message names the file.
    """
    path = str(source.path)
    con.execute(f"drop view if exists {stage}")
    con.execute(f"drop table if exists {stage}")
    if source.gzipped and source.format in ("csv", "ecsv"):
        # DuckDB parses a gzipped CSV on one thread; ISA-L inflates about 5x faster than
        # zlib, and the plain copy is then parsed in parallel.
        with _inflated(source) as plain:
            try:
                return load(con, SourceFile(plain, source.format, False, source.header_lines, source.ecsv_columns,
                                            source.delimiter), stage, varchar_columns)
            except UserError as exc:  # name the user's file, not the scratch copy
                raise UserError(str(exc).replace(str(plain), str(source.path))) from None
    source.row_column, source.staged_as = None, "table"
    try:
        if source.format == "hats":
            from stellardb.catalog.db import quote_literal

            files = "[" + ", ".join(quote_literal(f) for f in source.hats_files) + "]"
            names = [r[0] for r in con.execute(
                f"describe select * from read_parquet({files}, hive_partitioning = false)").fetchall()]
            dropped = [n for n in names if n in HATS_COLUMNS]
            exclude = f" exclude ({', '.join(dropped)})" if dropped else ""
            # a copy, so that rowid numbers the catalogue's rows in partition order
            con.execute(f"create temp table {stage} as select *{exclude} from "
                        f"read_parquet({files}, hive_partitioning = false)")
        elif source.format == "parquet":
            literal = "'" + path.replace("'", "''") + "'"
            names = [r[0] for r in con.execute(f"describe select * from read_parquet({literal})").fetchall()]
            if "file_row_number" in {n.lower() for n in names}:
                # the file has DuckDB's own row-number column: copy it, its rowid is the row
                con.execute(f"create temp table {stage} as select * from read_parquet({literal})")
            else:
                # A view, not a copy: Parquet is columnar, so each check reads only its
                # columns and the rows are copied once, by the final insert.  The row
                # number gets a name no column of the file has.
                row = _unused_name(ROW_COLUMN, names)
                con.execute(f"create temp view {stage} as select * exclude (file_row_number), "
                            f"file_row_number as {row} from read_parquet({literal}, file_row_number = true)")
                source.row_column, source.staged_as = row, "view"
        elif source.format == "ecsv":
            con.execute(
                f"create temp table {stage} as select * from read_csv($p, skip = $skip, header = true, "
                "nullstr = $nulls, columns = $cols, compression = $comp, quote = '\"', escape = '\"', delim = $delim)",
                {"p": path, "skip": source.header_lines, "nulls": CSV_NULLS, "cols": source.ecsv_columns,
                 "comp": "gzip" if source.gzipped else "none", "delim": source.delimiter or ","},
            )
        elif source.format == "csv":
            params = {"p": path, "nulls": CSV_NULLS, "comp": "gzip" if source.gzipped else "none",
                      "delim": source.delimiter or ","}
            types = ", delim = $delim"
            if varchar_columns:
                types += ", types = $types"
                params["types"] = {c: "VARCHAR" for c in varchar_columns}
            con.execute(
                f"create temp table {stage} as select * from read_csv($p, header = true, nullstr = $nulls, "
                f"compression = $comp{types})",
                params,
            )
        else:
            table = _astropy_to_arrow(source)
            con.register("_astropy_source", table)
            try:
                con.execute(f"create temp table {stage} as select * from _astropy_source")
            finally:
                con.unregister("_astropy_source")
    except duckdb.Error as exc:
        raise _read_error(source, exc) from None
    names = [r[0] for r in con.execute(f"describe {stage}").fetchall()]
    if source.row_column is None:
        # A file column named rowid (any case) would shadow DuckDB's row number, which the
        # checks and the error messages rely on (a 3,000-row file with rowid = 7 once stored
        # 9 M rows): it is staged under another name (columns are matched by position).
        for name in names:
            if name.lower() == "rowid":
                con.execute(f'alter table {stage} rename column "{name}" to "{_unused_name(name + "_file", names)}"')
        names = [r[0] for r in con.execute(f"describe {stage}").fetchall()]
    return [n for n in names if n != source.row_column]


def _unused_name(base: str, names) -> str:
    taken = {n.lower() for n in names}
    name, k = base, 1
    while name.lower() in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def row_expression(source: SourceFile, stage: str) -> str:
    """SQL for the 0-based file row of a staged row (a transaction's new rows have offset rowids)."""
    if source.row_column is not None:
        return source.row_column
    return f"rowid - (select min(rowid) from {stage})"


def drop_stage(con, source: SourceFile, stage: str) -> None:
    con.execute(f"drop {source.staged_as} if exists {stage}")


@contextlib.contextmanager
def _inflated(source: SourceFile):
    """A temporary uncompressed copy of a gzipped text file (removed afterwards)."""
    from isal import igzip

    from isal.isal_zlib import IsalError

    folder = _scratch_dir(4 * source.path.stat().st_size)
    for place in {"/dev/shm", None, folder}:
        if place is None or Path(place).is_dir():
            sweep_scratch(place)
    # the owner's PID in the name: a copy left by a process killed with SIGKILL (no
    # finally runs) is removed by the next ingest that finds its owner gone
    fd, name = tempfile.mkstemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", suffix=".csv", dir=folder)
    try:
        try:
            with os.fdopen(fd, "wb") as out, igzip.open(source.path, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 24)
        except (EOFError, OSError, IsalError) as exc:  # a cut file; a bad deflate block
            raise _corrupt_gzip(source, exc) from None
        yield Path(name)
    finally:
        # always, Ctrl-C included: a copy left in /dev/shm would hold memory until reboot
        os.unlink(name)


SCRATCH_PREFIX = "stellardb-inflated-"


def sweep_scratch(folder: str | None) -> list[Path]:
    """Remove inflated copies whose owner process no longer exists; returns what was removed.

    A copy in /dev/shm holds RAM until reboot (0.6-1.5 GB per Gaia file), so one left by
    a killed ingest must not outlive it.
    """
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass  # another user's file, or gone already
    return removed


def _scratch_dir(needed_bytes: int) -> str | None:
    """Where to put inflated scratch text: RAM (/dev/shm) when it fits with room to spare.

    On disk, the kernel writes a GB-sized scratch file back while DuckDB parses it: 4 s
    of the 6 s it took to inflate a 600 MB Gaia file (measured; 2 s in RAM).  Catalogue
    text inflates about 2.5x, 4x is assumed, and at most half of the free memory is used.
    (Inflating in chunks while DuckDB parses the previous one was measured too: no gain
    on 2 cores, where parsing already keeps both busy.)
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    try:
        fs = os.statvfs(shm)
        shm_free = fs.f_bavail * fs.f_frsize
        available = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return str(shm) if needed_bytes < min(shm_free, available) / 2 else None


def _first_line(exc: Exception) -> str:
    """DuckDB's error on one line: its first line plus the line naming the column/value."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    detail = next((line for line in lines[1:] if line.lower().startswith(("error when converting", "could not convert"))
                   or ("column" in line.lower() and "convert" in line.lower())), None)
    if detail is None:
        return lines[0]
    return f"{lines[0]} {detail} - fix that value, or check the column mapping."


def _choose_table(source: SourceFile, data, fmt: str) -> dict:
    """Which table of the file to read, as astropy's Table.read options.

    astropy reads the first table of a file with several and only warns, which hid
    the wrong one being ingested; so a file with more than one needs --hdu.
    """
    if fmt == "fits":
        from astropy.io import fits

        # (fits.open closes a file object it is given: hand it a view of the bytes)
        probe = io.BytesIO(data.getbuffer()) if isinstance(data, io.BytesIO) else data
        with fits.open(probe, memmap=False) as hdus:
            tables = [(i, h.name, h.header.get("NAXIS2", 0)) for i, h in enumerate(hdus)
                      if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
        if source.hdu is None:
            if len(tables) > 1:
                listed = ", ".join(f"{i} {name!r} ({rows:,} rows)" for i, name, rows in tables)
                raise UserError(f"{source.path} has {len(tables)} table HDUs: {listed}; choose one with --hdu N or "
                                "--hdu NAME.")
            return {}
        for i, name, _ in tables:
            if str(source.hdu) == str(i) or str(source.hdu).upper() == name.upper():
                return {"hdu": i}
        listed = ", ".join(f"{i} {name!r}" for i, name, _ in tables)
        raise UserError(f"{source.path}: --hdu {source.hdu} is not one of its table HDUs ({listed}).")
    from astropy.io.votable import parse

    probe = io.BytesIO(data.getbuffer()) if isinstance(data, io.BytesIO) else data
    n_tables = sum(1 for _ in parse(probe).iter_tables())
    if source.hdu is None:
        if n_tables > 1:
            raise UserError(f"{source.path} holds {n_tables} tables; choose one with --hdu N (0 to {n_tables - 1}).")
        return {}
    if not str(source.hdu).isdigit() or int(source.hdu) >= n_tables:
        raise UserError(f"{source.path}: --hdu {source.hdu} is not a table index of this VOTable (0 to {n_tables - 1}).")
    return {"table_id": int(source.hdu)}


def _astropy_to_arrow(source: SourceFile):
    """Read FITS or VOTable with astropy and return a pyarrow Table (nulls, native endianness)."""
    import numpy as np
    import pyarrow as pa
    from astropy.table import Table

    if source._arrow is not None:
        return source._arrow
    fmt = "fits" if source.format == "fits" else "votable"
    import warnings

    try:
        with warnings.catch_warnings():
            # unit strings ('dex', "'electron'.s**-1") that FITS does not know are
            # irrelevant here: stellardb stores columns by name in their survey's units
            warnings.simplefilter("ignore")
            if source.gzipped:
                with gzip.open(source.path, "rb") as fh:
                    data = io.BytesIO(fh.read())
            else:
                data = source.path
            choice = _choose_table(source, data, fmt)
            if isinstance(data, io.BytesIO):
                data.seek(0)
            table = Table.read(data, format=fmt, **choice)
    except UserError:
        raise
    except Exception as exc:  # astropy raises many types for a broken file
        raise UserError(f"{source.path}: cannot read it as {fmt.upper()} ({type(exc).__name__}: {exc}).") from None
    arrays, names = [], []
    for name in table.colnames:
        col = table[name]
        if col.ndim > 1:
            continue  # array-valued cells (spectra, covariances) are not catalogue columns
        mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), dtype=bool)
        values = np.asarray(col)
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8", errors="replace")
        if values.dtype.kind == "U":
            values = np.char.strip(values)
            arrays.append(pa.array(values.tolist(), type=pa.string(), mask=mask | (values == "")))
        else:
            if values.dtype.byteorder not in ("=", "|"):
                values = values.astype(values.dtype.newbyteorder("="))
            arrays.append(pa.array(values, mask=mask if mask.any() else None))
        names.append(name)
    source._arrow = pa.Table.from_arrays(arrays, names=names)
    return source._arrow
