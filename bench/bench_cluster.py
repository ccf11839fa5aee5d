"""Issue 16: the Dask crossmatch and scorer over a release's HATS partitions, against their peers
measured in the same run.

    python bench/bench_cluster.py RELEASE_FOLDER [--model M --db DB] [--skip-lsdb]

Measures, on the release's gaia x skymapper:
- the embedded DuckDB crossmatch (xm_gaia_survey over every file, DuckDB with 2 threads);
- stellardb xmatch --engine dask with 1 worker and with 2 workers of one thread each;
- lsdb's own crossmatch (KD-tree, nearest within 1 arcsec, no proper motion) on the same
  catalogues with 2 workers of one thread each;
- with --model: stellardb score --engine dask (2 workers) in stars/s, end to end (read the
  partition, predict, write Parquet), and the embedded `score` on the database, if --db.
Prints one line per measurement and the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def embedded_xmatch(release: Path, threads: int = 2) -> tuple[float, int]:
    import duckdb

    from stellardb.catalog.schema import sql_files
    from stellardb.cluster import catalogues
    from stellardb.cluster.xmatch import _create_source

    gaia = catalogues.release_catalogue(release, "gaia")
    sm = catalogues.release_catalogue(release, "skymapper")
    con = duckdb.connect()
    con.execute(f"set threads = {threads}")
    for path in sql_files():
        if path.parent.name == "10_macros":
            con.execute(path.read_text())
    _create_source(con, "gaia_src", [p.file for p in gaia.partitions])
    _create_source(con, "skymapper_src", [p.file for p in sm.partitions])
    for name in ("gaia_motion", "gaia_search_cells", "skymapper_positions", "xm_nearest_gaia", "xm_gaia_keeps_nearest",
                 "xm_gaia_survey"):
        con.execute(next(p for p in sql_files() if p.stem == name).read_text())
    t0 = time.perf_counter()
    n = con.execute("create table pairs as select * from xm_gaia_survey('skymapper_positions', 1.0)").fetchone()[0]
    return time.perf_counter() - t0, n


def dask_xmatch(release: Path, workers: int) -> tuple[float, int, int]:
    from stellardb.cluster import catalogues, xmatch

    out = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        gaia = catalogues.release_catalogue(release, "gaia")
        sm = catalogues.release_catalogue(release, "skymapper")
        t0 = time.perf_counter()
        r = xmatch.run(gaia, sm, "skymapper", out, workers=workers)
        return time.perf_counter() - t0, r.pairs, r.peak_task_bytes
    finally:
        shutil.rmtree(out, ignore_errors=True)


def lsdb_xmatch(release: Path, workers: int) -> tuple[float, int]:
    import lsdb
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        t0 = time.perf_counter()
        left = lsdb.open_catalog(release / "skymapper", columns=["object_id", "raj2000", "dej2000"])
        right = lsdb.open_catalog(release / "gaia", columns=["source_id", "ra", "dec"])
        n = len(left.crossmatch(right, radius_arcsec=1.0, n_neighbors=1, suffixes=("_sm", "_g")).compute())
        return time.perf_counter() - t0, n


def dask_score(release: Path, model: str, db: Path, workers: int) -> tuple[float, int]:
    from stellardb.cluster import catalogues, score

    out = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        t0 = time.perf_counter()
        r = score.run(catalogues.release_catalogue(release, "gaia"), catalogues.release_catalogue(release, "distances"),
                      catalogues.release_catalogue(release, "xmatch"), catalogues.release_catalogue(release, "skymapper"),
                      model, out, db_path=db, workers=workers)
        return time.perf_counter() - t0, r.rows
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("release", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--skip-lsdb", action="store_true")
    args = ap.parse_args()
    emb, n_emb = embedded_xmatch(args.release)
    print(f"embedded DuckDB crossmatch (2 threads): {emb:.1f} s, {n_emb:,} pairs", flush=True)
    one, n1, peak1 = dask_xmatch(args.release, 1)
    print(f"dask xmatch, 1 worker x 1 thread: {one:.1f} s, {n1:,} pairs, peak worker RSS {peak1 / 2**20:.0f} MiB", flush=True)
    two, n2, peak2 = dask_xmatch(args.release, 2)
    print(f"dask xmatch, 2 workers x 1 thread: {two:.1f} s, {n2:,} pairs, peak worker RSS {peak2 / 2**20:.0f} MiB", flush=True)
    print(f"speed-up 2 vs 1 worker: {one / two:.2f}x (target >= 1.7); dask 2 workers / embedded: {two / emb:.2f}x "
          f"(target <= 1.3); same pairs: {n_emb == n1 == n2}", flush=True)
    if not args.skip_lsdb:
        lt, ln = lsdb_xmatch(args.release, 2)
        print(f"lsdb crossmatch (KD-tree, no proper motion), 2 workers x 1 thread: {lt:.1f} s, {ln:,} pairs; "
              f"stellardb dask / lsdb: {two / lt:.2f}x", flush=True)
    if args.model:
        st, sn = dask_score(args.release, args.model, args.db, 2)
        print(f"dask score, 2 workers: {st:.1f} s, {sn:,} stars, {sn / st / 1e6:.2f} M stars/s end to end", flush=True)
        if args.db:
            from stellardb.ml import score

            t0 = time.perf_counter()
            s = score.run_family(args.db, args.model) if (Path(args.db).parent / "models" / f"{args.model}.family.json").exists() \
                else score.run(args.db, args.model)
            et = time.perf_counter() - t0
            print(f"embedded score: {et:.1f} s, {s.rows:,} stars, {s.rows / et / 1e6:.2f} M stars/s; "
                  f"dask / embedded rate: {(sn / st) / (s.rows / et):.2f}x", flush=True)


if __name__ == "__main__":
    main()
