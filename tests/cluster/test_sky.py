"""The partition geometry of the cluster runs (stellardb.cluster.sky, stats) against brute force."""

from __future__ import annotations

import healpy
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from stellardb.cluster import sky
from stellardb.cluster.stats import RowGroupIndex
from stellardb.release.partition import Pixel


def healpix_29(ra, dec):
    return healpy.ang2pix(2**29, ra, dec, nest=True, lonlat=True).astype(np.int64)


@pytest.mark.parametrize("pixel,order", [(Pixel(3, 500), 12), (Pixel(0, 4), 9), (Pixel(6, 0), 14), (Pixel(2, 191), 10)])
def test_every_point_near_a_pixel_lies_in_it_or_its_border(pixel, order):
    """Points just outside the pixel (closer than the border order's pixels are wide) fall in a
    border range; points well inside fall in none."""
    rng = np.random.default_rng(pixel.pixel + order)
    corners = healpy.boundaries(2**pixel.order, pixel.pixel, step=16, nest=True)  # (3, 64)
    lon, lat = healpy.vec2ang(corners.T, lonlat=True)
    width_arcsec = np.degrees(healpy.nside2resol(2**order)) * 3600 * 0.5
    c = SkyCoord(np.repeat(lon, 20) * u.deg, np.repeat(lat, 20) * u.deg)
    moved = c.directional_offset_by(rng.uniform(0, 360, c.size) * u.deg, rng.uniform(0, width_arcsec, c.size) * u.arcsec)
    hp = healpix_29(moved.ra.deg, moved.dec.deg)
    ranges = sky.border_ranges(pixel, order)
    inside = (hp >= pixel.lo) & (hp < pixel.hi)
    in_border = np.array([any(lo <= h < hi for lo, hi in ranges) for h in hp])
    assert (~inside).sum() > 100 and inside.sum() > 100
    assert np.all(inside | in_border), "a point near the pixel is in no border range"
    assert not np.any(inside & in_border), "a border range overlaps the pixel"


def test_row_group_counts_are_upper_bounds_and_exact_for_whole_groups():
    rng = np.random.default_rng(3)
    values = np.sort(rng.integers(0, 10**6, 5000))
    groups = np.array_split(values, 50)
    index = RowGroupIndex(np.array([g[0] for g in groups]), np.array([g[-1] for g in groups]),
                          np.array([len(g) for g in groups]))
    for _ in range(300):
        ranges = [tuple(sorted(rng.integers(0, 10**6, 2))) for _ in range(rng.integers(1, 6))]
        ranges = [(a, b) for a, b in ranges if b > a]
        truth = sum(int(np.any((g[:, None] >= [a for a, _ in ranges]) & (g[:, None] < [b for _, b in ranges])))
                    * len(g) for g in groups) if ranges else 0
        assert index.rows_in_ranges(ranges) == truth
        inside = sum(int(((values >= a) & (values < b)).sum()) for a, b in sky.merge(ranges))
        assert index.rows_in_ranges(ranges) >= inside


def test_uncovered_and_coarsen_against_brute_force():
    rng = np.random.default_rng(4)
    pixel = Pixel(5, 77)
    probe = rng.integers(pixel.lo, pixel.hi, 20000)
    for _ in range(50):
        cuts = np.sort(rng.integers(pixel.lo - 10**12, pixel.hi + 10**12, 12))
        covered = sky.merge([(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2]) if b > a])
        gaps = sky.uncovered(pixel, covered)
        in_covered = np.array([any(a <= v < b for a, b in covered) for v in probe])
        in_gaps = np.array([any(a <= v < b for a, b in gaps) for v in probe])
        assert np.all(in_covered != in_gaps)
        coarse = sky.coarsen(covered, 2)
        assert len(coarse) <= 2
        assert all(any(a <= v < b for a, b in coarse) for v in probe[in_covered])


@pytest.mark.parametrize("seed", range(5))
def test_overlapping_against_brute_force(seed):
    """The partitions any of many ranges touch: the vectorised union against a check of every pair."""
    rng = np.random.default_rng(seed)
    # a tiling of mixed orders: split random pixels of order 1 a few times
    pixels = [Pixel(1, p) for p in range(48)]
    for _ in range(12):
        p = pixels.pop(int(rng.integers(len(pixels))))
        if p.order < 6:
            pixels += [Pixel(p.order + 1, c) for c in range(4 * p.pixel, 4 * p.pixel + 4)]
        else:
            pixels.append(p)
    pixels = [p for p in pixels if rng.random() < 0.8]  # gaps: ranges may fall between partitions
    top = max(p.hi for p in pixels)
    starts = rng.integers(0, top, 300)
    ranges = [(int(a), int(a + w)) for a, w in zip(starts, rng.integers(1, 2 ** 54, 300))]
    ranges += [(p.lo, p.hi) for p in pixels[:3]] + [(p.hi, p.hi + 1) for p in pixels[3:5]]  # exact edges
    want = sorted((p for p in pixels if any(lo < p.hi and hi > p.lo for lo, hi in ranges)), key=lambda p: p.lo)
    assert sky.overlapping(pixels, ranges) == want
    assert 0 < len(want) < len(pixels)
    assert sky.overlapping(pixels, []) == [] and sky.overlapping([], ranges) == []
    assert sky.overlapping(pixels, ranges[:1]) == [p for p in sorted(pixels, key=lambda p: p.lo)
                                                   if p.lo < ranges[0][1] and p.hi > ranges[0][0]]


def test_overlapping_at_the_edges_of_touching_partitions():
    """Ranges ending where a partition starts, or starting where one ends, do not touch it."""
    a, b, c = Pixel(2, 5), Pixel(2, 6), Pixel(2, 7)  # consecutive: a.hi == b.lo, b.hi == c.lo
    pixels = [c, a, b]
    assert sky.overlapping(pixels, [(a.lo, a.hi)]) == [a]
    assert sky.overlapping(pixels, [(b.lo, b.hi)]) == [b]
    assert sky.overlapping(pixels, [(b.hi, b.hi + 1)]) == [c]
    assert sky.overlapping(pixels, [(a.hi - 1, a.hi)]) == [a]
    assert sky.overlapping(pixels, [(a.hi - 1, a.hi + 1)]) == [a, b]
    assert sky.overlapping(pixels, [(b.lo, b.lo)]) == []  # an empty range
    assert sky.overlapping(pixels, [(c.hi, c.hi + 10), (0, a.lo)]) == []
    assert sky.overlapping(pixels, iter([(c.lo, c.lo + 1), (a.lo, a.lo + 1)])) == [a, c]
