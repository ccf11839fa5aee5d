"""A few rows of a release's tables read straight from their Parquet row groups (pyarrow), for
the star page.

A star's rows sit in one row group of one file per table (the release is HEALPix-partitioned and
sorted by ``_healpix_29``), but DuckDB decodes that whole row group for a ``SELECT *`` and spends
milliseconds binding a view over every file of the table: 7 queries a star page cost ~70 ms of
CPU (10 M stars, 20k-row row groups).  Here each table's files keep, after their first read, their
footer (a bounded cache) and their row groups' ``_healpix_29`` min/max; a lookup then

1. picks the files and row groups whose ``_healpix_29`` can hold the rows asked for,
2. reads the few columns that decide which rows are wanted (``_healpix_29``, an id, a position),
3. reads the other columns only of a row group that holds a wanted row, and takes those rows,

from the row group's memory-mapped Arrow copy where ``serve`` has made one (stellardb.service.mirror:
nothing to decode), else from Parquet,
and returns them with the types DuckDB gives (the view's Arrow schema, asked once per table).
Only the release's own files are opened, by the names its partition list gives.  Anything
unexpected (no statistics to prune by, a missing column, a damaged file, too many row groups)
returns None and the caller asks DuckDB instead, with its time limit.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

#: most row groups one lookup reads; beyond, the caller asks DuckDB (its time limit applies)
MAX_ROW_GROUPS = 16
#: footers kept (bytes of their serialized form, about what they take in memory): a 10 M-star
#: release has 10 MB of them in all; a larger one keeps the most recently read
FOOTER_CACHE_BYTES = 64 * 2**20

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class ReleaseRowGroups:
    """The row-group index of one served release's tables (made at the first star page)."""

    def __init__(self, served):
        self._served = served
        self._lock = threading.Lock()
        self._tables: dict[str, _TableFiles | None] = {}
        self._footers: OrderedDict[str, object] = OrderedDict()
        self._footer_bytes = 0

    @property
    def mirror(self):
        """The release's mapped copies (stellardb.service.mirror.Mirror), or None."""
        return getattr(self._served, "mirror", None)

    def table(self, name: str, timeout_s: float) -> _TableFiles | None:
        with self._lock:
            if name in self._tables:
                return self._tables[name]
        spec = next((t for t in self._served.tables if t.schema == self._served.schema and t.name == name), None)
        found = None
        if spec is not None and spec.partitions and spec.healpix_column and spec.file_column:
            # the types of the view's columns, as every other answer of the service has them
            arrow = self._served.execute(f'SELECT * EXCLUDE ("{spec.file_column}") FROM {spec.sql_name} LIMIT 0',
                                         timeout_s)
            found = _TableFiles(self, spec, arrow.schema)
        with self._lock:
            return self._tables.setdefault(name, found)

    # -- footers (shared by the tables: one budget) ---------------------------------------------
    def footer(self, path: str):
        import pyarrow.parquet as pq

        with self._lock:
            meta = self._footers.get(path)
            if meta is not None:
                self._footers.move_to_end(path)
                return meta
        meta = pq.read_metadata(path)
        size = meta.serialized_size
        with self._lock:
            if path not in self._footers:
                self._footers[path] = meta
                self._footer_bytes += size
                while self._footer_bytes > FOOTER_CACHE_BYTES and len(self._footers) > 1:
                    _, old = self._footers.popitem(last=False)
                    self._footer_bytes -= old.serialized_size
        return meta


