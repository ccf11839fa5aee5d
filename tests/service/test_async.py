"""Asynchronous TAP (UWS 1.1) and table uploads, judged by pyvo and by independent answers
(DuckDB on the release, astropy's crossmatch)."""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
import pytest
from astropy.io.votable import parse

from .conftest import start_server


def _votable(body: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse(io.BytesIO(body), verify="ignore")


def _job_xml(client, url: str):
    import xml.etree.ElementTree as ET

    r = client.get(url)
    assert r.status_code == 200, r.text
    root = ET.fromstring(r.content)
    ns = {"uws": "http://www.ivoa.net/xml/UWS/v1.0"}
    return {child.tag.split("}")[1]: child for child in root}, ns


def _finished(client, path: str, seconds: float = 60):
    """The job document once the job is in a final phase: WAIT returns at every change of phase
    (QUEUED -> EXECUTING too, UWS 1.1), so it is asked again until then."""
    deadline = time.monotonic() + seconds
    while True:
        fields, ns = _job_xml(client, f"{path}?WAIT=30")
        if fields["phase"].text in ("COMPLETED", "ERROR", "ABORTED") or time.monotonic() > deadline:
            return fields, ns


# --- pyvo ------------------------------------------------------------------------------------

def test_pyvo_run_async_equals_duckdb(tap, schema, release_con):
    adql = (f"SELECT source_id, teff, logg, feh FROM {schema}.catalogue WHERE feh < -0.5 AND logg < 3.5 "
            "ORDER BY source_id")
    got = tap.run_async(adql, maxrec=100_000).to_table()
    want = release_con.execute("select source_id, teff from catalogue where feh < -0.5 and logg < 3.5 "
                               "order by source_id").df()
    assert len(want) > 50 and got["source_id"].tolist() == want["source_id"].tolist()
    np.testing.assert_array_equal(np.asarray(got["teff"]), want["teff"].to_numpy())
    assert str(got["teff"].unit) == "K"


def test_pyvo_submit_wait_fetch_and_delete(tap, schema, live_url):
    import httpx

    job = tap.submit_job(f"SELECT TOP 7 source_id, ra, dec FROM {schema}.gaia ORDER BY source_id")
    assert job.phase == "PENDING"
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    assert job.phase == "COMPLETED"
    table = job.fetch_result().to_table()
    assert len(table) == 7 and table.colnames == ["source_id", "ra", "dec"]
    assert job.execution_duration > 0 and job.destruction is not None
    url = job.url
    job.delete()
    assert httpx.get(url).status_code == 404


def test_pyvo_job_with_an_error_says_why(tap, schema):
    job = tap.submit_job(f"SELECT nosuchcolumn FROM {schema}.gaia")
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    assert job.phase == "ERROR"
    with pytest.raises(Exception, match="nosuchcolumn"):
        job.raise_if_error()


# --- UWS resources -----------------------------------------------------------------------------

def test_uws_resources_of_a_job(client, schema):
    r = client.post("/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", "RUNID": "mine",
                                        "QUERY": f"SELECT TOP 3 source_id FROM {schema}.gaia ORDER BY source_id"},
                    follow_redirects=False)
    assert r.status_code == 303
    url = r.headers["location"]
    job_id = url.rsplit("/", 1)[1]
    path = f"/tap/async/{job_id}"
    assert client.get(f"{path}/phase").text == "PENDING"
    # parameters and limits may change while PENDING
    assert client.post(f"{path}/executionduration", data={"EXECUTIONDURATION": "120"},
                       follow_redirects=False).status_code == 303
    assert client.get(f"{path}/executionduration").text == "120"
    assert client.post(f"{path}/destruction", data={"DESTRUCTION": "2030-01-01T00:00:00Z"},
                       follow_redirects=False).status_code == 303
    assert client.get(f"{path}/destruction").text.startswith("20")
    assert client.post(f"{path}/parameters", data={"MAXREC": "2"}, follow_redirects=False).status_code == 303
    fields, ns = _job_xml(client, path)
    assert fields["jobId"].text == job_id and fields["runId"].text == "mine" and fields["phase"].text == "PENDING"
    params = {p.get("id"): p.text for p in fields["parameters"]}
    assert params["maxrec"] == "2" and params["query"].startswith("SELECT TOP 3")
    # run, and block until it is done
    assert client.post(f"{path}/phase", data={"PHASE": "RUN"}, follow_redirects=False).status_code == 303
    fields, ns = _finished(client, path)
    assert fields["phase"].text == "COMPLETED"
    assert fields["startTime"].text and fields["endTime"].text
    result = fields["results"].find("uws:result", ns)
    assert result.get("{http://www.w3.org/1999/xlink}href").endswith(f"{job_id}/results/result")
    table = _votable(client.get(f"{path}/results/result").content).get_first_table()
    assert len(table.array) == 2  # MAXREC=2, changed while PENDING
    assert client.post(f"{path}/executionduration", data={"EXECUTIONDURATION": "5"}).status_code == 400
    assert client.get(f"{path}/error").status_code == 404
    assert client.get(f"{path}/quote").status_code == 200 and client.get(f"{path}/owner").status_code == 200
    assert client.post(path, data={"ACTION": "DELETE"}, follow_redirects=False).status_code == 303
    assert client.get(path).status_code == 404 and client.get(f"{path}/results/result").status_code == 404


