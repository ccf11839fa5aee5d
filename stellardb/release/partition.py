"""How a release cuts the sky: HATS partitions, co-partitioning and margin pixels.

Everything here works on ``_healpix_29``, the NESTED HEALPix index of a row's position at
order 29 (HATS's spatial index).  A partition is a NESTED pixel ``(order, pixel)``; it
holds the rows whose ``_healpix_29`` lies in ``[pixel << 2*(29-order), (pixel+1) << 2*(29-order))``,
so after sorting by ``_healpix_29`` every partition is one contiguous run of rows.

The partitioning itself is hats's (``generate_alignment``, as hats-import uses it), over a
row-count histogram at order 10 that DuckDB computes; margin pixels are hats's
(``get_margin``), with hats-import's choice of margin order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPATIAL_INDEX_COLUMN = "_healpix_29"
SPATIAL_INDEX_ORDER = 29
#: Order of the row-count histogram the partitions are cut from (hats-import's default).
HISTOGRAM_ORDER = 10


@dataclass(frozen=True, order=True)
class Pixel:
    order: int
    pixel: int

    @property
    def shift(self) -> int:
        return 2 * (SPATIAL_INDEX_ORDER - self.order)

    @property
    def lo(self) -> int:
        """First ``_healpix_29`` inside the pixel."""
        return self.pixel << self.shift

    @property
    def hi(self) -> int:
        """First ``_healpix_29`` after the pixel."""
        return (self.pixel + 1) << self.shift

    @property
    def directory(self) -> int:
        """HATS ``Dir=``: the pixel number rounded down to a multiple of 10 000."""
        return self.pixel // 10_000 * 10_000

    def path(self) -> str:
        """``Norder=k/Dir=d/Npix=n.parquet``, relative to a catalogue's ``dataset/``."""
        return f"Norder={self.order}/Dir={self.directory}/Npix={self.pixel}.parquet"


class PartitionTooDense(ValueError):
    """One order-10 pixel holds more rows than a partition may."""


