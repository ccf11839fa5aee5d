"""Asynchronous TAP (issue 14): a 1 M-row upload crossmatched through pyvo, and async jobs under load
together with page loads.

    python bench/bench_async.py --workdir /tmp/bench10m            # 10 M stars, reused (make bench-big)
    python bench/bench_async.py --workdir /tmp/bench10m --positions 20000 --seconds 10   # a dry run

Targets (2 cores, loopback; ratios against peers measured in the same run):

1. an upload crossmatch of ``--positions`` (1 M) positions against the 10 M-star release at 1 arcsec
   through pyvo's async TAP (``submit_job`` + ``run`` + ``wait`` + ``fetch_result`` + ``to_table``,
   ``uploads={"mine": astropy Table}``): under 60 s end to end, each part timed (astropy's VOTable
   writer alone, the POST, the server's job from its UWS startTime/endTime, the download alone, the
   parse); and the server's match at least 3x faster than astropy ``SkyCoord.match_to_catalog_sky``
   on the same arrays (the 1 M upload positions against the 10 M catalogue positions of the
   release, timing match_to_catalog_sky, which builds its KD-tree of the catalogue, and the
   radius cut).  The server's match is the same ADQL translated and run in this process
   (``open_release`` + ``upload.read`` + ``adql.translate`` + ``Served.execute``: the upload's
   parse, the DuckDB match and the VOTable writing timed apart); the job's whole seconds are
   reported beside it, and, as a diagnostic only, the same match with the zone join's sides
   swapped (the upload offered to every cell its disc reaches, the catalogue one cell a row).  The upload: positions of catalogue stars drawn with a seed, each moved
   by a random offset under 0.7 arcsec (uniform over the disc), plus 10 % random positions on
   the sphere; columns my_id (int64), ra, dec (float64, deg).  Correctness: the service's pairs
   against every pair astropy finds within 1 arcsec (match_to_catalog_sky for the 1st, 2nd, ...
   nearest neighbour until none is within the radius: a complete search_around_sky).
2. ``--job-clients`` (20) threads each looping over async jobs (POST PHASE=RUN, ``GET job?WAIT=30``
   until it ends, the result, DELETE; a 1 arcmin cone and a join of a 50-row upload at 1 arcsec,
   alternating; ``--job-mix cone`` for cones only, ``cone+upload,cone`` for one run of each) and
   page loads paced at ``--page-rate`` (50/s: ``/`` and ``/star/{source_id}`` of random stars,
   alternating; a slot missed while every page thread waits is sent late, and how late is
   reported) for ``--seconds`` (60): zero failed requests, page p99 under 1 s,
   memory bounded (the server's RSS, from /proc every 0.5 s: its peak in the second half of the
   run not above 1.1x the first half's).  The clients are a separate process (httpx) sharing the
   2 cores with the server; CPU of both is reported.

The server is ``stellardb --db DB serve --release latest --port P --workers N`` (bench_serve.Server)
with STELLARDB_MAX_UPLOAD_ROWS_ASYNC, STELLARDB_MAX_UPLOAD_BYTES (at least twice what pyvo sends)
and STELLARDB_MAXREC_LIMIT (the result may hold more rows than the default 1 M) set; a fresh one
for each part.  The database and release are bench_release.prepare's and bench_serve's (reused
from --workdir).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

RADIUS_ARCSEC = 1.0
OFFSET_MAX_ARCSEC = 0.7
RANDOM_FRACTION = 0.10
MAXREC = 2_000_000

XMATCH_ADQL = ("SELECT t.my_id, c.source_id, DISTANCE(POINT(t.ra, t.dec), POINT(c.ra, c.dec)) * 3600 AS sep_arcsec "
               "FROM TAP_UPLOAD.{name} AS t JOIN {schema}.catalogue AS c "
               "ON 1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 1/3600.))")


# -- the load client (a child process: python bench_async.py _load SPEC.json OUT.json) ----------
def _phase(body: bytes) -> str | None:
    m = re.search(rb"<uws:phase>([A-Z]+)</uws:phase>", body)
    return m.group(1).decode() if m else None


def load_client(spec: dict) -> dict:
    """Job threads and paced page threads until the deadline; one record per request:
    [sent (epoch s), latency s, kind, ok, status, error or None], and one per job:
    [submitted, seconds to the result, query kind, final phase, error or None]."""
    import httpx

    from bench_serve import error_text

    base, schema = spec["base"], spec["schema"]
    go = threading.Event()
    job_records: list[list] = [[] for _ in range(spec["job_clients"])]
    job_summaries: list[list] = [[] for _ in range(spec["job_clients"])]
    page_records: list[list] = [[] for _ in range(spec["page_threads"])]
    slot = {"next": 0}
    slot_lock = threading.Lock()

    def send(client, out, kind, method, url, ok_status, **kw):
        sent, t0 = time.time(), time.perf_counter()
        try:
            r = client.request(method, url, **kw)
            body = r.content
            lat = time.perf_counter() - t0
            ok = r.status_code in ok_status
            out.append([sent, lat, kind, ok, r.status_code, None if ok else f"HTTP {r.status_code}: {error_text(body)}"])
            return r if ok else None
        except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
            out.append([sent, time.perf_counter() - t0, kind, False, 0, f"{exc.__class__.__name__}: {exc}"[:300]])
            return None

    def job_worker(k: int):
        out, jobs = job_records[k], job_summaries[k]
        with httpx.Client(timeout=120.0) as client:
            i = k
            go.wait()
            while time.time() < deadline:
                if i % 2 == 0 or not spec["uploads"]:
                    ra, dec = spec["cones"][i % len(spec["cones"])]
                    kind = "cone"
                    kw = {"data": {"REQUEST": "doQuery", "LANG": "ADQL", "PHASE": "RUN",
                                   "QUERY": spec["cone_adql"].format(ra=ra, dec=dec)}}
                else:
                    kind = "upload_join"
                    votable = spec["uploads"][i % len(spec["uploads"])]
                    kw = {"data": {"REQUEST": "doQuery", "LANG": "ADQL", "PHASE": "RUN", "UPLOAD": "t,param:t",
                                   "QUERY": XMATCH_ADQL.format(name="t", schema=schema)},
                          "files": {"t": ("t.xml", votable.encode(), "application/x-votable+xml")}}
                i += spec["job_clients"]
                submitted, t0 = time.time(), time.perf_counter()
                r = send(client, out, "job_create", "POST", f"{base}/tap/async", (303,), **kw)
                if r is None:
                    jobs.append([submitted, None, kind, None, out[-1][5]])
                    continue
                url = r.headers["location"]
                phase, error = None, None
                while True:
                    r = send(client, out, "job_wait", "GET", url, (200,), params={"WAIT": "30"})
                    if r is None:
                        error = out[-1][5]
                        break
                    phase = _phase(r.content)
                    if phase not in ("PENDING", "QUEUED", "EXECUTING"):
                        break
                    if time.time() > deadline + 300:
                        error = f"job still {phase} 300 s after the end of the run"
                        break
                if error:
                    pass
                elif phase == "COMPLETED":
                    r = send(client, out, "job_result", "GET", f"{url}/results/result", (200,))
                    if r is not None and b'QUERY_STATUS" value="OK"' not in r.content:
                        out[-1][3], out[-1][5] = False, "result without QUERY_STATUS OK: " + error_text(r.content)
                        error = out[-1][5]
                    elif r is None:
                        error = out[-1][5]
                elif phase is not None:
                    error = f"job {phase}: " + (re.search(rb"<uws:message>(.*?)</uws:message>", r.content,
                                                          re.S) or [b"", b"?"])[1].decode()[:300]
                seconds = time.perf_counter() - t0
                send(client, out, "job_delete", "DELETE", url, (303,))
                jobs.append([submitted, seconds, kind, phase, error])

    def page_worker(k: int):
        out = page_records[k]
        with httpx.Client(timeout=120.0) as client:
            go.wait()
            while True:
                with slot_lock:
                    n = slot["next"]
                    slot["next"] += 1
                at = started + n / spec["page_rate"]
                if at >= deadline:
                    break
                time.sleep(max(0.0, at - time.time()))
                lag = time.time() - at
                if n % 2 == 0:
                    send(client, out, "page_home", "GET", f"{base}/", (200,))
                else:
                    sid = spec["star_ids"][(n // 2) % len(spec["star_ids"])]
                    send(client, out, "page_star", "GET", f"{base}/star/{sid}", (200,))
                out[-1].append(lag)

    threads = [threading.Thread(target=job_worker, args=(k,), daemon=True) for k in range(spec["job_clients"])]
    threads += [threading.Thread(target=page_worker, args=(k,), daemon=True) for k in range(spec["page_threads"])]
    for t in threads:
        t.start()
    time.sleep(0.5)
    cpu0 = os.times()
    started = time.time()
    deadline = started + spec["duration_s"]
    go.set()
    for t in threads:
        t.join()
    ended = time.time()
    cpu1 = os.times()
    return {"started": started, "ended": ended, "deadline": deadline,
            "requests": [r for rs in job_records + page_records for r in rs],
            "jobs": [j for js in job_summaries for j in js],
            "client_cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


# -- statistics --------------------------------------------------------------------------------
def _ms(values) -> dict:
    v = np.asarray(values, dtype=float) * 1e3
    if not len(v):
        return {}
    return {"median_ms": round(float(np.median(v)), 1), "p90_ms": round(float(np.percentile(v, 90)), 1),
            "p99_ms": round(float(np.percentile(v, 99)), 1), "max_ms": round(float(v.max()), 1)}


def summarise_load(res: dict) -> dict:
    reqs, jobs = res["requests"], res["jobs"]
    elapsed = res["ended"] - res["started"]
    out = {"seconds": round(elapsed, 1), "requests": len(reqs), "failed_requests": sum(1 for r in reqs if not r[3])}
    by_kind = {}
    for kind in ("page_home", "page_star", "job_create", "job_wait", "job_result", "job_delete"):
        rs = [r for r in reqs if r[2] == kind]
        by_kind[kind] = {"requests": len(rs), "failed": sum(1 for r in rs if not r[3])} | _ms([r[1] for r in rs if r[3]])
    out["by_kind"] = by_kind
    pages = [r for r in reqs if r[2].startswith("page_")]
    last_page = max((r[0] + r[1] for r in pages), default=res["started"])
    out["pages"] = {"requests": len(pages), "failed": sum(1 for r in pages if not r[3]),
                    "offered_per_second": round(len(pages) / (res["deadline"] - res["started"]), 1),
                    "achieved_per_second": round(len(pages) / max(1e-9, last_page - res["started"]), 1),
                    "last_page_done_after_s": round(last_page - res["started"], 1)} | _ms(
        [r[1] for r in pages if r[3]])
    lags = [r[6] for r in pages if len(r) > 6]
    if lags:
        # how late the paced loop sent them (threads busy waiting for earlier pages): the backlog
        out["pages"]["sent_late_median_ms"] = round(float(np.median(lags)) * 1e3, 1)
        out["pages"]["sent_late_p99_ms"] = round(float(np.percentile(lags, 99)) * 1e3, 1)
    done = [j for j in jobs if j[3] == "COMPLETED" and not j[4]]
    out["jobs"] = {"submitted": len(jobs), "completed": len(done), "failed": sum(1 for j in jobs if j[4]),
                   "per_second": round(len(done) / elapsed, 2)} | {
        f"submit_to_result_{k}": v for k, v in _ms([j[1] for j in done]).items()}
    for kind in ("cone", "upload_join"):
        ks = [j for j in done if j[2] == kind]
        out["jobs"][kind] = {"completed": len(ks)} | _ms([j[1] for j in ks])
    errors = sorted({str(r[5])[:200] for r in reqs if not r[3]} | {str(j[4])[:200] for j in jobs if j[4]})
    if errors:
        out["first_errors"] = errors[:8]
    return out


# -- data --------------------------------------------------------------------------------------
def catalogue_positions(folder: Path):
    import pyarrow.parquet as pq

    from stellardb.release import layout

    files = layout.data_files(folder, "catalogue")
    table = pq.ParquetDataset([str(f) for f in files]).read(columns=["source_id", "ra", "dec"])
    return (table.column("source_id").to_numpy(), table.column("ra").to_numpy().astype(float),
            table.column("dec").to_numpy().astype(float))


def offset(ra, dec, sep_deg, pa):
    """Positions ``sep_deg`` from (ra, dec) at position angle ``pa`` (radians): the exact
    spherical direct formula (no small-angle approximation near the poles)."""
    d1, r = np.radians(dec), np.radians(sep_deg)
    d2 = np.arcsin(np.sin(d1) * np.cos(r) + np.cos(d1) * np.sin(r) * np.cos(pa))
    dra = np.arctan2(np.sin(pa) * np.sin(r) * np.cos(d1), np.cos(r) - np.sin(d1) * np.sin(d2))
    return np.mod(ra + np.degrees(dra), 360.0), np.degrees(d2)


def make_upload(cat_ra, cat_dec, n: int, seed: int = 14):
    """The upload table (astropy): 90 % catalogue stars moved < 0.7 arcsec, 10 % random."""
    import astropy.units as u
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    n_random = int(round(n * RANDOM_FRACTION))
    n_match = n - n_random
    pick = rng.choice(len(cat_ra), n_match, replace=False)
    sep = OFFSET_MAX_ARCSEC * np.sqrt(rng.random(n_match)) / 3600  # uniform over the disc
    ra_m, dec_m = offset(cat_ra[pick], cat_dec[pick], sep, rng.uniform(0, 2 * np.pi, n_match))
    ra_r = rng.uniform(0, 360, n_random)
    dec_r = np.degrees(np.arcsin(rng.uniform(-1, 1, n_random)))
    ra, dec = np.concatenate([ra_m, ra_r]), np.concatenate([dec_m, dec_r])
    order = rng.permutation(n)
    t = Table()
    t["my_id"] = np.arange(n, dtype=np.int64)
    t["ra"] = ra[order] * u.deg
    t["dec"] = dec[order] * u.deg
    return t, n_match, n_random


def encode_votable(table) -> bytes:
    """What pyvo sends for an astropy Table upload: ``table.write(BytesIO, format="votable")``."""
    buf = io.BytesIO()
    table.write(output=buf, format="votable")
    return buf.getvalue()


def small_uploads(cat_ra, cat_dec, n_uploads: int, rows: int = 50, seed: int = 21) -> list[str]:
    """VOTables of ``rows`` catalogue stars near one another (within 0.2 deg of a random star),
    moved < 0.7 arcsec: each job's upload covers a few HEALPix cells (pruned)."""
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    found = []
    while len(found) < n_uploads:
        c = int(rng.integers(len(cat_ra)))
        near = np.flatnonzero((np.abs(cat_dec - cat_dec[c]) < 0.2)
                              & (np.abs(((cat_ra - cat_ra[c] + 180) % 360) - 180) * np.cos(np.radians(cat_dec[c])) < 0.2))
        if len(near) < rows:
            continue
        pick = rng.choice(near, rows, replace=False)
        ra, dec = offset(cat_ra[pick], cat_dec[pick], OFFSET_MAX_ARCSEC * rng.random(rows) / 3600,
                         rng.uniform(0, 2 * np.pi, rows))
        t = Table({"my_id": np.arange(rows, dtype=np.int64), "ra": ra, "dec": dec})
        t["ra"].unit = t["dec"].unit = "deg"
        found.append(encode_votable(t).decode())
    return found