def test_job_list_filters(client, schema):
    ids = []
    for i in range(3):
        data = {"QUERY": f"SELECT TOP {i + 1} source_id FROM {schema}.gaia", **({"PHASE": "RUN"} if i else {})}
        r = client.post("/tap/async", data=data, follow_redirects=False)
        ids.append(r.headers["location"].rsplit("/", 1)[1])
        time.sleep(1.05)  # creation times are to the second: AFTER must tell them apart
    _finished(client, f"/tap/async/{ids[2]}")
    _finished(client, f"/tap/async/{ids[1]}")

    def listed(query: str) -> list[str]:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(client.get(f"/tap/async{query}").content)
        return [ref.get("id") for ref in root]

    everything = listed("")
    assert set(ids) <= set(everything)
    assert ids[0] in listed("?PHASE=PENDING") and ids[1] not in listed("?PHASE=PENDING")
    assert set(ids[1:]) <= set(listed("?PHASE=COMPLETED&PHASE=ERROR"))
    assert listed("?LAST=2") == [ids[2], ids[1]]  # newest first
    created = _job_xml(client, f"/tap/async/{ids[0]}")[0]["creationTime"].text
    after = listed(f"?AFTER={created}")
    assert ids[0] not in after and set(ids[1:]) <= set(after)
    assert client.get("/tap/async?PHASE=DONE").status_code == 400
    assert client.get("/tap/async?LAST=x").status_code == 400


def test_abort_stops_a_running_query(client, schema):
    # a query that runs for minutes: every pair of gaia rows
    slow = (f"SELECT COUNT(*) AS n FROM {schema}.gaia AS a, {schema}.gaia AS b, {schema}.gaia AS c "
            "WHERE a.ra + b.ra + c.ra > 1000")
    r = client.post("/tap/async", data={"QUERY": slow, "PHASE": "RUN"}, follow_redirects=False)
    path = r.headers["location"].split("/tap/async", 1)[1]
    path = f"/tap/async{path}"
    deadline = time.monotonic() + 30
    while client.get(f"{path}/phase").text != "EXECUTING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    assert client.post(f"{path}/phase", data={"PHASE": "ABORT"}, follow_redirects=False).status_code == 303
    assert client.get(f"{path}/phase").text == "ABORTED"
    # the pool is free again: a quick job completes (the aborted query was interrupted)
    quick = client.post("/tap/async", data={"QUERY": f"SELECT TOP 1 source_id FROM {schema}.gaia",
                                            "PHASE": "RUN"}, follow_redirects=False)
    quick_path = "/tap/async" + quick.headers["location"].split("/tap/async", 1)[1]
    fields, _ = _finished(client, quick_path)
    assert fields["phase"].text == "COMPLETED"
    assert time.monotonic() - started < 30
    assert client.get(f"{path}/phase").text == "ABORTED"


def test_jobs_survive_a_restart_and_running_ones_say_why(holder, limits, schema, tmp_path):
    """A new app on the same job folder (a restarted server): the finished job and its result are
    there; a job left EXECUTING by a process that is gone is ERROR with a message."""
    import json
    import subprocess
    import sys

    import httpx

    from stellardb.service import uws
    from stellardb.service.app import create_app

    jobs = tmp_path / "jobs"
    url, stop = start_server(create_app(holder, limits, jobs_root=jobs))
    try:
        r = httpx.post(f"{url}/tap/async", data={"QUERY": f"SELECT TOP 4 source_id FROM {schema}.gaia ORDER BY "
                                                 "source_id", "PHASE": "RUN"})
        job_url = r.headers["location"]
        deadline = time.monotonic() + 60
        while "COMPLETED" not in (done := httpx.get(f"{job_url}?WAIT=30")).text and time.monotonic() < deadline:
            pass  # WAIT returns at every change of phase
        assert "COMPLETED" in done.text
        first = httpx.get(f"{job_url}/results/result").content
    finally:
        stop()
    job_id = job_url.rsplit("/", 1)[1]
    # a job a dead process was running
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store = uws.JobStore(jobs, default_duration_s=60, max_duration_s=60, lifetime_s=3600)
    lost = store.create("127.0.0.1", {"query": "SELECT 1 AS x"})
    store.update(lost.id, phase="EXECUTING", pid=int(dead.stdout))
    url, stop = start_server(create_app(holder, limits, jobs_root=jobs))
    try:
        assert httpx.get(f"{url}/tap/async/{job_id}/phase").text == "COMPLETED"
        assert httpx.get(f"{url}/tap/async/{job_id}/results/result").content == first
        assert httpx.get(f"{url}/tap/async/{lost.id}/phase").text == "ERROR"
        error = httpx.get(f"{url}/tap/async/{lost.id}/error")
        assert "restarted" in error.text
    finally:
        stop()
    assert json.loads((jobs / job_id / uws.JOB_FILE).read_text())["phase"] == "COMPLETED"


def test_jobs_past_their_destruction_are_deleted(tmp_path):
    from stellardb.service import uws

    store = uws.JobStore(tmp_path, default_duration_s=60, max_duration_s=60, lifetime_s=3600)
    old = store.create("x", {"query": "SELECT 1 AS x"})
    kept = store.create("x", {"query": "SELECT 1 AS x"})
    store.update(old.id, destruction="2001-01-01T00:00:00Z")
    assert store.sweep() == 1
    assert not (tmp_path / old.id).exists() and (tmp_path / kept.id).exists()


@pytest.mark.parametrize("bad", ["x" * 80, "a.b", "%2e%2e", "a%2fb", "%00"])
def test_job_ids_are_not_paths(client, bad):
    r = client.get(f"/tap/async/{bad}/phase")
    assert r.status_code == 404 and ("No such job" in r.text or "Not found" in r.text)


# --- uploads -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def my_list(release_con):
    """400 catalogue stars moved by up to 1.5 arcsec, and 100 positions on nothing: the upload."""
    from astropy.table import Table

    rng = np.random.default_rng(7)
    stars = release_con.execute("select source_id, ra, dec from catalogue using sample 400 rows "
                                "(reservoir, 11)").df()
    sep = rng.uniform(0, 1.5, len(stars)) / 3600
    angle = rng.uniform(0, 2 * np.pi, len(stars))
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    moved = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg).directional_offset_by(
        angle * u.rad, sep * u.deg)
    ra = np.r_[moved.ra.deg, rng.uniform(0, 360, 100)]
    dec = np.r_[moved.dec.deg, rng.uniform(-90, 0, 100)]
    table = Table({"my_id": np.arange(len(ra)), "ra": ra, "dec": dec})
    table["ra"].unit = table["dec"].unit = "deg"
    return table


