"""Query results as the files astronomers open: VOTable, FITS, ECSV, CSV, JSON lines, Parquet.

CSV, JSON lines and Parquet are written by DuckDB's own ``COPY`` (C++, streaming,
about 6x faster than going through pandas).  VOTable, FITS and ECSV go through
astropy, with each column's unit, UCD and description from table
``column_metadata`` (:func:`stellardb.db.column_metadata`):

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
from pathlib import Path

from .errors import UserError

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
    """A temporary path beside ``output`` and a function that moves it into place."""
    target = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.absolute().parent)
    os.close(fd)
    return Path(tmp), lambda: os.replace(tmp, target)


def _copy(rel, fmt: str, output: str | None) -> None:
    options = COPY_FORMATS[fmt]
    if output is None:
        # CSV/JSON to the terminal or a pipe: COPY to stdout's file descriptor when there is one
        # (a shell), else through Arrow batches (an embedding program that replaced sys.stdout)
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            sys.stdout.flush()
            rel.query("_stellardb_export", f"copy (select * from _stellardb_export) to '/dev/fd/{fd}' "
                                           f"{options[:-1]}, use_tmp_file false)")
            return None
        return _stream_text(rel, fmt)
    tmp, commit = _atomic_target(output)
    try:
        path = str(tmp).replace("'", "''")
        rel.query("_stellardb_export", f"copy (select * from _stellardb_export) to '{path}' {options}")
        commit()
    finally:
        tmp.unlink(missing_ok=True)
    return None


def _stream_text(rel, fmt: str) -> None:
    """CSV or JSON lines to ``sys.stdout`` when it is not a file descriptor (tests, notebooks)."""
    import io

    import pyarrow.csv as pacsv

    if fmt == "csv":
        header = True
        for batch in rel.to_arrow_reader(65_536):
            buf = io.BytesIO()
            pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=header))
            sys.stdout.write(buf.getvalue().decode())
            header = False
        return None
    # JSON lines: DuckDB formats each row (same text as COPY ... (format json))
    for (line,) in rel.query("_r", "select to_json(_r)::varchar from _r").fetchall():
        sys.stdout.write(line + "\n")
    return None


def _astropy(con, rel, fmt: str, output: str | None, sql: str | None) -> int:
    from .db import column_metadata

    arrow = rel.to_arrow_table()
    table = to_astropy(arrow, column_metadata(con, arrow.column_names, sql))
    if output is None:  # ecsv to stdout
        table.write(sys.stdout, format="ascii.ecsv")
        return len(table)
    tmp, commit = _atomic_target(output)
    try:
        if fmt == "votable":
            _write_votable(table, tmp)
        elif fmt == "fits":
            _write_fits(table, tmp)
        else:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        commit()
    finally:
        tmp.unlink(missing_ok=True)
    return len(table)


def to_astropy(arrow, metadata: dict):
    """An Arrow table as an astropy Table: NULL masked, units, UCDs and descriptions attached."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from astropy import units as u
    from astropy.table import MaskedColumn, Table

    columns = []
    for name, col in zip(arrow.column_names, arrow.columns):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        kind = col.type
        mask = col.is_null().to_numpy(zero_copy_only=False)
        meta = {}
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
            values = np.array([v.isoformat() if v is not None else "" for v in col.to_pylist()], dtype=str)
            meta["xtype"] = "timestamp" if pa.types.is_timestamp(kind) or pa.types.is_date(kind) else None
        elif pa.types.is_boolean(kind) or pa.types.is_integer(kind) and kind.bit_width <= 64 and not (
                pa.types.is_unsigned_integer(kind) and kind.bit_width == 64):
            values = col.fill_null(False if pa.types.is_boolean(kind) else 0).to_numpy(zero_copy_only=False)
        elif pa.types.is_floating(kind):
            values = col.fill_null(np.nan).to_numpy(zero_copy_only=False)
        elif pa.types.is_decimal(kind):
            values = pc.cast(col, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = np.array(col.fill_null("").to_pylist(), dtype=str)
        else:  # UBIGINT, HUGEINT, UUID, BLOB, lists, structs, maps: as text
            values = np.array(["" if v is None else str(v) for v in col.to_pylist()], dtype=str)
        info = metadata.get(name, {})
        unit = u.Unit(info["unit"], format="vounit", parse_strict="silent") if info.get("unit") else None
        if info.get("ucd"):
            meta["ucd"] = info["ucd"]
        meta = {k: v for k, v in meta.items() if v is not None}
        columns.append(MaskedColumn(values, name=name, mask=mask, unit=unit, description=info.get("description"),
                                    meta=meta))
    return Table(columns, masked=True)


def _write_votable(table, path: Path) -> None:
    from astropy.io.votable import from_table

    votable = from_table(table)
    for field, column in zip(votable.get_first_table().fields, table.columns.values()):
        if column.meta.get("xtype"):
            field.xtype = column.meta["xtype"]
        if field.datatype == "bit":
            # astropy writes numpy bools as a bit field, which STILTS/TOPCAT read as a bit
            # array; VOTable's scalar logical type, with nulls, is "boolean"
            field.datatype = "boolean"
    votable.to_xml(str(path), tabledata_format="binary2")


def _write_fits(table, path: Path) -> None:
    """FITS binary table; descriptions as TCOMMn and UCDs as TUCDn (the keywords STIL/TOPCAT read)."""
    import warnings

    from astropy.io import fits
    from astropy.units import UnitsWarning

    table = table.copy(copy_data=False)
    for name, column in list(table.columns.items()):
        if column.dtype == bool and column.mask.any():
            # FITS logicals have no null astropy writes; a nullable flag becomes 1/0 with TNULL
            table.replace_column(name, type(column)(column.data.data.astype("int16"), name=name, mask=column.mask,
                                                    fill_value=-1,
                                                    unit=column.unit, description=column.description,
                                                    meta=column.meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsWarning)
        hdu = fits.table_to_hdu(table)
    for i, column in enumerate(table.columns.values(), start=1):
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

