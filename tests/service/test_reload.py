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


def test_a_release_that_failed_to_open_is_tried_again(service_db, two_releases, monkeypatch):
    """`latest` moved to a folder that is not (yet) a release, then the release appears there: it is
    picked up after RETRY_S, not never."""
    from stellardb.service import served as served_module

    monkeypatch.setattr(served_module, "RETRY_S", 0.3)
    root = two_releases
    holder = Holder(root, "latest")
    (root / "r-late").mkdir()
    layout.point_latest(root, "r-late")
    assert _wait_for(lambda: (holder.get() and holder.load_error is not None))
    (root / "r-late").rmdir()
    write_release(service_db, "r-late", out=root, max_rows=MAX_ROWS)
    assert _wait_for(lambda: holder.get().name == "r-late"), holder.load_error
    assert holder.load_error is None
    holder.close()


def test_a_retired_release_is_never_leased(two_releases):
    """Holder.lease takes and holds the release in one step: once retired (a switch), a release is
    not handed out again, so a request never runs on a closed connection."""
    holder = Holder(two_releases, "latest")
    old = holder.current
    with holder.lease() as served:
        assert served is old
    old.retire()
    assert not old._acquire()
    with pytest.raises(RuntimeError):
        with old.lease():
            pass