def _pairs_by_astropy(release_con, table, radius_arcsec: float) -> set:
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    stars = release_con.execute("select source_id, ra, dec from catalogue").df()
    mine = SkyCoord(np.asarray(table["ra"]) * u.deg, np.asarray(table["dec"]) * u.deg)
    theirs = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg)
    i, j, _, _ = theirs.search_around_sky(mine, radius_arcsec * u.arcsec)
    return {(int(table["my_id"][a]), int(stars.source_id[b])) for a, b in zip(i, j)}


@pytest.mark.parametrize("form", ["contains", "distance"])
def test_pyvo_upload_crossmatch_equals_astropy(tap, schema, release_con, my_list, form):
    on = ("1 = CONTAINS(POINT('ICRS', c.ra, c.dec), CIRCLE('ICRS', t.ra, t.dec, 1.2/3600.))" if form == "contains"
          else "DISTANCE(POINT(t.ra, t.dec), POINT(c.ra, c.dec)) < 1.2/3600.")
    got = tap.search(f"SELECT t.my_id, c.source_id, DISTANCE(POINT(t.ra, t.dec), POINT(c.ra, c.dec)) * 3600 AS "
                     f"sep_arcsec FROM TAP_UPLOAD.mine AS t JOIN {schema}.catalogue AS c ON {on}",
                     uploads={"mine": my_list}).to_table()
    want = _pairs_by_astropy(release_con, my_list, 1.2)
    assert len(want) > 200
    assert {(int(a), int(b)) for a, b in zip(got["my_id"], got["source_id"])} == want
    assert len(got) == len(want) and float(np.max(got["sep_arcsec"])) < 1.2


def test_upload_left_join_keeps_every_row_once(tap, schema, release_con, my_list):
    got = tap.search(f"SELECT t.my_id, c.source_id FROM TAP_UPLOAD.mine AS t LEFT JOIN {schema}.catalogue AS c "
                     "ON 1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 1.2/3600.))",
                     uploads={"mine": my_list}, maxrec=100_000).to_table()
    want = _pairs_by_astropy(release_con, my_list, 1.2)
    matched = {a for a, _ in want}
    ids = [int(i) for i in got["my_id"]]
    unmatched = [i for i, s in zip(ids, np.ma.getmaskarray(got["source_id"])) if s]
    assert sorted(set(unmatched)) == sorted(set(map(int, my_list["my_id"])) - matched)
    assert len(unmatched) == len(set(unmatched))  # each unmatched row once, not once per zone cell
    assert len(got) == len(want) + len(unmatched)


def test_upload_join_runs_on_healpix_cells_not_pairs(holder, my_list):
    """The positional join is a hash join on HEALPix cells (the table's own index shifted; the
    upload's rows offered to their pixel and its neighbours), pruned to the upload's sky."""
    from astropy.io.votable import from_table, writeto

    from stellardb.service import adql, upload

    buffer = io.BytesIO()
    writeto(from_table(my_list[:5]), buffer)
    up = upload.read("mine", buffer.getvalue(), 1000)
    served = holder.current
    t = adql.translate("SELECT t.my_id, c.source_id FROM TAP_UPLOAD.mine AS t JOIN catalogue AS c ON "
                       "1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 1/3600.))",
                       served.tables + (up.adql_table,), served.schema)
    assert '"_healpix_29" >> ' in t.sql and "_cells_" in t.sql and '"_healpix_29" BETWEEN' in t.sql
    assert set(up.tables()) == {up.sql_name, *(name for name in up.extra)} and len(up.extra) == 1
    # five stars meet few files: the others are not opened
    assert "_stellardb_file" in t.sql


@pytest.mark.parametrize("kind", ["csv", "parquet", "votable"])
def test_upload_formats_are_detected(live_url, schema, my_list, kind):
    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.io.votable import from_table, writeto

    if kind == "csv":
        data = "my_id,ra,dec\n" + "".join(f"{i},{a!r},{d!r}\n" for i, a, d in
                                          zip(my_list["my_id"].tolist(), my_list["ra"].tolist(),
                                              my_list["dec"].tolist()))
        data = data.encode()
    elif kind == "parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.table({c: np.asarray(my_list[c]) for c in my_list.colnames}), buffer)
        data = buffer.getvalue()
    else:
        buffer = io.BytesIO()
        writeto(from_table(my_list), buffer)
        data = buffer.getvalue()
    r = httpx.post(f"{live_url}/tap/sync", data={"QUERY": "SELECT COUNT(*) AS n, SUM(my_id) AS s FROM TAP_UPLOAD.x",
                                                 "UPLOAD": "x,param:table", "RESPONSEFORMAT": "csv"},
                   files={"table": ("x", data)})
    assert r.status_code == 200, r.text
    assert r.text.split()[1] == f"{len(my_list)},{int(np.sum(my_list['my_id']))}"


def test_upload_columns_keep_their_units(tap, my_list):
    got = tap.search("SELECT TOP 3 ra, my_id FROM TAP_UPLOAD.mine", uploads={"mine": my_list}).to_table()
    assert str(got["ra"].unit) == "deg"


def test_async_upload(tap, schema, release_con, my_list):
    job = tap.submit_job(f"SELECT t.my_id, c.source_id FROM TAP_UPLOAD.mine AS t JOIN {schema}.catalogue AS c "
                         "ON 1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 1.2/3600.))",
                         uploads={"mine": my_list})
    job.run().wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    assert job.phase == "COMPLETED"
    got = job.fetch_result().to_table()
    assert {(int(a), int(b)) for a, b in zip(got["my_id"], got["source_id"])} == \
        _pairs_by_astropy(release_con, my_list, 1.2)
    job.delete()


