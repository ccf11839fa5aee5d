"""The Dask side of a cluster run: a client (a scheduler's, or a local cluster of worker
processes), tasks submitted one per partition with Dask's own retries, progress per
partition, and the per-worker memory budget.

Nothing here schedules or moves data itself: Dask (``distributed``) does.  Each task is a
plain function of a small, picklable description of its partition; it reads its files with
an in-process DuckDB and writes its result file itself, so a retried task overwrites the
same file with the same rows (exactly once, whichever attempt finished).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass

from stellardb.errors import UserError

#: memory per worker when neither --memory-per-worker nor STELLARDB_MEMORY_LIMIT says
DEFAULT_BUDGET = "2GB"
#: Dask's retries of a task whose worker died or that raised (not a UserError: that is final)
RETRIES = 3
#: share of the worker's budget DuckDB may use inside a task (the rest: Arrow buffers, Python)
DUCKDB_SHARE = 0.5
#: what a worker holds before any data: Python, DuckDB, Arrow and Dask
WORKER_BASE_BYTES = 400 * 2**20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*$", re.IGNORECASE)
_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, option: str = "--memory-per-worker") -> int:
    match = _SIZE.match(str(text))
    if not match:
        raise UserError(f"{option} {text!r} is not a memory size; use a value like 2GB or 500MB.")
    size = int(float(match[1]) * _UNITS[match[2].lower()])
    if size < 10**9:
        # a worker holds WORKER_BASE_BYTES (about 400 MB) before any data, and Dask pauses
        # a worker at 80 % of its limit
        raise UserError(f"{option} {text} is too small: a worker needs at least 1GB (Python, DuckDB, Arrow and "
                        "Dask take about 400 MB before any data).")
    return size


@dataclass(frozen=True)
class Budget:
    """Memory per worker, and what a task's DuckDB may take of it."""
    worker_bytes: int

    @property
    def duckdb_bytes(self) -> int:
        return int(self.worker_bytes * DUCKDB_SHARE)

    @property
    def duckdb_limit(self) -> str:
        return f"{max(1, self.duckdb_bytes // 2**20)}MiB"


@contextlib.contextmanager
def client(scheduler: str | None, workers: int | None, budget: Budget, scratch: str):
    """A Dask client: connected to ``scheduler`` (an address such as tcp://host:8786), or to a
    local cluster of ``workers`` processes (default: the usable cores) of one thread each, whose
    nannies restart a worker that dies or passes ``budget`` (Dask's memory limit)."""
    from distributed import Client, LocalCluster

    # Dask's own logs (worker start-up, a nanny restarting a killed worker) are noise for a user
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker",
                 "distributed.core", "distributed.comm", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if scheduler:
        dask_client = _connect(scheduler)
        try:
            yield dask_client
        finally:
            dask_client.close()
        return
    from stellardb.cores import usable_cores

    n = usable_cores() if workers is None else workers
    if n < 1:
        raise UserError(f"--workers must be at least 1, got {n}.")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=budget.worker_bytes,
                           dashboard_address=None, local_directory=scratch, silence_logs=logging.CRITICAL)
    try:
        with Client(cluster) as dask_client:
            yield dask_client
    finally:
        cluster.close()


#: how long a --scheduler may take to answer, and to have a worker
CONNECT_TIMEOUT_S = 30