# -- part 1 ------------------------------------------------------------------------------------
def pyvo_xmatch(server, table, schema: str) -> tuple[dict, object]:
    """The upload crossmatch through pyvo async, each part timed; (figures, the result table)."""
    import httpx
    import pyvo

    from stellardb.service import uws

    query = XMATCH_ADQL.format(name="mine", schema=schema)
    service = pyvo.dal.TAPService(f"{server.base}/tap")
    out = {"query": query, "maxrec": MAXREC}
    t_all = time.perf_counter()
    job = service.submit_job(query, uploads={"mine": table}, maxrec=MAXREC)  # encode + POST + GET job
    out["submit_job_s"] = round(time.perf_counter() - t_all, 2)
    t0 = time.perf_counter()
    job.run()
    job.wait(timeout=3600)
    out["run_and_wait_s"] = round(time.perf_counter() - t0, 2)
    if job.phase != "COMPLETED":
        out["phase"] = job.phase
        try:
            job.raise_if_error()
        except Exception as exc:  # noqa: BLE001 - reported
            out["error"] = str(exc)[:1000]
        out["job_document"] = httpx.get(job.url, timeout=60).text[:3000]
        return out, None
    t0 = time.perf_counter()
    result = job.fetch_result()
    out["fetch_result_s"] = round(time.perf_counter() - t0, 2)  # download + VOTable parse
    t0 = time.perf_counter()
    got = result.to_table()
    out["to_table_s"] = round(time.perf_counter() - t0, 2)
    out["end_to_end_s"] = round(time.perf_counter() - t_all, 2)
    out["result_rows"] = len(got)
    # the job as the server saw it
    doc = httpx.get(job.url, timeout=60).text
    field = {k: (re.search(f"<uws:{k}>([^<]*)</uws:{k}>", doc) or [None, None])[1]
             for k in ("creationTime", "startTime", "endTime", "phase")}
    out["job"] = field
    if field["startTime"] and field["endTime"]:
        out["job"]["end_minus_start_s"] = (uws.parse_iso(field["endTime"]) - uws.parse_iso(field["startTime"])).seconds
        out["job"]["start_minus_creation_s"] = (uws.parse_iso(field["startTime"])
                                                - uws.parse_iso(field["creationTime"])).seconds
    # the download alone (same result file, plain GET), and its parse alone
    t0 = time.perf_counter()
    body = httpx.get(job.result_uri, timeout=600).content
    out["download_alone_s"] = round(time.perf_counter() - t0, 2)
    out["result_bytes"] = len(body)
    from astropy.io.votable import parse

    t0 = time.perf_counter()
    parse(io.BytesIO(body))
    out["parse_alone_s"] = round(time.perf_counter() - t0, 2)
    job.delete()
    return out, got


