"""`stellardb serve` benchmark: 1 arcmin cones through Simple Cone Search and TAP, alone, under
16 clients and while a new release is made and switched to.

    python bench/bench_serve.py                       # 1 M stars
    python bench/bench_serve.py --stars 10000000      # 10 M stars (make bench-big)

Targets (ratios against peers measured in the same run):

* a 1 arcmin cone through ``/scs`` and through ``/tap/sync`` (ADQL ``1=CONTAINS(POINT(..),
  CIRCLE(..))``), one client with keep-alive, random centres drawn from the stars (seeded):
  median under 20 ms and p99 under 100 ms; at least 10x faster than lsdb's ``cone_search`` on
  the same release (``lsdb.open_catalog(release/catalogue)`` once, then
  ``cone_search(ra, dec, 60).compute()`` timed per cone in a child process, after one warm-up)
  and at least 50x faster than DuckDB scanning the release's catalogue files without pruning
  (``read_parquet([all files])`` with the exact haversine filter, per cone);
* 16 concurrent clients: at least 200 cone searches/s on 2 cores, p99 under 250 ms, no error.
  The clients are 16 threads, each with its own ``httpx.Client`` (keep-alive), in a separate
  client process that shares the machine's cores with the server (its CPU time is reported);
* while ``stellardb score`` (a second model, on the same database) and ``stellardb release``
  (a new release of that model, which ``latest`` then points to) run in other processes:
  no failed request, and the first response naming the new release (header
  ``X-Stellardb-Release``) within 5 s of ``latest`` pointing to it.

The server is ``stellardb --db DB serve --release latest --port P`` in a child process; its
peak RSS is its VmHWM.  Its cone cache (memory-mapped Arrow copies of the catalogue's files,
stellardb.service.mirror, in serve-cache/ beside the database) is made at its first start on a
release and reused after; timing starts once every worker says it is ready, and the time that
took and the copies' size are reported (``--no-cache``: cones read Parquet, for an A/B).  The database and the release ``bench`` are reused from --workdir when
present; the release made by the switch test is removed afterwards and ``latest`` points back
to ``bench``.  The second model is bench/out/models/bench (bench_train.py) copied beside the
database, or a quick one trained there.  Last, the service is profiled in this process
(cProfile over the ASGI app, its worker thread run inline) and the phases of a request timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, VENV_BIN, save  # noqa: E402

RADIUS_DEG = 1 / 60
BASE_RELEASE = "bench"
SECOND_MODEL = "serve2"
SWITCH_PREFIX = "serve-switch-"

_LSDB_PEER = """
import json, sys, time
import lsdb
path, cones, radius, columns = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
t0 = time.perf_counter()
try:
    cat = lsdb.open_catalog(path, columns=columns)
except Exception:
    columns = None
    cat = lsdb.open_catalog(path)
open_s = time.perf_counter() - t0
t0 = time.perf_counter()
cat.cone_search(cones[0][0], cones[0][1], radius).compute()
warm_s = time.perf_counter() - t0
seconds, rows = [], []
for ra, dec in cones:
    t0 = time.perf_counter()
    df = cat.cone_search(ra, dec, radius).compute()
    seconds.append(time.perf_counter() - t0)
    rows.append(len(df))
print(json.dumps({"lsdb": lsdb.__version__, "open_s": open_s, "warmup_s": warm_s, "seconds": seconds, "rows": rows,
                  "columns": "same as the service" if columns else "all"}))