def _connect(scheduler: str):
    """A client of the scheduler at ``scheduler``, under a hard deadline: Client() can wait for ever on
    a port that accepts and never answers (its own timeout does not fire), and a scheduler without
    workers would run nothing.  The attempt runs in a daemon thread, so a hung one cannot keep the
    process from exiting."""
    import queue
    import threading

    from distributed import Client

    answer: queue.Queue = queue.Queue()

    def attempt():
        try:
            answer.put(Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller below
            answer.put(exc)

    threading.Thread(target=attempt, daemon=True, name="stellardb-connect").start()
    try:
        got = answer.get(timeout=CONNECT_TIMEOUT_S + 5)
    except queue.Empty:
        got = TimeoutError()
    if isinstance(got, BaseException):
        raise UserError(f"No Dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT_S} s "
                        f"({type(got).__name__}); start one (`dask scheduler`) and its workers (`dask worker "
                        f"{scheduler}`), or leave out --scheduler for a local cluster.") from None
    dask_client = got
    try:
        dask_client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError):
        dask_client.close()
        raise UserError(f"The Dask scheduler at {scheduler} has no worker after {CONNECT_TIMEOUT_S} s; start some "
                        f"(`dask worker {scheduler} --nthreads 1`).") from None
    return dask_client


#: written into every scratch and half-written folder of a cluster run: only folders holding it
#: (with this machine's name) are ever swept
MARKER = ".stellardb-cluster-run"


def scratch_folder(path):
    """Create ``path`` (a ``.NAME.partial-PID`` or ``.NAME.work-PID`` folder) with the marker that
    lets a later run on this machine remove it if this process dies."""
    import socket
    from pathlib import Path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return path


def task_folder(path, spill):
    """Make a task's folder ``path`` (and its parents), only while the run the task belongs to lives:
    its scratch folder, the parent of the task's ``spill`` folder, is there.  When a task fails, Dask
    cancels the others but cannot stop those already running; once the run has ended, such a task
    must not make the run's folders again (they would lack the marker, and no run of this machine
    would sweep them): it fails instead, and nobody waits for its result.  The run takes its
    scratch folder away first, in one rename (:func:`remove_run_folders`); what remains is the
    moment between this check and the mkdir."""
    from pathlib import Path

    if not Path(spill).parent.is_dir():
        raise RuntimeError("this task's run has ended and removed its folders")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_run_folders(work, *others) -> None:
    """Remove a run's scratch folder ``work`` and its other folders (``others``, e.g. the half-written
    result), ``work`` first and at once: renamed (the name still one :func:`sweep_leftovers` knows,
    the marker inside), so that a task still running sees its run has ended (:func:`task_folder`)
    before anything is deleted; a folder inside ``work`` goes with it."""
    import shutil
    from pathlib import Path

    work = Path(work)
    ended = work.with_name(work.name.replace(".work-", ".ended.work-", 1)) if ".work-" in work.name \
        else work.with_name(work.name + ".ended")
    try:
        os.rename(work, ended)
    except FileNotFoundError:
        ended = None
    except OSError:
        ended = work  # not renamed (another file system?): removed where it is
    for folder in others:
        shutil.rmtree(folder, ignore_errors=True)
    if ended is not None:
        shutil.rmtree(ended, ignore_errors=True)