def in_process(folder: Path, data: bytes, schema: str, memory_limit: str) -> tuple[dict, object]:
    """The same query in this process, its parts timed: what the job does between start and end."""
    from stellardb.service import adql, results, upload
    from stellardb.service.served import open_release

    query = XMATCH_ADQL.format(name="mine", schema=schema)
    t0 = time.perf_counter()
    served = open_release(folder, memory_limit)
    out = {"open_release_s": round(time.perf_counter() - t0, 2), "memory_limit": memory_limit}
    try:
        t0 = time.perf_counter()
        up = upload.read("mine", data, 10**7)
        out["upload_read_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        tr = adql.translate(query, served.tables + (up.adql_table,), served.schema)
        out["translate_s"] = round(time.perf_counter() - t0, 3)
        cells_cap = results.CELLS["votable"] // max(1, len(tr.columns))
        sql = f"select * from ({tr.sql}) limit {min(MAXREC, cells_cap) + 1}"  # as app.compute wraps it
        out["sql_head"] = sql[:1500]
        t0 = time.perf_counter()
        table = served.execute(sql, 3600, tables=up.tables())
        out["duckdb_match_s"] = round(time.perf_counter() - t0, 2)
        out["rows"] = table.num_rows
        t0 = time.perf_counter()
        body = results.render("votable", table.rename_columns([c.name for c in tr.columns]),
                              [{} for _ in tr.columns], [("QUERY_STATUS", "OK", None)], None)
        out["votable_render_s"] = round(time.perf_counter() - t0, 2)
        out["votable_bytes"] = len(body)
        if out["duckdb_match_s"] < 30:  # once more, warm (the first may read the files from disk)
            t0 = time.perf_counter()
            res = served.execute(sql, 3600, tables=up.tables())
            out["duckdb_match_again_s"] = round(time.perf_counter() - t0, 2)
            del res
    except Exception as exc:  # noqa: BLE001 - reported with the timings so far
        out["error"] = f"{exc.__class__.__name__}: {str(exc)[:1000]}"
        return out, None
    finally:
        served.retire()
    return out, table


def astropy_peer(up_ra, up_dec, cat_ra, cat_dec) -> tuple[dict, dict]:
    """match_to_catalog_sky (KD-tree of the catalogue built inside) + the radius cut, timed; then
    the 2nd, 3rd ... neighbours (the tree is cached) until none is within the radius: every pair."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    t0 = time.perf_counter()
    cat = SkyCoord(ra=cat_ra * u.deg, dec=cat_dec * u.deg)
    up = SkyCoord(ra=up_ra * u.deg, dec=up_dec * u.deg)
    out = {"skycoords_s": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    idx, sep, _ = up.match_to_catalog_sky(cat)
    keep = sep < RADIUS_ARCSEC * u.arcsec
    out["match_to_catalog_sky_s"] = round(time.perf_counter() - t0, 2)
    out["matched_nearest"] = int(keep.sum())
    pairs = {"upload_row": [np.flatnonzero(keep)], "cat_index": [idx[keep]], "sep": [sep.arcsec[keep]]}
    k = 1
    t0 = time.perf_counter()
    while keep.any() and k < 10:
        k += 1
        idx, sep, _ = up.match_to_catalog_sky(cat, nthneighbor=k)
        keep = sep < RADIUS_ARCSEC * u.arcsec
        pairs["upload_row"].append(np.flatnonzero(keep))
        pairs["cat_index"].append(idx[keep])
        pairs["sep"].append(sep.arcsec[keep])
    out["further_neighbours_searched"] = k - 1
    out["further_neighbours_s"] = round(time.perf_counter() - t0, 2)
    return out, {key: np.concatenate(v) for key, v in pairs.items()}


def compare(service_table, upload_table, cat_source_id, pairs) -> dict:
    """The service's pairs against astropy's (every pair within the radius)."""
    my_id = np.asarray(upload_table["my_id"])
    ours = {(int(a), int(b)): float(s) for a, b, s in zip(np.asarray(service_table["my_id"]),
                                                        np.asarray(service_table["source_id"]),
                                                        np.asarray(service_table["sep_arcsec"]))}
    theirs = {(int(my_id[r]), int(cat_source_id[c])): float(s)
              for r, c, s in zip(pairs["upload_row"], pairs["cat_index"], pairs["sep"])}
    both = ours.keys() & theirs.keys()
    only_service = sorted(ours.keys() - theirs.keys())
    only_astropy = sorted(theirs.keys() - ours.keys())
    diffs = np.array([abs(ours[k] - theirs[k]) for k in both]) if both else np.array([0.0])
    return {"method": "astropy match_to_catalog_sky for the 1st, 2nd, ... nearest neighbour until none is within "
                      "1 arcsec (every pair within the radius), compared as (my_id, source_id) sets",
            "pairs_service": len(ours), "pairs_astropy": len(theirs), "pairs_equal": len(both),
            "only_service": len(only_service), "only_astropy": len(only_astropy),
            "only_service_first": [[a, b, round(ours[(a, b)], 6)] for a, b in only_service[:10]],
            "only_astropy_first": [[a, b, round(theirs[(a, b)], 6)] for a, b in only_astropy[:10]],
            "upload_rows_with_two_or_more_pairs": int(sum(1 for v in np.unique(
                np.asarray(service_table["my_id"]), return_counts=True)[1] if v > 1)),
            "max_abs_sep_difference_arcsec": float(diffs.max()),
            "identical": not only_service and not only_astropy}


def log_errors(path: Path, most: int = 10) -> list[str]:
    """The server log's distinct error lines (the last line of each traceback, and ERROR lines)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        if re.match(r"^\w+(\.\w+)*(Error|Exception): ", line) or line.startswith(("ERROR", "internal error")):
            if line[:300] not in found:
                found.append(line[:300])
    return found[:most]


# -- part 2 ------------------------------------------------------------------------------------
def idle_baseline(server, spec: dict, n: int = 10) -> dict:
    """Each kind of request alone on the idle server, one after another (what the load adds to)."""
    import httpx

    def timed(fn):
        t0 = time.perf_counter()
        r = fn()
        return time.perf_counter() - t0, r

    out = {}
    with httpx.Client(base_url=server.base, timeout=600) as c:
        c.get("/"), c.get(f"/star/{spec['star_ids'][0]}")  # warm-up
        out["page_home"] = _ms([timed(lambda: c.get("/"))[0] for _ in range(n)])
        out["page_star"] = _ms([timed(lambda k=k: c.get(f"/star/{spec['star_ids'][k + 1]}"))[0] for k in range(n)])

        def job(k: int, upload: bool) -> float:
            if upload:
                data = {"REQUEST": "doQuery", "LANG": "ADQL", "PHASE": "RUN", "UPLOAD": "t,param:t",
                        "QUERY": XMATCH_ADQL.format(name="t", schema=spec["schema"])}
                files = {"t": ("t.xml", spec["uploads"][k % len(spec["uploads"])].encode(), "application/x-votable+xml")}
            else:
                ra, dec = spec["cones"][k]
                data = {"REQUEST": "doQuery", "LANG": "ADQL", "PHASE": "RUN",
                        "QUERY": spec["cone_adql"].format(ra=ra, dec=dec)}
                files = None
            t0 = time.perf_counter()
            url = c.post("/tap/async", data=data, files=files).headers["location"]
            while _phase(c.get(url, params={"WAIT": "30"}).content) in ("PENDING", "QUEUED", "EXECUTING"):
                pass
            c.get(f"{url}/results/result").raise_for_status()
            seconds = time.perf_counter() - t0
            c.delete(url)
            return seconds

        out["job_cone"] = _ms([job(k, False) for k in range(n)])
        if spec["uploads"]:
            out["job_upload_join"] = _ms([job(k, True) for k in range(3)]) | {"jobs": 3}
    return out


def load_test(server, spec: dict, work: Path) -> dict:
    import subprocess

    spec_path = work / f"async-load-{os.getpid()}.json"
    out_path = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.time(), server.status_kb("VmRSS") / 1e6))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    cpu0 = server.cpu_s()
    sampler.start()
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_load", str(spec_path), str(out_path)])
    code = child.wait()
    stop.set()
    sampler.join()
    cpu1 = server.cpu_s()
    if code:
        raise RuntimeError(f"the load client failed ({code})")
    res = json.loads(out_path.read_text())
    spec_path.unlink(missing_ok=True)
    out_path.unlink(missing_ok=True)
    out = summarise_load(res)
    elapsed = res["ended"] - res["started"]
    during = [(t, r) for t, r in samples if res["started"] <= t <= res["ended"]] or samples
    half = res["started"] + (res["ended"] - res["started"]) / 2
    first = max((r for t, r in during if t < half), default=0.0)
    second = max((r for t, r in during if t >= half), default=0.0)
    out["server"] = {"rss_before_gb": round(samples[0][1], 3) if samples else None,
                     "rss_peak_gb": round(max(r for _, r in samples), 3) if samples else None,
                     "rss_peak_first_half_gb": round(first, 3), "rss_peak_second_half_gb": round(second, 3),
                     "rss_end_gb": round(samples[-1][1], 3) if samples else None,
                     "rss_samples": len(samples),
                     "cpu_s": round(cpu1 - cpu0, 1), "cpu_cores_used": round((cpu1 - cpu0) / elapsed, 2)}
    out["client_cpu_cores_used"] = round(res["client_cpu_s"] / elapsed, 2)
    return out


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_load":
        Path(sys.argv[3]).write_text(json.dumps(load_client(json.loads(Path(sys.argv[2]).read_text()))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stars", type=int, default=10_000_000)
    parser.add_argument("--workdir", default=None, help="Keep the simulated database and release here (reused).")
    parser.add_argument("--positions", type=int, default=1_000_000, help="Rows of the upload crossmatched.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the jobs + pages run.")
    parser.add_argument("--job-clients", type=int, default=20)
    parser.add_argument("--page-rate", type=float, default=50.0, help="Page loads per second.")
    parser.add_argument("--page-threads", type=int, default=16, help="Threads sending the paced page loads.")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers.")
    parser.add_argument("--job-mix", default="cone+upload", help="Comma-separated job mixes, one load run each: "
                        "cone+upload (1 arcmin cones and 50-row upload joins, alternating) or cone (cones only).")
    parser.add_argument("--skip-xmatch", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--name", default=None, help="The JSON's name in bench/out (default: async, or one that "
                                                     "says the run was smaller).")
    args = parser.parse_args()

    from stellardb import config
    from stellardb.release import layout
    from stellardb.service.served import schema_name

    from bench_release import prepare
    from bench_serve import Server, adql_cone, code_version, ensure_release, served_columns, target

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-async-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        db = prepare(work, args.stars)
        root = layout.default_root(db)
        folder, release_s = ensure_release(db, root)
        manifest = json.loads((folder / layout.MANIFEST).read_text())
        schema = schema_name(manifest.get("name", folder.name))
        result = {"stars": args.stars, "stellardb_commit": code_version(), "release_reused": release_s is None,
                  "catalogue_rows": manifest["catalogues"]["catalogue"]["rows"],
                  "catalogue_partitions": manifest["catalogues"]["catalogue"]["partitions"]}
        t0 = time.perf_counter()
        cat_id, cat_ra, cat_dec = catalogue_positions(folder)
        print(f"catalogue positions: {len(cat_id):,} in {time.perf_counter() - t0:.1f} s", flush=True)

        if not args.skip_xmatch:
            x: dict = {}
            t0 = time.perf_counter()
            table, n_match, n_random = make_upload(cat_ra, cat_dec, args.positions)
            made_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            data = encode_votable(table)
            encode_s = time.perf_counter() - t0
            serialization = "BINARY2" if b"<BINARY2" in data[:20000] else "BINARY" if b"<BINARY" in data[:20000] \
                else "TABLEDATA"
            x["upload"] = {"rows": args.positions, "from_catalogue_stars": n_match, "random": n_random,
                           "offset_max_arcsec": OFFSET_MAX_ARCSEC, "seed": 14, "made_s": round(made_s, 2),
                           "votable_bytes": len(data), "votable_serialization": serialization,
                           "astropy_votable_write_s": round(encode_s, 2)}
            print("upload:", json.dumps(x["upload"]), flush=True)
            env = {"STELLARDB_MAX_UPLOAD_ROWS_ASYNC": str(max(5_000_000, args.positions)),
                   "STELLARDB_MAX_UPLOAD_BYTES": str(max(500_000_000, 2 * len(data))),
                   "STELLARDB_MAXREC_LIMIT": str(max(5_000_000, MAXREC))}
            os.environ.update(env)
            server = Server(db, work, args.workers)
            print(f"server up in {server.startup_s:.1f} s on {server.base}", flush=True)
            try:
                x["server"] = {"command": " ".join(["stellardb", "--db", "DB", *server.argv[3:-1], "P"]),
                               "env": env, "startup_s": round(server.startup_s, 2),
                               "rss_after_startup_gb": round(server.status_kb("VmRSS") / 1e6, 3)}
                cpu0 = server.cpu_s()
                x["pyvo"], got = pyvo_xmatch(server, table, schema)
                x["server"]["cpu_s_during_pyvo"] = round(server.cpu_s() - cpu0, 1)
                p = x["pyvo"]
                if "end_to_end_s" in p:
                    p["parts_s"] = {
                        "encode (astropy VOTable writer, timed alone)": x["upload"]["astropy_votable_write_s"],
                        "POST + job document (submit_job minus encode)": round(p["submit_job_s"] - encode_s, 2),
                        "run + wait (job queued, executed, COMPLETED seen)": p["run_and_wait_s"],
                        "download (plain GET, timed alone)": p["download_alone_s"],
                        "parse (fetch_result minus download, plus to_table)": round(
                            p["fetch_result_s"] - p["download_alone_s"] + p["to_table_s"], 2)}
                print("pyvo:", json.dumps(p), flush=True)
            finally:
                x["server"]["peak_rss_gb"] = round(server.stop(), 3)
                for k in env:
                    os.environ.pop(k, None)
            x["server"]["log_errors"] = log_errors(work / "serve.log")
            print("in process ...", flush=True)
            x["in_process"], table_in = in_process(folder, data, schema, config.get("query_memory_limit"))
            print("in process:", json.dumps({k: v for k, v in x["in_process"].items() if k != "sql_head"}), flush=True)
            del data
            print("astropy ...", flush=True)
            up_ra, up_dec = np.asarray(table["ra"], dtype=float), np.asarray(table["dec"], dtype=float)
            x["peer_astropy"], pairs = astropy_peer(up_ra, up_dec, cat_ra, cat_dec)
            print("astropy:", json.dumps(x["peer_astropy"]), flush=True)
            if got is not None or table_in is not None:
                x["correctness"] = compare(got if got is not None else table_in, table, cat_id, pairs)
                x["correctness"]["compared"] = "the pyvo result" if got is not None else "the in-process result"
            else:
                x["correctness"] = {"identical": False, "compared": "nothing: neither the job nor the in-process run "
                                                                    "gave a result"}
            if got is not None and table_in is not None:
                x["correctness"]["in_process_rows_equal_pyvo_rows"] = table_in.num_rows == len(got)
            print("correctness:", json.dumps(x["correctness"]), flush=True)
            astropy_s = x["peer_astropy"]["match_to_catalog_sky_s"]
            match_s = x["in_process"].get("duckdb_match_s")
            x["ratio_astropy_to_server_match"] = round(astropy_s / match_s, 2) if match_s else None
            job_s = p.get("job", {}).get("end_minus_start_s")
            x["ratio_astropy_to_whole_job"] = round(astropy_s / job_s, 2) if job_s else None
            result["upload_xmatch"] = x
            del table_in, pairs, got

        if not args.skip_load:
            rng = np.random.default_rng(3)
            columns = served_columns(folder)
            cones = [(float(cat_ra[i]), float(cat_dec[i])) for i in rng.integers(0, len(cat_ra), 2000)]
            spec = {"schema": schema, "job_clients": args.job_clients, "page_threads": args.page_threads,
                    "page_rate": args.page_rate, "duration_s": args.seconds, "cones": cones,
                    "cone_adql": adql_cone(schema, columns, 0.0, 0.0).replace("'ICRS', 0.0, 0.0,", "'ICRS', {ra!r}, {dec!r},"),
                    "uploads": small_uploads(cat_ra, cat_dec, 40),
                    "star_ids": [int(s) for s in cat_id[rng.integers(0, len(cat_id), 5000)]]}
            uploads = spec.pop("uploads")
            result["jobs_and_pages"] = {}
            for mix in args.job_mix.split(","):
                if mix not in ("cone+upload", "cone"):
                    raise SystemExit(f"--job-mix {mix!r}: cone+upload or cone")
                spec["uploads"] = uploads if mix == "cone+upload" else []
                server = Server(db, work, args.workers)
                print(f"server up in {server.startup_s:.1f} s on {server.base}", flush=True)
                load = {"server": {}}
                try:
                    spec["base"] = server.base
                    baseline = idle_baseline(server, spec)
                    print("idle baseline:", json.dumps(baseline), flush=True)
                    load = load_test(server, spec, work)
                    load["idle_baseline_before_load"] = baseline
                    load["server_command"] = " ".join(["stellardb", "--db", "DB", *server.argv[3:-1], "P"])
                    what = ("1 arcmin cone with {n} columns and a 50-row upload (VOTable) joined at 1 arcsec, "
                            "alternating" if spec["uploads"] else "1 arcmin cone with {n} columns").format(n=len(columns))
                    load["clients"] = (f"{args.job_clients} job threads (POST PHASE=RUN, GET ?WAIT=30 until final, "
                                       f"result, DELETE; {what}) and {args.page_threads} threads sending page loads "
                                       f"paced at {args.page_rate:g}/s (/ and /star/{{source_id}}, alternating), one "
                                       "httpx.Client (keep-alive) each, in one client process")
                finally:
                    load["server"]["peak_rss_vmhwm_gb"] = round(server.stop(), 3)
                    load["server"]["log_errors"] = log_errors(work / "serve.log")
                print(f"load ({mix}):", json.dumps(load), flush=True)
                result["jobs_and_pages"][mix] = load

        # targets
        t = {}
        if "upload_xmatch" in result:
            x = result["upload_xmatch"]
            t["xmatch_end_to_end_s"] = target(x["pyvo"].get("end_to_end_s"), "<", 60, "s")
            t["xmatch_ratio_astropy_to_server_match"] = target(
                x["ratio_astropy_to_server_match"], ">=", 3, "x", peer=f"{x['peer_astropy']['match_to_catalog_sky_s']} s",
                ratio=x["ratio_astropy_to_server_match"])
            t["xmatch_pairs_equal_astropy"] = target(int(x["correctness"]["identical"]), "==", 1, "")
        for mix, j in result.get("jobs_and_pages", {}).items():
            t[f"load_{mix}_failed_requests"] = target(j["failed_requests"] + j["jobs"]["failed"], "==", 0, "")
            t[f"load_{mix}_page_p99_ms"] = target(j["pages"].get("p99_ms"), "<", 1000, "ms")
            srv = j["server"]
            bounded = srv["rss_peak_second_half_gb"] <= 1.1 * srv["rss_peak_first_half_gb"]
            t[f"load_{mix}_memory_bounded"] = target(int(bounded), "==", 1, "") | {
                "rss_peak_gb": srv["rss_peak_gb"], "rule": "peak RSS of the 2nd half <= 1.1 x the 1st half's"}
        result["targets"] = t
        result["targets_met"] = f"{sum(v['met'] for v in t.values())} of {len(t)}"
        print(json.dumps(result["targets"], indent=2))
        name = args.name or ("async" if args.stars == 10_000_000 else f"async_{args.stars}")
        if not args.name and (args.positions != 1_000_000 or args.seconds != 60 or args.skip_xmatch or args.skip_load):
            name += f"_dry_p{args.positions}_s{args.seconds:g}"
        print(f"-> {save(name, result)}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