def test_upload_errors_are_one_line(client, schema):
    def sync(data, files=None):
        r = client.post("/tap/sync", data={"QUERY": "SELECT * FROM TAP_UPLOAD.t", **data}, files=files)
        vot = _votable(r.content)
        message = [i.content for i in vot.resources[0].infos if i.name == "QUERY_STATUS"][0]
        return r.status_code, message

    for url in ("http://127.0.0.1:9/list.xml", "http://10.0.0.1/x.vot", "http://[::1]/x", "http://169.254.169.254/"):
        status, message = sync({"UPLOAD": f"t,{url}"})
        assert status == 400 and "private or local address" in message, (url, message)
    status, message = sync({"UPLOAD": "t,ftp://example.org/x"})
    assert status == 400 and "http(s) URL" in message
    status, message = sync({"UPLOAD": "t,param:missing"}, files={"other": ("o", b"a,b\n1,2\n")})
    assert status == 400 and "missing" in message
    status, message = sync({"UPLOAD": "1t,param:f"}, files={"f": ("f", b"a\n1\n")})
    assert status == 400 and "plain name" in message
    status, message = sync({"UPLOAD": "t,param:f"}, files={"f": ("f", b"<VOTABLE><broken")})
    assert status == 400 and "cannot be read" in message
    # another request's upload is not there
    status, message = sync({})
    assert status == 400 and "unknown" in message.lower()


def test_upload_row_limit(holder, limits, schema):
    from dataclasses import replace

    import httpx

    from stellardb.service.app import create_app

    small = replace(limits, max_upload_rows_sync=10)
    url, stop = start_server(create_app(holder, small))
    try:
        data = "ra,dec\n" + "1.0,2.0\n" * 11
        r = httpx.post(f"{url}/tap/sync", data={"QUERY": "SELECT COUNT(*) AS n FROM TAP_UPLOAD.t",
                                                "UPLOAD": "t,param:f"}, files={"f": ("f", data.encode())})
        assert r.status_code == 400 and "11 rows" in r.text and "/tap/async" in r.text
    finally:
        stop()


