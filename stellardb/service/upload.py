"""Table uploads (TAP 1.1 ``UPLOAD=name,param:part``): the user's own table, as ``TAP_UPLOAD.name``.

An upload arrives as a part of a multipart request, in VOTable (what pyvo, TOPCAT and STILTS
send), CSV (a header line of names) or Parquet, told apart by their first bytes.  It becomes an
Arrow table that only the query of that request (or job) sees: registered on the query's own
DuckDB cursor under a random name (stellardb.service.served.Served.execute), never written into
the release, never visible to another query.  Units, UCDs and descriptions of a VOTable's FIELDs
follow the columns into the result.

Uploads by URL (``UPLOAD=t,https://...``, TAP 1.1's second form) are fetched with care (see
:func:`fetch`): public hosts only, no redirects, a size and time limit.
"""

from __future__ import annotations

import functools
import io
import re
import secrets
import warnings
from dataclasses import dataclass, field

from stellardb.service import adql
from stellardb.service.metadata import Column

SCHEMA = adql.UPLOAD_SCHEMA
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
#: the most columns one upload may have
MAX_COLUMNS = 500
#: the hidden row number every upload gets (a crossmatch's nearest match is per upload row)
ROW_COLUMN = adql.UPLOAD_ROW


class UploadError(ValueError):
    """An upload the client can fix (one line)."""


@dataclass
class Upload:
    name: str                       # as ADQL names it, lower case: TAP_UPLOAD.<name>
    table: object                   # pyarrow.Table, columns lower case, plus ROW_COLUMN
    columns: dict[str, Column] = field(default_factory=dict)
    sql_name: str = ""              # what the query's cursor knows it as
    adql_table: adql.Table | None = None

    def column(self, name: str) -> Column | None:
        return self.columns.get(name.lower())


def parse_spec(spec: str) -> list[tuple[str, str, str]]:
    """``UPLOAD``'s value, ``name,param:part[;name2,https://...]``: [(name, "param" or "url", part or URL)]."""
    found = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, where = item.partition(",")
        name, where = name.strip(), where.strip()
        if not _NAME.match(name):
            raise UploadError(f"UPLOAD table name {name[:40]!r} is not a plain name; use letters, digits and _, "
                              "starting with a letter (UPLOAD=mylist,param:file)")
        if where.lower().startswith(("http://", "https://")):
            kind, ref = "url", where
        elif where.startswith("param:") and where[6:]:
            kind, ref = "param", where[6:]
        else:
            raise UploadError(f"UPLOAD={item[:60]!r}: give the table as a part of the request ({name},param:PART) "
                              f"or an http(s) URL ({name},https://...)")
        if any(n == name.lower() for n, _, _ in found):
            raise UploadError(f"UPLOAD names {name!r} twice; give each table its own name")
        found.append((name.lower(), kind, ref))
    if not found:
        raise UploadError("UPLOAD is empty; write UPLOAD=name,param:part")
    return found


#: seconds a table given by URL may take to arrive
FETCH_TIMEOUT_S = 30.0


