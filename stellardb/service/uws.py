"""Asynchronous TAP jobs (IVOA UWS 1.1): a job store on disk and a bounded pool that runs them.

A job is a folder ``JOBS/<id>/`` holding ``job.json`` (its phase, times, parameters, error), its
uploads and, once completed, its result file.  The folder, not memory, is the truth: the workers
of ``stellardb serve --workers N`` are separate processes, and any of them may be asked about a
job another one runs; a restart finds every finished job where it was.  A job that was queued or
running in a process that is gone is marked ERROR with a message saying so (the process id is
recorded when a job is taken).

Writes are atomic (a temporary file renamed over ``job.json``); ABORT from any process leaves a
file ``abort`` in the job's folder that the running query's watchdog looks for.  Jobs past their
destruction time are deleted by a sweep.  Ids are random (128 bits): knowing a job's address is
what lets one read it, and the job list shows a client only its own jobs (by address).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD", "SUSPENDED",
          "ARCHIVED")
#: phases a job leaves by itself (WAIT blocks while a job is in one of them)
ACTIVE = ("PENDING", "QUEUED", "EXECUTING")
FINAL = ("COMPLETED", "ERROR", "ABORTED")
UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
JOB_FILE = "job.json"
ABORT_FILE = "abort"
RESULT_STEM = "result"
#: the longest WAIT honoured (s): a blocked request holds a connection
MAX_WAIT_S = 60.0
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class JobFailed(Exception):
    """A job's query failed: the message (one line, for the user) is the job's error."""


class ClientError(Exception):
    """A request the client can fix: answered with an error document and HTTP ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class JobError(ClientError):
    """A request about a job the client can fix (no such job: 404)."""


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time (``2026-12-06T13:00:00Z``, with or without the zone: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise JobError(f"{text[:40]!r} is not an ISO 8601 time; write e.g. 2026-12-31T12:00:00Z.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Job:
    id: str
    owner: str
    phase: str = "PENDING"
    created: str = ""
    started: str | None = None
    ended: str | None = None
    execution_duration_s: int = 600
    destruction: str = ""
    run_id: str | None = None
    #: the DALI parameters, names lower-case (uploads by name: their files are in the folder)
    parameters: dict = field(default_factory=dict)
    error: str | None = None
    #: the result file's name and media type, and its rows, once COMPLETED
    result_file: str | None = None
    result_media: str | None = None
    result_rows: int | None = None
    #: the process that queued or runs it (and when that process started), and the release that answered
    pid: int | None = None
    pid_started: str | None = None
    release: str | None = None
    #: uploaded parts: the request's part name -> the file holding it in the job's folder
    parts: dict = field(default_factory=dict)

    def summary_xml(self, base: str) -> str:
        """The job as a ``uws:job`` document (UWS 1.1; the schema's element order)."""
        def element(name: str, value) -> str:
            if value is None:
                return f'<uws:{name} xsi:nil="true"/>'
            return f"<uws:{name}>{escape(str(value))}</uws:{name}>"

        parameters = "".join(
            f"<uws:parameter id={quoteattr(key)}>{escape(value)}</uws:parameter>"
            for key, value in sorted(self.parameters.items()))
        results = ""
        if self.phase == "COMPLETED" and self.result_file:
            results = (f'<uws:result id="result" xlink:type="simple" '
                       f'xlink:href={quoteattr(f"{base}/{self.id}/results/result")}'
                       + (f" mime-type={quoteattr(self.result_media)}" if self.result_media else "") + "/>")
        error = ""
        if self.phase == "ERROR" and self.error:
            error = ('<uws:errorSummary type="fatal" hasDetail="true">'
                     f"<uws:message>{escape(self.error)}</uws:message></uws:errorSummary>")
        info = f"<uws:jobInfo><release>{escape(self.release)}</release></uws:jobInfo>" if self.release else ""
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<uws:job xmlns:uws="{UWS_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" '
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1">'
                + element("jobId", self.id)
                + (element("runId", self.run_id) if self.run_id else "")
                + element("ownerId", None)
                + element("phase", self.phase)
                + element("quote", None)
                + element("creationTime", self.created)
                + element("startTime", self.started)
                + element("endTime", self.ended)
                + element("executionDuration", self.execution_duration_s)
                + element("destruction", self.destruction)
                + f"<uws:parameters>{parameters}</uws:parameters>"
                + f"<uws:results>{results}</uws:results>"
                + error + info + "</uws:job>\n")

    def jobref_xml(self, base: str) -> str:
        return (f"<uws:jobref id={quoteattr(self.id)} xlink:href={quoteattr(f'{base}/{self.id}')}>"
                f"<uws:phase>{self.phase}</uws:phase>"
                + (f"<uws:runId>{escape(self.run_id)}</uws:runId>" if self.run_id else "")
                + f"<uws:creationTime>{self.created}</uws:creationTime></uws:jobref>")


def jobs_xml(jobs: list[Job], base: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<uws:jobs xmlns:uws="{UWS_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" version="1.1">'
            + "".join(job.jobref_xml(base) for job in jobs) + "</uws:jobs>\n")


class JobStore:
    """The jobs under ``root`` (a folder the service may write; never inside a release)."""

    def __init__(self, root: Path, *, default_duration_s: int, max_duration_s: int, lifetime_s: int,
                 max_jobs: int = 10_000, max_bytes: int = 20_000_000_000):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_duration_s = default_duration_s
        self.max_duration_s = max_duration_s
        self.lifetime_s = lifetime_s
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self._thread_lock = threading.Lock()

    @contextmanager
    def locked(self):
        """The store's lock across threads and worker processes (a file lock): a change to a job
        is read, changed and written by one of them at a time."""
        import fcntl

        with self._thread_lock, open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- files ------------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        # an id from a URL: only what new_id makes can name a folder (no '..', no '/')
        if not job_id or len(job_id) > 64 or not set(job_id) <= _ID_CHARS:
            raise JobError("No such job.", 404)
        return self.root / job_id

    def get(self, job_id: str) -> Job:
        path = self.folder(job_id) / JOB_FILE
        for _ in range(3):  # a rename may be under way in another process
            try:
                return Job(**json.loads(path.read_text()))
            except FileNotFoundError:
                break
            except (json.JSONDecodeError, OSError):
                time.sleep(0.01)
        raise JobError("No such job (it may have passed its destruction time).", 404)

    def save(self, job: Job) -> None:
        folder = self.folder(job.id)
        if not folder.is_dir():  # deleted meanwhile: nothing to write into
            return
        temporary = folder / f".{JOB_FILE}.{os.getpid()}.{threading.get_ident()}"
        temporary.write_text(json.dumps(asdict(job)))
        os.replace(temporary, folder / JOB_FILE)

    def update(self, job_id: str, **changes) -> Job:
        """Change fields of a job under the store's lock; returns the job."""
        with self.locked():
            job = self.get(job_id)
            for key, value in changes.items():
                setattr(job, key, value)
            self.save(job)
            return job

    # -- life cycle -------------------------------------------------------------------------
    def usage(self) -> tuple[int, int]:
        """(jobs, bytes) the store holds."""
        jobs = size = 0
        for entry in os.scandir(self.root):
            if entry.name.startswith("."):
                continue
            try:  # other requests delete jobs and rename their files meanwhile
                if entry.is_dir():
                    jobs += 1
                    for item in os.scandir(entry.path):
                        try:
                            size += item.stat().st_size if item.is_file() else 0
                        except FileNotFoundError:
                            pass
            except FileNotFoundError:
                continue
        return jobs, size

    def create(self, owner: str, parameters: dict, files: dict | None = None) -> Job:
        """A new PENDING job; ``files``: part name -> bytes or a readable file (an upload)."""
        files = files or {}
        incoming = sum(len(f) if isinstance(f, bytes) else _file_size(f) for f in files.values())
        # counted and made under the lock: two requests at once cannot both pass the caps
        with self.locked():
            jobs, size = self.usage()
            if jobs >= self.max_jobs or size + incoming > self.max_bytes:
                raise JobError("The service holds as many jobs as it can keep; delete finished jobs (DELETE "
                               "/tap/async/ID) or try again later.", 503)
            created = now_utc()
            job_id = secrets.token_urlsafe(16)
            folder = self.folder(job_id)
            folder.mkdir()
            parts = {}
            for i, (part, data) in enumerate(files.items()):  # the part's name is the user's: not a file name
                parts[part] = f"upload-{i}"
                with open(folder / parts[part], "wb") as out:
                    if isinstance(data, bytes):
                        out.write(data)
                    else:
                        shutil.copyfileobj(data, out, 1 << 20)
            return self._first_save(job_id, owner, created, parameters, parts)

    def _first_save(self, job_id: str, owner: str, created, parameters: dict, parts: dict) -> Job:
        job = Job(id=job_id, owner=owner, created=iso(created), execution_duration_s=self.default_duration_s,
                  destruction=iso(created + timedelta(seconds=self.lifetime_s)),
                  run_id=parameters.pop("runid", None), parameters=parameters, parts=parts)
        self.save(job)
        return job

    def delete(self, job_id: str) -> None:
        folder = self.folder(job_id)
        with self.locked():
            self.get(job_id)
            (folder / ABORT_FILE).touch()  # a running query stops at its next look
            shutil.rmtree(folder, ignore_errors=True)

    def abort_requested(self, job_id: str) -> bool:
        folder = self.root / job_id
        return (folder / ABORT_FILE).exists() or not folder.is_dir()

    def list(self, owner: str | None = None, phases: list[str] | None = None, last: int | None = None,
             after: datetime | None = None) -> list[Job]:
        """Jobs (of ``owner``), by UWS 1.1's filters: PHASE (any of), AFTER (created later),
        LAST (the newest N, newest first)."""
        jobs = []
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                job = self.get(folder.name)
            except JobError:
                continue
            if owner is not None and job.owner != owner:
                continue
            if phases and job.phase not in phases:
                continue
            if after is not None and parse_iso(job.created) <= after:
                continue
            jobs.append(job)
        jobs.sort(key=lambda j: (j.created, j.id), reverse=last is not None)
        return jobs[:last] if last is not None else jobs

    def sweep(self) -> int:
        """Delete jobs past their destruction time; the number deleted."""
        gone, moment = 0, now_utc()
        for job in self.list():
            if parse_iso(job.destruction) <= moment:
                try:
                    self.delete(job.id)
                    gone += 1
                except JobError:
                    pass
        return gone

    def recover(self) -> int:
        """Jobs left QUEUED or EXECUTING by a process that is gone: ERROR, with why."""
        fixed = 0
        for job in self.list(phases=["QUEUED", "EXECUTING"]):
            if job.pid is not None and _alive(job.pid, job.pid_started):
                continue
            self.update(job.id, phase="ERROR", ended=iso(now_utc()),
                        error="The service restarted while this job was queued or running; submit it again.")
            fixed += 1
        return fixed


#: the niceness of the threads that run jobs: a page or a cone search gets the CPU first
JOB_NICENESS = 10


def _lower_priority() -> None:
    """This thread (a job's) at a lower priority (Linux schedules threads one by one)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_NICENESS)
    except (AttributeError, OSError):
        pass  # elsewhere: the jobs share the CPU evenly


def _file_size(handle) -> int:
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        return size


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, /proc/PID/stat field 22), so a
    pid used again by another process (a container's service is pid 1 at every start) is told
    apart; None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or process_started(pid) in (None, started)


class Runner:
    """A bounded pool running jobs of ``store`` with ``execute(job, should_stop) -> (file name,
    media type, rows)``, which raises for an error (its message is the job's error)."""

    def __init__(self, store: JobStore, execute, workers: int, sweep_every_s: float = 60.0):
        self.store = store
        self.execute = execute
        self.workers = workers
        self.sweep_every_s = sweep_every_s
        self.pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._started = threading.Lock()

    def _ensure_started(self) -> ThreadPoolExecutor:
        """The pool and the sweeper, (re)started on first use: an app served again after a
        shutdown (tests serve one app several times) runs jobs again."""
        with self._started:
            if self.pool is None:
                self._stop = threading.Event()
                self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="stellardb-job",
                                               initializer=_lower_priority)
                threading.Thread(target=self._sweep_loop, args=(self.sweep_every_s, self._stop), daemon=True,
                                 name="stellardb-job-sweeper").start()
            return self.pool

    def start(self, job_id: str) -> Job:
        """PHASE=RUN: a PENDING job is queued (other phases are left as they are, UWS 1.1)."""
        pool = self._ensure_started()
        with self.store.locked():
            job = self.store.get(job_id)
            if job.phase != "PENDING":
                return job
            job.phase, job.pid, job.pid_started = "QUEUED", os.getpid(), process_started(os.getpid())
            self.store.save(job)
        pool.submit(self._run, job_id)
        return job

    def abort(self, job_id: str) -> Job:
        with self.store.locked():
            job = self.store.get(job_id)
            if job.phase in FINAL:
                return job
            (self.store.folder(job_id) / ABORT_FILE).touch()
            job.phase, job.ended = "ABORTED", iso(now_utc())
            self.store.save(job)
            return job

    def _run(self, job_id: str) -> None:
        try:
            with self.store.locked():
                job = self.store.get(job_id)
                if job.phase != "QUEUED" or self.store.abort_requested(job_id):
                    return
                job.phase, job.started = "EXECUTING", iso(now_utc())
                self.store.save(job)
        except JobError:  # deleted while queued
            return
        started, stop = time.monotonic(), self._stop

        def should_stop() -> bool:
            return self.store.abort_requested(job_id) or \
                time.monotonic() - started > job.execution_duration_s or stop.is_set()

        try:
            file_name, media, rows, release = self.execute(job, should_stop)
        except Exception as exc:  # the job's error; the service goes on
            message = str(exc) or type(exc).__name__
            if self.store.abort_requested(job_id):
                return  # ABORTED (or deleted) stays so
            if stop.is_set():
                message = "The service shut down while this job ran; submit it again."
            if time.monotonic() - started > job.execution_duration_s:
                message = (f"The job ran longer than its execution duration ({job.execution_duration_s} s) and "
                           "was stopped; constrain the query or set a longer EXECUTIONDURATION.")
            try:
                self.store.update(job_id, phase="ERROR", ended=iso(now_utc()), error=message)
            except JobError:
                pass
            return
        try:
            with self.store.locked():
                job = self.store.get(job_id)
                if job.phase != "EXECUTING":
                    return
                job.phase, job.ended = "COMPLETED", iso(now_utc())
                job.result_file, job.result_media, job.result_rows, job.release = file_name, media, rows, release
                self.store.save(job)
        except JobError:
            pass

    def _sweep_loop(self, every_s: float, stop: threading.Event) -> None:
        while not stop.wait(every_s):
            try:
                self.store.sweep()
            except OSError:
                pass

    def close(self) -> None:
        """Stop: running jobs are interrupted and end in ERROR, queued ones stay QUEUED (the next
        start of the service marks them ERROR: their process is gone)."""
        with self._started:
            pool, self.pool = self.pool, None
            self._stop.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            for job in self.store.list(phases=["QUEUED"]):
                if job.pid == os.getpid():
                    self.store.update(job.id, phase="ERROR", ended=iso(now_utc()),
                                      error="The service shut down before this job ran; submit it again.")
