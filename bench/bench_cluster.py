"""Issue 16: the Dask crossmatch and scorer over a release's HATS partitions, against their peers
measured in the same run.

    python bench/bench_cluster.py RELEASE_FOLDER [--model M --db DB] [--skip-lsdb]
    python bench/bench_cluster.py --stars 10000000 [--workdir W]     # simulate, ingest, release first
    python bench/bench_cluster.py --memory-check                      # peak worker memory, 1x vs 4x stars

Measures, on the release's gaia x skymapper:
- the embedded DuckDB crossmatch (xm_gaia_survey over every file, DuckDB with 2 threads, and
  with 1: the machine's own scaling of the same SQL, beside the Dask speed-up);
- stellardb xmatch --engine dask with 1 worker and with 2 workers of one thread each;
- the same two on a running cluster (started before the clock, as `--scheduler` finds one), the
  first job after its start;
- lsdb's own crossmatch (KD-tree, nearest within 1 arcsec, no proper motion) on the same
  catalogues, on a running local cluster of its own of 2 workers of one thread each (Dask's
  defaults), the first job after its start, as ours;
- with --model: stellardb score --engine dask (2 workers) in stars/s, end to end (read the
  partition, predict, write Parquet), on the running cluster and from nothing, and the
  embedded `score` on the database, if --db.
Prints one line per measurement and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
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


@contextlib.contextmanager
def running_cluster(workers: int):
    """A local cluster as `--workers N` makes one (stellardb.cluster.engine.client: processes of one
    thread, the default memory budget), started before the clock: (its address, seconds to start)."""
    from stellardb.cluster import engine

    scratch = tempfile.mkdtemp(prefix="bench-cluster-dask-")
    t0 = time.perf_counter()
    try:
        with engine.client(None, workers, engine.Budget(engine.parse_bytes(engine.DEFAULT_BUDGET)), scratch) as client:
            started = time.perf_counter() - t0
            yield client.scheduler.address, started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def dask_xmatch(release: Path, workers: int, detail: dict | None = None,
                scheduler: str | None = None) -> tuple[float, int, int]:
    """`xmatch --engine dask`: on a local cluster it starts (scheduler None), or on a running one."""
    from stellardb.cluster import catalogues, xmatch

    out = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        gaia = catalogues.release_catalogue(release, "gaia")
        sm = catalogues.release_catalogue(release, "skymapper")
        t0 = time.perf_counter()
        r = xmatch.run(gaia, sm, "skymapper", out, workers=None if scheduler else workers, scheduler=scheduler)
        wall = time.perf_counter() - t0
        if detail is not None:
            detail.update({"plan_s": round(r.plan_seconds, 1), "nearest_tasks": r.nearest_tasks,
                           "task_s": {k: round(v, 1) for k, v in r.task_seconds.items()}})
            print(f"  {workers} worker(s): plan {r.plan_seconds:.1f} s, {r.nearest_tasks} nearest tasks, in-task seconds "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r.task_seconds.items()) + f", wall {wall:.1f} s", flush=True)
        return wall, r.pairs, r.peak_task_bytes
    finally:
        shutil.rmtree(out, ignore_errors=True)


def lsdb_xmatch(release: Path, workers: int) -> tuple[float, int, float]:
    """lsdb's crossmatch on a local cluster of its own with Dask's defaults (memory limit
    included), started before the clock: (seconds, pairs, seconds to start the cluster)."""
    import lsdb
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        started = time.perf_counter() - t0
        t0 = time.perf_counter()
        left = lsdb.open_catalog(release / "skymapper", columns=["object_id", "raj2000", "dej2000"])
        right = lsdb.open_catalog(release / "gaia", columns=["source_id", "ra", "dec"])
        n = len(left.crossmatch(right, radius_arcsec=1.0, n_neighbors=1, suffixes=("_sm", "_g")).compute())
        return time.perf_counter() - t0, n, started


def dask_score(release: Path, model: str, db: Path, workers: int, scheduler: str | None = None) -> tuple[float, int]:
    from stellardb.cluster import catalogues, score

    out = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        t0 = time.perf_counter()
        r = score.run(catalogues.release_catalogue(release, "gaia"), catalogues.release_catalogue(release, "distances"),
                      catalogues.release_catalogue(release, "xmatch"), catalogues.release_catalogue(release, "skymapper"),
                      model, out, db_path=db, workers=None if scheduler else workers, scheduler=scheduler)
        wall = time.perf_counter() - t0
        print(f"  score: {r.partitions} tasks, in-task seconds {r.task_seconds:.1f}, peak worker RSS "
              f"{r.peak_task_bytes / 2**20:.0f} MiB, wall {wall:.1f} s", flush=True)
        return wall, r.rows
    finally:
        shutil.rmtree(out, ignore_errors=True)


def make_release(work: Path, stars: int, max_rows: int = 1_000_000, margin_arcsec: float = 20.0) -> tuple[Path, Path]:
    """A simulated database of ``stars`` (bench_release's) and its release with a margin wide enough
    for the simulated sky's fastest movers (3.1 arcsec/yr over 3.6 yr: 12 arcsec)."""
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_release import prepare

    db = prepare(work, stars)
    name = f"cluster-{max_rows}-{margin_arcsec:g}"
    folder = work / "releases" / name
    if not folder.exists():
        subprocess.run([str(Path(sys.executable).parent / "stellardb"), "--db", str(db), "release", name, "-q",
                        "--margin-arcsec", str(margin_arcsec), "--max-rows-per-partition", str(max_rows)], check=True)
    return db, folder


def memory_check() -> dict:
    """Peak worker memory of the Dask crossmatch on 250 k and on 1 M stars cut into partitions of at
    most 60,000 rows: a task's memory follows the partition, not the catalogue."""
    out = {}
    for stars in (250_000, 1_000_000):
        work = Path(tempfile.mkdtemp(prefix="bench-cluster-mem-"))
        try:
            _, release = make_release(work, stars, max_rows=60_000)
            seconds, pairs, peak = dask_xmatch(release, 2)
            print(f"{stars:,} stars: dask xmatch {seconds:.1f} s, {pairs:,} pairs, peak worker RSS {peak / 2**20:.0f} MiB",
                  flush=True)
            out[stars] = {"seconds": round(seconds, 1), "pairs": pairs, "peak_worker_rss_mib": round(peak / 2**20)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
    ratio = out[1_000_000]["peak_worker_rss_mib"] / out[250_000]["peak_worker_rss_mib"]
    print(f"peak worker memory, 4x the stars: {ratio:.2f}x (a task's memory follows its partition)", flush=True)
    return {"memory_check": out, "ratio_peak_4x_to_1x": round(ratio, 2)}


def main() -> None:
    import json
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("release", type=Path, nargs="?")
    ap.add_argument("--stars", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--skip-lsdb", action="store_true")
    ap.add_argument("--memory-check", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from common import save

    if args.memory_check:
        print(f"-> {save('cluster_memory', memory_check())}")
        return
    work = None
    if args.release is None:
        work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        work.mkdir(parents=True, exist_ok=True)
        args.db, args.release = make_release(work, args.stars or 1_000_000)
    result = {"release": args.release.name}
    try:
        emb, n_emb = embedded_xmatch(args.release)
        print(f"embedded DuckDB crossmatch (2 threads): {emb:.1f} s, {n_emb:,} pairs", flush=True)
        # the machine's own 1 -> 2 core scaling for the same SQL: the peer of the 2-worker speed-up
        emb1, _ = embedded_xmatch(args.release, threads=1)
        print(f"embedded DuckDB crossmatch (1 thread): {emb1:.1f} s; DuckDB's own speed-up 2 vs 1 thread: "
              f"{emb1 / emb:.2f}x", flush=True)
        result |= {"embedded_xmatch_1_thread_s": round(emb1, 1), "embedded_speedup_2_vs_1": round(emb1 / emb, 2)}
        # (a) from nothing: `stellardb xmatch --engine dask --workers N` starts its local cluster
        detail1, detail2 = {}, {}
        one, n1, peak1 = dask_xmatch(args.release, 1, detail1)
        print(f"dask xmatch, 1 worker x 1 thread, cluster start included: {one:.1f} s, {n1:,} pairs, "
              f"peak worker RSS {peak1 / 2**20:.0f} MiB", flush=True)
        two, n2, peak2 = dask_xmatch(args.release, 2, detail2)
        print(f"dask xmatch, 2 workers x 1 thread, cluster start included: {two:.1f} s, {n2:,} pairs, "
              f"peak worker RSS {peak2 / 2**20:.0f} MiB", flush=True)
        result |= {"embedded_xmatch_s": round(emb, 1), "dask_1_worker_s": round(one, 1), "dask_2_workers_s": round(two, 1),
                   "pairs": n2, "speedup_2_vs_1": round(one / two, 2),
                   "ratio_dask2_to_embedded": round(two / emb, 2), "peak_worker_rss_mib": round(peak2 / 2**20),
                   "dask_1_worker_detail": detail1, "dask_2_workers_detail": detail2}
        # (b) on a running cluster (`--scheduler ADDRESS`), the first job after its start: how lsdb
        # is measured, and what a cluster's user waits for
        warm = {}
        with running_cluster(1) as (address, started):
            w1, m1, _ = dask_xmatch(args.release, 1, warm.setdefault("1_worker_detail", {}), scheduler=address)
        print(f"dask xmatch on a running cluster of 1 worker (started in {started:.1f} s): {w1:.1f} s, {m1:,} pairs",
              flush=True)
        warm |= {"1_worker_start_s": round(started, 1), "1_worker_s": round(w1, 1)}
        with running_cluster(2) as (address, started):
            w2, m2, _ = dask_xmatch(args.release, 2, warm.setdefault("2_workers_detail", {}), scheduler=address)
            print(f"dask xmatch on a running cluster of 2 workers (started in {started:.1f} s): {w2:.1f} s, {m2:,} pairs",
                  flush=True)
            warm |= {"2_workers_start_s": round(started, 1), "2_workers_s": round(w2, 1),
                     "speedup_2_vs_1": round(w1 / w2, 2), "ratio_dask2_to_embedded": round(w2 / emb, 2)}
            if args.model:
                st, sn = dask_score(args.release, args.model, args.db, 2, scheduler=address)
                print(f"dask score on the running cluster of 2 workers: {st:.1f} s, {sn:,} stars, "
                      f"{sn / st / 1e6:.2f} M stars/s end to end", flush=True)
                warm |= {"score_s": round(st, 1), "score_mstars_s": round(sn / st / 1e6, 3)}
        if not args.skip_lsdb:
            lt, ln, lstart = lsdb_xmatch(args.release, 2)
            print(f"lsdb crossmatch (KD-tree, no proper motion) on a running cluster of 2 workers of its own (started in "
                  f"{lstart:.1f} s): {lt:.1f} s, {ln:,} pairs; stellardb on a running cluster / lsdb: {w2 / lt:.2f}x",
                  flush=True)
            # both from nothing: ours with its cluster start, lsdb's with its own
            print(f"from nothing (cluster start included on both sides): stellardb / lsdb {two / (lstart + lt):.2f}x",
                  flush=True)
            result |= {"lsdb_xmatch_s": round(lt, 1), "lsdb_cluster_start_s": round(lstart, 1), "lsdb_pairs": ln,
                       "ratio_dask2_to_lsdb_start_included": round(two / (lstart + lt), 2)}
            warm["ratio_dask2_to_lsdb"] = round(w2 / lt, 2)
        result["running_cluster"] = warm
        result["same_pair_count"] = n_emb == n1 == n2 == m1 == m2
        print(f"from nothing: speed-up 2 vs 1 worker {one / two:.2f}x (target >= 1.7); dask 2 workers / embedded "
              f"{two / emb:.2f}x (target <= 1.3)", flush=True)
        print(f"running cluster: speed-up 2 vs 1 worker {w1 / w2:.2f}x; dask 2 workers / embedded {w2 / emb:.2f}x; "
              f"same pair count everywhere: {result['same_pair_count']}", flush=True)
        if args.model:
            st, sn = dask_score(args.release, args.model, args.db, 2)
            print(f"dask score, 2 workers, cluster start included: {st:.1f} s, {sn:,} stars, "
                  f"{sn / st / 1e6:.2f} M stars/s end to end", flush=True)
            result |= {"dask_score_s": round(st, 1), "dask_score_stars": sn, "dask_score_mstars_s": round(sn / st / 1e6, 3)}
            if args.db:
                from stellardb.ml import score

                t0 = time.perf_counter()
                family = (Path(args.db).parent / "models" / f"{args.model}.family.json").exists()
                s = score.run_family(args.db, args.model) if family else score.run(args.db, args.model)
                et = time.perf_counter() - t0
                print(f"embedded score: {et:.1f} s, {s.rows:,} stars, {s.rows / et / 1e6:.2f} M stars/s; "
                      f"dask / embedded rate: {(sn / st) / (s.rows / et):.2f}x", flush=True)
                result |= {"embedded_score_s": round(et, 1), "embedded_score_mstars_s": round(s.rows / et / 1e6, 3)}
        print(json.dumps(result, indent=2))
        print(f"-> {save('cluster', result)}")
    finally:
        if work is not None and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
