"""The sky's cut (stellardb/release/partition.py) against hats itself and brute force."""

from __future__ import annotations

import healpy
import numpy as np
import pytest
from hats.pixel_math.partition_stats import generate_alignment

from stellardb.release.partition import PartitionTooDense, Pixel, covering, margin_order, margin_pairs, plan


@pytest.mark.parametrize("seed", range(12))
def test_plan_is_hats_imports_alignment(seed):
    """Same partitions as hats's generate_alignment(drop_empty_siblings=True), hats-import's default,
    on random sparse and clustered histograms (order 4, where hats's loops are fast)."""
    rng = np.random.default_rng(seed)
    order = 4
    histogram = np.zeros(12 * 4**order, dtype=np.int64)
    occupied = rng.choice(histogram.size, size=int(rng.integers(1, 400)), replace=False)
    histogram[occupied] = rng.integers(1, 60, occupied.size)
    start = int(rng.integers(0, histogram.size - 256))
    histogram[start:start + 256] += rng.integers(0, 40, 256)  # a dense cluster
    threshold = int(rng.integers(histogram.max(), histogram.max() * 50))
    alignment = generate_alignment(histogram, highest_order=order, lowest_order=0, threshold=threshold,
                                   drop_empty_siblings=True)
    expected = {Pixel(int(a[0]), int(a[1])) for a in alignment[histogram > 0]}
    occupied = np.flatnonzero(histogram)
    assert set(plan(occupied, histogram[occupied], threshold, histogram_order=order)) == expected


def test_plan_refuses_a_pixel_denser_than_a_partition():
    with pytest.raises(PartitionTooDense, match="more than --max-rows-per-partition 10"):
        plan([5], [11], 10)


def test_pixel_ranges_are_healpix_nesting():
    """A partition's _healpix_29 range is exactly its order-29 descendants (healpy's nesting)."""
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 2000), np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    h29 = healpy.ang2pix(2**29, ra, dec, nest=True, lonlat=True)
    for order in (0, 3, 7, 12):
        parent = healpy.ang2pix(2**order, ra, dec, nest=True, lonlat=True)
        for p, h in zip(parent[:50], h29[:50]):
            pixel = Pixel(order, int(p))
            assert pixel.lo <= h < pixel.hi
    assert Pixel(10, 1_234_567).path() == "Norder=10/Dir=1230000/Npix=1234567.parquet"


def test_covering_holds_every_row_and_overlaps_nothing():
    rng = np.random.default_rng(2)
    base = [Pixel(2, 5), Pixel(3, 100), Pixel(3, 101), Pixel(5, 3000), Pixel(1, 40)]
    h29 = rng.integers(0, 12 * 4**29, 3000)
    inside_base = np.zeros(h29.size, bool)
    for p in base:
        inside_base |= (h29 >= p.lo) & (h29 < p.hi)
    outside = h29[~inside_base]
    pixels, counts = np.unique(outside >> 38, return_counts=True)
    extra = covering(base, pixels, counts)
    assert extra
    every = base + extra
    for a in every:  # no two partitions overlap
        for b in every:
            if a != b:
                assert a.hi <= b.lo or b.hi <= a.lo, (a, b)
    for h in outside:  # every row outside the base has exactly one extra pixel
        assert sum(p.lo <= h < p.hi for p in extra) == 1


def test_margin_pairs_are_the_border_pixels():
    """Each partition's margin pixels lie outside it and touch it: a margin-order pixel is a
    neighbour (healpy) of one of the partition's own margin-order pixels on its edge."""
    partitions = [Pixel(7, 7), Pixel(8, 100)]
    order = margin_order(partitions, 10.0)
    assert order > 8
    pairs = margin_pairs(partitions, order).to_pandas()
    nside = 2**order
    for p in partitions:
        border = pairs[(pairs.norder == p.order) & (pairs.npix == p.pixel)].margin_pixel.to_numpy()
        inside = np.arange(p.pixel << 2 * (order - p.order), (p.pixel + 1) << 2 * (order - p.order))
        assert not np.isin(border, inside).any()
        # brute force: every neighbour of an inside pixel that is not inside
        neighbours = healpy.get_all_neighbours(nside, inside, nest=True).ravel()
        expected = np.setdiff1d(neighbours[neighbours >= 0], inside)
        assert set(border.tolist()) == set(expected.tolist())


def test_margin_wider_than_the_partitions_is_refused():
    with pytest.raises(ValueError, match="wider than the order-10 partitions allow"):
        margin_order([Pixel(10, 5)], 600.0)


def test_covering_respects_max_rows():
    """Rows far from every base pixel are cut like any table: at most max_rows per pixel."""
    rng = np.random.default_rng(3)
    base = [Pixel(0, 0)]
    h29 = rng.integers(Pixel(0, 5).lo, Pixel(0, 7).hi, 5000)  # base pixels 5..7, away from base
    pixels, counts = np.unique(h29 >> 38, return_counts=True)
    extra = covering(base, pixels, counts, max_rows=300)
    held = [int(np.sum((h29 >= p.lo) & (h29 < p.hi))) for p in extra]
    assert sum(held) == h29.size and max(held) <= 300