class _TableFiles:
    def __init__(self, owner: ReleaseRowGroups, spec, schema):
        self.owner = owner
        self.spec = spec
        self.schema = schema                 # pyarrow schema of the view (file column excluded)
        self.names = tuple(schema.names)
        self._known = set(self.names)
        self._schemas: dict[tuple[str, ...], object] = {}
        self.hp = spec.healpix_column
        self._firsts = np.array([p[0] for p in spec.partitions], dtype=np.int64)
        self._lasts = np.array([p[1] for p in spec.partitions], dtype=np.int64)
        self._paths = [p[2] for p in spec.partitions]
        self._groups: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self._lock = threading.Lock()

    def groups(self, path: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(min, max) of ``_healpix_29`` of each row group of ``path``; None without statistics."""
        with self._lock:
            if path in self._groups:
                return self._groups[path]
        meta = self.owner.footer(path)
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        found = None
        if self.hp in names:
            column = names.index(self.hp)
            lows, highs = [], []
            for i in range(meta.num_row_groups):
                stats = meta.row_group(i).column(column).statistics
                if stats is None or not stats.has_min_max:
                    lows, highs = None, None
                    break
                lows.append(int(stats.min))
                highs.append(int(stats.max))
            if lows is not None:
                found = (np.array(lows, dtype=np.int64), np.array(highs, dtype=np.int64))
        with self._lock:
            self._groups[path] = found
        return found

    def _schema_of(self, columns: tuple[str, ...]):
        """The view's schema of ``columns`` (None: a column it lacks), kept per list of columns."""
        import pyarrow as pa

        found = self._schemas.get(columns)
        if found is None and columns not in self._schemas:
            found = pa.schema([self.schema.field(c) for c in columns]) if set(columns) <= self._known else None
            self._schemas[columns] = found
        return found

    def rows(self, ranges: Sequence[tuple[int, int]], filter_columns: Sequence[str],
             keep: Callable, columns: Sequence[str] | None = None) -> list[dict] | None:
        """The rows whose ``_healpix_29`` lies in one of ``ranges`` (inclusive) and that ``keep``
        chooses, as dicts of ``columns`` (default: every column of the view, in its order) with
        the view's types; None when this cannot be done here (ask DuckDB).

        ``keep(candidates)`` gets a pyarrow Table of ``filter_columns`` of the rows of one row group
        within the ranges and returns the positions (in it) of the rows wanted."""
        found = self.read(ranges, filter_columns, keep, columns)
        return None if found is None else found.to_pylist()

    def read(self, ranges: Sequence[tuple[int, int]], filter_columns: Sequence[str],
             keep: Callable, columns: Sequence[str] | None = None):
        """What :meth:`rows` finds, as one pyarrow Table (in the files' order)."""
        import pyarrow as pa

        columns = tuple(columns) if columns is not None else self.names
        wanted = (self.hp, *[c for c in filter_columns if c != self.hp])
        target = self._schema_of(columns)
        if not ranges or target is None or any(c not in self._known for c in wanted):
            return None
        lows = np.array([lo for lo, _ in ranges], dtype=np.int64)
        highs = np.array([hi for _, hi in ranges], dtype=np.int64)
        # the files whose pixel meets a range, and in each the row groups whose statistics do
        meets = ((self._firsts[:, None] <= highs[None, :]) & (lows[None, :] <= self._lasts[:, None])).any(axis=1)
        plan = []
        try:
            for f in np.flatnonzero(meets):
                path = self._paths[f]
                groups = self.groups(path)
                if groups is None:
                    return None
                g_lo, g_hi = groups
                hit = ((g_lo[:, None] <= highs[None, :]) & (lows[None, :] <= g_hi[:, None])).any(axis=1)
                plan.extend((path, int(g)) for g in np.flatnonzero(hit))
                if len(plan) > MAX_ROW_GROUPS:
                    return None
            found = []
            mirror = self.owner.mirror
            for path, group in plan:
                mapped = mirror.batch(path, group) if mirror is not None else None
                if mapped is not None:  # the row group's copy, mapped (stellardb.service.mirror)
                    table = self._take_mapped(mapped, wanted, columns, lows, highs, keep)
                else:
                    table = self._take_parquet(path, group, wanted, columns, lows, highs, keep)
                if table is _ASK_DUCKDB:
                    return None
                if table is not None:
                    found.append(table if table.schema.equals(target) else table.cast(target))
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None
        return pa.concat_tables(found) if found else target.empty_table()

    def _chosen(self, candidates, lows, highs, keep):
        """Positions (in the row group) of the rows within the ranges that ``keep`` chooses; None:
        a NULL ``_healpix_29`` (DuckDB must answer)."""
        import pyarrow as pa

        hp = candidates.column(self.hp)
        if hp.null_count:
            return None
        positions = _in_ranges(hp.to_numpy(), lows, highs)
        if not positions.size:
            return positions
        chosen = np.asarray(keep(candidates.take(pa.array(positions))), dtype=np.int64)
        return positions[chosen]

    def _take_mapped(self, batch, wanted, columns, lows, highs, keep):
        """The chosen rows of ``columns`` of a row group's mapped copy (slices of the page cache:
        nothing is decoded)."""
        import pyarrow as pa

        rows = self._chosen(pa.Table.from_batches([batch.select(list(wanted))]), lows, highs, keep)
        if rows is None:
            return _ASK_DUCKDB
        if not rows.size:
            return None
        return pa.Table.from_batches([batch.select(list(columns))]).take(pa.array(rows))

    def _take_parquet(self, path, group, wanted, columns, lows, highs, keep):
        """The chosen rows of ``columns`` of row group ``group`` of the Parquet file ``path``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = self.owner.footer(path)
        with pa.OSFile(path) as source, pq.ParquetFile(source, metadata=meta) as pf:
            candidates = pf.read_row_group(group, columns=list(wanted), use_threads=False)
            rows = self._chosen(candidates, lows, highs, keep)
            if rows is None:
                return _ASK_DUCKDB
            if not rows.size:
                return None
            if set(columns) <= set(wanted):
                table = candidates.select(list(columns))
            else:
                # the row group's rows up to the last one wanted: a column chunk is one page,
                # decompressed whole, but the values after that row are not decoded (a
                # Gaia row: 5 to 15 ms by its place in the row group instead of 14, measured)
                batch = next(pf.iter_batches(batch_size=int(rows.max()) + 1, row_groups=[group],
                                             columns=list(columns), use_threads=False))
                table = pa.Table.from_batches([batch])
                if table.num_rows <= rows.max():
                    table = pf.read_row_group(group, columns=list(columns), use_threads=False)
            return table.take(pa.array(rows))


#: what a row group's reading returns when DuckDB must answer the whole lookup
_ASK_DUCKDB = object()


def _in_ranges(hp: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Positions of the values of ``hp`` within one of the inclusive ranges ``lows``-``highs``.

    The release writes each file sorted by ``_healpix_29``: two binary searches a range then give
    the rows (10 us for 6 ranges of a 20k-row group, against 68 us comparing every row with every
    range); a row group that is not sorted is compared row by row."""
    if hp.size > 1 and not bool((hp[1:] >= hp[:-1]).all()):
        inside = np.zeros(hp.size, dtype=bool)
        for lo, hi in zip(lows.tolist(), highs.tolist()):
            inside |= (hp >= lo) & (hp <= hi)
        return np.flatnonzero(inside)
    starts = np.searchsorted(hp, lows, side="left")
    stops = np.searchsorted(hp, highs, side="right")
    keep = stops > starts
    if not keep.any():
        return np.empty(0, dtype=np.int64)
    # ranges may overlap (callers need not merge them): each row once, in order
    return np.unique(np.concatenate([np.arange(a, b) for a, b in zip(starts[keep], stops[keep])]))


def equal_to(column: str, value: int) -> Callable:
    """``keep`` of the rows whose ``column`` is ``value``."""
    import pyarrow.compute as pc

    def keep(candidates):
        values = candidates.column(column)
        if values.null_count:
            return pc.indices_nonzero(pc.fill_null(pc.equal(values, value), False)).to_numpy()
        return np.flatnonzero(values.to_numpy() == value)

    return keep


# -- the cone test of the ADQL translation, in Python ------------------------------------------
# CONTAINS(POINT(ra, dec), CIRCLE(ra0, dec0, r)) translates to
#   vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), x0, y0, z0) <= (r) * 3600.0
# with (x0, y0, z0) computed by the translator in Python (adql._unit), and DISTANCE(...) * 3600 to
# vector_sep_arcsec(...) / 3600.0 * 3600.  The macros of sql/10_macros, operation by operation
# with the same libm functions, give the same doubles (tests/service/test_web.py checks them
# against DuckDB's on random, polar and RA-0 positions).
def sky_unit(ra_deg: float, dec_deg: float) -> tuple[float, float, float]:
    """sky_x, sky_y, sky_z of sql/10_macros: cos(radians(dec)) * cos(radians(ra)), ..."""
    import math

    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)


