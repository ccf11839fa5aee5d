"""Which partitions a partition's task needs: HEALPix ranges, borders and coverage.

All on ``_healpix_29`` (stellardb.release.partition): a partition is one range of it, a
pixel's border is hats's margin pixels (``get_margin``) at an order whose pixels are wider
than the distance that matters, so anything within that distance of a partition, outside
it, lies in one of its border pixels.
"""

from __future__ import annotations

import numpy as np

from stellardb.release.partition import SPATIAL_INDEX_ORDER, Pixel


def border_arrays(pixel: Pixel, order: int) -> tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` of ``_healpix_29`` of the order-``order`` pixels just outside ``pixel``, as two
    sorted arrays (runs of consecutive pixels as one range)."""
    from hats.pixel_math import get_margin

    if order <= pixel.order:
        raise ValueError(f"border order {order} must be deeper than the pixel's {pixel.order}")
    shift = 2 * (SPATIAL_INDEX_ORDER - order)
    border = np.unique(np.asarray(get_margin(pixel.order, pixel.pixel, order - pixel.order), dtype=np.int64))
    if not border.size:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    breaks = np.flatnonzero(np.diff(border) != 1) + 1
    starts = border[np.r_[0, breaks]]
    ends = border[np.r_[breaks - 1, border.size - 1]] + 1
    return starts << shift, ends << shift


def border_ranges(pixel: Pixel, order: int) -> list[tuple[int, int]]:
    """:func:`border_arrays` as a list of ``(lo, hi)``."""
    lo, hi = border_arrays(pixel, order)
    return list(zip(lo.tolist(), hi.tolist()))


def merge(ranges) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``[lo, hi)`` ranges covering the same values."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def overlapping(pixels: list[Pixel], ranges) -> list[Pixel]:
    """The ``pixels`` (non-overlapping partitions) that intersect any of ``ranges``.

    Vectorised: a coarse partition's border at a deep order is tens of thousands of ranges
    (580 k over a 10 M-star release's 27 partitions took 1.4 s one by one on the driver)."""
    if not pixels:
        return []
    ordered = sorted(pixels, key=lambda p: p.lo)
    los = np.array([p.lo for p in ordered], dtype=np.int64)
    his = np.array([p.hi for p in ordered], dtype=np.int64)
    bounds = np.asarray(list(ranges), dtype=np.int64).reshape(-1, 2)
    # per range: the partitions starting before its hi and ending after its lo, [first, last)
    last = np.searchsorted(los, bounds[:, 1], side="left")
    first = np.searchsorted(his, bounds[:, 0], side="right")
    hit = first < last
    # the union of those index runs: +1 where a run starts, -1 where it ends
    marks = np.zeros(len(ordered) + 1, np.int64)
    np.add.at(marks, first[hit], 1)
    np.add.at(marks, last[hit], -1)
    return [ordered[i] for i in np.flatnonzero(np.cumsum(marks[:-1]) > 0)]


def uncovered(pixel: Pixel, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``pixel``'s range that no range of ``covered`` (merged) holds."""
    out, at = [], pixel.lo
    for lo, hi in covered:
        if hi <= at or lo >= pixel.hi:
            continue
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
        if at >= pixel.hi:
            break
    if at < pixel.hi:
        out.append((at, pixel.hi))
    return out


def order_wider_than(arcsec: float) -> int:
    """The deepest HEALPix order whose pixels are all at least ``arcsec`` across (hats's rule
    for margins)."""
    from hats.pixel_math.healpix_shim import margin2order, order2mindist

    order = int(margin2order(margin_thr_arcmin=max(arcsec, 1e-3) / 60.0))
    while order > 0 and order2mindist(order) * 60.0 < arcsec:
        order -= 1
    return order


#: at most this many ranges in one SQL condition (DuckDB plans a long OR slowly)
MAX_SQL_RANGES = 64


def coarsen(ranges, most: int = MAX_SQL_RANGES) -> list[tuple[int, int]]:
    """At most ``most`` ranges covering ``ranges``: the smallest gaps are closed first.  A superset,
    for reading rows a task may need (extra Gaia rows are real candidates, never wrong ones)."""
    merged = merge(ranges)
    if len(merged) <= most:
        return merged
    gaps = np.array([merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)])
    # keep the (most - 1) widest gaps open
    keep = set(np.argsort(gaps)[::-1][:most - 1].tolist())
    out, start = [], merged[0][0]
    for i in range(len(merged) - 1):
        if i in keep:
            out.append((start, merged[i][1]))
            start = merged[i + 1][0]
    out.append((start, merged[-1][1]))
    return out


def ranges_sql(column: str, ranges, most: int | None = MAX_SQL_RANGES) -> str:
    """A SQL condition: ``column`` in any of the ``[lo, hi)`` ranges, coarsened to at most ``most``
    (a superset; ``None``: exact); false for none."""
    if not ranges:
        return "false"
    ranges = coarsen(ranges, most) if most else merge(ranges)
    return "(" + " or ".join(f"({column} >= {int(lo)} and {column} < {int(hi)})" for lo, hi in ranges) + ")"
