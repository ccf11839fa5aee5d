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

    #: tables made for the query beside the upload (its HEALPix cells), registered with it
    extra: dict = field(default_factory=dict)

    def column(self, name: str) -> Column | None:
        return self.columns.get(name.lower())

    def tables(self) -> dict:
        """What the query's cursor must know: name -> Arrow table."""
        return {self.sql_name: self.table, **self.extra}

    def cells(self, order: int, ra: str, dec: str) -> str:
        """A table of (row number, ``ra``, ``dec``, ``_cell``): each row once per order-``order``
        NESTED HEALPix pixel among its own and the 8 around it (adql.positional_join); its quoted
        SQL name.  Rows without a finite position have none."""
        import healpy
        import numpy as np
        import pyarrow as pa

        name = f"{self.sql_name}_cells_{order}_{ra}_{dec}".replace('"', "")
        if name not in self.extra:
            ra_deg, dec_deg = _degrees(self.table.column(ra)), _degrees(self.table.column(dec))
            rows = np.flatnonzero(np.isfinite(ra_deg) & np.isfinite(dec_deg) & (np.abs(dec_deg) <= 90))
            nside = 2 ** order
            own = healpy.ang2pix(nside, ra_deg[rows], dec_deg[rows], nest=True, lonlat=True)
            cells = np.vstack([own[None, :], healpy.get_all_neighbours(nside, own, nest=True)]).T.ravel()
            repeat = np.repeat(np.arange(rows.size), 9)
            keep = cells >= 0  # (a corner where three pixels meet has 7 neighbours)
            self.extra[name] = pa.table({ROW_COLUMN: rows[repeat[keep]].astype(np.int64),
                                         ra: ra_deg[rows][repeat[keep]], dec: dec_deg[rows][repeat[keep]],
                                         "_cell": cells[keep].astype(np.int64)})
        return '"' + name + '"'


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
    and the URL is the user's: only http(s), no redirects, at most ``max_bytes`` in at most
    FETCH_TIMEOUT_S in all, and no host on a loopback, private, link-local or reserved address (the
    service's own network) unless ``private_hosts`` (tests on one machine).  The connection goes to
    the address that was checked (a second name lookup could answer another: DNS rebinding)."""
    import http.client
    import ipaddress
    import socket
    import ssl
    import time
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"{url[:80]!r} is not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise UploadError(f"the host of {url[:80]!r} is not known") from None
    for info in infos:
        if not private_hosts and not ipaddress.ip_address(info[4][0].split("%")[0]).is_global:
            raise UploadError(f"{url[:80]!r} is on a private or local address; the service fetches tables from "
                              "public hosts only (or send the table in the request: name,param:part)")
    family, address = infos[0][0], infos[0][4]
    deadline = time.monotonic() + FETCH_TIMEOUT_S

    def pinned_socket():
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(FETCH_TIMEOUT_S)
        sock.connect(address)
        return sock

    opened = []

    class Pinned(http.client.HTTPConnection):
        def connect(self):
            self.sock = pinned_socket()
            opened.append(self.sock)

    class PinnedTLS(http.client.HTTPSConnection):
        def connect(self):
            self.sock = ssl.create_default_context().wrap_socket(pinned_socket(), server_hostname=parts.hostname)
            opened.append(self.sock)

    connection = (PinnedTLS if parts.scheme == "https" else Pinned)(parts.hostname, port, timeout=FETCH_TIMEOUT_S)
    path = parts.path or "/"
    try:
        connection.request("GET", path + (f"?{parts.query}" if parts.query else ""),
                           headers={"User-Agent": "stellardb-tap", "Accept-Encoding": "identity"})
        response = connection.getresponse()
        if response.status != 200:  # redirects too: they could lead anywhere
            raise UploadError(f"{url[:80]!r} answered HTTP {response.status}")
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UploadError(f"the table at {url[:80]!r} took longer than {FETCH_TIMEOUT_S:g} s to arrive")
            opened[0].settimeout(left)  # a slow drip cannot stretch the whole past the deadline
            chunk = response.read1(1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise UploadError(f"the table at {url[:80]!r} is larger than {max_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except TimeoutError:
        raise UploadError(f"the table at {url[:80]!r} took longer than {FETCH_TIMEOUT_S:g} s to arrive") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UploadError(f"{url[:80]!r} could not be read ({type(exc).__name__})") from None
    finally:
        connection.close()


def read(name: str, data: bytes, max_rows: int) -> Upload:
    """The upload ``name`` from the bytes of its part: VOTable, Parquet or CSV."""
    import pyarrow as pa

    if not data.strip():
        raise UploadError(f"upload {name!r} is empty")
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    try:
        if head.startswith(b"PAR1"):
            table, columns = _parquet(data, name, max_rows), {}
        elif head.startswith(b"<"):
            table, columns = _votable(data)
        else:
            table, columns = _csv(data, name), {}
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
    if "epoch" in names:
        table = table.set_column(names.index("epoch"), "epoch", _epochs(table.column("epoch"), name))
    table = table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), type=pa.int64()))
    columns = {n: columns.get(n) or Column(n, "", None, None, None, None, None) for n in names}
    sql_name = f"_upload_{secrets.token_hex(8)}_{name}"
    position = _position(names, columns)
    coverage = None
    if position is not None:
        coverage = functools.partial(_coverage, _degrees(table.column(position[0])),
                                     _degrees(table.column(position[1])))
    found = Upload(name, table, columns, sql_name)
    found.adql_table = adql.Table(SCHEMA, name, f'"{sql_name}"', tuple(names), position=position, coverage=coverage,
                                  cells=found.cells)
    return found


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
    finite = np.isfinite(ra_deg) & np.isfinite(dec_deg) & (np.abs(dec_deg) <= 90)
    ra_deg, dec_deg = ra_deg[finite], dec_deg[finite]
    # rows over much of the sky: nothing to prune, said at once (order 3: 768 pixels of 7 deg)
    if len(np.unique(healpy.ang2pix(8, ra_deg, dec_deg, nest=True, lonlat=True))) > MAX_COVERAGE_PIXELS:
        return None
    # the finest order whose pixels are 4x the reach: a pixel's 8 neighbours then hold every
    # point within the reach of it (adql.cells_order, tested there)
    order = max(3, adql.cells_order(reach_arcsec / 3600))
    pixels = np.unique(healpy.ang2pix(2 ** order, ra_deg, dec_deg, nest=True, lonlat=True))
    # scattered rows: coarser pixels (a NESTED pixel's parent is it >> 2) until their widened set
    # is a few ranges, down to order 3 (a small list over a few degrees still reads a few files)
    while True:
        if len(pixels) <= MAX_COVERAGE_PIXELS:
            ranges = _widened_ranges(pixels, order, reach)
            if len(ranges) <= 2 * MAX_COVERAGE_PIXELS:
                return ranges
        if order <= 3:
            return None
        pixels, order = np.unique(pixels >> 2), order - 1


def _widened_ranges(pixels, order: int, reach_rad: float) -> list[tuple[int, int]]:
    """``_healpix_29`` ranges of the order-``order`` ``pixels`` and their neighbours (every point
    within ``reach_rad`` of them, at an order whose pixels are at least 4x as wide)."""
    import healpy
    import numpy as np

    nside = 2 ** order
    neighbours = healpy.get_all_neighbours(nside, np.asarray(pixels, dtype=np.int64), nest=True)
    near = set(pixels.tolist()) | set(neighbours[neighbours >= 0].tolist())
    shift = 2 * (29 - order)
    ranges: list[list[int]] = []
    for pixel in sorted(near):
        lo, hi = pixel << shift, ((pixel + 1) << shift) - 1
        if ranges and ranges[-1][1] + 1 == lo:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    return [tuple(r) for r in ranges]


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


#: a Parquet upload may hold at most this many bytes once decompressed (its row groups say so
#: before anything is read: a 2 MB file of 100 M repeated values would otherwise take 4 GB)
MAX_DECOMPRESSED_BYTES = 2_000_000_000
#: an epoch column holds Julian years within these (a wild one would send the search everywhere)
EPOCH_RANGE_YR = (1900.0, 2100.0)


def _parquet(data: bytes, name: str, max_rows: int):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(io.BytesIO(data))
    meta = parquet.metadata
    if meta.num_rows > max_rows:
        raise UploadError(f"upload {name!r} has {meta.num_rows:,} rows, more than the {max_rows:,} this service "
                          "takes here; split it, or use an asynchronous job (/tap/async) for larger lists")
    if meta.num_columns > MAX_COLUMNS:
        raise UploadError(f"upload {name!r} has {meta.num_columns} columns; at most {MAX_COLUMNS}")
    # read in batches, counting the bytes they take in memory: encodings (RLE, dictionaries) make
    # any size the file's own figures give a poor guide
    import pyarrow as pa

    batches, size = [], 0
    for batch in parquet.iter_batches(batch_size=65_536):
        size += batch.nbytes
        if size > MAX_DECOMPRESSED_BYTES:
            raise UploadError(f"upload {name!r} takes more than {MAX_DECOMPRESSED_BYTES:,} bytes once decompressed; "
                              "upload fewer rows or columns")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=parquet.schema_arrow)


def _csv(data: bytes, name: str):
    import pyarrow.csv as pcsv

    first = data[:1_000_000].split(b"\n", 1)[0].decode("utf-8", "replace")
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    # the header says how many columns before anything is parsed (100,000 columns: gigabytes)
    if first.count(delimiter) + 1 > MAX_COLUMNS or len(first) >= 999_999:
        raise UploadError(f"upload {name!r} has more than {MAX_COLUMNS} columns (or no header line)")
    return pcsv.read_csv(io.BytesIO(data), parse_options=pcsv.ParseOptions(delimiter=delimiter),
                         convert_options=pcsv.ConvertOptions(strings_can_be_null=True))


def _epochs(column, name: str):
    """The ``epoch`` column as float64 Julian years within EPOCH_RANGE_YR (NULLs stay: such a row
    is matched at the table's own epoch)."""
    import numpy as np
    import pyarrow as pa

    try:
        values = column.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise UploadError(f"upload {name!r}: column epoch must hold Julian years as numbers (e.g. 2010.5)") \
            from None
    array = np.asarray(values.to_numpy(zero_copy_only=False), dtype=float)
    given = array[~np.isnan(array)]
    lo, hi = EPOCH_RANGE_YR
    if given.size and (given.min() < lo or given.max() > hi or not np.isfinite(given).all()):
        raise UploadError(f"upload {name!r}: column epoch must hold Julian years between {lo:g} and {hi:g} "
                          f"(it has {given.min():g} to {given.max():g}); MJD? divide: 2000.0 + (mjd - 51544.5) "
                          "/ 365.25")
    return values


def _votable(data: bytes):
    import numpy as np
    import pyarrow as pa
    from astropy.io.votable import parse

    _no_external_streams(data)
    fast = _tabledata(data)
    if fast is not None:
        return fast
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
            # an empty TABLEDATA cell is NULL (as the fast reader has it)
            text = pa.array([None if m or v == "" else str(v) for v, m in zip(data_values, mask)], type=pa.string())
            arrays.append(_timestamps(text) if (f.xtype or "").lower() in ("timestamp", "adql:timestamp") else text)
        elif data_values.ndim > 1:
            raise UploadError(f"column {name!r} is an array column; upload plain numbers, text or booleans")
        elif data_values.dtype.kind in "SU":
            text = pa.array([None if m or v == "" else str(v) for v, m in zip(data_values.astype(str), mask)],
                            type=pa.string())
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


#: VOTable datatypes a plain TABLEDATA column may have for the fast reader, as Arrow types
_TABLEDATA_TYPES = {"double": "float64", "float": "float32", "long": "int64", "int": "int64", "short": "int64",
                    "unsignedByte": "int64", "boolean": "bool_", "char": "string", "unicodeChar": "string"}


def _tabledata(data: bytes):
    """(table, columns) of a plain TABLEDATA VOTable read as delimited text by Arrow's CSV reader,
    or None for anything else (astropy reads it then).  astropy reads a TABLEDATA cell at a time:
    9 s for the 1 M rows x 3 columns pyvo sends for a crossmatch; this takes ~2.5 s.  Plain means:
    one TABLE, scalar columns of the types above without a VALUES null, and cells without XML
    entities, CDATA, comments, line breaks, attributes or tabs, one TABLE (tests/service/test_async.py
    compares both readers).  Two differences are deliberate: integers are int64 (astropy clamps a
    value beyond a short's or int's range to its limit) and text is kept whole (astropy cuts it to
    a fixed ``arraysize``)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    from astropy.io.votable import parse

    start, end = data.find(b"<TABLEDATA>"), data.find(b"</TABLEDATA>")
    if start < 0 or end < start or data.count(b"<TABLEDATA>") != 1 or len(re.findall(rb"<TABLE[\s>]", data)) != 1:
        return None
    section = data[start + len(b"<TABLEDATA>"):end]
    if any(mark in section for mark in (b"&", b"<![CDATA[", b"<TD ", b"<TR ", b"\t", b"<!--", b"<TR/>", b"\r")):
        return None
    with warnings.catch_warnings():  # the document without its rows: the fields
        warnings.simplefilter("ignore")
        empty = parse(io.BytesIO(data[:start + len(b"<TABLEDATA>")] + data[end:]), verify="ignore").get_first_table()
    fields = empty.fields
    if not fields or any(f.datatype not in _TABLEDATA_TYPES or (f.datatype not in ("char", "unicodeChar")
                                                                 and f.arraysize not in (None, "1"))
                         or (f.values is not None and f.values.null is not None) for f in fields):
        return None
    # whitespace between the tags goes; inside a cell it stays (a cell with a line break: astropy)
    flat = re.sub(rb">\s+<", b"><", section).strip()
    if b"\n" in flat:
        return None
    flat = flat.replace(b"<TD/>", b"<TD></TD>").replace(b"<TR><TD>", b"").replace(b"</TD><TD>", b"\t")
    flat = flat.replace(b"</TD></TR>", b"\n")
    if b"<" in flat:
        return None
    names = [(f.name or f.ID or "").strip() for f in fields]
    types = {f"c{i}": getattr(pa, _TABLEDATA_TYPES[f.datatype])() for i, f in enumerate(fields)}
    try:
        table = pcsv.read_csv(io.BytesIO(flat), read_options=pcsv.ReadOptions(column_names=list(types)),
                              parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False,
                                                              newlines_in_values=False),
                              convert_options=pcsv.ConvertOptions(
                                  column_types=types, null_values=[""], strings_can_be_null=True,
                                  true_values=["T", "t", "true", "1"], false_values=["F", "f", "false", "0"]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != section.count(b"<TR"):
        return None
    import pyarrow.compute as pc

    arrays = []
    for i, f in enumerate(fields):
        column = table.column(i)
        if pa.types.is_floating(column.type):  # NaN is how a VOTable writes a missing float
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        if f.datatype in ("char", "unicodeChar"):  # astropy trims a cell's surrounding blanks
            column = pc.utf8_trim_whitespace(column)
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
            if (f.xtype or "").lower() in ("timestamp", "adql:timestamp"):
                column = _timestamps(column.combine_chunks())
        arrays.append(column)
    columns = {n.lower(): Column(n.lower(), "", None, None, str(f.unit) if f.unit is not None else None, f.ucd or None,
                                 str(f.description) if f.description else None) for n, f in zip(names, fields)}
    return pa.table(arrays, names=names), columns


_STREAM = re.compile(rb"<\s*(?:[\w.-]+:)?STREAM\b([^>]*)>", re.IGNORECASE)


def _no_external_streams(data: bytes) -> None:
    """Refuse a VOTable whose data is elsewhere: astropy opens a STREAM's ``href`` itself (a local
    file, any URL), and would decompress a gzip-encoded one whatever its size.  Only inline
    TABLEDATA and base64 BINARY/BINARY2 are read."""
    for match in _STREAM.finditer(data):
        attributes = match.group(1).lower()
        if re.search(rb"\bhref\s*=", attributes):
            raise UploadError("the VOTable's data is a STREAM with href (elsewhere); send the data inline "
                              "(TABLEDATA or BINARY2 in base64), as pyvo, TOPCAT and STILTS do")
        encoding = re.search(rb"\bencoding\s*=\s*[\"']([^\"']*)[\"']", attributes)
        if encoding and encoding.group(1).strip() not in (b"base64", b""):
            raise UploadError("a VOTable STREAM may only be base64-encoded here; send TABLEDATA or base64 BINARY2")


def _timestamps(text):
    """A VOTable ``xtype="timestamp"`` column (ISO 8601 text) as times, so it stays one in results;
    text that is not a time stays text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(pc.replace_substring(text, "Z", ""), pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return text
