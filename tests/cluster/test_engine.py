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


def test_a_task_makes_its_folders_only_while_its_run_lives(tmp_path):
    """A task still running when its run ended (Dask cancels, but cannot stop, a running task) must
    not make the run's folders again: they would lack the marker, and no run would sweep them."""
    work = engine.scratch_folder(tmp_path / ".x.work-1")
    spill = work / "spill"
    made = engine.task_folder(tmp_path / ".x.partial-1" / "x" / "dataset" / "Norder=1", spill)
    assert made.is_dir() and engine.task_folder(spill, spill).is_dir()
    import shutil

    shutil.rmtree(work)
    with pytest.raises(RuntimeError, match="run has ended"):
        engine.task_folder(spill, spill)
    with pytest.raises(RuntimeError, match="run has ended"):
        engine.task_folder(tmp_path / ".x.partial-2" / "dataset", spill)
    assert not work.exists() and not (tmp_path / ".x.partial-2").exists()


def test_a_run_takes_its_scratch_folder_away_before_deleting_anything(tmp_path, monkeypatch):
    """The run's cleanup renames its scratch folder first, so that a task still running fails
    (engine.task_folder) while the half-written result is being deleted, instead of making it again."""
    import shutil
    import socket

    work = engine.scratch_folder(tmp_path / ".x.work-1")
    partial = engine.scratch_folder(tmp_path / ".x.partial-1")
    (work / "spill").mkdir()
    (partial / "x" / "dataset").mkdir(parents=True)
    seen = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        # a late task, at the moment the cleanup deletes the first folder
        try:
            engine.task_folder(partial / "x" / "dataset" / "Norder=2", work / "spill")
            seen.append("made")
        except RuntimeError:
            seen.append("refused")
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    engine.remove_run_folders(work, partial)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert seen and set(seen) == {"refused"}, seen
    assert list(tmp_path.iterdir()) == []
    # a cleanup cut short (the process killed): the renamed folder keeps a name and marker the sweep knows
    ended = tmp_path / ".x.ended.work-2"
    ended.mkdir()
    (ended / engine.MARKER).write_text(f"{socket.gethostname()} 999999999\n")
    engine.sweep_leftovers(tmp_path)
    assert not ended.exists()
