"""Issue 12 benchmark: `stellardb release` against hats-import, and cone searches over a release.

    python bench/bench_release.py                       # 1 M stars
    python bench/bench_release.py --stars 10000000      # the issue's 10 M stars (about an hour on 2 cores)

Targets (issue 12, ratios measured in the same run):
* ``release`` of the database (all seven catalogues, gaia's and catalogue's margins included)
  at least 3x faster than hats-import making the Gaia catalogue and its margin cache from the
  same rows (Parquet in), and under 4 GB peak memory;
* a 1 arcmin cone through ``query --release`` (``gaia_cone``) reads one or two row groups
  and is at least 50x faster than the same cone written as a plain distance filter, which
  DuckDB cannot prune.

Both peers run in child processes; peak memory is the summed RSS of each one's process tree,
sampled every 0.1 s.  hats-import gets a local Dask cluster of one worker per core.  The
database is reused from --workdir when it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VENV_BIN, save  # noqa: E402

_HATS_IMPORT = """
import sys, time
from pathlib import Path
from dask.distributed import Client
from hats_import.catalog.arguments import ImportArguments
from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
from hats_import.pipeline import pipeline_with_client
parquet, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
with Client(n_workers=workers, threads_per_worker=1, dashboard_address=None, local_directory=str(out / "dask")) as c:
    t0 = time.perf_counter()
    pipeline_with_client(ImportArguments(output_artifact_name="gaia", input_file_list=[str(parquet)],
        file_reader="parquet", ra_column="ra", dec_column="dec", output_path=out, pixel_threshold=1_000_000,
        progress_bar=False, resume=False, tmp_dir=out / "tmp"), c)
    t1 = time.perf_counter()
    pipeline_with_client(MarginCacheArguments(input_catalog_path=out / "gaia", output_path=out,
        output_artifact_name="gaia_10arcs", margin_threshold=10.0, progress_bar=False, resume=False,
        tmp_dir=out / "tmp"), c)
    t2 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1}")
"""


def tree_peak_gb(argv, env=None) -> tuple[float, float, str]:
    """Run argv in a child; (wall s, peak of the summed RSS of it and all its descendants, sampled
    every 0.1 s, in GB; stdout).  Summed, because hats-import's Dask workers are processes."""
    import threading

    import psutil

    peak = [0]
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    done = threading.Event()

    def sample():
        root = psutil.Process(child.pid)
        while not done.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            done.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = child.communicate()
    done.set()
    thread.join()
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, argv)
    return time.perf_counter() - t0, peak[0] / 1e9, stdout


def prepare(work: Path, stars: int) -> Path:
    from stellardb.ingest import pipeline as ingest
    from stellardb.simulate import simulate

    db = work / "bench.duckdb"
    if db.exists():
        return db
    t0 = time.perf_counter()
    summary = simulate(work / "sky", stars=stars, seed=11, overwrite=True, fmt="parquet")
    print(f"simulated {stars:,} stars in {time.perf_counter() - t0:.0f} s", flush=True)
    for table in ("gaia", "skymapper", "distances", "sos"):
        t0 = time.perf_counter()
        ingest.run(db, table, [summary.files[table]])
        print(f"ingested {table} in {time.perf_counter() - t0:.0f} s", flush=True)
    import duckdb

    con = duckdb.connect(str(db))
    # predictions that are a function of the star: the benchmark times publishing them, not training
    con.execute("insert into predictions (source_id, teff, teff_err, logg, logg_err, feh, feh_err, model, scored_at) "
                "select source_id, 4000 + 10 * ra, 60, 1 + abs(dec) / 30, 0.1, -2 + parallax / 10, 0.08, 'bench', "
                "now()::timestamp from gaia where phot_g_mean_mag <= 18")
    con.execute(f"copy (select * from gaia) to '{work / 'gaia_rows.parquet'}' (format parquet)")
    con.close()
    return db


