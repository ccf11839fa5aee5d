"""Row counts of any HEALPix range of a catalogue without reading its rows: each row group's
``_healpix_29`` min/max and row count, from ``_metadata`` (or the files' footers).

Releases and hats-import catalogues sort each file by ``_healpix_29``, so a row group is a
narrow range of it and the sum over the row groups that overlap a range is a tight upper
bound of the rows inside it (one row group of slack at each end).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stellardb.release.partition import SPATIAL_INDEX_COLUMN


class RowGroupIndex:
    def __init__(self, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray):
        order = np.argsort(lo, kind="stable")
        self.lo, self.hi, self.rows = lo[order], hi[order], rows[order]

    @classmethod
    def of(cls, catalogue_dir: Path, files: list[str]) -> RowGroupIndex:
        import pyarrow.parquet as pq

        lo, hi, rows = [], [], []

        def add(meta):
            column = meta.schema.names.index(SPATIAL_INDEX_COLUMN) if SPATIAL_INDEX_COLUMN in meta.schema.names else None
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                stats = group.column(column).statistics if column is not None else None
                if stats is None or not stats.has_min_max:  # no statistics: the group may hold anything
                    lo.append(0), hi.append(np.iinfo(np.int64).max)
                else:
                    lo.append(stats.min), hi.append(stats.max)
                rows.append(group.num_rows)

        summary = Path(catalogue_dir) / "dataset" / "_metadata"
        if summary.is_file():
            add(pq.read_metadata(summary))
        else:
            for f in files:
                add(pq.read_metadata(f))
        return cls(np.array(lo, np.int64), np.array(hi, np.int64), np.array(rows, np.int64))

    def rows_in(self, lo: int, hi: int) -> int:
        """Upper bound of the rows with ``lo <= _healpix_29 < hi``."""
        return self.rows_in_ranges([(lo, hi)])

    def rows_in_ranges(self, ranges) -> int:
        """Upper bound of the rows in any of ``ranges`` (``[lo, hi)``), each row group counted once."""
        if not len(ranges):
            return 0
        return self.rows_in_arrays(np.array([lo for lo, _ in ranges], np.int64), np.array([hi for _, hi in ranges], np.int64))

    def rows_in_arrays(self, lo: np.ndarray, hi: np.ndarray) -> int:
        """:meth:`rows_in_ranges` of ranges given as two arrays."""
        if not self.lo.size or not lo.size:
            return 0
        order = np.argsort(lo, kind="stable")
        starts = lo[order]
        # the end of the furthest-reaching range among those starting at or before each start
        ends = np.maximum.accumulate(hi[order])
        # a row group [lo, hi] overlaps a range when the last range starting at or before its hi
        # (or any before it) ends after its lo
        last = np.searchsorted(starts, self.hi, side="right") - 1
        overlap = (last >= 0) & (ends[np.clip(last, 0, None)] > self.lo)
        return int(self.rows[overlap].sum())


def column_ranges(catalogue_dir: Path, columns, per_group: bool = False) -> dict | None:
    """``{column: (min, max, NULL count)}`` over a catalogue, from the row-group statistics in its
    ``_metadata`` (no row read); None where the file, a column or a statistic is missing.
    ``per_group``: min and max are lists, one entry per row group (None for an all-NULL group)."""
    import pyarrow.parquet as pq

    path = Path(catalogue_dir) / "dataset" / "_metadata"
    if not path.is_file():
        return None
    meta = pq.read_metadata(path)
    names = meta.schema.names
    found = {}
    for column in columns:
        if column not in names:
            return None
        i, lo, hi, nulls = names.index(column), [], [], 0
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(i).statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == meta.row_group(g).num_rows:
                    nulls += stats.null_count  # an all-NULL group has no min/max
                    if per_group:
                        lo.append(None), hi.append(None)
                    continue
                return None
            lo.append(stats.min), hi.append(stats.max)
            nulls += stats.null_count or 0
        if per_group:
            found[column] = (lo, hi, nulls)
            continue
        found[column] = (min(lo) if lo else None, max(hi) if hi else None, nulls)
    return found
