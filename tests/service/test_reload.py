"""A new `latest` is served without a restart; queries running on the old release finish on it;
a broken new release leaves the old one in service; every answer names its release."""

from __future__ import annotations

import time

import duckdb
import pytest

from stellardb.release import layout
from stellardb.release.writer import write_release
from stellardb.service.app import Limits, create_app
from stellardb.service.served import Holder

from .conftest import MAX_ROWS


def _wait_for(predicate, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def two_releases(service_db, tmp_path):
    root = tmp_path / "releases"
    write_release(service_db, "r-a", out=root, max_rows=MAX_ROWS)
    return root


def test_a_new_latest_is_served_and_the_old_one_finishes_its_queries(service_db, two_releases):
    from starlette.testclient import TestClient

    root = two_releases
    holder = Holder(root, "latest")
    client = TestClient(create_app(holder, Limits()))
    assert client.get("/tap/availability").headers["X-Stellardb-Release"] == "r-a"
    old = holder.get()
    n_old = old.execute("select count(*) from gaia", 10)[0][0].as_py()
    with old.lease():  # a query running on r-a while r-b is published
        write_release(service_db, "r-b", out=root, max_rows=MAX_ROWS)
        assert _wait_for(lambda: holder.get().name == "r-b"), "the new latest was not picked up"
        # the running query's release is still open and answers
        assert old.execute("select count(*) from gaia", 10)[0][0].as_py() == n_old
    # ... and is closed once its last query has finished
    with pytest.raises(duckdb.ConnectionException):
        old.con.execute("select 1")
    r = client.get("/tap/sync", params={"QUERY": "SELECT COUNT(*) AS n FROM r_b.gaia"})
    assert r.status_code == 200 and r.headers["X-Stellardb-Release"] == "r-b"
    assert 'name="release" value="r-b"' in r.text
    # the old schema name is gone with its release, and the error says which tables there are
    gone = client.get("/tap/sync", params={"QUERY": "SELECT COUNT(*) FROM r_a.gaia"})
    assert gone.status_code == 400 and "r_a" in gone.text
    holder.close()


def test_a_named_release_is_not_switched(service_db, two_releases):
    root = two_releases
    holder = Holder(root, "r-a")
    write_release(service_db, "r-c", out=root, max_rows=MAX_ROWS)
    time.sleep(0.6)
    assert holder.get().name == "r-a" and not holder.follows_latest
    holder.close()


def test_a_broken_new_release_leaves_the_old_one_serving(two_releases):
    from starlette.testclient import TestClient

    root = two_releases
    holder = Holder(root, "latest")
    client = TestClient(create_app(holder, Limits()))
    broken = root / "r-broken"
    broken.mkdir()
    (broken / layout.MANIFEST).write_text('{"name": "r-broken", "catalogues": {"gaia": {}}}')
    layout.point_latest(root, "r-broken")
    assert _wait_for(lambda: (holder.get() and holder.load_error is not None))
    assert holder.get().name == "r-a"
    availability = client.get("/tap/availability")
    assert "r-a" in availability.text and "could not be opened" in availability.text
    assert str(root) not in availability.text  # no local paths
    assert client.get("/tap/sync", params={"QUERY": "SELECT TOP 1 source_id FROM gaia"}).status_code == 200
    holder.close()
