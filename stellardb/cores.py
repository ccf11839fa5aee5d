"""Parallelism in one place: how many cores stellardb's own work uses, and the process pool.

Every pool in the project is reviewed here for the two ways it can hang a command
(and with it a whole ``make test`` or ``make demo``):

* thread pools (HEALPix blocks, the NumPy scorer, ingest's hashing thread, the
  simulator's gzip thread) run pure computations that always finish, or stop on an
  event; they are joined, never killed;
* the simulator's process pool (:func:`process_pool`): ``Pool.terminate`` sends
  SIGTERM to each worker.  A forked worker inherits the CLI's Python SIGTERM handler
  (``sys.exit``), but Python handlers run only in the main thread, and the kernel
  may deliver the signal to any thread of the worker (NumPy's OpenBLAS threads, for
  one): the main thread, blocked reading the task queue, then never wakes and
  ``terminate`` waits for ever.  Workers therefore restore the default SIGTERM
  action, which ends the whole process whatever thread receives the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity and cpusets, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _reset_worker_signals() -> None:
    """Pool initializer: SIGTERM kills the worker outright; Ctrl-C is the parent's to handle
    (it terminates the pool), so workers do not print a KeyboardInterrupt each."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def process_pool(workers: int):
    """A ``fork`` multiprocessing pool that cannot hang its parent.

    On success the workers are sent their stop sentinel and joined (no signal
    involved); on any exception, ``GeneratorExit`` included, they are terminated.
    ``fork`` is fast and needs no importable ``__main__``; create the pool before
    the parent starts threads of its own.
    """
    import multiprocessing as mp

    pool = mp.get_context("fork").Pool(workers, initializer=_reset_worker_signals)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a scratch or half-written folder named
    after its writer is removed only once the writer is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