def fetch(url: str, max_bytes: int, private_hosts: bool = False) -> bytes:
    """The bytes at an upload's URL (TAP 1.1 uploads by reference).  The service is on the internet
    and the URL is the user's: only http(s), no redirects, at most ``max_bytes``, and no host on
    a loopback, private, link-local or reserved address (the service's own network) unless
    ``private_hosts`` (tests on one machine)."""
    import ipaddress
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"{url[:80]!r} is not an http(s) URL")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or None)}
    except (socket.gaierror, UnicodeError):
        raise UploadError(f"the host of {url[:80]!r} is not known") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not private_hosts and not ip.is_global:
            raise UploadError(f"{url[:80]!r} is on a private or local address; the service fetches tables from "
                              "public hosts only (or send the table in the request: name,param:part)")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None  # a redirect could lead anywhere: not followed

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "stellardb-tap"}),
                         timeout=FETCH_TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise UploadError(f"{url[:80]!r} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UploadError(f"{url[:80]!r} could not be read ({str(reason)[:80]})") from None
    if len(data) > max_bytes:
        raise UploadError(f"the table at {url[:80]!r} is larger than {max_bytes:,} bytes")
    return data


def read(name: str, data: bytes, max_rows: int) -> Upload:
    """The upload ``name`` from the bytes of its part: VOTable, Parquet or CSV."""
    import pyarrow as pa

    if not data.strip():
        raise UploadError(f"upload {name!r} is empty")
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    try:
        if head.startswith(b"PAR1"):
            table, columns = _parquet(data), {}
        elif head.startswith(b"<"):
            table, columns = _votable(data)
        else:
            table, columns = _csv(data), {}
    except UploadError:
        raise
    except Exception as exc:  # the readers' own messages say what is wrong with the file
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UploadError(f"upload {name!r} cannot be read as VOTable, Parquet or CSV ({first})") from None
    if table.num_rows > max_rows:
        raise UploadError(f"upload {name!r} has {table.num_rows:,} rows, more than the {max_rows:,} this service "
                          "takes here; split it, or use an asynchronous job (/tap/async) for larger lists")
    if table.num_columns > MAX_COLUMNS:
        raise UploadError(f"upload {name!r} has {table.num_columns} columns; at most {MAX_COLUMNS}")
    names = [c.lower() for c in table.column_names]
    if len(set(names)) != len(names) or ROW_COLUMN in names or not all(names):
        raise UploadError(f"upload {name!r} has columns that are empty or equal but for case; rename them")
    table = table.rename_columns(names)
    # types DuckDB and the result writers take (no nested, dictionary or extension types)
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
        elif pa.types.is_nested(f.type) or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            raise UploadError(f"upload {name!r}: column {f.name!r} is an array or binary column; upload plain "
                              "numbers, text, booleans or times")
    table = table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), type=pa.int64()))
    columns = {n: columns.get(n) or Column(n, "", None, None, None, None, None) for n in names}
    sql_name = f"_upload_{secrets.token_hex(8)}_{name}"
    position = _position(names, columns)
    coverage = None
    if position is not None:
        coverage = functools.partial(_coverage, _degrees(table.column(position[0])),
                                     _degrees(table.column(position[1])))
    return Upload(name, table, columns, sql_name,
                  adql.Table(SCHEMA, name, f'"{sql_name}"', tuple(names), position=position, coverage=coverage))


def _degrees(column):
    import numpy as np
    import pyarrow as pa

    try:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(len(column), np.nan)


#: an upload whose rows lie in more order-k pixels than this is scanned against the whole table
MAX_COVERAGE_PIXELS = 64


def _coverage(ra_deg, dec_deg, reach_arcsec: float) -> list[tuple[int, int]] | None:
    """``_healpix_29`` ranges (order 29, NESTED) holding every position within ``reach_arcsec`` of
    an upload row, or None when the rows are too scattered for that to prune.  Exact: the rows'
    pixels at an order whose pixels are about the reach, each widened by its largest radius plus
    the reach (healpy.query_disc, inclusive, gives a superset)."""
    import healpy
    import numpy as np

    reach = np.radians(reach_arcsec / 3600)
    order = 0
    while order < 20 and healpy.max_pixrad(2 ** (order + 1)) >= reach:
        order += 1
    nside = 2 ** order
    finite = np.isfinite(ra_deg) & np.isfinite(dec_deg) & (np.abs(dec_deg) <= 90)
    pixels = np.unique(healpy.ang2pix(nside, ra_deg[finite], dec_deg[finite], nest=True, lonlat=True))
    if len(pixels) > MAX_COVERAGE_PIXELS:
        return None
    near = set()
    for pixel in pixels:
        vector = healpy.pix2vec(nside, int(pixel), nest=True)
        near.update(healpy.query_disc(nside, vector, healpy.max_pixrad(nside) + reach, inclusive=True,
                                      nest=True).tolist())
    shift = 2 * (29 - order)
    ranges: list[list[int]] = []
    for pixel in sorted(near):
        lo, hi = pixel << shift, ((pixel + 1) << shift) - 1
        if ranges and ranges[-1][1] + 1 == lo:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    return [tuple(r) for r in ranges] if len(ranges) <= 2 * MAX_COVERAGE_PIXELS else None