def vector_sep_arcsec(a, b) -> float:
    """vector_sep_arcsec of sql/10_macros: degrees(atan2(|a x b|, a . b)) * 3600.0."""
    import math

    a1, a2, a3 = a
    b1, b2, b3 = b
    return math.degrees(math.atan2(
        math.sqrt((a2 * b3 - a3 * b2) ** 2 + (a3 * b1 - a1 * b3) ** 2 + (a1 * b2 - a2 * b1) ** 2),
        a1 * b1 + a2 * b2 + a3 * b3)) * 3600.0


#: the translated tests of a separation (arcsec) against a radius r (degrees): CONTAINS(POINT,
#: CIRCLE(..., r)) and DISTANCE(...) < r, <= r, as the SQL computes them
def separation_test(kind: str, radius_deg: float) -> Callable[[float], bool]:
    if kind == "contains":
        limit = radius_deg * 3600.0
        return lambda sep: sep <= limit
    if kind == "<":
        return lambda sep: sep / 3600.0 < radius_deg
    if kind == "<=":
        return lambda sep: sep / 3600.0 <= radius_deg
    raise ValueError(kind)


def in_circle(ra_column: str, dec_column: str, centre, radius_deg: float, test: str = "contains") -> Callable:
    """``keep`` of the rows within ``radius_deg`` of the unit vector ``centre`` (the translated
    CONTAINS test, or DISTANCE's with ``test`` "<" or "<=")."""
    inside = separation_test(test, radius_deg)

    def keep(candidates):
        chosen = []
        ras = candidates.column(ra_column).to_pylist()
        decs = candidates.column(dec_column).to_pylist()
        for i, (ra, dec) in enumerate(zip(ras, decs)):
            if ra is None or dec is None:
                continue  # NULL: the test is not true
            if inside(vector_sep_arcsec(sky_unit(ra, dec), centre)):
                chosen.append(i)
        return chosen

    return keep