"""


# -- the load client (a child process: python bench_serve.py _load SPEC.json) -------------------
def _request(client, base: str, endpoint: str, ra: float, dec: float, schema: str, columns: list[str]):
    if endpoint == "scs":
        return client.get(f"{base}/scs", params={"RA": repr(ra), "DEC": repr(dec), "SR": repr(RADIUS_DEG)})
    return client.post(f"{base}/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL",
                                                  "QUERY": adql_cone(schema, columns, ra, dec)})


def adql_cone(schema: str | None, columns: list[str], ra: float, dec: float) -> str:
    """The cone in ADQL; ``schema`` None: the table unqualified (the default schema: the release served)."""
    return (f"SELECT {', '.join(columns)} FROM {schema + '.' if schema else ''}catalogue "
            f"WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra!r}, {dec!r}, 1/60.))")


def _rows_of(body: bytes) -> int:
    """nrows of a VOTable result (-1 when absent)."""
    at = body.find(b'nrows="')
    if at < 0:
        return -1
    end = body.find(b'"', at + 7)
    return int(body[at + 7:end])


def error_text(body: bytes) -> str:
    """The message of a DALI error document, else the start of the body."""
    text = body[:2000].decode("utf-8", "replace")
    at = text.find('value="ERROR">')
    if at >= 0:
        text = text[at + 14:].split("</INFO>")[0]
    return " ".join(text.split())[:300]


def load_client(spec: dict) -> dict:
    """``clients`` threads, each with its own keep-alive httpx.Client, sending cones until the
    deadline or the stop file; one record per request."""
    import httpx

    cones = spec["cones"]
    endpoints = spec["endpoints"]
    go = threading.Event()
    records: list[list] = [[] for _ in range(spec["clients"])]

    def worker(k: int):
        out = records[k]
        with httpx.Client(timeout=120.0) as client:
            i = k * 7919
            go.wait()
            while True:
                now = time.time()
                if spec.get("duration_s") and now >= deadline:
                    break
                if spec.get("stop_file") and os.path.exists(spec["stop_file"]):
                    break
                ra, dec = cones[i % len(cones)]
                endpoint = endpoints[i % len(endpoints)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = _request(client, spec["base"], endpoint, ra, dec, spec["schema"], spec["columns"])
                    body = r.content
                    lat = time.perf_counter() - t0
                    ok = r.status_code == 200 and b'QUERY_STATUS" value="OK"' in body
                    out.append([now, time.time(), lat, r.status_code if ok else -r.status_code,
                                r.headers.get("x-stellardb-release"), float(r.headers.get("x-stellardb-query-ms", "nan")),
                                endpoint, None if ok else error_text(body)])
                except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
                    out.append([now, time.time(), time.perf_counter() - t0, 0, None, float("nan"), endpoint,
                                f"{exc.__class__.__name__}: {exc}"[:300]])

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(spec["clients"])]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every client connected-ready
    cpu0 = os.times()
    started = time.time()
    deadline = started + (spec.get("duration_s") or 0)
    go.set()
    for t in threads:
        t.join()
    ended = time.time()
    cpu1 = os.times()
    return {"started": started, "ended": ended, "records": [r for rs in records for r in rs],
            "client_cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


def run_load(spec: dict, work: Path, wait: bool = True):
    """The load client as a child process; its result (or the Popen and the result path)."""
    spec_path = work / f"load-{os.getpid()}-{time.monotonic_ns()}.json"
    out_path = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_load", str(spec_path), str(out_path)])
    if not wait:
        return child, out_path
    if child.wait():
        raise RuntimeError(f"the load client failed ({child.returncode})")
    return json.loads(out_path.read_text())


# -- statistics --------------------------------------------------------------------------------
def latency_summary(records: list, elapsed: float | None = None) -> dict:
    lat = np.array([r[2] for r in records if r[3] == 200]) * 1e3
    server = np.array([r[5] for r in records if r[3] == 200 and r[5] == r[5]])
    errors = [r for r in records if r[3] != 200]
    out = {"requests": len(records), "errors": len(errors)}
    if len(lat):
        out |= {"median_ms": round(float(np.median(lat)), 2), "p90_ms": round(float(np.percentile(lat, 90)), 2),
                "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2),
                "mean_ms": round(float(lat.mean()), 2)}
    if len(server):
        out |= {"server_query_median_ms": round(float(np.median(server)), 2),
                "server_query_p99_ms": round(float(np.percentile(server, 99)), 2)}
    if elapsed:
        out |= {"seconds": round(elapsed, 2), "per_second": round((len(records) - len(errors)) / elapsed, 1)}
    if errors:
        out["first_errors"] = sorted({str(r[7] or r[3])[:200] for r in errors})[:5]
    return out


# -- setup -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_release(db: Path, root: Path) -> tuple[Path, float | None]:
    """The release ``bench`` (reused when present), ``latest`` pointing to it, and what an earlier
    run of this benchmark left removed.  (folder, seconds to make it or None when reused)."""
    from stellardb.release import layout

    seconds = None
    if not (root / BASE_RELEASE / layout.MANIFEST).is_file():
        t0 = time.perf_counter()
        subprocess.run([str(VENV_BIN / "stellardb"), "--db", str(db), "release", BASE_RELEASE, "--model", "bench", "-q"],
                       check=True)
        seconds = time.perf_counter() - t0
        print(f"release {BASE_RELEASE}: {seconds:.1f} s", flush=True)
    else:
        print(f"reusing release {root / BASE_RELEASE}", flush=True)
    layout.point_latest(root, BASE_RELEASE)
    for old in root.glob(SWITCH_PREFIX + "*"):
        shutil.rmtree(old, ignore_errors=True)
    return root / BASE_RELEASE, seconds


def ensure_second_model(db: Path) -> str:
    """Model SECOND_MODEL beside the database: bench_train's model copied, else a quick one trained."""
    folder = db.parent / "models" / SECOND_MODEL
    # one network, or a family of them (train's default: one per feature set, SECOND_MODEL.family.json)
    if (folder / "card.json").is_file() or (folder.parent / f"{SECOND_MODEL}.family.json").is_file():
        return "reused"
    source = OUT / "models" / "bench"
    if (source / "card.json").is_file() and (source / "scorer.npz").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, folder)
        return f"copied from {source}"
    print(f"no model in {source}: training a quick one as {SECOND_MODEL}", flush=True)
    subprocess.run([str(VENV_BIN / "stellardb"), "--db", str(db), "train", "--quick", "--model", SECOND_MODEL,
                    "--no-plots", "-q"], check=True)
    return "trained (quick)"


