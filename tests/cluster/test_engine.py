"""stellardb.cluster.engine.run_tasks: the order tasks run in (issue 16's 2-worker speed-up)."""

from __future__ import annotations

import threading
import time

import pytest

from stellardb.cluster import engine

distributed = pytest.importorskip("distributed")

#: keys in the order their tasks started (the cluster runs in this process: processes=False)
STARTED, LOCK = [], threading.Lock()


def work(task):
    with LOCK:
        STARTED.append(task["key"])
    time.sleep(0.02)
    return task["key"] * 2


def test_the_largest_tasks_run_first():
    """With sizes, tasks start largest first (ties in the given order), so no large partition runs
    alone at the end; without, in the given order.  One worker thread, so the start order is the
    scheduler's order."""
    STARTED.clear()
    sizes = {"a": 5, "b": 50, "c": 1, "d": 20, "e": 50, "f": 7}
    tasks = {key: {"key": key} for key in sizes}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = engine.run_tasks(client, work, tasks, "test", sizes=sizes)
        assert got == {key: key * 2 for key in sizes}
        assert STARTED == ["b", "e", "d", "f", "a", "c"]
        STARTED.clear()
        engine.run_tasks(client, work, tasks, "test-unsized")
        assert STARTED == list(sizes)
