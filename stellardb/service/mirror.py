"""Memory-mapped Arrow copies of a served release's Parquet files, so that a cone reads its rows
without decoding Parquet.

A 1-arcmin cone returns a row or two, yet taking them from Parquet decodes a 20,000-row row group of
every column asked for: 2.4 ms of a 7 ms cone on a 10 M-star release (rowgroups.py, measured with
py-spy and A/B).  The same rows from an uncompressed Arrow IPC file mapped into memory are slices
of the page cache: 0.9 ms.  So ``serve`` writes, once per release and in a background thread of low
priority, an Arrow file beside each Parquet file of the tables it is told to (default: the
catalogue, which cone searches read), one record batch per row group, and the row-group reader uses
a file once it is complete.  Until then, and for any file that could not be copied, it reads
Parquet: the answers are the same bytes either way (tests/service/test_mirror.py).

The copies live outside the release (releases stay immutable HATS), in ``serve_cache``
(default ``serve-cache/`` beside the database), one folder a release.  A copy's name holds its
Parquet file's path, size and modification time, so a file that changed is never answered from a
stale copy.  Workers of one ``serve`` share the copies (a lock a file: each is written once, by
whichever worker gets to it first) and the page cache holds them once for all.  The cost is disk:
uncompressed, a copy takes about 1.7x its Parquet file (3.7 GB for the 10 M-star catalogue).  Nothing
is written when that would leave less than RESERVE_BYTES free.  Copies of releases whose folder
is gone are removed, and of the others only those of the KEEP_RELEASES releases served last are kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger("stellardb.serve")

#: free disk space copying leaves at least (the database and its releases need room to grow)
RESERVE_BYTES = 2**30
#: releases whose copies are kept (the one served, the one before: a switch back is instant)
KEEP_RELEASES = 2
#: bumped when the copies' layout changes: older copies are then not read (and swept)
FORMAT = "arrow-ipc-1"
_SOURCE = "release.txt"


class Mirror:
    """The copies of one served release's files; :meth:`batch` gives a row group's rows, or None
    while its file is not copied (the caller then reads Parquet).

    Parameters
    ----------
    root : Path
        The cache folder (``serve_cache``).
    release : Path
        The release folder.
    files : dict
        table name -> its Parquet files, in the order to copy them.
    """

    def __init__(self, root: Path, release: Path, files: dict[str, list[str]]):
        self.root = Path(root)
        self.release = Path(release).resolve()
        digest = hashlib.sha1(f"{FORMAT}:{self.release}".encode()).hexdigest()[:12]
        self.folder = self.root / f"{self.release.name}-{digest}"
        self._files = {table: list(paths) for table, paths in files.items()}
        #: Parquet path -> its row groups as record batches of the mapped copy (read without a lock:
        #: a dict's get is atomic, and an entry is only ever added whole)
        self._ready: dict[str, tuple] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: why copying stopped early (said on /tap/availability), or None
        self.note: str | None = None

    # -- reading -----------------------------------------------------------------------------
    def batch(self, path: str, group: int):
        """Row group ``group`` of the Parquet file ``path`` as a pyarrow RecordBatch, or None."""
        found = self._ready.get(path)
        return None if found is None else found[group]

    def progress(self) -> tuple[int, int]:
        """(files copied and mapped, files to copy)."""
        return len(self._ready), sum(len(paths) for paths in self._files.values())

    # -- copying -----------------------------------------------------------------------------
    def start(self) -> Mirror:
        self._thread = threading.Thread(target=self._run, daemon=True, name="stellardb-mirror")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Copy no more (a file being written is abandoned; what is mapped stays readable)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the copying to end; whether it has."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        try:
            # the copying must not slow the answers: the lowest priority, for this thread only
            # (on Linux a thread's id is a process id for setpriority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError):
            pass
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # names the release the copies are of (for the sweep), and its time says when it was served
            (self.folder / _SOURCE).write_text(str(self.release))
            pending = [(table, path) for table, paths in self._files.items() for path in paths]
            while pending and not self._stop.is_set():
                busy = []
                for table, path in pending:
                    if self._stop.is_set():
                        return
                    state = self._copy(table, path)
                    if state == "busy":  # another worker is writing it: come back to it
                        busy.append((table, path))
                    elif state == "full":
                        self.note = "the disk is too full for more copies; the rest are read from Parquet"
                        log.warning("serve: cone cache of release %s stopped: less than %.1f GB would be left "
                                    "free on %s; cones read Parquet (slower)", self.release.name,
                                    RESERVE_BYTES / 1e9, self.root)
                        return
                pending = busy
                if pending:
                    self._stop.wait(0.2)
            self._sweep()
        except Exception as exc:  # never the service's end: cones read Parquet
            self.note = "copying failed; the rest are read from Parquet"
            log.warning("serve: cone cache of release %s stopped (%s: %s); cones read Parquet (slower)",
                        self.release.name, type(exc).__name__, exc)

    def _target(self, table: str, path: str) -> Path:
        stat = os.stat(path)
        key = hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:24]
        return self.folder / table / f"{key}.arrow"

    def _copy(self, table: str, path: str) -> str:
        """Copy (unless copied) and map ``path``: "ready", "busy", "failed" or "full"."""
        import pyarrow.parquet as pq

        target = self._target(table, path)
        meta = pq.read_metadata(path)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(str(target) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return "busy"
                if not target.exists():
                    needed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                    if shutil.disk_usage(target.parent).free - needed < RESERVE_BYTES:
                        return "full"
                    if not self._write(path, target):
                        return "failed"
            finally:
                os.close(lock)  # and with it the lock
        batches = _mapped(target, meta)
        if batches is None:
            # damaged (a disk error, a hand edit): removed, so the next start copies it again
            log.warning("serve: the cone cache file %s does not match %s; removed, that file is read from Parquet",
                        target, path)
            target.unlink(missing_ok=True)
            return "failed"
        self._ready[path] = batches
        return "ready"

    def _write(self, path: str, target: Path) -> bool:
        """Write the copy of ``path``: one record batch a row group, written under a temporary name
        and renamed whole, so a reader never sees half a file.  False when stopped."""
        import pyarrow as pa
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        partial = target.with_name(target.name + ".partial")  # only the lock's holder writes it
        with pq.ParquetFile(path) as pf, pa.OSFile(str(partial), "wb") as sink, \
                ipc.new_file(sink, pf.schema_arrow) as writer:
            for group in range(pf.num_row_groups):
                if self._stop.is_set():
                    break
                rows = pf.read_row_group(group, use_threads=False).combine_chunks()
                writer.write_batch(_one_batch(rows))
        if self._stop.is_set():
            partial.unlink(missing_ok=True)
            return False
        os.replace(partial, target)
        return True

    def _sweep(self) -> None:
        """Remove the copies of releases whose folder is gone, and keep those of KEEP_RELEASES."""
        others = []
        for folder in self.root.iterdir():
            if folder == self.folder or not folder.is_dir():
                continue
            source = folder / _SOURCE
            try:
                release = Path(source.read_text())
                served_at = source.stat().st_mtime
            except OSError:
                continue  # not ours, or being made: left alone
            if not release.is_dir() or not folder.name.endswith(
                    "-" + hashlib.sha1(f"{FORMAT}:{release}".encode()).hexdigest()[:12]):
                shutil.rmtree(folder, ignore_errors=True)  # its release is gone, or an older format
            else:
                others.append((served_at, folder))
        for _, folder in sorted(others, reverse=True)[KEEP_RELEASES - 1:]:
            shutil.rmtree(folder, ignore_errors=True)


def _one_batch(table):
    """The one record batch of a table whose columns are one chunk each (no rows: an empty one)."""
    import pyarrow as pa

    batches = table.to_batches()
    # more than one cannot happen after combine_chunks; were it to, the copy's rows would not match
    # the row group's and _mapped would refuse it
    return batches[0] if len(batches) == 1 else pa.RecordBatch.from_pylist([], schema=table.schema)


def _mapped(target: Path, meta) -> tuple | None:
    """The record batches of the copy ``target``, mapped, if it has the Parquet file's row groups,
    rows and columns; else None."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        reader = ipc.open_file(pa.memory_map(str(target)))
        if reader.num_record_batches != meta.num_row_groups or \
                reader.schema.names != meta.schema.to_arrow_schema().names:
            return None
        batches = tuple(reader.get_batch(i) for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException):
        return None
    if any(b.num_rows != meta.row_group(i).num_rows for i, b in enumerate(batches)):
        return None
    return batches
