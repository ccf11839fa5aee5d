"""Write bench/RESULTS.md from the JSON each benchmark leaves in bench/out/.

Every figure keeps the machine, date and command of the run that measured it and
sits next to the peer measured in that same run (keys ``peer_*`` and ``ratio_*``),
because absolute times on a shared VM drift by tens of per cent within an hour.

Usage: ``python bench/results.py`` (``make bench`` runs it last).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = HERE / "RESULTS.md"

#: the benchmarks in the order `make bench` runs them, and what each measures
BENCHES = {
    "simulate": "`stellardb simulate`: time and peak memory, against gzipping its Gaia file alone",
    "ingest_xmatch": "ingest (Gaia ECSV and Parquet, SkyMapper Parquet) and the crossmatch, against DuckDB's own "
                     "copy of the same files, astropy and lsdb",
    "ingest_xmatch_memory": "peak memory of ingest + crossmatch through the CLI (`make bench-big`)",
    "bench_score": "the NumPy scorer and `stellardb score` end to end, against Keras predict and DuckDB's read",
    "bench_train": "accuracy against Gaia GSP-Phot and LightGBM on the simulated sky, repeatability over seeds, "
                   "training speed, and real SWEET-Cat stars",
    "release": "`stellardb release` of 1 M stars against hats-import (Gaia catalogue and margin, same rows), "
               "and 1 arcmin cones through `query --release` against a plain filter",
    "release_10000000": "the same for 10 M stars (`make bench-big`)",
    "serve": "`stellardb serve` over a release of 1 M stars: 1 arcmin cones through /scs and /tap/sync with one "
             "client (against lsdb's cone_search and a DuckDB scan without pruning), 16 concurrent clients, and the "
             "switch to a new release made while it serves",
    "serve_workers2": "the same with `serve --workers 2` (one process per core)",
    "serve_10000000": "the same for 10 M stars (`make bench-big`)",
    "serve_10000000_workers2": "10 M stars with `serve --workers 2`",
    "cluster": "`xmatch --engine dask` with 1 and 2 local workers against the embedded DuckDB crossmatch and lsdb's "
               "crossmatch, and `score --engine dask` against the embedded `score` (`make bench-big`: 10 M stars)",
    "cluster_memory": "peak worker memory of `xmatch --engine dask` on 250 k and 1 M stars in partitions of at most "
                      "60,000 rows",
    "async": "asynchronous TAP on 10 M stars (`make bench-big`, issue 14): a 1 M-position upload crossmatched at "
             "1 arcsec through pyvo (each part timed; the DuckDB match against astropy match_to_catalog_sky on the "
             "same arrays; the pairs against astropy's), and 20 clients looping over async jobs beside 50 page "
             "loads/s for 60 s (failures, latency, server RSS and CPU)",
    "async_pages": "part 2 of `bench_async.py` alone (`--skip-xmatch`): 20 async job clients beside 50 page loads/s "
                   "for 60 s, the star page reading the release's row groups (issue 14)",
    "feature_sets": "a model per feature set on a simulated whole sky (issue 15): per set ML and GSP-Phot on the same "
                    "test stars and LightGBM on the same inputs and split, the accuracy targets, the chosen prediction "
                    "against every smaller set's on validation stars, and the scorer over all sets",
    "feature_sets_scorer": "step 4 of bench_feature_sets.py alone (`--scorer-only`, issue 15): the NumPy scorer over "
                           "every member's stars of the family an earlier run trained, each member's best of 3 calls "
                           "(bench_score.py's method) and the first call beside it; its peer, alternated with it: "
                           "the bare matrix products it does on the same stars",
}


def flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts as (dotted key, value) rows; lists of scalars kept on one line."""
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows.extend(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, value)]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value).replace("|", "\\|")


def render(results: dict[str, dict]) -> str:
    lines = ["# Benchmark results", "",
             "Written by `python bench/results.py` from `bench/out/*.json` (`make bench` runs every benchmark, then "
             "this). Each section is one run: its machine, date and command, every figure it recorded, the peers "
             "(`peer_*`) measured in the same run and the ratios to them (`ratio_*`, `speedup_*`). Compare ratios, not "
             "absolute times, between runs: the VM's speed drifts.", ""]
    for name, what in BENCHES.items():
        data = results.get(name)
        lines += [f"## {name}", "", what + ".", ""]
        if data is None:
            lines += ["Not run yet on this checkout (`make bench`).", ""]
            continue
        lines += [f"- machine: {data.get('machine', '?')}", f"- date: {data.get('date', '?')}",
                  f"- command: `{data.get('command', '?')}`", "", "| figure | value |", "|---|---|"]
        for key, value in flatten({k: v for k, v in data.items() if k not in ("machine", "date", "command")}):
            lines.append(f"| {key} | {_fmt(value)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    results = {}
    for path in sorted(OUT.glob("*.json")):
        results[path.stem] = json.loads(path.read_text())
    unknown = sorted(set(results) - set(BENCHES))
    if unknown:
        print(f"note: bench/out also has {', '.join(unknown)}, not listed in bench/results.py BENCHES", file=sys.stderr)
    RESULTS.write_text(render(results))
    print(f"wrote {RESULTS} ({len(results)} benchmark runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
