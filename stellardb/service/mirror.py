"""Memory-mapped Arrow copies of a served release's Parquet files, so that a cone reads its rows
without decoding Parquet.

A 1-arcmin cone returns a row or two, yet taking them from Parquet decodes a 20,000-row row group of
every column asked for: 2.3 ms of a 5-7 ms cone on a 10 M-star release (rowgroups.py, measured with
py-spy and A/B).  The same rows from an uncompressed Arrow IPC file mapped into memory are slices
of the page cache: 0.7 ms.  So ``serve`` writes, once per release and in a background thread of the
lowest priority, an Arrow copy of each Parquet file of the tables it is told to (default: the
catalogue, which cone searches and the star page's neighbours read), one record batch per row
group, and the row-group reader uses a copy once it is complete.  Until then, and for any file that
could not be copied, it reads Parquet: the answers are the same bytes either way
(tests/service/test_mirror.py).

The copies live outside the release (releases stay immutable HATS), in ``serve_cache`` (default
``serve-cache/`` beside the database), one folder a release, marked as the service's by a MARKER
file (the sweep below touches nothing else).  A copy carries its Parquet file's path, size and
modification time in its name and in its schema's metadata, and is read only if they, its columns,
types and rows per row group match the file.  It is written under a temporary name, synced and
renamed whole; a failed or stopped write removes its temporary file (one a killed worker left is
removed at the next start).  Workers of one ``serve``
share the copies (a lock a file: each is written once, by whichever worker gets to it first) and
the page cache holds them once for all.  The cost is disk: uncompressed, a copy takes about 1.7x its
Parquet file (3.9 GB for the 10 M-star catalogue's 2.26 GB).  No batch is written that would leave
less than RESERVE_BYTES free.  Before and after copying, the folders of releases no worker serves now
(each holds a shared lock on its folder's MARKER) and not touched in the last FRESH_S seconds (being
copied) are removed if their release folder is gone or their layout is older, and beyond the
KEEP_RELEASES touched last.  The copies must not be edited while served: a
mapped file cut short under a running worker ends that worker (SIGBUS), as with any memory map.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger("stellardb.serve")

#: free disk space copying leaves at least (the database and its releases need room to grow)
RESERVE_BYTES = 2**30
#: releases whose copies are kept (the one served, the one before: a switch back is instant)
KEEP_RELEASES = 2
#: a release folder whose marker was touched this recently is being copied (by another service):
#: never swept
FRESH_S = 600
#: bumped when the copies' layout changes: older copies are then not read (and swept)
FORMAT = "arrow-ipc-2"
#: the file that marks a folder of the cache as the service's (JSON: format, release)
MARKER = ".stellardb-serve-cache.json"
#: the schema metadata key of a copy holding its source's path, size and modification time
SOURCE_KEY = b"stellardb.source"
_FOLDER_NAME = re.compile(r"^.+-[0-9a-f]{12}$")


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
        self._failed = 0
        self._lock = threading.Lock()
        #: the marker, held open with a shared lock while this release is served: no sweep removes
        #: a folder in use (it takes the lock exclusively first)
        self._marker_fd: int | None = None

    # -- reading -----------------------------------------------------------------------------
    def batch(self, path: str, group: int):
        """Row group ``group`` of the Parquet file ``path`` as a pyarrow RecordBatch, or None."""
        found = self._ready.get(path)
        return None if found is None else found[group]

    def progress(self) -> tuple[int, int]:
        """(files copied and mapped, files to copy)."""
        return len(self._ready), sum(len(paths) for paths in self._files.values())

    def status(self) -> str:
        """What /tap/availability says of the copies (no paths)."""
        copied, files = self.progress()
        said = f"cone cache: {copied} of {files} files ready"
        notes = ([f"{self._failed} {'file' if self._failed == 1 else 'files'} could not be copied, read from Parquet"]
                 if self._failed else []) + \
            ([self.note] if self.note else [])
        return said + (f" ({'; '.join(notes)})" if notes else "")

    # -- copying -----------------------------------------------------------------------------
    def start(self) -> Mirror:
        _start_io_threads()
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

    def close(self) -> None:
        """Stop copying, drop the maps and let the folder be swept (the release is closed: no request
        reads them any more)."""
        self.stop()
        with self._lock:
            self._ready = {}
            fd, self._marker_fd = self._marker_fd, None
        if fd is not None:
            os.close(fd)  # and with it the shared lock

    def _run(self) -> None:
        try:
            # the copying must not slow the answers: the lowest priority, for this thread only (on
            # Linux a thread's id is a process id for setpriority).  Threads it starts inherit it,
            # so it reads Parquet without pyarrow's I/O threads (pre_buffer off), which requests
            # share, and those that mapping starts were started before (_start_io_threads)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError):
            pass
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._mark()
            self._hold()
            self._sweep()
            self._remove_stale(partials_only=True)  # left by a worker killed while writing
            pending = [(table, path) for table, paths in self._files.items() for path in paths]
            while pending and not self._stop.is_set():
                busy = []
                for table, path in pending:
                    if self._stop.is_set():
                        return
                    if not (self.folder / MARKER).exists():  # another service swept it meanwhile
                        self.note = "the copies were removed meanwhile; the rest are read from Parquet"
                        return
                    self._mark()  # fresh: no sweep removes a folder being copied
                    state = self._copy(table, path)
                    if state == "busy":  # another worker is writing it: come back to it
                        busy.append((table, path))
                    elif state == "failed":
                        self._failed += 1
                    elif state == "stopped":
                        return
                    elif state == "full":
                        self.note = "the disk is too full for more copies; the rest are read from Parquet"
                        log.warning("serve: cone cache of release %s stopped: less than %.1f GB would be left "
                                    "free on %s; cones read Parquet (slower)", self.release.name,
                                    RESERVE_BYTES / 1e9, self.root)
                        return
                pending = busy
                if pending:
                    self._stop.wait(0.2)
            if not self._stop.is_set() and not self._failed:
                self._remove_stale()
        except Exception as exc:  # never the service's end: cones read Parquet
            self.note = "copying failed; the rest are read from Parquet"
            log.warning("serve: cone cache of release %s stopped (%s: %s); cones read Parquet (slower)",
                        self.release.name, type(exc).__name__, exc)
        finally:
            try:
                self._sweep()
            except OSError:
                pass

    def _mark(self) -> None:
        """Write (or touch) the folder's marker: it is the service's, of this release, in use now."""
        marker = self.folder / MARKER
        text = json.dumps({"format": FORMAT, "release": str(self.release)})
        try:
            if marker.read_text() == text:
                os.utime(marker)
                return
        except OSError:
            pass
        marker.write_text(text)

    def _hold(self) -> None:
        """Hold the marker with a shared lock until :meth:`close`."""
        fd = os.open(self.folder / MARKER, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        with self._lock:
            if self._marker_fd is None and not self._stop.is_set():
                self._marker_fd, fd = fd, None
        if fd is not None:
            os.close(fd)

    @staticmethod
    def _source(path: str) -> str:
        """What a copy of ``path`` is a copy of: its path, size and modification time."""
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"

    def _target(self, table: str, source: str) -> Path:
        return self.folder / table / f"{hashlib.sha1(source.encode()).hexdigest()[:24]}.arrow"

    def _copy(self, table: str, path: str) -> str:
        """Copy (unless copied) and map ``path``: "ready", "busy", "failed", "stopped" or "full"."""
        import pyarrow.parquet as pq

        source = self._source(path)
        target = self._target(table, source)
        meta = pq.read_metadata(path)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)  # not the release's folder: gone means swept
            lock = os.open(str(target) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return "busy"
                if not target.exists():
                    try:
                        state = self._write(path, source, target)
                    except Exception as exc:  # this file (a dictionary per row group, a disk error): the next
                        log.warning("serve: the cone cache could not copy %s (%s: %s); it is read from Parquet",
                                    path, type(exc).__name__, exc)
                        return "failed"
                    if state != "written":
                        return state
            finally:
                os.close(lock)  # and with it the lock
        batches = _mapped(target, meta, source)
        if batches is None:
            # not a copy of this file (a disk error, a hand edit): removed, so the next start copies it again
            log.warning("serve: the cone cache file %s is not a copy of %s; removed, that file is read from Parquet",
                        target, path)
            target.unlink(missing_ok=True)
            return "failed"
        with self._lock:
            if self._stop.is_set():  # closed meanwhile: no map kept
                return "stopped"
            self._ready[path] = batches
        return "ready"

    def _write(self, path: str, source: str, target: Path) -> str:
        """Write the copy of ``path``: one record batch a row group, under a temporary name, synced and
        renamed whole, so a reader never sees half a file: "written", "stopped" or "full"."""
        import pyarrow as pa
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        partial = target.with_name(target.name + ".partial")  # only the lock's holder writes it
        state = "written"
        try:
            with pa.OSFile(path) as raw, pq.ParquetFile(raw, pre_buffer=False) as pf:
                schema = pf.schema_arrow.with_metadata({SOURCE_KEY: source.encode()})
                with pa.OSFile(str(partial), "wb") as sink, ipc.new_file(sink, schema) as writer:
                    for group in range(pf.num_row_groups):
                        if self._stop.is_set():
                            state = "stopped"
                            break
                        rows = pf.read_row_group(group, use_threads=False).combine_chunks()
                        batch = _one_batch(rows.replace_schema_metadata(schema.metadata))
                        if shutil.disk_usage(partial.parent).free - batch.nbytes < RESERVE_BYTES:
                            state = "full"
                            break
                        writer.write_batch(batch)
            if state == "written" and self._stop.is_set():  # stopped during the last batch
                state = "stopped"
            if state == "written":
                with open(partial, "rb+") as done:
                    os.fsync(done.fileno())  # on disk before its name says it is complete
                os.replace(partial, target)
                folder = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        finally:
            if state != "written" or partial.exists():
                partial.unlink(missing_ok=True)
        return state

    def _remove_stale(self, partials_only: bool = False) -> None:
        """Remove the copies in this release's table folders that no file of it has any more (a
        release made again under the same name, a file touched), or only the temporary files of
        writes that did not finish: those whose lock no one holds (not being written)."""
        for table, paths in self._files.items():
            folder = self.folder / table
            current = set() if partials_only else {self._target(table, self._source(p)).name for p in paths}
            for lock_file in folder.glob("*.arrow.lock"):
                name = lock_file.name[:-len(".lock")]
                stale = [folder / (name + ".partial")]
                if not partials_only:
                    if name in current:
                        continue
                    stale += [folder / name, lock_file]
                if not any(f.exists() for f in stale):
                    continue
                try:
                    lock = os.open(str(lock_file), os.O_RDWR)
                except FileNotFoundError:
                    continue  # another worker of this release removed it just now
                try:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    for f in stale:
                        f.unlink(missing_ok=True)
                finally:
                    os.close(lock)

    def _sweep(self) -> None:
        """Remove the service's folders of releases no service serves now (none holds its marker's
        lock) and not touched in the last FRESH_S: those of an older layout or of a release whose
        folder is gone, and beyond KEEP_RELEASES (this one and the ones touched last) the others."""
        others = []
        for folder in self.root.iterdir():
            if folder == self.folder or not folder.is_dir() or not _FOLDER_NAME.match(folder.name):
                continue
            marker = folder / MARKER
            try:
                mark = json.loads(marker.read_text())
                touched = marker.stat().st_mtime
            except (OSError, ValueError):
                continue  # not the service's: never touched
            if not isinstance(mark, dict) or "release" not in mark or "format" not in mark:
                continue
            if time.time() - touched < FRESH_S:
                continue  # being copied (by another service, maybe another version of it)
            if mark["format"] != FORMAT or not Path(str(mark["release"])).is_dir():
                _remove_unused(folder)  # an older layout, or its release is gone
            else:
                others.append((touched, folder))
        for _, folder in sorted(others, reverse=True)[KEEP_RELEASES - 1:]:
            _remove_unused(folder)


def _remove_unused(folder: Path) -> None:
    """Remove a release's folder of copies unless a service serves it (holds its marker's lock)."""
    try:
        fd = os.open(folder / MARKER, os.O_RDONLY)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # served now, by another service
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)


_io_threads_started = False


def _start_io_threads() -> None:
    """Map a small Arrow file once in this process, at the caller's priority.  Mapping a file starts
    pyarrow's I/O threads, which every request shares, and threads inherit their starter's priority:
    started by the copying thread they would run requests' reads at its lowest one."""
    global _io_threads_started
    if _io_threads_started:
        return
    import tempfile

    import pyarrow as pa
    import pyarrow.ipc as ipc

    with tempfile.TemporaryDirectory(prefix="stellardb-mirror-") as folder:
        path = os.path.join(folder, "warm.arrow")
        with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, pa.schema([("a", pa.int8())])) as writer:
            writer.write_batch(pa.record_batch([pa.array([1], pa.int8())], names=["a"]))
        ipc.open_file(pa.memory_map(path)).get_batch(0)
    _io_threads_started = True


def _one_batch(table):
    """The one record batch of a table whose columns are one chunk each (no rows: an empty one)."""
    import pyarrow as pa

    batches = table.to_batches()
    # more than one cannot happen after combine_chunks; were it to, the copy's rows would not match
    # the row group's and _mapped would refuse it
    return batches[0] if len(batches) == 1 else pa.RecordBatch.from_pylist([], schema=table.schema)


def _mapped(target: Path, meta, source: str) -> tuple | None:
    """The record batches of the copy ``target``, mapped, if it is a copy of ``source`` with the
    Parquet file's columns, types, row groups and rows; else None."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        reader = ipc.open_file(pa.memory_map(str(target)))
        schema = reader.schema
        if (schema.metadata or {}).get(SOURCE_KEY) != source.encode() or \
                reader.num_record_batches != meta.num_row_groups or \
                not schema.remove_metadata().equals(meta.schema.to_arrow_schema().remove_metadata()):
            return None
        batches = tuple(reader.get_batch(i) for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException):
        return None
    if any(b.num_rows != meta.row_group(i).num_rows for i, b in enumerate(batches)):
        return None
    return batches
