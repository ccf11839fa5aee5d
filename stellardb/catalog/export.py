"""Query results as the files astronomers open: VOTable, FITS, ECSV, CSV, JSON lines, Parquet.

CSV, JSON lines and Parquet are written by DuckDB's own ``COPY`` (C++, streaming,
about 6x faster than going through pandas).  VOTable, FITS and ECSV go through
astropy, with each column's unit, UCD and description from table
``column_metadata`` (:func:`stellardb.catalog.db.column_metadata`):

* NULL becomes a masked value (VOTable null / FITS TNULL or NaN / ECSV empty);
  a NaN stays NaN;
* timestamps and dates become ISO 8601 strings (VOTable ``xtype="timestamp"``);
* types these formats lack (unsigned 64-bit, HUGEINT, DECIMAL, UUID, lists,
  structs) become float64 (DECIMAL) or text.

Every file is written to a temporary name beside the target and renamed into
place when complete, so a failure never leaves a truncated file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from stellardb.errors import UserError

#: formats written by DuckDB's COPY, and their COPY options
COPY_FORMATS = {"csv": "(format csv, header true)", "json": "(format json)", "parquet": "(format parquet, compression zstd)"}
#: formats written by astropy, with units, UCDs and descriptions
ASTROPY_FORMATS = ("votable", "fits", "ecsv")
FILE_ONLY = ("parquet", "votable", "fits")


def export(con, rel, fmt: str, output: str | None, sql: str | None = None) -> int | None:
    """Write relation ``rel`` (query ``sql`` on ``con``) as ``fmt`` to ``output`` (None: stdout).

    Returns the number of rows written when known.
    """
    require_output(fmt, output)
    if fmt in COPY_FORMATS:
        return _copy(rel, fmt, output)
    if fmt in ASTROPY_FORMATS:
        return _astropy(con, rel, fmt, output, sql)
    raise UserError(f"Unknown format {fmt!r}; choose one of {', '.join([*COPY_FORMATS, *ASTROPY_FORMATS])}.")


def _atomic_target(output: str):
    """A temporary path beside ``output`` and a function that moves it into place.

    The file gets the permissions a plain ``open`` would give it (``mkstemp`` makes it
    private to its owner, which would follow it through the rename).
    """
    target = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.absolute().parent)
    except OSError as exc:
        raise UserError(f"Cannot write {output}: {exc.strerror or exc}; choose a writable path.") from None
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    os.close(fd)
    return Path(tmp), lambda: os.replace(tmp, target)


def _copy(rel, fmt: str, output: str | None) -> None:
    options = COPY_FORMATS[fmt]
    if output is None:
        # To the terminal, a pipe or a redirected file: DuckDB writes a scratch file that is
        # then copied to stdout.  COPY straight to /dev/fd/1 would reopen a redirected file
        # at offset 0 (`>>` would overwrite, text printed before would be lost).
        with tempfile.TemporaryDirectory(prefix="stellardb-query-") as scratch:
            path = Path(scratch) / f"result.{fmt}"
            _copy_to(rel, path, options)
            _send_to_stdout(path)
        return None
    tmp, commit = _atomic_target(output)
    try:
        _copy_to(rel, tmp, options)
        commit()
    except OSError as exc:
        raise UserError(f"Cannot write {output}: {exc.strerror or exc}.") from None
    except __import__("duckdb").IOException as exc:
        if "No space left" in str(exc):
            raise UserError(f"Cannot write {output}: the disk is full (no space left on device); free some space "
                            "and run again (no partial file is left).") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
        Path(tmp.parent, f"tmp_{tmp.name}").unlink(missing_ok=True)  # DuckDB's own scratch name
    return None


def _copy_to(rel, path: Path, options: str) -> None:
    """DuckDB's COPY of the rows of ``rel`` to ``path``, by a separate in-memory DuckDB.

    A read-only stellardb database has no file access at all (stellardb.catalog.db.READ_ONLY_SETTINGS),
    so its rows stream as Arrow batches into a scratch connection, which writes the file
    that stellardb chose: user SQL never names a file.
    """
    import duckdb

    writer = duckdb.connect()
    try:
        writer.register("result", rel.to_arrow_reader(65_536))
        quoted = str(path).replace("'", "''")
        writer.execute(f"copy result to '{quoted}' {options}")
    finally:
        writer.close()


def _send_to_stdout(path: Path) -> None:
    """Copy a file to stdout; a reader that stops early (``| head``) ends it quietly."""
    import shutil

    out = getattr(sys.stdout, "buffer", None)
    try:
        with open(path, "rb") as fh:
            if out is not None:
                sys.stdout.flush()
                shutil.copyfileobj(fh, out, 1 << 20)
                out.flush()
            else:  # a text-only stdout (an embedding program, click's test runner)
                for block in iter(lambda: fh.read(1 << 20), b""):
                    sys.stdout.write(block.decode())
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _astropy(con, rel, fmt: str, output: str | None, sql: str | None) -> int:
    from stellardb.catalog.db import column_metadata

    types = dict(zip(rel.columns, (str(t) for t in rel.types)))
    arrow = rel.to_arrow_table()
    table = to_astropy(arrow, column_metadata(con, arrow.column_names, sql, types))
    if output is None:  # ecsv to stdout
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table.write(sys.stdout, format="ascii.ecsv")
        return len(table)
    tmp, commit = _atomic_target(output)
    try:
        if fmt == "votable":
            _write_votable(table, tmp, description=f"stellardb query: {sql}" if sql else None)
        elif fmt == "fits":
            _write_fits(table, tmp)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # astropy's notes on units it does not know
                table.write(tmp, format="ascii.ecsv", overwrite=True)
        commit()
    except OSError as exc:
        raise UserError(f"Cannot write {output}: {exc.strerror or exc}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return len(table)


def to_astropy(arrow, metadata: dict):
    """An Arrow table as an astropy Table: NULL masked, units, UCDs and descriptions attached.

    Names that repeat (``select * from a join b``) get ``_2``, ``_3``, ... appended:
    astropy, FITS and ECSV need unique names.
    """
    from astropy.table import MaskedColumn, Table

    columns = []
    for c in vo_columns(arrow, metadata):
        meta = {k: v for k, v in (("ucd", c.ucd), ("xtype", c.xtype)) if v}
        columns.append(MaskedColumn(c.values, name=c.name, mask=c.mask, unit=_unit(c.unit) if c.unit else None,
                                    description=c.description, meta=meta))
    return Table(columns, masked=True)


@dataclass
class VoColumn:
    """One column as the VOTable writer takes it: NumPy values (NULLs filled), the NULL mask, metadata."""

    name: str
    values: object
    mask: object
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    xtype: str | None = None


def vo_columns(arrow, metadata: dict) -> list[VoColumn]:
    """The columns of an Arrow table as NumPy arrays a VOTable can hold (times, big integers,
    binary and nested values as text), with ``metadata[name]``'s unit, UCD and description;
    repeated names get ``_2``, ``_3``, ..."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    seen: dict[str, int] = {}
    for name, col in zip(arrow.column_names, arrow.columns):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        kind = col.type
        # a column without NULLs (most of a cone's) skips Arrow's is_null and fill_null: each
        # call costs ~15 us, 17 columns a quarter of a cone search's answer.  Only where a NULL is
        # always in the validity bitmap: a union, dictionary or run-end array has null_count 0
        # with NULLs in it (review)
        plain = col.null_count == 0 and (pa.types.is_boolean(kind) or pa.types.is_integer(kind)
                                         or pa.types.is_floating(kind))
        mask = np.zeros(len(col), dtype=bool) if plain else col.is_null().to_numpy(zero_copy_only=False)
        xtype = None

        def text(convert):
            return np.array(["" if v is None else convert(v) for v in col.to_pylist()], dtype=str)

        if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
            values = text(lambda v: v.isoformat())
            if not pa.types.is_time(kind):
                xtype = "timestamp"
        elif pa.types.is_boolean(kind) or pa.types.is_integer(kind) and kind.bit_width <= 64 and not (
                pa.types.is_unsigned_integer(kind) and kind.bit_width == 64):
            values = (col if plain else col.fill_null(False if pa.types.is_boolean(kind) else 0)).to_numpy(
                zero_copy_only=False)
        elif pa.types.is_floating(kind):
            values = (col if plain else col.fill_null(np.nan)).to_numpy(zero_copy_only=False)
        elif pa.types.is_decimal(kind) and kind.scale == 0 and kind.precision > 18:
            # HUGEINT (sum() of integers): a long when every value fits in one, else every digit as text
            try:
                values = pc.cast(col, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                values = text(str)
        elif pa.types.is_decimal(kind):
            values = pc.cast(col, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = np.array(col.fill_null("").to_pylist(), dtype=str)
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
            values = text(lambda v: v.hex())
        elif pa.types.is_interval(kind):
            values = text(lambda v: f"{v.months} months {v.days} days {v.nanoseconds / 1e9:g} s")
        elif pa.types.is_nested(kind):
            values = text(lambda v: json.dumps(v, default=str))
        else:  # UBIGINT, UUID and the rest: as text
            values = text(str)
        info = metadata.get(name, {})
        seen[name] = seen.get(name, 0) + 1
        unique = name if seen[name] == 1 else f"{name}_{seen[name]}"
        columns.append(VoColumn(unique, values, mask, info.get("unit") or None, info.get("ucd") or None,
                                info.get("description") or None, xtype))
    return columns


@__import__("functools").lru_cache(maxsize=1024)
def _unit(text: str):
    """An astropy unit from its VOUnit text, parsed once: a unit VOUnit does not know (log(cm.s**-2),
    dex) costs astropy ~6 ms of "did you mean" suggestions each time, most of a cone search's answer."""
    from astropy import units as u

    return u.Unit(text, format="vounit", parse_strict="silent")


# VOTable BINARY2 types of NumPy dtypes (big-endian in the stream)
_VOTABLE_TYPES = {"b": ("boolean", "u1"), "i1": ("short", ">i2"), "i2": ("short", ">i2"), "i4": ("int", ">i4"),
                  "i8": ("long", ">i8"), "u1": ("unsignedByte", "u1"), "u2": ("int", ">i4"), "u4": ("long", ">i8"),
                  "f4": ("float", ">f4"), "f8": ("double", ">f8")}


_XML_NAME = __import__("re").compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: characters XML 1.0 cannot carry, even escaped (C0 controls but tab, newline, return; surrogates; FFFE/FFFF)
_NOT_XML = __import__("re").compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value) -> str:
    """``value`` as text XML can hold: characters it cannot are replaced by U+FFFD (a query may
    name a column "\x01"; the document must stay well-formed)."""
    return _NOT_XML.sub("\ufffd", str(value))


def _write_votable(table, path: Path, description: str | None = None) -> None:
    Path(path).write_text(votable_xml(table, description), encoding="utf-8")


def votable_xml(table, description: str | None = None, with_data: bool = True,
                char_widths: dict | None = None, infos: list | None = None, trailing_infos: list | None = None,
                tabledata: bool = False) -> str:
    """VOTable 1.4 with the rows as one BINARY2 stream, encoded with NumPy.

    ``with_data=False``: the FIELDs only, the header a VO-Parquet file carries
    (IVOA note "Parquet files in the Virtual Observatory": key ``IVOA.VOTable-Parquet.content``),
    with each text column's ``arraysize`` from ``char_widths`` (name -> widest value).

    astropy's writer converts cell by cell in Python (0.6 ms per row of 69 columns:
    a minute for the demo's 100k predictions); here each column is one NumPy
    conversion into a packed record array.  Rows: the null flags (one bit per field,
    first field in the most significant bit), then each field big-endian; text is
    ``char`` (ASCII) or ``unicodeChar`` (UCS-2), fixed length padded with NUL.

    ``infos``: (name, value, text) INFO elements before the table (default: QUERY_STATUS OK);
    ``trailing_infos`` after it (TAP's QUERY_STATUS OVERFLOW).  ``tabledata``: the rows as
    TABLEDATA (XML cells, for clients that ask for it) instead of BINARY2.
    """
    import base64
    from xml.sax.saxutils import escape

    import numpy as np

    columns = table if isinstance(table, list) else _from_astropy(table)
    n = len(columns[0].values) if columns else 0
    fields, dtype, arrays = [], [], []
    nulls = np.zeros((n, len(columns)), dtype=bool)
    for k, column in enumerate(columns):
        mask = np.asarray(column.mask, dtype=bool)
        nulls[:, k] = mask
        data = np.asarray(column.values)
        # ID (optional) must be an XML name; readers such as astropy name columns by it
        attrs = {"name": column.name, **({"ID": column.name} if _XML_NAME.fullmatch(column.name) else {})}
        if data.dtype.kind == "U":
            values = np.where(mask, "", data.astype(str))
            ascii_only = all(v.isascii() for v in values.tolist())
            encoded = np.char.encode(values, "ascii" if ascii_only else "utf-16-be")
            # at least 2: arraysize="1" reads as one character, not a string (VOTable 1.3 erratum 3)
            width = max(2 if ascii_only else 4, encoded.dtype.itemsize)
            attrs["datatype"] = "char" if ascii_only else "unicodeChar"
            if not with_data and char_widths:  # a header without rows (VO-Parquet): the data's widest value
                width = max(2, char_widths.get(column.name, 1))
            attrs["arraysize"] = str(width if ascii_only else width // 2)
            dtype.append((f"f{k}", f"S{width}"))
            arrays.append(encoded.astype(f"S{width}"))
        else:
            key = "b" if data.dtype.kind == "b" else f"{data.dtype.kind}{data.dtype.itemsize}"
            votype, code = _VOTABLE_TYPES[key]
            attrs["datatype"] = votype
            if votype == "boolean":
                values = np.where(mask, ord("?"), np.where(data, ord("T"), ord("F"))).astype("u1")
            else:
                values = data.astype(code)
            dtype.append((f"f{k}", code))
            arrays.append(values)
        if column.unit:
            attrs["unit"] = column.unit
        if column.ucd:
            attrs["ucd"] = column.ucd
        if column.xtype:
            attrs["xtype"] = column.xtype
        fields.append(_field_xml(tuple((key, str(value)) for key, value in attrs.items()),
                                 None if column.description is None else str(column.description)))
    flag_bytes = (len(columns) + 7) // 8
    rows = np.empty(n, dtype=np.dtype([("nulls", "u1", (flag_bytes,)), *dtype]))
    rows["nulls"] = np.packbits(nulls, axis=1, bitorder="big") if n else np.zeros((0, flag_bytes), "u1")
    for (name, _), values in zip(dtype, arrays):
        rows[name] = values
    about = f"  <DESCRIPTION>{escape(xml_text(description))}</DESCRIPTION>\n" if description else ""
    if not with_data:
        data = ""
    elif tabledata:
        data = "   <DATA><TABLEDATA>\n" + _tabledata_rows(columns) + "</TABLEDATA></DATA>\n"
    else:
        stream = base64.encodebytes(rows.tobytes()).decode("ascii")
        data = '   <DATA><BINARY2><STREAM encoding="base64">\n' + stream + "</STREAM></BINARY2></DATA>\n"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        ' <RESOURCE type="results">\n'
        + info_xml(infos if infos is not None else [("QUERY_STATUS", "OK", None)])
        + f'  <TABLE name="result" nrows="{n}">\n{about}' + "\n".join(fields) + "\n"
        + data + "  </TABLE>\n" + info_xml(trailing_infos or []) + " </RESOURCE>\n</VOTABLE>\n"
    )


#: FIELDs kept, and the most characters (attributes and description) of one that is kept: a
#: release's columns are a few hundred short ones; a query's alias (up to 100 kB of ADQL) or an
#: upload's description is anyone's, and must not stay in every worker's memory (review: 120
#: hostile ones held 68 MB)
FIELDS_KEPT, FIELD_KEPT_MAX_CHARS = 1024, 1024


def _field_xml(attrs: tuple[tuple[str, str], ...], description: str | None) -> str:
    """One FIELD element (attribute values and description as text); short ones are kept, as a
    service writes the same few hundred again and again (escaping 17 fields' attributes and
    descriptions cost 0.3 ms a cone search)."""
    if sum(len(k) + len(v) for k, v in attrs) + len(description or "") > FIELD_KEPT_MAX_CHARS:
        return _field_text(attrs, description)
    return _kept_field(attrs, description)


def _field_text(attrs, description) -> str:
    from xml.sax.saxutils import escape, quoteattr

    text = "".join(f" {key}={quoteattr(xml_text(value))}" for key, value in attrs)
    body = f"<DESCRIPTION>{escape(xml_text(description))}</DESCRIPTION>" if description else ""
    return f"   <FIELD{text}>{body}</FIELD>" if body else f"   <FIELD{text}/>"


_kept_field = __import__("functools").lru_cache(maxsize=FIELDS_KEPT)(_field_text)


def info_xml(infos) -> str:
    """VOTable INFO elements from (name, value, text) triples."""
    from xml.sax.saxutils import escape, quoteattr

    return "".join(f"  <INFO name={quoteattr(xml_text(name))} value={quoteattr(xml_text(value))}"
                   + (f">{escape(xml_text(text))}</INFO>\n" if text else "/>\n") for name, value, text in infos)


def _from_astropy(table) -> list[VoColumn]:
    import numpy as np

    return [VoColumn(c.name, np.ma.getdata(c), np.ma.getmaskarray(c), c.unit.to_string() if c.unit is not None else None,
                     c.meta.get("ucd"), c.description, c.meta.get("xtype")) for c in table.columns.values()]


def _tabledata_rows(columns: list[VoColumn]) -> str:
    """TABLEDATA cells: NULL is an empty cell; floats with every digit (repr)."""
    from xml.sax.saxutils import escape

    import numpy as np

    cells = []
    for column in columns:
        mask = np.asarray(column.mask, dtype=bool)
        data = np.asarray(column.values)
        if data.dtype.kind == "b":
            text = np.where(data, "T", "F").tolist()
        elif data.dtype.kind == "f":
            text = [repr(float(v)) if np.isfinite(v) else ("NaN" if np.isnan(v) else ("+Inf" if v > 0 else "-Inf"))
                    for v in data.tolist()]
        elif data.dtype.kind == "U":
            text = [escape(xml_text(v)) for v in data.tolist()]
        else:
            text = [str(v) for v in data.tolist()]
        cells.append(["" if m else t for t, m in zip(text, mask.tolist())])
    return "".join("<TR>" + "".join(f"<TD>{v}</TD>" for v in row) + "</TR>\n" for row in zip(*cells))


def _write_fits(table, path: Path) -> None:
    """FITS binary table; descriptions as TCOMMn and UCDs as TUCDn (the keywords STIL/TOPCAT read).

    FITS text is ASCII: a column with other characters is refused in one line (VOTable
    and ECSV keep them).  Units FITS does not define (``'dex'``, ``log(cm.s**-2)``) are
    written as TUNIT text anyway rather than dropped.
    """
    import warnings

    from astropy.io import fits

    table = table.copy(copy_data=False)
    for name, column in list(table.columns.items()):
        if column.dtype.kind == "U" and not all(str(v).isascii() for v in column.data.data.tolist()):
            raise UserError(f"Column {name} holds non-ASCII text, which FITS cannot store; export as votable or ecsv, "
                            "or select it without those characters.")
        if column.dtype == bool and column.mask.any():
            # FITS logicals have no null astropy writes; a nullable flag becomes 1/0 with TNULL
            table.replace_column(name, type(column)(column.data.data.astype("int16"), name=name, mask=column.mask,
                                                    fill_value=-1,
                                                    unit=column.unit, description=column.description,
                                                    meta=column.meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # units FITS lacks: set below as text
        hdu = fits.table_to_hdu(table)
    for i, column in enumerate(table.columns.values(), start=1):
        if column.unit is not None and f"TUNIT{i}" not in hdu.header:
            hdu.header[f"TUNIT{i}"] = column.unit.to_string()
        if column.description:
            hdu.header[f"TCOMM{i}"] = column.description[:68]
        if column.meta.get("ucd"):
            hdu.header[f"TUCD{i}"] = column.meta["ucd"]
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def require_output(fmt: str, output: str | None) -> None:
    """Binary formats go to a file: refuse them without one, before any work."""
    if fmt in FILE_ONLY and not output:
        suffix = {"votable": "vot", "fits": "fits", "parquet": "parquet"}[fmt]
        raise UserError(f"--format {fmt} writes a file; give --output FILE.{suffix}.")


def check_output_path(output: str | None) -> None:
    """Refuse an --output whose folder does not exist, before the query runs."""
    if output and not Path(output).absolute().parent.is_dir():
        raise UserError(f"Cannot write {output}: folder {Path(output).absolute().parent} does not exist; create it first.")


def check_plot_path(path: Path) -> None:
    """Refuse a --plot path that cannot take a PNG before anything is computed or changed."""
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG: give a file name ending in .png, not {path.name!r}.")
    folder = next((p for p in path.absolute().parents if p.exists()), None)
    if path.is_dir() or folder is None or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"--plot {path}: cannot write a file there; choose a writable path.")