def cones(folder: Path, n: int = 15, radius_arcsec: float = 60.0) -> dict:
    from stellardb.release.reader import connect

    con = connect(folder)
    try:
        rng = np.random.default_rng(5)
        total = con.execute("select count(*) from gaia").fetchone()[0]
        centres = [con.execute(f"select ra, dec from gaia limit 1 offset {int(i)}").fetchone()
                   for i in rng.integers(0, total, n)]
        pruned, plain, rows = [], [], 0
        for ra, dec in centres:
            fast = f"select * from gaia_cone({ra}, {dec}, {radius_arcsec})"
            slow = (f"select * from gaia where vector_sep_arcsec(sky_x(ra, dec), sky_y(ra, dec), sky_z(ra, dec), "
                    f"sky_x({ra}, {dec}), sky_y({ra}, {dec}), sky_z({ra}, {dec})) <= {radius_arcsec}")
            t0 = time.perf_counter()
            a = con.execute(fast).fetchall()
            t1 = time.perf_counter()
            b = con.execute(slow).fetchall()
            t2 = time.perf_counter()
            assert sorted(a) == sorted(b), "the pruned cone must return the plain filter's rows"
            pruned.append(t1 - t0)
            plain.append(t2 - t1)
            rows += len(a)
        plan = con.execute(f"explain analyze select * from gaia_cone({centres[0][0]}, {centres[0][1]}, "
                           f"{radius_arcsec})").fetchall()[0][1]
        scanned = plan.split("Row Groups Scanned:")[1].split("│")[0].strip()
        files = plan.split("Total Files Read:")[1].split("│")[0].strip()
    finally:
        con.close()
    return {"cones": n, "radius_arcsec": radius_arcsec, "rows_found": rows,
            "cone_median_s": round(float(np.median(pruned)), 4), "plain_filter_median_s": round(float(np.median(plain)), 4),
            "ratio_plain_to_cone": round(float(np.median(plain) / np.median(pruned)), 1),
            "row_groups_scanned_first_cone": scanned, "files_opened_first_cone": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stars", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None, help="Keep the simulated database here (reused if present).")
    parser.add_argument("--no-hats-import", action="store_true", help="Skip the hats-import peer.")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-release-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        db = prepare(work, args.stars)
        shutil.rmtree(work / "releases", ignore_errors=True)
        release_s, release_gb, _ = tree_peak_gb([str(VENV_BIN / "stellardb"), "--db", str(db), "release", "bench", "-q"])
        folder = work / "releases" / "bench"
        manifest = json.loads((folder / "manifest.json").read_text())
        print(f"release: {release_s:.1f} s, peak {release_gb:.2f} GB", flush=True)
        result = {"stars": args.stars, "release_s": round(release_s, 1), "release_peak_rss_gb": round(release_gb, 2),
                  "release_rows": {k: v["rows"] for k, v in manifest["catalogues"].items()},
                  "release_partitions": {k: v["partitions"] for k, v in manifest["catalogues"].items()},
                  "release_seconds_per_catalogue": {k: v["seconds"] for k, v in manifest["catalogues"].items()},
                  "release_bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())}
        if not args.no_hats_import:
            out = work / "hats_import"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            wall, peak, stdout = tree_peak_gb([sys.executable, "-c", _HATS_IMPORT, str(work / "gaia_rows.parquet"),
                                                str(out), str(os.cpu_count() or 1)])
            catalog_s, margin_s = (float(x) for x in stdout.split()[-2:])
            print(f"hats-import: {wall:.1f} s (catalogue {catalog_s:.1f} s, margin {margin_s:.1f} s)", flush=True)
            result |= {"hats_import_gaia_and_margin_s": round(wall, 1), "hats_import_catalog_s": round(catalog_s, 1),
                       "hats_import_margin_s": round(margin_s, 1), "hats_import_peak_rss_gb": round(peak, 2),
                       "ratio_hats_import_to_release": round(wall / release_s, 2),
                       # the same Gaia catalogue and margin, inside the release's run (its log, manifest.json)
                       "ratio_hats_import_to_release_gaia_catalogue":
                           round(wall / manifest["catalogues"]["gaia"]["seconds"], 2)}
        result |= cones(folder)
        print(json.dumps(result, indent=2))
        print(f"-> {save('release' if args.stars == 1_000_000 else f'release_{args.stars}', result)}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
