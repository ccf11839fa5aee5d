"""The service over a release of the 40k-star simulated sky, made once per session.

``client``: Starlette's in-process client (fast; no sockets).  ``live_url``: the same app on
uvicorn on a free loopback port, for the real clients (pyvo, STILTS taplint) and for tests
that need real concurrency.  Tests must not change the release.
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings

import pytest

from stellardb.release.writer import write_release

from ..release.conftest import add_predictions

#: small partitions, so the sky is cut at several HEALPix orders and cones cross partitions
MAX_ROWS = 3000
#: the service's time limit in tests: long enough for any honest query on 40k stars on a busy
#: CI machine, short enough that the hostile ones are cut off quickly
TIMEOUT_S = 20.0


@pytest.fixture(scope="session")
def service_db(sky_db_path, tmp_path_factory):
    """The simulated sky with predictions of model m1 (tests must not change it)."""
    db = tmp_path_factory.mktemp("service_db") / "sky.duckdb"
    shutil.copy(sky_db_path, db)
    add_predictions(db)
    return db


@pytest.fixture(scope="session")
def service_release(service_db):
    """(releases root, release folder) of release ``svc-1``."""
    result = write_release(service_db, "svc-1", max_rows=MAX_ROWS)
    return result.path.parent, result.path


#: row groups of the `grouped` release: DuckDB's least (the service's are 20,000: one per partition
#: file of the test sky), so that a lookup has to pick row groups
SMALL_GROUPS = 2048


@pytest.fixture(scope="session")
def grouped(service_db, tmp_path_factory):
    """(Served, DuckDB on its files) of a release of the test sky with SMALL_GROUPS-row row groups and
    partitions of up to 40k rows (up to several row groups a file)."""
    from stellardb.release import reader, writer
    from stellardb.service.served import open_release

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer, "ROW_GROUP_ROWS", SMALL_GROUPS)
        result = writer.write_release(service_db, "groups-1", out=tmp_path_factory.mktemp("groups"),
                                      max_rows=40_000)
    served = open_release(result.path, memory_limit="1GB")
    con = reader.connect(result.path)
    yield served, con
    con.close()
    served.retire()


@pytest.fixture(scope="session")
def limits():
    from stellardb.service.app import Limits

    return Limits(timeout_s=TIMEOUT_S, maxrec_default=10_000, maxrec_limit=100_000, max_queries=32,
                  max_request_bytes=200_000)


@pytest.fixture(scope="session")
def holder(service_release, tmp_path_factory):
    """The service's release holder as `serve` makes it by default: with the cone cache (its copies
    made before any test runs, so pyvo, taplint and the other clients get cones from them; the
    Parquet path is tests/service/test_rowgroups.py's, and test_mirror.py compares the two)."""
    from stellardb.service.served import Holder

    root, _ = service_release
    held = Holder(root, "svc-1", memory_limit="1GB", cache=tmp_path_factory.mktemp("serve-cache"))
    assert held.current.mirror.join(120) and held.current.mirror.status().endswith("files ready"), \
        held.current.mirror.status()
    yield held
    held.close()


@pytest.fixture(scope="session")
def app(holder, limits):
    from stellardb.service.app import create_app

    return create_app(holder, limits)


@pytest.fixture(scope="session")
def client(app):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note on httpx versions
        from starlette.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def release_con(service_release):
    """DuckDB on the same release, straight (stellardb query --release): the independent answer."""
    from stellardb.release import reader

    con = reader.connect(service_release[1])
    yield con
    con.close()


def start_server(app):
    """(base URL, stop) of ``app`` on uvicorn on a free loopback port, in a thread."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop():
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="session")
def live_url(app):
    url, stop = start_server(app)
    yield url
    stop()


@pytest.fixture(scope="session")
def tap(live_url):
    """pyvo's TAP client on the live service."""
    import pyvo

    return pyvo.dal.TAPService(f"{live_url}/tap")


@pytest.fixture(scope="session")
def schema(holder):
    """The release's ADQL schema name."""
    return holder.current.schema
