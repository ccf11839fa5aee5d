"""Every setting stellardb reads, in one declarative table.

Each setting has a name, a default, the environment variable that overrides it and a
help line; ``stellardb --help`` lists them from here (and tests/cli/test_docs.py checks
that the README's settings table names each).  Precedence is the same everywhere: a
command-line option (or a library argument) beats the environment, which beats the
default (:func:`get`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    envvar: str
    help: str


SETTINGS = (
    Setting("db", "stellardb.duckdb", "STELLARDB_DB",
            "The stellardb DuckDB file (`--db PATH` before the command)."),
    Setting("models", None, "STELLARDB_MODELS",
            "Folder of the model folders; unset: models/ beside the database file."),
    Setting("memory_limit", "4GB", "STELLARDB_MEMORY_LIMIT",
            "DuckDB's memory limit (e.g. 8GB); queries beyond it spill to disk instead of failing."),
    Setting("tf_verbose", None, "STELLARDB_TF_VERBOSE",
            "Set to 1 to see TensorFlow's start-up and device messages (hidden by default)."),
    # stellardb serve (docs/service.md): the service faces the internet, so every limit has a default
    Setting("serve_release", "latest", "STELLARDB_SERVE_RELEASE",
            "serve: the release it serves (a name, `latest` to follow each new release, or a folder)."),
    Setting("serve_host", "127.0.0.1", "STELLARDB_SERVE_HOST",
            "serve: address to listen on (0.0.0.0 for every interface)."),
    Setting("serve_port", "8000", "STELLARDB_SERVE_PORT", "serve: TCP port."),
    Setting("serve_workers", "1", "STELLARDB_SERVE_WORKERS",
            "serve: processes answering requests (each with its own DuckDB on the release); one per core "
            "for more queries a second."),
    Setting("serve_url", None, "STELLARDB_SERVE_URL",
            "serve: the public base URL (behind a proxy) written in capabilities; unset: from each request."),
    Setting("query_timeout_s", "30", "STELLARDB_QUERY_TIMEOUT_S",
            "serve: a query running longer is cancelled and answered with an error."),
    Setting("query_memory_limit", "2GB", "STELLARDB_QUERY_MEMORY_LIMIT",
            "serve: DuckDB memory for the running queries of a worker; beyond it a query fails, the service stays."),
    Setting("maxrec_default", "10000", "STELLARDB_MAXREC_DEFAULT",
            "serve: rows a query returns when the client gives no MAXREC."),
    Setting("maxrec_limit", "1000000", "STELLARDB_MAXREC_LIMIT",
            "serve: the most rows any query returns (QUERY_STATUS=OVERFLOW beyond)."),
    Setting("max_queries", "32", "STELLARDB_MAX_QUERIES",
            "serve: queries at once; more are answered 503 with Retry-After."),
    Setting("max_request_bytes", "1000000", "STELLARDB_MAX_REQUEST_BYTES",
            "serve: the largest request body accepted (413 beyond)."),
    Setting("max_upload_bytes", "500000000", "STELLARDB_MAX_UPLOAD_BYTES",
            "serve: the largest TAP request with uploaded tables (multipart) accepted (413 beyond)."),
    Setting("max_upload_rows_sync", "200000", "STELLARDB_MAX_UPLOAD_ROWS_SYNC",
            "serve: the most rows of an uploaded table in a synchronous query."),
    Setting("max_upload_rows_async", "5000000", "STELLARDB_MAX_UPLOAD_ROWS_ASYNC",
            "serve: the most rows of an uploaded table in an asynchronous job."),
    Setting("serve_cache", None, "STELLARDB_SERVE_CACHE",
            "serve: folder of the memory-mapped Arrow copies of the release's files that cones read (about "
            "1.7x their Parquet size); unset: serve-cache/ beside the database; `off`: cones read Parquet."),
    Setting("serve_cache_tables", "catalogue", "STELLARDB_SERVE_CACHE_TABLES",
            "serve: the tables copied to serve_cache, comma-separated (cone search reads the catalogue)."),
    Setting("serve_jobs", None, "STELLARDB_SERVE_JOBS",
            "serve: folder of the asynchronous TAP jobs and their results; unset: tap-jobs/ beside the database."),
    Setting("async_workers", "2", "STELLARDB_ASYNC_WORKERS",
            "serve: asynchronous jobs running at once in each worker process (more wait QUEUED)."),
    Setting("async_duration_s", "3600", "STELLARDB_ASYNC_DURATION_S",
            "serve: an asynchronous job's default execution duration (its time limit)."),
    Setting("async_max_duration_s", "14400", "STELLARDB_ASYNC_MAX_DURATION_S",
            "serve: the longest execution duration a job may ask for."),
    Setting("job_lifetime_s", "604800", "STELLARDB_JOB_LIFETIME_S",
            "serve: how long a job and its result are kept (its destruction time; 7 days)."),
    Setting("job_list", "address", "STELLARDB_JOB_LIST",
            "serve: the job list shows a client its address's jobs (address) or none (none: behind a proxy)."),
    Setting("max_jobs", "10000", "STELLARDB_MAX_JOBS",
            "serve: the most asynchronous jobs kept at once (more are refused with 503)."),
    Setting("max_job_bytes", "20000000000", "STELLARDB_MAX_JOB_BYTES",
            "serve: the most bytes of uploads and results the job folder holds (more are refused with 503)."),
)
_BY_NAME = {s.name: s for s in SETTINGS}

#: TensorFlow's C++ log level while stellardb imports it: 3 hides its start-up notes and the
#: "failed call to cuInit" error every CPU-only machine prints; stellardb reports its own errors.
TF_LOG_LEVEL = "3"


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def get(name: str, given=None):
    """The value of setting ``name``: ``given`` (a CLI option or argument) when not None,
    else its environment variable when set and not empty, else its default."""
    if given is not None:
        return given
    s = _BY_NAME[name]
    from_env = os.environ.get(s.envvar, "").strip()
    return from_env or s.default


def get_int(name: str, given=None, minimum: int = 0, maximum: int | None = None, option: str | None = None) -> int:
    """An integer setting; a value that is not one (or is out of range) is a one-line UserError
    naming its variable."""
    from stellardb.errors import UserError

    value = get(name, given)
    try:
        number = int(str(value).replace("_", ""))
    except ValueError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        within = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        if given is not None and option:  # from the command line
            raise UserError(f"{option} {value} is not a whole number {within}.")
        raise UserError(f"{_BY_NAME[name].envvar}={value!r} is not a whole number {within}; "
                        f"unset it for the default ({_BY_NAME[name].default}).")
    return number


def quiet_tensorflow_logs() -> None:
    """Set TensorFlow's C++ log level before it is imported (the one place it is set);
    a value the user exported, or STELLARDB_TF_VERBOSE, wins."""
    if not get("tf_verbose"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
