"""lsdb crossmatch of the same two catalogues, run in lsdb's own virtual environment.

    bench/.venv-lsdb/bin/python bench/lsdb_peer.py GAIA.parquet SKYMAPPER.parquet RADIUS_ARCSEC

Prints one JSON line: seconds for from_dataframe + crossmatch + compute (nearest
neighbour, no proper motion: Gaia positions given at the median SkyMapper epoch),
and the number of pairs.  Kept apart because lsdb pins its own dask/pandas stack.
"""

import json
import sys
import time

import lsdb
import pandas as pd

gaia_path, sm_path, radius = sys.argv[1], sys.argv[2], float(sys.argv[3])
gaia = pd.read_parquet(gaia_path)
sm = pd.read_parquet(sm_path)
t0 = time.perf_counter()
g = lsdb.from_dataframe(gaia, ra_column="ra", dec_column="dec")
s = lsdb.from_dataframe(sm, ra_column="raj2000", dec_column="dej2000")
pairs = s.crossmatch(g, radius_arcsec=radius, n_neighbors=1).compute()
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "pairs": int(len(pairs))}))