#: rows whose separation numpy puts within this of the radius (arcsec) are tested again exactly
#: (numpy's sin, cos and atan2 may differ from libm's in the last bit: some 1e-10 arcsec here)
_UNSURE_ARCSEC = 1e-6


def within(ra_column: str, dec_column: str, centre, radius_deg: float, test: str = "contains") -> Callable:
    """``keep`` of :func:`in_circle`, for many rows: numpy decides every row but those within
    _UNSURE_ARCSEC of the radius, which in_circle's exact test decides."""
    limit = radius_deg * 3600.0
    x0, y0, z0 = centre
    exact = in_circle(ra_column, dec_column, centre, radius_deg, test)

    def keep(candidates):
        ra = np.radians(candidates.column(ra_column).to_numpy().astype(np.float64, copy=False))
        dec = np.radians(candidates.column(dec_column).to_numpy().astype(np.float64, copy=False))
        with np.errstate(invalid="ignore"):
            cos_dec = np.cos(dec)
            x, y, z = cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)
            sep = np.degrees(np.arctan2(np.sqrt((y * z0 - z * y0) ** 2 + (z * x0 - x * z0) ** 2 + (x * y0 - y * x0) ** 2),
                                        x * x0 + y * y0 + z * z0)) * 3600.0
            inside = sep <= limit - _UNSURE_ARCSEC
            unsure = np.flatnonzero(~inside & ~(sep > limit + _UNSURE_ARCSEC))  # NaN (NULL) too
        if unsure.size:
            import pyarrow as pa

            again = np.asarray(exact(candidates.take(pa.array(unsure))), dtype=np.int64)
            inside[unsure[again]] = True
        return np.flatnonzero(inside)

    return keep


def cone(served, table: str, position: tuple[str, str], ra: float, dec: float, radius_deg: float,
         columns: Sequence[str], timeout_s: float, test: str = "contains"):
    """The answer to ``SELECT columns FROM table WHERE 1 = CONTAINS(POINT(*position), CIRCLE(ra, dec,
    radius_deg))`` (ra, dec, radius_deg as written with repr): (pyarrow Table, [adql.OutputColumn]),
    the rows in the files' order; None where DuckDB must answer (no row-group index, SR=0, a cone
    over more than MAX_ROW_GROUPS row groups)."""
    from stellardb.release.reader import cone_ranges
    from stellardb.service import adql

    if not (radius_deg > 0 and math.isfinite(ra) and math.isfinite(dec) and math.isfinite(radius_deg)):
        return None
    files = served.row_groups().table(table, timeout_s)
    if files is None:
        return None
    # the translator's pruning ranges, centre and exact test (adql.pruning, adql.containment)
    ranges = cone_ranges(ra, dec, radius_deg * 3600 + adql._PRUNE_MARGIN_ARCSEC)
    found = files.read(ranges, position, within(*position, adql._unit(ra, dec), radius_deg, test), columns)
    if found is None:
        return None
    return found, [adql.OutputColumn(c, files.spec, c) for c in columns]


def plain_cone(served, query, timeout_s: float):
    """The answer to the ADQL query that adql.plain_cone recognised as ``query`` (an adql.PlainCone):
    (pyarrow Table, [adql.OutputColumn]) as translate and DuckDB give it, the rows in the files'
    order (DuckDB's, which keeps the order of the view's files and their rows without an ORDER BY),
    the first TOP of them; None where DuckDB must answer (see :func:`cone`)."""
    if query.table is not next((t for t in served.tables if t.schema == served.schema and t.name == query.table.name),
                               None):
        return None
    found = cone(served, query.table.name, query.table.position, query.ra, query.dec, query.radius_deg,
                 query.columns, timeout_s, query.test)
    if found is None:
        return None
    table, _ = found
    if query.top is not None and table.num_rows > query.top:
        table = table.slice(0, query.top)
    return table, list(query.output)
