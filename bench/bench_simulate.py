"""Issue 2 benchmark: simulate N stars (default 1 M) on this machine; time and peak memory.

Target: 1 M Gaia stars in at most 60 s on 2 cores with peak memory under 4 GB.
The peer measured in the same run is writing the same Gaia rows with plain zlib
gzip instead of ISA-L, which shows what the chunked, parallel writer buys.

    python bench/bench_simulate.py [--stars 1000000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from stellardb.simulate import simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stars", type=int, default=1_000_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    try:
        t0 = time.perf_counter()
        summary = simulate(tmp / "sky", stars=args.stars, seed=1)
        wall = time.perf_counter() - t0
        self_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        child_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        # peer: re-compress the Gaia file with zlib level 6 (what gzip.open would do)
        import gzip

        from isal import igzip

        t1 = time.perf_counter()
        with igzip.open(summary.files["gaia"], "rb") as src, gzip.open(tmp / "zlib.csv.gz", "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        zlib_write = time.perf_counter() - t1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "stars": args.stars,
        "simulate_s": round(wall, 2),
        "stars_per_s": round(args.stars / wall),
        "peak_rss_gb_parent": round(self_gb, 2),
        "peak_rss_gb_worker": round(child_gb, 2),
        "peer_zlib_gzip_of_gaia_file_alone_s": round(zlib_write, 2),
        "ratio_simulate_to_zlib_gzip_alone": round(wall / zlib_write, 2),
        "target": "1 M stars <= 60 s, < 4 GB",
    }
    print(f"machine: {machine()}")
    for k, v in result.items():
        print(f"{k:40s} {v}")
    print(f"-> {save('simulate', result)}")


if __name__ == "__main__":
    main()