def cone_centres(folder: Path, n: int, seed: int = 7) -> list[tuple[float, float]]:
    import pyarrow.parquet as pq

    from stellardb.release import layout

    files = layout.data_files(folder, "catalogue")
    table = pq.ParquetDataset([str(f) for f in files]).read(columns=["ra", "dec"])
    ra, dec = table.column("ra").to_numpy(), table.column("dec").to_numpy()
    pick = np.random.default_rng(seed).integers(0, len(ra), n)
    return [(float(ra[i]), float(dec[i])) for i in pick]


def served_columns(folder: Path) -> list[str]:
    """The catalogue's columns of a VERB=2 cone search, in its order (id and position first)."""
    import pyarrow.parquet as pq

    from stellardb.release import layout
    from stellardb.service.app import SCS_VERB2

    names = pq.read_schema(layout.data_files(folder, "catalogue")[0]).names
    chosen = [c for c in names if c in SCS_VERB2]
    return ["source_id", "ra", "dec"] + [c for c in chosen if c not in ("source_id", "ra", "dec")]


def cache_gb(db: Path, release: Path) -> float | None:
    """GB of the cone cache's copies of ``release`` (serve_cache's default folder), or None."""
    from stellardb.service.mirror import Mirror

    folder = Mirror(db.resolve().parent / "serve-cache", release, {}).folder
    if not folder.is_dir():
        return None
    return round(sum(f.stat().st_size for f in folder.rglob("*.arrow")) / 1e9, 3)


