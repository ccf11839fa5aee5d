"""Query results as the client asked for them, and the error documents.

VOTable is the default (DALI/TAP): BINARY2 from NumPy (stellardb.catalog.export.votable_xml,
read back by astropy and STILTS in the tests), or TABLEDATA on request; every FIELD carries
the unit, UCD and description of the column it came from.  CSV, TSV, JSON and Parquet (with
the VO-Parquet header) are there for scripts.
"""

from __future__ import annotations

import io
import json
import math

from stellardb.catalog.export import info_xml, vo_columns, votable_xml

VOTABLE = "application/x-votable+xml"

#: RESPONSEFORMAT values (TAP 1.1 section 2.7.1 and DALI) -> (what is written, media type)
FORMATS = {
    "votable": ("votable", VOTABLE),
    VOTABLE: ("votable", VOTABLE),
    "application/x-votable+xml;serialization=binary2": ("votable", VOTABLE),
    "votable/b2": ("votable", VOTABLE),
    "text/xml": ("votable", "text/xml"),
    "application/x-votable+xml;serialization=tabledata": ("votable-td", VOTABLE),
    "votable/td": ("votable-td", VOTABLE),
    "votabletd": ("votable-td", VOTABLE),
    "csv": ("csv", "text/csv"),
    "text/csv": ("csv", "text/csv"),
    "text/csv;header=present": ("csv", "text/csv"),
    "tsv": ("tsv", "text/tab-separated-values"),
    "text/tab-separated-values": ("tsv", "text/tab-separated-values"),
    "json": ("json", "application/json"),
    "application/json": ("json", "application/json"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
    "application/vnd.apache.parquet": ("parquet", "application/vnd.apache.parquet"),
    "application/x-parquet": ("parquet", "application/vnd.apache.parquet"),
}


#: file extension of each kind (an asynchronous job's result file)
EXTENSIONS = {"votable": "xml", "votable-td": "xml", "csv": "csv", "tsv": "tsv", "json": "json",
              "parquet": "parquet"}


class FormatError(ValueError):
    pass


#: the most values (rows x columns) one answer holds, per format: a result is written in Python after
#: DuckDB has returned it, outside the query's time and memory limits (JSON and TABLEDATA convert
#: every value to text; 1 M rows x 76 columns as JSON took 21 s and 1.2 GB, measured)
CELLS = {"votable": 30_000_000, "csv": 30_000_000, "tsv": 30_000_000, "parquet": 60_000_000,
         "votable-td": 3_000_000, "json": 3_000_000}


def response_format(value: str | None) -> tuple[str, str]:
    """(kind, media type) of a RESPONSEFORMAT (or FORMAT) value; default VOTable BINARY2."""
    if not value:
        return FORMATS["votable"]
    key = value.strip().lower().replace(" ", "")
    if key not in FORMATS:
        raise FormatError(f"RESPONSEFORMAT={value[:60]!r} is not offered; use one of votable (default), votable/td, "
                          "csv, tsv, json, parquet.")
    return FORMATS[key]


def render(kind: str, arrow, columns: list[dict], infos: list, overflow: str | None) -> bytes:
    """The result ``arrow`` (column names unique) in format ``kind``.

    ``columns``: per result column, a dict with unit, ucd, description (empty when computed);
    ``infos``: (name, value, text) to state before the table (QUERY_STATUS first);
    ``overflow``: why the rows were cut (TAP's trailing QUERY_STATUS=OVERFLOW), or None.
    """
    metadata = {name: meta for name, meta in zip(arrow.column_names, columns)}
    if kind in ("votable", "votable-td"):
        trailing = [("QUERY_STATUS", "OVERFLOW", overflow)] if overflow else []
        # straight from Arrow: an astropy Table on the way costs more than the query (11 of 20 ms a cone)
        return votable_xml(vo_columns(arrow, metadata), infos=infos,
                           trailing_infos=trailing, tabledata=kind == "votable-td").encode("utf-8")
    if kind in ("csv", "tsv"):
        import pyarrow.csv as pcsv

        sink = io.BytesIO()
        pcsv.write_csv(_plain(arrow), sink, pcsv.WriteOptions(delimiter="," if kind == "csv" else "\t",
                                                                 quoting_style="needed"))
        return sink.getvalue()
    if kind == "json":
        return _json(arrow, metadata, infos, overflow)
    if kind == "parquet":
        import pyarrow.parquet as pq

        header = votable_xml(vo_columns(arrow.slice(0, 0), metadata), with_data=False)
        table = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               b"IVOA.VOTable-Parquet.version": b"1.0",
                                               b"IVOA.VOTable-Parquet.content": header.encode("utf-8")})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()
    raise FormatError(kind)


def _plain(arrow):
    """Arrow columns CSV can write: nested and binary ones as text."""
    import pyarrow as pa

    fixed = []
    for col in arrow.columns:
        if pa.types.is_nested(col.type) or pa.types.is_binary(col.type):
            col = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
        fixed.append(col)
    return pa.table(fixed, names=arrow.column_names)


def _json(arrow, metadata: dict, infos: list, overflow: bool) -> bytes:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, (bytes, bytearray)):
            return v.hex()
        return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)

    rows = [[clean(v) for v in row] for row in zip(*(c.to_pylist() for c in arrow.columns))]
    body = {"query_status": "OVERFLOW" if overflow else "OK",
            "info": {name: value for name, value, _ in infos if name != "QUERY_STATUS"},
            "metadata": [{"name": name, "datatype": str(arrow.schema.field(name).type),
                          **{k: v for k, v in metadata.get(name, {}).items() if v}} for name in arrow.column_names],
            "data": rows}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def error_votable(message: str, infos: list | None = None) -> bytes:
    """A DALI error document: QUERY_STATUS=ERROR with the message (one line, no paths)."""
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            ' <RESOURCE type="results">\n'
            + info_xml([("QUERY_STATUS", "ERROR", message)] + list(infos or []))
            + " </RESOURCE>\n</VOTABLE>\n").encode("utf-8")