def _position(names: list[str], columns: dict[str, Column]) -> tuple[str, str] | None:
    """The (ra, dec) columns: by UCD (pos.eq.ra/dec with meta.main first), else by name."""
    def by_ucd(word: str) -> str | None:
        hits = [n for n in names if columns[n].ucd and word in columns[n].ucd.lower().split(";")]
        main = [n for n in hits if "meta.main" in (columns[n].ucd or "").lower()]
        return (main or hits or [None])[0]

    ra, dec = by_ucd("pos.eq.ra"), by_ucd("pos.eq.dec")
    if ra and dec:
        return ra, dec
    for a, b in (("ra", "dec"), ("raj2000", "dej2000"), ("ra_deg", "dec_deg"), ("_raj2000", "_dej2000")):
        if a in names and b in names:
            return a, b
    return None


def _parquet(data: bytes):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def _csv(data: bytes):
    import pyarrow.csv as pcsv

    text = data[:4096].decode("utf-8", "replace")
    delimiter = "\t" if text.split("\n", 1)[0].count("\t") > text.split("\n", 1)[0].count(",") else ","
    return pcsv.read_csv(io.BytesIO(data), parse_options=pcsv.ParseOptions(delimiter=delimiter),
                         convert_options=pcsv.ConvertOptions(strings_can_be_null=True))


def _votable(data: bytes):
    import numpy as np
    import pyarrow as pa
    from astropy.io.votable import parse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        votable = parse(io.BytesIO(data), verify="ignore")
    try:
        resource_table = votable.get_first_table()
    except IndexError:
        raise UploadError("the VOTable holds no TABLE") from None
    array = resource_table.array
    columns, arrays, names = {}, [], []
    for f in resource_table.fields:
        name = (f.name or f.ID or "").strip()
        values = array[f.ID or f.name] if (f.ID or f.name) in array.dtype.names else array[f.name]
        mask = np.ma.getmaskarray(values)
        data_values = np.ma.getdata(values)
        if data_values.dtype.kind == "O":  # text (and variable arrays: refused below)
            if any(isinstance(v, np.ndarray) for v in data_values[:100]):
                raise UploadError(f"column {name!r} is an array column; upload plain numbers, text or booleans")
            text = pa.array([None if m else str(v) for v, m in zip(data_values, mask)], type=pa.string())
            arrays.append(_timestamps(text) if (f.xtype or "").lower() in ("timestamp", "adql:timestamp") else text)
        elif data_values.ndim > 1:
            raise UploadError(f"column {name!r} is an array column; upload plain numbers, text or booleans")
        elif data_values.dtype.kind in "SU":
            text = pa.array([None if m else str(v) for v, m in zip(data_values.astype(str), mask)], type=pa.string())
            arrays.append(_timestamps(text) if (f.xtype or "").lower() in ("timestamp", "adql:timestamp") else text)
        else:
            # NaN is how a VOTable writes a missing float: null, as the service's own tables have it
            if data_values.dtype.kind == "f":
                mask = mask | np.isnan(data_values)
            arrays.append(pa.array(data_values, mask=mask))
        names.append(name)
        columns[name.lower()] = Column(name.lower(), "", None, None, str(f.unit) if f.unit is not None else None,
                                       f.ucd or None, str(f.description) if f.description else None)
    return pa.table(arrays, names=names), columns


def _timestamps(text):
    """A VOTable ``xtype="timestamp"`` column (ISO 8601 text) as times, so it stays one in results;
    text that is not a time stays text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(pc.replace_substring(text, "Z", ""), pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return text
