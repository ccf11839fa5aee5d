"""``stellardb serve``: settings resolved, the release opened, uvicorn started."""

from __future__ import annotations

import socket
from pathlib import Path

from stellardb import config
from stellardb.errors import UserError


def limits_from_settings():
    """The service's limits from the settings table (environment, else defaults)."""
    from stellardb.service.app import Limits

    try:
        timeout_s = float(config.get("query_timeout_s"))
    except ValueError:
        timeout_s = -1.0
    if not timeout_s > 0:
        raise UserError(f"{config.setting('query_timeout_s').envvar}={config.get('query_timeout_s')!r} is not a "
                        "positive number of seconds; unset it for the default (30).")
    maxrec_limit = config.get_int("maxrec_limit", minimum=1)
    max_duration_s = config.get_int("async_max_duration_s", minimum=1)
    return Limits(timeout_s=timeout_s, maxrec_default=min(config.get_int("maxrec_default"), maxrec_limit),
                  maxrec_limit=maxrec_limit, max_queries=config.get_int("max_queries", minimum=1),
                  max_request_bytes=config.get_int("max_request_bytes", minimum=1000),
                  max_upload_bytes=config.get_int("max_upload_bytes", minimum=1000),
                  max_upload_rows_sync=config.get_int("max_upload_rows_sync", minimum=1),
                  max_upload_rows_async=config.get_int("max_upload_rows_async", minimum=1),
                  async_workers=config.get_int("async_workers", minimum=1),
                  async_duration_s=min(config.get_int("async_duration_s", minimum=1), max_duration_s),
                  async_max_duration_s=max_duration_s, job_lifetime_s=config.get_int("job_lifetime_s", minimum=60),
                  job_list=_job_list(), max_jobs=config.get_int("max_jobs", minimum=1),
                  max_job_bytes=config.get_int("max_job_bytes", minimum=1_000_000))


def _job_list() -> str:
    value = config.get("job_list").strip().lower()
    if value not in ("address", "none"):
        raise UserError(f"{config.setting('job_list').envvar}={value!r} is not one of address, none.")
    return value


def cache_from_settings(db_path) -> tuple[Path | None, tuple[str, ...]]:
    """(folder of the cones' Arrow copies or None, the tables copied) from the settings."""
    from stellardb.service.served import SERVED_TABLES

    folder = config.get("serve_cache")
    tables = tuple(t.strip() for t in config.get("serve_cache_tables").split(",") if t.strip())
    unknown = [t for t in tables if t not in SERVED_TABLES]
    if unknown:
        raise UserError(f"{config.setting('serve_cache_tables').envvar} names {', '.join(unknown)}, not a table of a "
                        f"release; use some of {', '.join(SERVED_TABLES)}.")
    if folder is not None and folder.strip().lower() == "off":
        return None, tables
    return (Path(folder) if folder else Path(db_path).resolve().parent / "serve-cache"), tables


def build(db_path, release_name: str | None, root: Path | None):
    """(holder, limits, app) for the release ``release_name`` under ``root``."""
    from stellardb.release import layout
    from stellardb.service.app import create_app
    from stellardb.service.served import Holder, LazyHolder

    root = Path(root) if root else layout.default_root(db_path)
    which = config.get("serve_release", release_name)
    limits = limits_from_settings()
    cache, cache_tables = cache_from_settings(db_path)
    holder = Holder(root, which, memory_limit=config.get("query_memory_limit"), cache=cache,
                    cache_tables=cache_tables)
    jobs = config.get("serve_jobs") or Path(db_path).resolve().parent / "tap-jobs"
    try:
        Path(jobs).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        holder.close()
        raise UserError(f"The folder for asynchronous jobs, {jobs}, cannot be made ({exc.strerror}); set "
                        f"{config.setting('serve_jobs').envvar} to a folder the service may write.") from None
    # asynchronous jobs: a DuckDB of their own, of one thread (a job runs in its own thread, of
    # lower priority: pages and cone searches stay quick while jobs run)
    # (opened at the first job: a service that runs none keeps one DuckDB a worker)
    jobs_holder = LazyHolder(lambda: Holder(root, which, memory_limit=config.get("query_memory_limit"), threads=1))
    holder.companions.append(jobs_holder)  # closed with it
    return holder, limits, create_app(holder, limits, base_url=config.get("serve_url"), jobs_root=jobs,
                                      jobs_holder=jobs_holder)


#: where `serve` hands the database path and releases folder to its worker processes
_ENV_DB, _ENV_ROOT = "_STELLARDB_SERVE_DB", "_STELLARDB_SERVE_ROOT"


def run_server(db_path, release_name, root, host, port, access_log: bool, workers: int | None = None,
               echo=print) -> None:
    import os

    import uvicorn

    from stellardb import __version__

    host = config.get("serve_host", host)
    port = config.get_int("serve_port", port, minimum=1, maximum=65535, option="--port")
    workers = config.get_int("serve_workers", workers, minimum=1, option="--workers")
    _check_port(host, port)
    holder, limits, app = build(db_path, release_name, root)  # opened here too: a bad release fails now, once
    base = config.get("serve_url") or f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
    follows = " (follows `latest`)" if holder.follows_latest else ""
    echo(f"Serving release {holder.current.name}{follows} as schema {holder.current.schema}")
    echo(f"  TAP:         {base}/tap")
    echo(f"  cone search: {base}/scs?RA=150&DEC=-45&SR=0.1")
    echo(f"  page:        {base}/")
    echo(f"Limits: {limits.timeout_s:g} s and {limits.maxrec_limit:,} rows a query, {limits.max_queries} queries at "
         f"once{f' per worker, {workers} workers' if workers > 1 else ''}; Ctrl-C stops.")
    options = dict(host=host, port=port, log_level="warning", access_log=access_log, timeout_graceful_shutdown=5,
                   server_header=False, headers=[("Server", f"stellardb/{__version__}")])
    try:
        if workers == 1:
            uvicorn.run(app, **options)
            return
        holder.close()
        # each worker process opens the release itself (DuckDB connections do not cross processes)
        os.environ[_ENV_DB] = str(db_path)
        os.environ[_ENV_ROOT] = str(root) if root else ""
        if release_name:
            os.environ[config.setting("serve_release").envvar] = release_name
        uvicorn.run("stellardb.service.server:worker_app", factory=True, workers=workers, **options)
    finally:
        holder.close()


def worker_app():
    """The app of one worker process of ``serve --workers N`` (uvicorn calls it in each)."""
    import os

    root = os.environ.get(_ENV_ROOT) or None
    return build(os.environ[_ENV_DB], None, Path(root) if root else None)[2]


def _check_port(host: str, port: int) -> None:
    """A port already taken is one line, before the release is opened."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or stop "
                            "what uses it.") from None
