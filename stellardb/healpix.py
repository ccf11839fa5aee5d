"""The HEALPix contract of stellardb: NESTED ordering only, lon/lat in degrees.

Gaia encodes the order-12 nested HEALPix index of each source's position in the
top bits of ``source_id``: ``healpix_12 = source_id // 2**35`` (Gaia DR3
documentation, ``source_id`` description).  We store that order-12 index once per
row; coarser orders are a right shift (``pix_k = pix_12 >> 2 * (12 - k)``).
"""

from __future__ import annotations

import numpy as np

SPATIAL_INDEX_COLUMN = "healpix_12"
SPATIAL_INDEX_ORDER = 12
SPATIAL_INDEX_NSIDE = 2**SPATIAL_INDEX_ORDER
#: Gaia: source_id = healpix_12 * 2**35 + (source number within the pixel).
GAIA_SOURCE_ID_SHIFT = 35
GAIA_SOURCE_ID_DIVISOR = 2**GAIA_SOURCE_ID_SHIFT  # 34359738368


def radec_to_healpix(ra_deg, dec_deg, order: int = SPATIAL_INDEX_ORDER) -> np.ndarray:
    """Nested HEALPix index (int64) of positions in degrees at ``order``."""
    import healpy

    return healpy.ang2pix(2**order, np.asarray(ra_deg), np.asarray(dec_deg), nest=True, lonlat=True).astype(np.int64)


def source_id_to_healpix(source_id, order: int = SPATIAL_INDEX_ORDER) -> np.ndarray:
    """Nested HEALPix index at ``order`` (<= 12) encoded in Gaia ``source_id`` values."""
    if order > SPATIAL_INDEX_ORDER:
        raise ValueError(f"Gaia source_id encodes HEALPix order {SPATIAL_INDEX_ORDER}; order {order} is finer than that")
    pix12 = np.asarray(source_id, dtype=np.int64) >> GAIA_SOURCE_ID_SHIFT
    return pix12 >> (2 * (SPATIAL_INDEX_ORDER - order))