class Server:
    """``stellardb --db DB serve --release latest --port P`` in a child process."""

    def __init__(self, db: Path, work: Path, workers: int = 1):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "serve.log", "w")
        self.argv = [str(VENV_BIN / "stellardb"), "--db", str(db), "serve", "--release", "latest",
                     "--workers", str(workers), "--port", str(self.port)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {work / 'serve.log'}")
            try:
                if httpx.get(f"{self.base}/tap/availability", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("the server did not answer /tap/availability within 300 s")
            time.sleep(0.1)
        self.startup_s = time.perf_counter() - t0
        self.cache_ready_s = self.wait_for_cache(workers, t0)

    def wait_for_cache(self, workers: int, t0: float) -> float | None:
        """Seconds from start until every worker says its cone cache (serve_cache) is ready; None
        when serve runs without one.  Timing starts after it: the answers are measured as they are
        once a release has been served for a minute, not while its files are being copied."""
        import re

        import httpx

        ready_in_a_row = 0
        while ready_in_a_row < 4 * workers:  # each worker answers some of these (the kernel picks)
            note = httpx.get(f"{self.base}/tap/availability", timeout=5).text
            found = re.search(r"cone cache: (\d+) of (\d+) files ready( \(([^)]*)\))?", note)
            if found is None:
                return None
            if found.group(4):
                raise RuntimeError(f"the cone cache stopped: {found.group(4)}")
            ready_in_a_row = ready_in_a_row + 1 if found.group(1) == found.group(2) else 0
            if time.perf_counter() - t0 > 900:
                raise RuntimeError("the cone cache was not ready within 900 s")
            time.sleep(0.05 if ready_in_a_row else 0.5)
        return time.perf_counter() - t0

    def pids(self) -> list[int]:
        """The server and its worker processes (serve --workers N)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
            except OSError:
                pass
        return found

    def status_kb(self, key: str) -> int:
        """``key`` of /proc/PID/status summed over the server's processes (VmHWM: the sum of each
        one's peak, an upper bound of the peak of the sum)."""
        total = 0
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                pass
        return total

    def stop(self) -> float:
        """Stop it; its peak RSS in GB (VmHWM)."""
        peak = self.status_kb("VmHWM") / 1e6
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return peak


# -- the phases ------------------------------------------------------------------------------
def single_client(server: Server, cones, schema: str, columns: list[str]) -> dict:
    """Each cone through /scs then /tap/sync, one keep-alive client; per endpoint, the latencies
    and the rows of each cone (to check against the peers)."""
    import httpx

    recs = {"scs": [], "tap": []}
    rows = {"scs": [], "tap": []}
    with httpx.Client(timeout=120.0) as client:
        for ra, dec in cones[:10]:  # warm-up: connections, caches, DuckDB's metadata
            for endpoint in recs:
                _request(client, server.base, endpoint, ra, dec, schema, columns).raise_for_status()
        for ra, dec in cones:
            for endpoint in recs:
                t0 = time.perf_counter()
                try:
                    r = _request(client, server.base, endpoint, ra, dec, schema, columns)
                    body = r.content
                    lat = time.perf_counter() - t0
                    ok = r.status_code == 200 and b'QUERY_STATUS" value="OK"' in body
                    recs[endpoint].append([0, 0, lat, 200 if ok else -r.status_code, r.headers.get("x-stellardb-release"),
                                           float(r.headers.get("x-stellardb-query-ms", "nan")), endpoint,
                                           None if ok else error_text(body)])
                    rows[endpoint].append(_rows_of(body) if ok else -1)
                except httpx.HTTPError as exc:
                    recs[endpoint].append([0, 0, time.perf_counter() - t0, 0, None, float("nan"), endpoint, str(exc)])
                    rows[endpoint].append(-1)
    out = {}
    for endpoint in recs:
        out[endpoint] = latency_summary(recs[endpoint]) | {"rows_median": float(np.median(rows[endpoint])),
                                                            "rows_total": int(sum(r for r in rows[endpoint] if r > 0))}
    return out, rows


def concurrent(server: Server, cones, schema, columns, clients: int, seconds: float, endpoint: str, work: Path) -> dict:
    cpu0 = server.cpu_s()
    res = run_load({"base": server.base, "cones": cones, "endpoints": [endpoint], "clients": clients,
                    "duration_s": seconds, "schema": schema, "columns": columns}, work)
    cpu1 = server.cpu_s()
    elapsed = max(r[1] for r in res["records"]) - res["started"]
    out = latency_summary(res["records"], elapsed)
    out |= {"clients": clients, "server_cpu_cores_used": round((cpu1 - cpu0) / elapsed, 2),
            "client_cpu_cores_used": round(res["client_cpu_s"] / elapsed, 2)}
    return out


def switch_test(server: Server, db: Path, root: Path, cones, schema, columns, clients: int, work: Path) -> dict:
    """Load on /scs and /tap/sync while score + release run; when `latest` moved, and when a
    response first named the new release.  The ADQL names the table without a schema (the
    schema is named after the release, so ``bench.catalogue`` is gone once the new release is
    served); one query naming the old schema is sent after the switch, and its answer kept."""
    import httpx

    from stellardb.release import layout

    name = f"{SWITCH_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    stop = work / "switch.stop"
    stop.unlink(missing_ok=True)
    client, out_path = run_load({"base": server.base, "cones": cones, "endpoints": ["scs", "tap"], "clients": clients,
                                 "stop_file": str(stop), "schema": None, "columns": columns}, work, wait=False)
    try:
        time.sleep(2.0)  # a baseline on the old release
        moved: dict = {}
        polling = threading.Event()

        def poll():
            while not polling.is_set():
                try:
                    if os.readlink(root / layout.LATEST) == name:
                        moved["at"] = time.time()
                        return
                except OSError:
                    pass
                time.sleep(0.002)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        stellardb = [str(VENV_BIN / "stellardb"), "--db", str(db)]
        t0 = time.perf_counter()
        subprocess.run([*stellardb, "score", "--model", SECOND_MODEL, "-q"], check=True)
        score_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([*stellardb, "release", name, "--model", SECOND_MODEL, "-q"], check=True)
        release_s = time.perf_counter() - t0
        poller.join(5)
        polling.set()
        time.sleep(10.0)  # the switch (target 5 s) and some requests on the new release after it
    except BaseException:
        # the load client stops with the benchmark (left running, it took most of a core from the next)
        stop.touch()
        try:
            client.wait(60)
        except subprocess.TimeoutExpired:
            client.kill()
        raise
    stop.touch()
    with httpx.Client(timeout=60) as c:
        r = c.post(f"{server.base}/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL",
                                                     "QUERY": adql_cone(schema, columns, *cones[0])})
        old_schema = {"query": f"SELECT ... FROM {schema}.catalogue WHERE 1=CONTAINS(...)", "status": r.status_code,
                      "release": r.headers.get("x-stellardb-release"),
                      "message": None if r.status_code == 200 else error_text(r.content)}
    if client.wait():
        raise RuntimeError(f"the load client failed ({client.returncode})")
    res = json.loads(out_path.read_text())
    recs = sorted(res["records"], key=lambda r: r[1])
    latest_at = moved.get("at")
    first_new = next((r[1] for r in recs if r[4] == name), None)
    out = latency_summary(recs, recs[-1][1] - res["started"]) | {
        "clients": clients, "endpoints": "scs and tap/sync alternating", "new_release": name,
        "score_s": round(score_s, 1), "release_s": round(release_s, 1),
        "requests_naming_new_release": sum(1 for r in recs if r[4] == name),
        "requests_naming_old_release_after_latest_moved": sum(1 for r in recs if latest_at and r[0] > latest_at
                                                             and r[4] != name),
        "switch_delay_s": round(first_new - latest_at, 3) if first_new and latest_at else None,
        "old_schema_query_after_switch": old_schema}
    if latest_at:
        during = [r for r in recs if r[0] < latest_at]
        out["requests_during_score_and_release"] = len(during)
        out["errors_during_score_and_release"] = sum(1 for r in during if r[3] != 200)
    stop.unlink(missing_ok=True)
    return out, name


def duckdb_plain_peer(folder: Path, cones, columns: list[str]) -> dict:
    """Every catalogue file read per cone, the exact haversine distance as the filter (nothing to prune with)."""
    import duckdb

    from stellardb.release import layout

    files = [str(f) for f in layout.data_files(folder, "catalogue")]
    con = duckdb.connect()
    select = ", ".join(f'"{c}"' for c in columns)
    seconds, rows = [], []

    def cone(ra, dec):
        return (f"select {select} from read_parquet({files!r}) where degrees(2 * asin(sqrt("
                f"pow(sin(radians(dec - {dec!r}) / 2), 2) + cos(radians(dec)) * cos(radians({dec!r})) * "
                f"pow(sin(radians(ra - {ra!r}) / 2), 2)))) <= {RADIUS_DEG!r}")

    con.sql(cone(*cones[0])).to_arrow_table()  # warm-up
    for ra, dec in cones:
        t0 = time.perf_counter()
        n = con.sql(cone(ra, dec)).to_arrow_table().num_rows
        seconds.append(time.perf_counter() - t0)
        rows.append(n)
    con.close()
    return {"cones": len(cones), "files": len(files), "median_s": round(float(np.median(seconds)), 4),
            "p99_s": round(float(np.percentile(seconds, 99)), 4), "rows": rows}


def lsdb_peer(folder: Path, cones, columns: list[str]) -> dict:
    from stellardb.release import layout

    python = None
    for candidate in (Path(__file__).resolve().parent / ".venv-lsdb" / "bin" / "python", Path(sys.executable)):
        if candidate.exists() and subprocess.run([str(candidate), "-c", "import lsdb"], capture_output=True).returncode == 0:
            python = candidate
            break
    if python is None:
        return {"skipped": "lsdb does not import (make bench installs it in bench/.venv-lsdb)"}
    done = subprocess.run([str(python), "-c", _LSDB_PEER, str(layout.catalogue_dir(folder, "catalogue")),
                           json.dumps(cones), str(RADIUS_DEG * 3600), json.dumps(columns)],
                          capture_output=True, text=True)
    if done.returncode:
        return {"skipped": f"lsdb failed: {done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else done.returncode}"}
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {"python": str(python.relative_to(Path(__file__).resolve().parent.parent)) if python.is_relative_to(
                Path(__file__).resolve().parent.parent) else str(python),
            "lsdb": got["lsdb"], "columns": got["columns"], "cones": len(cones), "open_catalog_s": round(got["open_s"], 3),
            "warmup_s": round(got["warmup_s"], 3), "median_s": round(float(np.median(got["seconds"])), 4),
            "p99_s": round(float(np.percentile(got["seconds"], 99)), 4), "rows": got["rows"]}


def profile_in_process(db: Path, cones, schema: str, columns: list[str], n: int, top: int = 20) -> dict:
    """Requests through the ASGI app in this thread (the worker-thread hop run inline, so cProfile
    sees everything): the top functions by cumulative time, and the time in each phase."""
    import asyncio
    import cProfile
    import pstats

    import anyio.to_thread
    import httpx

    from stellardb.service import adql, results
    from stellardb.service.served import Served
    from stellardb.service.server import build

    from stellardb.service.served import open_release

    opens = []
    for _ in range(3):  # what a switch costs beyond noticing `latest` moved (CHECK_EVERY_S)
        t0 = time.perf_counter()
        open_release(db.parent / "releases" / "latest").retire()
        opens.append(time.perf_counter() - t0)
    holder, _limits, app = build(db, "latest", None)
    if holder.current.mirror is not None:  # as the server answers: from the cone cache
        holder.current.mirror.join(900)
    import astropy.units as u

    failing = []
    for c in columns:  # units astropy cannot parse as VOUnit: each costs a did-you-mean search per request
        meta = holder.current.column("catalogue", c)
        try:
            if meta is not None and meta.unit:
                u.Unit(meta.unit, format="vounit")
        except ValueError:
            failing.append(f"{c} [{meta.unit}]")
    phases = {"adql.translate": 0.0, "Served.execute (DuckDB)": 0.0, "results.render (VOTable)": 0.0}
    originals = (anyio.to_thread.run_sync, adql.translate, Served.execute, results.render)

    def timed(label, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[label] += time.perf_counter() - t0
        return wrapper

    async def inline(fn, *args, limiter=None, **kwargs):
        return fn(*args)

    anyio.to_thread.run_sync = inline
    adql.translate = timed("adql.translate", adql.translate)
    Served.execute = timed("Served.execute (DuckDB)", Served.execute)
    results.render = timed("results.render (VOTable)", results.render)
    profiler = cProfile.Profile()
    out = {"open_release_median_s": round(float(np.median(opens)), 3), "units_not_vounit": failing}
    try:
        async def go(endpoint: str, profile: bool):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
                for ra, dec in cones[:5]:  # warm-up
                    (await _arequest(client, endpoint, ra, dec, schema, columns)).raise_for_status()
                for key in phases:
                    phases[key] = 0.0
                t0 = time.perf_counter()
                if profile:
                    profiler.enable()
                for ra, dec in cones[:n]:
                    (await _arequest(client, endpoint, ra, dec, schema, columns)).raise_for_status()
                if profile:
                    profiler.disable()
                return time.perf_counter() - t0

        for endpoint in ("scs", "tap"):
            total = asyncio.run(go(endpoint, profile=False))
            out[f"phases_{endpoint}_ms_per_request"] = {"total (in process, no HTTP socket)": round(total / n * 1e3, 2)} | {
                k: round(v / n * 1e3, 2) for k, v in phases.items()}
        asyncio.run(go("scs", profile=True))
    finally:
        anyio.to_thread.run_sync, adql.translate, Served.execute, results.render = originals
        holder.close()
    stats = pstats.Stats(profiler)
    rows, chain = [], ("/httpx/", "/starlette/", "/anyio/", "/asyncio/", "bench_serve.py", "/contextlib.py")
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
        label = f"{'/'.join(Path(file).parts[-2:])}:{line}({func})" if line else func
        rows.append((ct, tt, nc, label, not any(part in file for part in chain) and line))
    rows.sort(reverse=True)
    out["cprofile_scs_requests"] = n
    out["cprofile_total_ms_per_request"] = round(max(r[0] for r in rows) / n * 1e3, 2)
    out["cprofile_top_cumulative_ms_per_request"] = {
        name: round(ct / n * 1e3, 2) for ct, _, _, name, keep in rows if keep}
    out["cprofile_top_cumulative_ms_per_request"] = dict(list(out["cprofile_top_cumulative_ms_per_request"].items())[:top])
    out["cprofile_top_self_ms_per_request"] = {
        name: round(tt / n * 1e3, 2) for _, tt, _, name, _ in sorted(rows, key=lambda r: -r[1])[:12]}
    return out


async def _arequest(client, endpoint, ra, dec, schema, columns):
    if endpoint == "scs":
        return await client.get("/scs", params={"RA": repr(ra), "DEC": repr(dec), "SR": repr(RADIUS_DEG)})
    return await client.post("/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL",
                                                 "QUERY": adql_cone(schema, columns, ra, dec)})


def target(measured, op: str, bound, unit: str, peer=None, ratio=None) -> dict:
    met = measured is not None and (measured < bound if op == "<" else measured >= bound if op == ">=" else
                                    measured == bound)
    out = {"measured": measured, "target": f"{op} {bound} {unit}".strip()}
    if peer is not None:
        out["peer"] = peer
    if ratio is not None:
        out["ratio"] = ratio
    return out | {"met": bool(met)}


def code_version() -> str:
    """The commit of the checkout measured; ``+changes`` when stellardb/ differs from it."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "stellardb"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_load":
        Path(sys.argv[3]).write_text(json.dumps(load_client(json.loads(Path(sys.argv[2]).read_text()))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stars", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None, help="Keep the simulated database and release here (reused).")
    parser.add_argument("--cones", type=int, default=300, help="Cones per endpoint for the one-client latency.")
    parser.add_argument("--peer-cones", type=int, default=15, help="Cones timed through each peer.")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="serve --workers (processes answering requests).")
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of each concurrent run.")
    parser.add_argument("--switch-clients", type=int, default=4, help="Clients while score + release run.")
    parser.add_argument("--profile-requests", type=int, default=40)
    parser.add_argument("--no-switch", action="store_true", help="Skip the score + release switch test.")
    parser.add_argument("--no-lsdb", action="store_true", help="Skip the lsdb peer.")
    parser.add_argument("--no-cache", action="store_true",
                        help="Serve without the cone cache (STELLARDB_SERVE_CACHE=off): cones read Parquet.")
    args = parser.parse_args()
    if args.no_cache:  # the server's and the in-process profile's
        os.environ["STELLARDB_SERVE_CACHE"] = "off"

    from stellardb.release import layout

    from bench_release import prepare

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-serve-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        db = prepare(work, args.stars)
        root = layout.default_root(db)
        folder, release_s = ensure_release(db, root)
        model_from = ensure_second_model(db) if not args.no_switch else None
        manifest = json.loads((folder / layout.MANIFEST).read_text())
        from stellardb.service.served import schema_name

        schema = schema_name(manifest.get("name", folder.name))
        columns = served_columns(folder)
        cones = cone_centres(folder, args.cones)
        result = {"stars": args.stars, "stellardb_commit": code_version(), "catalogue_rows": manifest["catalogues"]["catalogue"]["rows"],
                  "catalogue_partitions": manifest["catalogues"]["catalogue"]["partitions"],
                  "release_reused": release_s is None, "cone_radius_arcsec": RADIUS_DEG * 3600,
                  "columns_returned": len(columns), "cone_cache": not args.no_cache}

        server = Server(db, work, args.workers)
        print(f"server up in {server.startup_s:.1f} s on {server.base}; cone cache ready after "
              f"{server.cache_ready_s and round(server.cache_ready_s, 1)} s", flush=True)
        try:
            result["server"] = {"command": " ".join(["stellardb", "--db", "DB", *server.argv[3:-1], "P"]),
                                "startup_s": round(server.startup_s, 2),
                                "cone_cache_ready_s": server.cache_ready_s and round(server.cache_ready_s, 2),
                                "cone_cache_gb": None if args.no_cache else cache_gb(db, folder),
                                "catalogue_parquet_gb": round(sum(f.stat().st_size for f in layout.data_files(
                                    folder, "catalogue")) / 1e9, 3),
                                "rss_after_startup_gb": round(server.status_kb("VmRSS") / 1e6, 3)}
            single, rows = single_client(server, cones, schema, columns)
            result["single_client"] = single
            print("one client:", json.dumps(single), flush=True)
            result["concurrent"] = {}
            for endpoint in ("scs", "tap"):
                got = concurrent(server, cones, schema, columns, args.clients, args.seconds, endpoint, work)
                result["concurrent"][endpoint] = got
                print(f"{args.clients} clients, {endpoint}:", json.dumps(got), flush=True)
            result["concurrent"]["client"] = (f"{args.clients} threads, each with its own httpx.Client (keep-alive), in "
                                              "one separate client process on the same 2 cores as the server")
            new_release = None
            if not args.no_switch:
                switch, new_release = switch_test(server, db, root, cones, schema, columns, args.switch_clients, work)
                switch["second_model"] = f"{SECOND_MODEL} ({model_from})"
                result["switch"] = switch
                print("switch:", json.dumps(switch), flush=True)
        finally:
            result["server"]["peak_rss_gb"] = round(server.stop(), 3)
        if new_release:
            # the database and workdir as they were: latest -> bench, the second model's predictions gone
            import duckdb

            layout.point_latest(root, BASE_RELEASE)
            shutil.rmtree(root / new_release, ignore_errors=True)
            con = duckdb.connect(str(db))
            con.execute("delete from predictions where model = ?", [SECOND_MODEL])
            con.close()

        peer_cones = cones[:args.peer_cones]
        plain = duckdb_plain_peer(folder, peer_cones, columns)
        plain["rows_match_scs"] = plain.pop("rows") == rows["scs"][:len(peer_cones)]
        result["peer_duckdb_plain_scan"] = plain
        print("DuckDB plain scan:", json.dumps(plain), flush=True)
        if not args.no_lsdb:
            lsdb_res = lsdb_peer(folder, peer_cones, columns)
            if "rows" in lsdb_res:
                lsdb_res["rows_match_scs"] = lsdb_res.pop("rows") == rows["scs"][:len(peer_cones)]
            result["peer_lsdb_cone_search"] = lsdb_res
            print("lsdb:", json.dumps(lsdb_res), flush=True)
        result["rows_match_scs_tap"] = rows["scs"] == rows["tap"]

        # targets
        t = {}
        lsdb_s = result.get("peer_lsdb_cone_search", {}).get("median_s")
        for endpoint in ("scs", "tap"):
            s = result["single_client"][endpoint]
            med = s.get("median_ms")
            t[f"{endpoint}_one_client_median_ms"] = target(med, "<", 20, "ms")
            t[f"{endpoint}_one_client_p99_ms"] = target(s.get("p99_ms"), "<", 100, "ms")
            if lsdb_s and med:
                r = round(lsdb_s * 1e3 / med, 2)
                t[f"{endpoint}_ratio_lsdb_cone_search_to_service"] = target(r, ">=", 10, "x", peer=f"{lsdb_s} s", ratio=r)
            if med:
                r = round(plain["median_s"] * 1e3 / med, 2)
                t[f"{endpoint}_ratio_duckdb_plain_scan_to_service"] = target(r, ">=", 50, "x",
                                                                             peer=f"{plain['median_s']} s", ratio=r)
        for endpoint in ("scs", "tap"):
            c = result["concurrent"][endpoint]
            t[f"{endpoint}_{args.clients}_clients_per_second"] = target(c.get("per_second"), ">=", 200, "/s")
            t[f"{endpoint}_{args.clients}_clients_p99_ms"] = target(c.get("p99_ms"), "<", 250, "ms")
            t[f"{endpoint}_{args.clients}_clients_errors"] = target(c["errors"], "==", 0, "")
        if "switch" in result:
            t["switch_errors"] = target(result["switch"]["errors"], "==", 0, "")
            t["switch_delay_s"] = target(result["switch"]["switch_delay_s"], "<", 5, "s")
        result["targets"] = t
        result["targets_met"] = f"{sum(v['met'] for v in t.values())} of {len(t)}"

        print("profiling in process ...", flush=True)
        result["profile"] = profile_in_process(db, cones, schema, columns, args.profile_requests)
        print(json.dumps(result, indent=2))
        result["server_workers"] = args.workers
        name = "serve" if args.stars == 1_000_000 else f"serve_{args.stars}"
        print(f"-> {save(name if args.workers == 1 else f'{name}_workers{args.workers}', result)}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