@contextlib.contextmanager
def output_folder(folder):
    """Create ``folder`` for a run's result (and sweep what killed runs left there); if the run fails
    and the folder was created for it and holds nothing, remove it again."""
    from pathlib import Path

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(folder)
    try:
        yield folder
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def sweep_leftovers(folder) -> None:
    """Remove the scratch and half-written folders (:func:`scratch_folder`) under ``folder`` that a
    cluster run on this machine left when it was killed (kill -9, a power cut): only those holding
    the marker with this machine's name and a process that is gone, never anything else."""
    import shutil
    import socket
    from pathlib import Path

    from stellardb.cores import pid_alive

    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if not (re.match(r"^\..+\.(?:partial|work)-\d+$", entry.name) and entry.is_dir()):
            continue
        try:
            host, pid = (entry / MARKER).read_text().split()
        except (OSError, ValueError):
            continue  # not ours
        if host == socket.gethostname() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def run_tasks(dask_client, function, tasks: dict, stage: str, progress=None, retries: int = RETRIES,
              shared: tuple = (), sizes: dict | None = None) -> dict:
    """Run ``function(task, *shared)`` for every ``key -> task`` on the cluster (one Dask task
    each, ``retries`` retries); ``progress(done, total, stage)`` as each finishes.  Returns
    ``key -> result``.  A task that raised a UserError stops the run with that error.

    ``sizes`` (key -> estimated work, e.g. input rows) runs the largest first (Dask priorities):
    list scheduling longest-first leaves the workers idle less at the end than partition order,
    where a large partition drawn last runs alone (the 10 M-star release's 27 crossmatch tasks:
    a 2-worker makespan within 0.1 % of half the work, against 9 % over it in partition order).

    ``shared`` (e.g. the model) is sent to every worker once (``Client.scatter``, broadcast).
    Dask's retries cannot bring it back if every worker holding it dies: Dask forgets it and
    cancels the tasks that need it.  Then it is sent again and those tasks resubmitted, at most
    ``retries`` times."""
    from concurrent.futures import CancelledError  # Dask's FutureCancelledError is one

    from distributed import as_completed

    results, done, pending = {}, 0, dict(tasks)
    for attempt in range(retries + 1):
        try:
            shipped = dask_client.scatter(list(shared), broadcast=True) if shared else []
        except (TimeoutError, OSError) as exc:
            raise UserError(f"{stage}: no Dask worker took the data every task needs ({type(exc).__name__}); "
                            "check that the cluster has running workers.") from None
        order = sorted(pending, key=lambda k: -((sizes or {}).get(k) or 0))  # stable: given order among equals
        futures = {dask_client.submit(function, pending[key], *shipped, key=f"stellardb-{stage}-{key}-{os.getpid()}-{attempt}",
                                      pure=False, retries=retries, priority=len(order) - rank): key
                   for rank, key in enumerate(order)}
        lost = []
        try:
            for future in as_completed(futures):
                key = futures[future]
                if future.status == "cancelled":
                    lost.append(key)  # what it needed was forgotten with the workers that held it
                    continue
                if future.status == "error":
                    exc = future.exception()
                    if isinstance(exc, UserError):
                        raise UserError(str(exc)) from None
                    raise UserError(f"{stage}: partition {key} failed after {retries} retries "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}).") from None
                try:
                    results[key] = future.result()
                except CancelledError:  # finished, then forgotten with the workers that held it
                    lost.append(key)
                    continue
                done += 1
                if progress is not None:
                    progress(done, len(tasks), stage)
        finally:
            for future in futures:
                future.cancel()
        if not lost:
            return results
        pending = {key: tasks[key] for key in lost}
    why = ("every worker holding the data sent to all workers died" if shared else
           "the scheduler cancelled them (restarted, or lost this client)")
    raise UserError(f"{stage}: {len(pending)} partitions could not run: {why}, {retries + 1} times; give the "
                    "workers more memory (--memory-per-worker) or check the cluster's machines.")


def dictionary_columns(schema) -> list[str]:
    """The columns of ``schema`` worth Parquet's dictionary encoding: the strings (a model's name,
    a feature set: a few values in a partition).  pyarrow tries a dictionary on every column by
    default; on ids, positions and separations (nearly every value distinct) it fills one per
    column chunk and falls back to plain, which took about 3x the time of plain encoding to write
    913 k pairs, and made the file 24 % larger (2026-12-07, docs/cluster.md)."""
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def task_connection(budget_limit: str, threads: int, spill: str):
    """The in-process DuckDB of one task: in memory, ``threads`` threads, at most ``budget_limit``
    of memory, spilling to ``spill``."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"set threads = {int(threads)}")
    con.execute("set memory_limit = $m", {"m": budget_limit})
    con.execute("set temp_directory = $t", {"t": spill})
    con.execute("set preserve_insertion_order = false")
    return con


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """This worker process's peak resident memory so far: VmHWM, the high-water mark of its own
    address space.  Not getrusage's ru_maxrss, which Linux carries across fork and exec, so that a
    worker spawned by a driver holding 2 GB reports 2 GB before it does anything."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