def plan(pixels, counts, max_rows: int, histogram_order: int = HISTOGRAM_ORDER) -> list[Pixel]:
    """Adaptive partitions from the occupied pixels at ``histogram_order`` and their row
    counts (arrays, pixels unique), sorted in NESTED order.

    hats-import's cut (hats ``generate_alignment`` with ``drop_empty_siblings``, which
    tests/release/test_partition.py checks this against): a pixel of order k becomes one
    partition when it holds at most ``max_rows`` rows and at least two of its four children
    hold some; the lowest such ancestor wins, and a pixel with no such ancestor stays at
    ``histogram_order``.  hats computes it over the dense histogram in Python loops (33 s
    for the 12.6 M pixels of order 10, measured); this is the same rule over the occupied
    pixels only, in NumPy.
    """
    pixels, counts = np.asarray(pixels, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if not pixels.size:
        return []
    densest = int(counts.max())
    if densest > max_rows:
        raise PartitionTooDense(f"{densest:,} rows fall in one order-{histogram_order} HEALPix pixel "
                                f"(about {_pixel_arcmin(histogram_order):.1f} arcmin across), more than "
                                f"--max-rows-per-partition {max_rows:,}")
    # bottom-up over the occupied pixels only: at each order, the parents of the pixels below,
    # their row counts and how many of their children are occupied
    collapsing = {}
    level, rows = pixels, counts
    for order in range(histogram_order - 1, -1, -1):
        parents, where = np.unique(level >> 2, return_inverse=True)
        parent_rows = np.bincount(where, weights=rows, minlength=parents.size)
        occupied_children = np.bincount(where, minlength=parents.size)
        collapsing[order] = parents[(parent_rows <= max_rows) & (occupied_children >= 2)]
        level, rows = parents, parent_rows
    # each pixel goes to its lowest collapsing ancestor, else stays at histogram_order
    assigned = np.full(pixels.size, histogram_order, dtype=np.int64)
    for order in range(histogram_order - 1, -1, -1):
        assigned[np.isin(pixels >> 2 * (histogram_order - order), collapsing[order])] = order
    keys = np.unique((assigned << 58) | (pixels >> 2 * (histogram_order - assigned)))
    found = [Pixel(int(k >> 58), int(k & ((1 << 58) - 1))) for k in keys]
    return sorted(found, key=lambda p: (p.lo, p.order))


def _pixel_arcmin(order: int) -> float:
    return float(np.degrees(np.sqrt(4 * np.pi / (12 * 4**order))) * 60)


def covering(base: list[Pixel], pixels, counts, max_rows: int = 2**62) -> list[Pixel]:
    """Partitions for rows outside every pixel of ``base`` (a co-partitioned table's row whose
    Gaia source is not in the gaia catalogue), given as their order-10 ``pixels`` (unique) and
    row ``counts``: cut like any table (:func:`plan`, at most ``max_rows`` rows each) and split
    further where a pixel would overlap ``base``.  The result overlaps neither ``base`` nor itself."""
    pixels, counts = np.asarray(pixels, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if not pixels.size:
        return []
    order_ = np.argsort(pixels)
    pixels, counts = pixels[order_], counts[order_]
    by_order: dict[int, np.ndarray] = {}
    for p in base:
        by_order.setdefault(p.order, []).append(p.pixel)
    by_order = {k: np.sort(np.array(v, dtype=np.int64)) for k, v in by_order.items()}

    def overlaps_base(candidate: Pixel) -> bool:
        for order, found in by_order.items():
            if order <= candidate.order:  # a base pixel holds the candidate
                ancestor = candidate.pixel >> 2 * (candidate.order - order)
                i = np.searchsorted(found, ancestor)
                if i < found.size and found[i] == ancestor:
                    return True
            else:  # a base pixel inside the candidate
                first = candidate.pixel << 2 * (order - candidate.order)
                last = (candidate.pixel + 1) << 2 * (order - candidate.order)
                if np.searchsorted(found, first) < np.searchsorted(found, last):
                    return True
        return False

    result, stack = [], list(plan(pixels, counts, max_rows))
    while stack:
        candidate = stack.pop()
        if not overlaps_base(candidate):
            result.append(candidate)
            continue
        # split: its children that hold rows (at HISTOGRAM_ORDER no pixel with a row can overlap
        # base, whose pixels are no deeper, without holding that row)
        shift = 2 * (HISTOGRAM_ORDER - candidate.order)
        inside = pixels[np.searchsorted(pixels, candidate.pixel << shift):
                        np.searchsorted(pixels, (candidate.pixel + 1) << shift)]
        children = np.unique(inside >> (shift - 2))
        stack.extend(Pixel(candidate.order + 1, int(c)) for c in children)
    return sorted(result, key=lambda p: (p.lo, p.order))


#: at most this many border pixels in all (each a row of the margin join's build side)
MAX_MARGIN_PIXELS = 20_000_000


def margin_order(partitions: list[Pixel], margin_arcsec: float) -> int:
    """hats-import's margin order: the highest order whose pixels are still wider than
    the margin (``margin2order``), which must be deeper than every partition."""
    from hats.pixel_math.healpix_shim import margin2order, order2mindist

    order = int(margin2order(margin_thr_arcmin=margin_arcsec / 60.0))
    deepest = max(p.order for p in partitions)
    if order <= deepest or order2mindist(order) * 60.0 < margin_arcsec:
        raise ValueError(f"a {margin_arcsec:g} arcsec margin is wider than the order-{deepest} partitions allow "
                         f"(about {order2mindist(deepest + 1) * 60:.0f} arcsec at most)")
    # each partition of order k borders about 4 * 2**(order - k) + 4 margin pixels
    border = sum(4 * 2 ** (order - p.order) + 4 for p in partitions)
    if border > MAX_MARGIN_PIXELS:
        raise ValueError(f"a {margin_arcsec:g} arcsec margin is so narrow that its border pixels (order {order}) "
                         f"number {border:,}, more than the {MAX_MARGIN_PIXELS:,} a release holds in memory; "
                         "use a wider margin")
    return order


def margin_pairs(partitions: list[Pixel], order: int):
    """Arrow table (margin_pixel, norder, npix): each order-``order`` pixel just outside a
    partition's border, with that partition.  A row belongs to partition P's margin when
    its order-``order`` pixel is one of P's (hats-import's rule, no finer filter)."""
    import pyarrow as pa
    from hats.pixel_math import get_margin

    margin, norder, npix = [], [], []
    for p in partitions:
        border = get_margin(p.order, p.pixel, order - p.order)
        margin.extend(border)
        norder.extend([p.order] * len(border))
        npix.extend([p.pixel] * len(border))
    return pa.table({"margin_pixel": pa.array(margin, pa.int64()), "norder": pa.array(norder, pa.int8()),
                     "npix": pa.array(npix, pa.int64())})