def test_upload_by_url(holder, limits, my_list, tmp_path):
    """TAP 1.1's upload by reference; a local host is allowed only where the service says so."""
    import functools
    import http.server
    import threading
    from dataclasses import replace

    import httpx
    from astropy.io.votable import from_table, writeto

    from stellardb.service.app import create_app

    writeto(from_table(my_list), str(tmp_path / "mine.xml"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{files.server_address[1]}/mine.xml"
    url, stop = start_server(create_app(holder, replace(limits, upload_from_private_hosts=True)))
    try:
        r = httpx.post(f"{url}/tap/sync", data={"QUERY": "SELECT COUNT(*) AS n FROM TAP_UPLOAD.t",
                                                "UPLOAD": f"t,{address}", "RESPONSEFORMAT": "csv"})
        assert r.status_code == 200 and r.text.split()[1] == str(len(my_list))
        missing = httpx.post(f"{url}/tap/sync", data={"QUERY": "SELECT COUNT(*) AS n FROM TAP_UPLOAD.t",
                                                      "UPLOAD": f"t,{address}.gone"})
        assert missing.status_code == 400 and "HTTP 404" in missing.text
    finally:
        stop()
        files.shutdown()


def test_best_match_keeps_the_nearest_partner_of_each_row(tap, schema, release_con, my_list):
    """BEST_MATCH (stellardb's extension): per upload row, the nearest star within the radius
    (astropy's match_to_catalog_sky is the judge); LEFT JOIN keeps the unmatched rows once."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    radius = 60.0  # arcsec
    stars = release_con.execute("select source_id, ra, dec from catalogue").df()
    everyone = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg)
    # rows between two stars closer than the radius: real choices (plus my_list's own rows)
    a, b, _, _ = everyone.search_around_sky(everyone, radius * u.arcsec)
    a, b = a[a < b], b[a < b]
    rng = np.random.default_rng(5)
    share = rng.uniform(0.2, 0.8, len(a))
    between = SkyCoord(everyone.cartesian[a] * share + everyone.cartesian[b] * (1 - share))
    from astropy.table import Table, vstack

    my_list = vstack([my_list, Table({"my_id": np.arange(len(a)) + 10_000, "ra": between.ra.deg,
                                      "dec": between.dec.deg})])
    got = tap.search(f"SELECT t.my_id, c.source_id, c.upload_sep_arcsec FROM TAP_UPLOAD.mine AS t LEFT JOIN "
                     f"{schema}.catalogue AS c ON 1 = BEST_MATCH(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, "
                     f"{radius}/3600.))", uploads={"mine": my_list}, maxrec=100_000).to_table()
    mine = SkyCoord(np.asarray(my_list["ra"]) * u.deg, np.asarray(my_list["dec"]) * u.deg)
    index, sep, _ = mine.match_to_catalog_sky(everyone)
    want = {int(i): int(stars.source_id[j]) for i, j, s in zip(my_list["my_id"], index, sep.arcsec) if s <= radius}
    several = len(_pairs_by_astropy(release_con, my_list, radius)) - len(want)
    assert several > 20  # the radius makes real choices
    rows = {int(i): (None if np.ma.is_masked(s) else int(s)) for i, s in zip(got["my_id"], got["source_id"])}
    assert len(got) == len(my_list) == len(rows)  # each row once
    assert {i: s for i, s in rows.items() if s is not None} == want
    matched = ~np.ma.getmaskarray(got["upload_sep_arcsec"])
    assert float(np.max(np.asarray(got["upload_sep_arcsec"])[matched])) <= radius


def test_best_match_is_refused_where_it_cannot_run(client, schema):
    for query in (f"SELECT source_id FROM {schema}.gaia WHERE 1 = BEST_MATCH(POINT(ra, dec), CIRCLE(10, -30, 1))",
                  f"SELECT BEST_MATCH(POINT(ra, dec), CIRCLE(10, -30, 1)) AS b FROM {schema}.gaia"):
        r = client.get("/tap/sync", params={"QUERY": query})
        assert r.status_code == 400 and "BEST_MATCH" in r.text and "TAP_UPLOAD" in r.text


def test_upload_epoch_moves_the_stars_with_their_proper_motions(tap, schema, release_con):
    """An upload column ``epoch`` (Julian years): the catalogue's stars are moved to it before the
    match.  Rows made from stars seen in 2000.0 (propagated with stellardb's own astrometry, then
    moved by < 0.2 arcsec) all find their star at 0.5 arcsec; without the epoch the fast movers
    are lost.  The pairs equal astropy's on the positions propagated to 2000.0."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    import astropy.units as u

    from stellardb.catalog.astrometry import propagate

    stars = release_con.execute(
        "(select source_id, ra, dec, pmra, pmdec from gaia where pmra is not null "
        " order by pmra * pmra + pmdec * pmdec desc limit 100) union all "
        "(select source_id, ra, dec, pmra, pmdec from gaia where pmra is not null order by source_id limit 100)").df()
    ra, dec = propagate(stars.ra.to_numpy(), stars.dec.to_numpy(), stars.pmra.to_numpy(), stars.pmdec.to_numpy(),
                        2000.0 - 2016.0)
    rng = np.random.default_rng(3)
    seen = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(rng.uniform(0, 2 * np.pi, len(ra)) * u.rad,
                                                                   rng.uniform(0, 0.2, len(ra)) * u.arcsec)
    table = Table({"my_id": np.arange(len(ra)), "ra": seen.ra.deg, "dec": seen.dec.deg,
                   "epoch": np.full(len(ra), 2000.0)})
    fast = np.hypot(stars.pmra, stars.pmdec).to_numpy() * 16 / 1000 > 1.0
    assert fast.sum() > 20
    query = (f"SELECT t.my_id, c.source_id FROM TAP_UPLOAD.mine AS t JOIN {schema}.gaia AS c "
             "ON 1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 0.5/3600.))")
    got = tap.search(query, uploads={"mine": table}, maxrec=100_000).to_table()
    pairs = {(int(a), int(b)) for a, b in zip(got["my_id"], got["source_id"])}
    assert {(i, int(s)) for i, s in enumerate(stars.source_id)} <= pairs
    everyone = release_con.execute("select source_id, ra, dec, pmra, pmdec from gaia").df()
    then = propagate(everyone.ra.to_numpy(), everyone.dec.to_numpy(), everyone.pmra.to_numpy(),
                     everyone.pmdec.to_numpy(), 2000.0 - 2016.0)
    i, j, _, _ = SkyCoord(then[0] * u.deg, then[1] * u.deg).search_around_sky(seen, 0.5 * u.arcsec)
    assert pairs == {(int(a), int(everyone.source_id[b])) for a, b in zip(i, j)}
    # without the epoch column the same positions are compared with the stars of 2016.0
    still = tap.search(query, uploads={"mine": table[["my_id", "ra", "dec"]]}, maxrec=100_000).to_table()
    found = set(int(a) for a in still["my_id"])
    assert not any(int(k) in found for k in np.flatnonzero(fast))


@pytest.mark.parametrize("find", ["all", "best"])
def test_stilts_tapskymatch_of_100k_rows_gives_the_pairs_of_astropy(live_url, schema, release_con, stilts, tmp_path,
                                                                    find):
    """STILTS tapskymatch (TOPCAT's engine) sends a 100,000-row list in blocks as uploads and
    matches each block with ADQL; its pairs are astropy's (all pairs, or each row's nearest)."""
    import subprocess

    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    import astropy.units as u

    stars = release_con.execute("select source_id, ra, dec from catalogue").df()
    rng = np.random.default_rng(11)
    pick = rng.integers(0, len(stars), 100_000)
    near = SkyCoord(stars.ra.to_numpy()[pick] * u.deg, stars.dec.to_numpy()[pick] * u.deg).directional_offset_by(
        rng.uniform(0, 2 * np.pi, len(pick)) * u.rad, rng.uniform(0, 3, len(pick)) * u.arcsec)
    mine = Table({"my_id": np.arange(len(pick)), "ra": near.ra.deg, "dec": near.dec.deg})
    mine.write(tmp_path / "mine.fits")
    out = tmp_path / "pairs.csv"
    run = subprocess.run(
        [stilts, "tapskymatch", f"in={tmp_path / 'mine.fits'}", "inlon=ra", "inlat=dec", f"tapurl={live_url}/tap",
         f"taptable={schema}.catalogue", "taplon=ra", "taplat=dec", "tapcols=source_id", "sr=0.000556",
         f"find={find}", "blocksize=20000", "blockmaxrec=100000", "sync=true", "ocmd=keepcols 'my_id source_id'", "ofmt=csv",
         f"out={out}"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    got = Table.read(out, format="ascii.csv")
    pairs = {(int(a), int(b)) for a, b in zip(got["my_id"], got["source_id"])}
    everyone = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg)
    radius = 0.000556 * 3600
    if find == "all":
        i, j, _, _ = everyone.search_around_sky(near, radius * u.arcsec)
        want = {(int(a), int(stars.source_id[b])) for a, b in zip(i, j)}
    else:
        index, sep, _ = near.match_to_catalog_sky(everyone)
        want = {(int(a), int(stars.source_id[b])) for a, b, s in zip(mine["my_id"], index, sep.arcsec)
                if s <= radius}
    assert len(want) > 60_000 and pairs == want and len(got) == len(want)


def test_stilts_tapquery_async_with_an_upload(live_url, schema, release_con, stilts, tmp_path, my_list):
    """STILTS tapquery in asynchronous mode (a UWS job it creates, polls, reads and deletes)."""
    import subprocess

    from astropy.table import Table

    my_list.write(tmp_path / "mine.vot", format="votable")
    out = tmp_path / "out.csv"
    run = subprocess.run(
        [stilts, "tapquery", f"tapurl={live_url}/tap", "sync=false", "delete=finished",
         f"adql=SELECT t.my_id, c.source_id FROM TAP_UPLOAD.mine AS t JOIN {schema}.catalogue AS c "
         "ON 1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 1.2/3600.))",
         "nupload=1", f"upload1={tmp_path / 'mine.vot'}", "upname1=mine", "ofmt=csv", f"out={out}"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    got = Table.read(out, format="ascii.csv")
    assert {(int(a), int(b)) for a, b in zip(got["my_id"], got["source_id"])} == \
        _pairs_by_astropy(release_con, my_list, 1.2)


# --- what the review found (each failed before its fix) ---------------------------------------

def _sync_error(client, query: str, data: bytes, name: str = "t") -> tuple[int, str]:
    r = client.post("/tap/sync", data={"QUERY": query, "UPLOAD": f"{name},param:f"}, files={"f": ("f", data)})
    if r.status_code == 200:
        return 200, r.text
    vot = _votable(r.content)
    return r.status_code, [i.content for i in vot.resources[0].infos if i.name == "QUERY_STATUS"][0]


@pytest.mark.parametrize("href", ["file:///etc/passwd", "http://127.0.0.1:9/secret"])
def test_a_votable_stream_elsewhere_is_refused(client, tmp_path, href):
    """astropy opens a STREAM's href itself: a file of the server, or a URL of its network."""
    votable = f"""<?xml version="1.0"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>
<FIELD name="line" datatype="char" arraysize="40"/>
<DATA><BINARY><STREAM href="{href}"/></BINARY></DATA></TABLE></RESOURCE></VOTABLE>""".encode()
    status, message = _sync_error(client, "SELECT * FROM TAP_UPLOAD.t", votable)
    assert status == 400 and "href" in message and "root:" not in message


def test_a_small_parquet_that_decompresses_to_gigabytes_is_refused_unread(client, holder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stellardb.service import upload

    buffer = io.BytesIO()
    # 30 M equal values: a few hundred KB on disk, 240 MB in memory; refused by its row count unread
    pq.write_table(pa.table({"x": pa.repeat(pa.scalar(1.0), 30_000_000)}), buffer, compression="zstd")
    assert len(buffer.getvalue()) < 2_000_000
    status, message = _sync_error(client, "SELECT COUNT(*) AS n FROM TAP_UPLOAD.t", buffer.getvalue())
    assert status == 400 and "30,000,000 rows" in message
    # within the row limit but larger than the decompressed limit: refused by the row groups' sizes
    with pytest.raises(upload.UploadError, match="decompressed"):
        old = upload.MAX_DECOMPRESSED_BYTES
        upload.MAX_DECOMPRESSED_BYTES = 1_000_000
        try:
            upload.read("t", buffer.getvalue(), 10 ** 9)
        finally:
            upload.MAX_DECOMPRESSED_BYTES = old


def test_a_csv_with_a_huge_header_is_refused_before_parsing(client):
    status, message = _sync_error(client, "SELECT 1 AS x FROM TAP_UPLOAD.t",
                                  (",".join(f"c{i}" for i in range(100_000)) + "\n").encode())
    assert status == 400 and "columns" in message


@pytest.mark.parametrize("epoch, said", [("-1e12", "between 1900 and 2100"), ("1e9", "between 1900 and 2100"),
                                         ("abc", "as numbers")])
def test_an_upload_epoch_must_be_a_julian_year(client, schema, epoch, said):
    data = f"ra,dec,epoch\n10.0,-30.0,{epoch}\n10.1,-30.1,2000.0\n".encode()
    status, message = _sync_error(client, f"SELECT t.ra, c.source_id FROM TAP_UPLOAD.t AS t JOIN {schema}.gaia AS c "
                                          "ON 1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 5/3600.))", data)
    assert status == 400 and said in message


def test_upload_names_cannot_inject_sql(client, schema, release_con):
    """An upload's column and correlation names go into SQL the translator writes itself: quoted."""
    star = release_con.execute("select ra, dec, source_id from catalogue order by source_id limit 1").fetchone()
    evil = 'dec", "u"."dec") * 0 + CAST(current_setting(\'temp_directory\') AS INTEGER) + 0 * sky_x("u"."dec'
    data = f'ra,"{evil.replace(chr(34), chr(34) * 2)}"\n{star[0]!r},{star[1]!r}\n'.encode()
    query = (f'SELECT t.ra, c.source_id FROM TAP_UPLOAD.t AS "u"" x" JOIN {schema}.catalogue AS c ON '
             f'1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE("u"" x".ra, "u"" x"."{evil.replace(chr(34), chr(34) * 2)}", '
             '1/3600.))').replace("SELECT t.ra", 'SELECT "u"" x".ra')
    r = client.post("/tap/sync", data={"QUERY": query, "UPLOAD": "t,param:f", "RESPONSEFORMAT": "csv"},
                    files={"f": ("f", data)})
    assert r.status_code == 200, r.text
    assert r.text.split()[1].split(",")[1] == str(star[2]) and "tmp" not in r.text


def test_the_separation_column_is_the_tested_one_on_catalogue(tap, schema, release_con):
    """catalogue has its own xmatch_sep_arcsec (SkyMapper's): the join's is upload_sep_arcsec."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    import astropy.units as u

    stars = release_con.execute("select source_id, ra, dec from catalogue where xmatch_sep_arcsec is not null "
                                "order by source_id limit 20").df()
    moved = SkyCoord(stars.ra.to_numpy() * u.deg, stars.dec.to_numpy() * u.deg).directional_offset_by(
        0.3 * u.rad, 2.0 * u.arcsec)
    got = tap.search(f"SELECT t.my_id, c.source_id, c.upload_sep_arcsec, c.xmatch_sep_arcsec FROM TAP_UPLOAD.mine "
                     f"AS t JOIN {schema}.catalogue AS c ON 1 = BEST_MATCH(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, "
                     "3/3600.))", uploads={"mine": Table({"my_id": np.arange(20), "ra": moved.ra.deg,
                                                          "dec": moved.dec.deg})}).to_table()
    assert len(got) == 20
    np.testing.assert_allclose(np.asarray(got["upload_sep_arcsec"], dtype=float), 2.0, atol=1e-6)
    assert not np.allclose(np.asarray(got["xmatch_sep_arcsec"], dtype=float), 2.0)


def test_job_store_caps_and_settings_checked_before_a_job_is_made(holder, limits, schema, tmp_path):
    import xml.etree.ElementTree as ET
    from dataclasses import replace

    import httpx

    from stellardb.service.app import create_app

    small = replace(limits, max_jobs=2, job_list="none", max_upload_bytes=50_000)
    url, stop = start_server(create_app(holder, small, jobs_root=tmp_path / "jobs"))
    try:
        query = {"QUERY": f"SELECT TOP 1 source_id FROM {schema}.gaia"}
        bad = httpx.post(f"{url}/tap/async", data={**query, "EXECUTIONDURATION": "soon"})
        assert bad.status_code == 400 and not any((tmp_path / "jobs").iterdir())  # no job left behind
        made = [httpx.post(f"{url}/tap/async", data=query) for _ in range(2)]
        assert [r.status_code for r in made] == [303, 303]
        full = httpx.post(f"{url}/tap/async", data=query)
        assert full.status_code == 503 and "delete finished jobs" in full.text
        assert ET.fromstring(httpx.get(f"{url}/tap/async").content).findall("*") == []  # job_list=none
        # an upload past the limit is refused as it streams, not held in memory
        big = httpx.post(f"{url}/tap/sync", data={**query, "UPLOAD": "t,param:f"},
                         files={"f": ("f", b"ra,dec\n" + b"1.0,2.0\n" * 20_000)})
        assert big.status_code == 413 and "50,000 bytes" in big.text
    finally:
        stop()


def test_a_pid_used_again_does_not_keep_a_lost_job_running(tmp_path):
    """In a container the service is pid 1 at every start: the pid alone would look alive."""
    import os

    from stellardb.service import uws

    store = uws.JobStore(tmp_path, default_duration_s=60, max_duration_s=60, lifetime_s=3600)
    job = store.create("x", {"query": "SELECT 1 AS x"})
    store.update(job.id, phase="EXECUTING", pid=os.getpid(), pid_started="1")  # this pid, another process
    assert store.recover() == 1 and store.get(job.id).phase == "ERROR"
    alive = store.create("x", {"query": "SELECT 1 AS x"})
    store.update(alive.id, phase="EXECUTING", pid=os.getpid(), pid_started=uws.process_started(os.getpid()))
    assert store.recover() == 0 and store.get(alive.id).phase == "EXECUTING"


@pytest.mark.parametrize("reach_arcsec", [0.5, 1.0, 7.0, 60.0])
def test_a_point_within_the_reach_is_in_the_nine_cells(reach_arcsec):
    """The HEALPix cells of an upload match: for positions anywhere (crowded near the poles and the
    corners of the base pixels) and a point at exactly the reach in any direction, the point's pixel
    is the position's or one of its neighbours, at the order adql.cells_order picks."""
    import healpy

    from stellardb.service.adql import cells_order

    rng = np.random.default_rng(int(reach_arcsec * 10))
    n = 300_000
    z, phi = rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
    z[:100_000] = rng.uniform(0.995, 1, 100_000) * rng.choice([-1, 1], 100_000)
    z[100_000:200_000] = rng.choice([2 / 3, -2 / 3, 0], 100_000) + rng.uniform(-1e-4, 1e-4, 100_000)
    phi[100_000:200_000] = rng.choice(np.arange(8) * np.pi / 4, 100_000) + rng.uniform(-1e-4, 1e-4, 100_000)
    order = cells_order(reach_arcsec / 3600)
    nside = 2 ** order
    theta = np.arccos(np.clip(z, -1, 1))
    v = np.asarray(healpy.ang2vec(theta, phi)).T
    east = np.cross(v.T, [0.0, 0.0, 1.0]).T
    norm = np.linalg.norm(east, axis=0)
    east /= np.maximum(norm, 1e-12)
    north = np.cross(v.T, east.T).T
    angle, r = rng.uniform(0, 2 * np.pi, n), np.radians(reach_arcsec / 3600)
    q = v * np.cos(r) + (east * np.cos(angle) + north * np.sin(angle)) * np.sin(r)
    own = healpy.ang2pix(nside, theta, phi, nest=True)
    near = healpy.vec2pix(nside, q[0], q[1], q[2], nest=True)
    inside = (near == own) | (healpy.get_all_neighbours(nside, own, nest=True) == near).any(axis=0)
    assert inside[norm > 1e-9].all() and order >= 6


def test_the_fast_tabledata_reader_reads_what_astropy_reads():
    """Plain TABLEDATA is read as delimited text (stellardb.service.upload._tabledata); the same
    document read by astropy gives the same columns, values, NULLs and metadata."""
    from stellardb.service import upload

    votable = b"""<?xml version="1.0" encoding="utf-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE type="results"><TABLE>
<FIELD name="id" datatype="long" ucd="meta.id"/>
<FIELD name="RA" datatype="double" unit="deg" ucd="pos.eq.ra"><DESCRIPTION>right ascension</DESCRIPTION></FIELD>
<FIELD name="mag" datatype="float" unit="mag"/>
<FIELD name="name" datatype="char" arraysize="*"/>
<FIELD name="ok" datatype="boolean"/>
<FIELD name="seen" datatype="char" arraysize="*" xtype="timestamp"/>
<DATA><TABLEDATA>
<TR><TD>1</TD><TD>10.5</TD><TD>12.25</TD><TD>alpha Cen A</TD><TD>T</TD><TD>2020-01-02T03:04:05</TD></TR>
<TR>
  <TD>2</TD>
  <TD>NaN</TD>
  <TD></TD>
  <TD/>
  <TD>F</TD>
  <TD></TD>
</TR>
<TR><TD/><TD>359.999999999999</TD><TD>-1e-3</TD><TD>x  y</TD><TD></TD><TD>2021-12-31T23:59:59.5</TD></TR>
</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"""
    fast = upload._tabledata(votable)
    assert fast is not None
    slow = upload._votable(votable.replace(b"<TR><TD>1</TD>", b"<TR><TD>1<!-- astropy --></TD>"))  # not plain
    assert fast[0].column_names == slow[0].column_names == ["id", "RA", "mag", "name", "ok", "seen"]
    assert fast[0].to_pylist() == slow[0].to_pylist()
    assert fast[1] == slow[1] and fast[1]["ra"].unit == "deg" and fast[1]["ra"].description == "right ascension"
    # what is not plain is left to astropy
    assert upload._tabledata(votable.replace(b"alpha Cen A", b"alpha &amp; beta")) is None
    assert upload._tabledata(votable.replace(b'datatype="long"', b'datatype="long" arraysize="2"')) is None


@pytest.mark.parametrize("spread_deg, reach_arcsec", [(0.4, 1.0), (3.0, 30.0), (0.01, 60.0)])
def test_upload_coverage_holds_every_star_within_reach(spread_deg, reach_arcsec):
    """The HEALPix ranges an upload's join reads: found for a small scattered list (coarser pixels
    until few ranges), and they hold every point within the reach of a row (here: points at
    exactly the reach around each row, and random points near the list, judged by astropy)."""
    import healpy
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    from stellardb.service.upload import _coverage

    rng = np.random.default_rng(int(spread_deg * 100))
    ra, dec = 150 + rng.uniform(0, spread_deg, 50), -45 + rng.uniform(0, spread_deg, 50)
    ranges = _coverage(ra, dec, reach_arcsec)
    assert ranges is not None and len(ranges) <= 128
    rows = SkyCoord(ra * u.deg, dec * u.deg)
    edge = rows[np.repeat(np.arange(50), 40)].directional_offset_by(
        np.tile(np.linspace(0, 2 * np.pi, 40), 50) * u.rad, reach_arcsec * 0.999 * u.arcsec)
    around = SkyCoord((150 + rng.uniform(-0.2, spread_deg + 0.2, 20000)) * u.deg,
                      (-45 + rng.uniform(-0.2, spread_deg + 0.2, 20000)) * u.deg)
    _, sep, _ = around.match_to_catalog_sky(rows)
    points = SkyCoord([*edge.ra.deg, *around.ra.deg[sep.arcsec <= reach_arcsec]] * u.deg,
                      [*edge.dec.deg, *around.dec.deg[sep.arcsec <= reach_arcsec]] * u.deg)
    index = healpy.ang2pix(2 ** 29, points.ra.deg, points.dec.deg, nest=True, lonlat=True)
    lo, hi = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
    inside = ((index[:, None] >= lo[None, :]) & (index[:, None] <= hi[None, :])).any(axis=1)
    assert inside.all()
    assert _coverage(rng.uniform(0, 360, 5000), rng.uniform(-90, 90, 5000), 1.0) is None  # the whole sky


def test_jobs_run_in_threads_of_lower_priority_on_a_one_thread_duckdb(service_db, service_release, monkeypatch):
    """serve runs asynchronous jobs on a DuckDB of their own with one thread, in pool threads of
    niceness 10: a query runs wholly in its job's thread, and pages and cones get the CPU first."""
    import os
    import threading

    from stellardb.service import server, uws

    monkeypatch.setenv("STELLARDB_SERVE_JOBS", str(service_db.parent / "jobs-priority"))
    holder, _, _ = server.build(service_db, "svc-1", service_release[0])
    try:
        jobs = holder.companions[0]
        with jobs.lease() as served:
            assert served.execute("select current_setting('threads') as t", 10).to_pylist() == [{"t": 1}]
        with holder.lease() as served:
            assert served.execute("select current_setting('threads') as t", 10).to_pylist()[0]["t"] > 1 or \
                os.cpu_count() == 1
    finally:
        holder.close()
    seen = []
    worker = threading.Thread(target=lambda: (uws._lower_priority(),
                                              seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))))
    worker.start()
    worker.join()
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0) + uws.JOB_NICENESS] or seen == [19]


def test_upload_join_on_other_columns_and_radius_zero(client, schema, release_con):
    """A join on columns other than the table's own position (its HEALPix index is of ra/dec, of no
    use there) and a radius of 0 (exact positions) are still crossmatches with the right rows."""
    stars = release_con.execute("select source_id, ra, dec, l, b from catalogue order by source_id limit 40").fetchall()

    def pairs(columns: str, on: str) -> set:
        data = (f"my_id,{columns}\n" + "".join(f"{i},{s[3 if columns == 'gl,gb' else 1]!r},"
                                               f"{s[4 if columns == 'gl,gb' else 2]!r}\n"
                                               for i, s in enumerate(stars))).encode()
        r = client.post("/tap/sync", data={"QUERY": f"SELECT t.my_id, c.source_id FROM TAP_UPLOAD.t AS t JOIN "
                                                    f"{schema}.catalogue AS c ON {on}", "UPLOAD": "t,param:f",
                                           "RESPONSEFORMAT": "csv", "MAXREC": 1000}, files={"f": ("f", data)})
        assert r.status_code == 200, r.text
        return {tuple(int(v) for v in line.split(",")) for line in r.text.split()[1:]}

    want = {(i, s[0]) for i, s in enumerate(stars)}
    assert pairs("gl,gb", "1 = CONTAINS(POINT(c.l, c.b), CIRCLE(t.gl, t.gb, 1/3600.))") >= want
    assert pairs("ra,dec", "1 = CONTAINS(POINT(c.ra, c.dec), CIRCLE(t.ra, t.dec, 0))") == want


def test_job_caps_hold_under_concurrent_creates(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from stellardb.service import uws

    store = uws.JobStore(tmp_path, default_duration_s=60, max_duration_s=60, lifetime_s=3600, max_jobs=5)

    def make(_):
        try:
            store.create("x", {"query": "SELECT 1 AS x"}, {"f": b"x" * 100_000})
            return True
        except uws.JobError:
            return False

    with ThreadPoolExecutor(20) as pool:
        made = sum(pool.map(make, range(40)))
    assert made == 5 and store.usage()[0] == 5
