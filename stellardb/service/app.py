"""The ASGI app of ``stellardb serve`` (Starlette): TAP sync, VOSI, examples, Simple Cone Search.

Every request is hostile until proven otherwise (docs/service.md, "Safety"):

* ADQL is parsed and rewritten by :mod:`stellardb.service.adql` against a whitelist; the
  DuckDB SQL it makes is checked again to be one SELECT before it runs;
* the DuckDB connection reads only the release's folder and its configuration is locked;
* a query has a time limit (cancelled, then an error document), the connection a memory
  limit, results a row limit (``QUERY_STATUS=OVERFLOW``), requests a size limit (413), and
  the service a limit on queries at once (503 with Retry-After);
* errors are DALI error documents with one line that says what to fix; stack traces go to
  the server's log only, and paths never leave the server.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from stellardb.service import results, rowgroups, tap_async, uws, vosi, web
from stellardb.service.uws import ClientError
from stellardb.service.metadata import tableset_xml

log = logging.getLogger("stellardb.serve")

#: Simple Cone Search: the largest radius (degrees) and the catalogues it serves, with their ID column
SCS_MAX_SR_DEG = 10.0
SCS_TABLES = {"catalogue": "source_id", "gaia": "source_id", "skymapper": "object_id",
              "predictions": "source_id", "distances": "source_id"}
#: the columns of VERB=2 (VERB=1: id and position; VERB=3: every column)
SCS_VERB2 = ("source_id", "object_id", "ra", "dec", "raj2000", "dej2000", "phot_g_mean_mag", "bp_rp", "parallax",
             "g_psf", "r_psf", "i_psf", "r_med_geo", "teff", "teff_err", "logg", "logg_err", "feh", "feh_err", "model")


#: threads of a worker process answering from the row groups at once (cones, /scs): 16 clients'
#: cones on 32 threads cost 12.8 ms of CPU each, on 4 threads 9.5 ms (1 M stars, 1 worker, 2 cores;
#: bench_serve.py's load client against a server with this limit changed by hand; with 2 workers
#: 7.3 -> 6.9 ms a TAP cone); a query that needs DuckDB goes on in the other lane (Limits.max_queries)
QUICK_LANE_THREADS = 4


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 30.0
    maxrec_default: int = 10_000
    maxrec_limit: int = 1_000_000
    max_queries: int = 32
    max_request_bytes: int = 1_000_000
    #: requests with uploads (multipart to /tap/...) may be this large; their rows are capped
    max_upload_bytes: int = 500_000_000
    max_upload_rows_sync: int = 200_000
    max_upload_rows_async: int = 5_000_000
    #: uploads by URL from loopback/private addresses (tests on one machine; never on the internet)
    upload_from_private_hosts: bool = False
    #: the job list shows a client the jobs made from its address ("address"), or nothing ("none":
    #: behind a proxy or NAT every client has one address)
    job_list: str = "address"
    #: jobs and bytes (uploads and results) the job folder may hold
    max_jobs: int = 10_000
    max_job_bytes: int = 20_000_000_000
    #: asynchronous jobs: at once per worker, run time (default and longest), kept for
    async_workers: int = 2
    async_duration_s: int = 3600
    async_max_duration_s: int = 4 * 3600
    job_lifetime_s: int = 7 * 86400


@dataclass
class Answer:
    """What a query gave: the document (a result, or an error whose one line is ``error``)."""

    status: int
    body: bytes
    media: str
    headers: dict
    rows: int | None = None
    error: str | None = None
    release: str | None = None


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\"/]+){2,}/?")


def public_message(text: str) -> str:
    """One line of an error message, without file paths (they never leave the server)."""
    line = next((part for part in str(text).splitlines() if part.strip()), "error")
    return _PATH.sub("...", line).strip()[:500]


def create_app(holder, limits: Limits, base_url: str | None = None, jobs_root=None, jobs_holder=None) -> Starlette:
    """The app serving ``holder``'s release (stellardb.service.served.Holder); asynchronous jobs
    are kept under ``jobs_root`` (default: a temporary folder, gone when the process ends) and run
    on ``jobs_holder`` (default ``holder``; serve gives them a DuckDB of one thread, so that a job
    runs in its own thread of lower priority and pages and cone searches stay quick meanwhile)."""
    import anyio

    if jobs_root is None:
        import atexit
        import shutil
        import tempfile

        jobs_root = tempfile.mkdtemp(prefix="stellardb-jobs-")
        atexit.register(shutil.rmtree, jobs_root, True)
    jobs = uws.JobStore(jobs_root, default_duration_s=limits.async_duration_s,
                        max_duration_s=limits.async_max_duration_s, lifetime_s=limits.job_lifetime_s,
                        max_jobs=limits.max_jobs, max_bytes=limits.max_job_bytes)
    jobs.recover()
    jobs.sweep()
    jobs_holder = jobs_holder or holder

    state = {"running": 0}
    limiter = anyio.CapacityLimiter(limits.max_queries)
    # the quick lane: answers read from the row groups are Python, holding the GIL; many threads
    # at it only take turns, and each hand-over of the GIL costs CPU (QUICK_LANE_THREADS)
    quick = anyio.CapacityLimiter(QUICK_LANE_THREADS)
    upload_limiter = anyio.CapacityLimiter(2)

    def root_url(request: Request) -> str:
        return (base_url or str(request.base_url)).rstrip("/")

    def served_headers(served) -> dict:
        return {"X-Stellardb-Release": served.name}

    async def params_of(request: Request, files: dict | None = None) -> dict:
        """DALI parameters: names case-insensitive, from the query string and a POSTed form; the
        form's file parts (uploads) go into ``files`` (name -> bytes) when it is given."""
        found: dict[str, str] = {}
        items = list(request.query_params.multi_items())
        if request.method == "POST":
            from starlette.exceptions import HTTPException
            from starlette.formparsers import MultiPartException
            from starlette.requests import ClientDisconnect

            try:
                form = await request.form()
            except BodyTooLarge as exc:
                raise ClientError(str(exc), 413) from None
            except ClientDisconnect:  # the client left mid-upload: nobody to answer
                raise ClientError("The request ended before its body arrived.") from None
            except (HTTPException, MultiPartException, ValueError, KeyError) as exc:
                exc = getattr(exc, "detail", exc)
                raise ClientError(f"The request body is not a form that can be read ({public_message(exc)}); send "
                                  "application/x-www-form-urlencoded or multipart/form-data.") from None
            items += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
            for key, value in form.multi_items():
                if not isinstance(value, str):
                    if files is None:
                        raise ClientError("This endpoint takes no file; send parameters only.")
                    if key in files:
                        raise ClientError(f"The request has two parts named {key[:40]!r}; name each upload once.")
                    files[key] = value.file  # spooled to disk by the form parser: read where needed
        for key, value in items:
            key = key.lower()
            if key in found and found[key] != value:
                raise ClientError(f"Parameter {key.upper()} is given twice with different values; give it once.")
            found[key] = value
        return found

    def error_response(message: str, status: int, headers: dict | None = None, scs: bool = False) -> Response:
        # SCS 1.03: an INFO named Error whose value is the explanation
        extra = [("Error", message, None)] if scs else []
        headers = {"X-Stellardb-Release": holder.current.name, **(headers or {})}
        return Response(results.error_votable(message, extra), status_code=status, media_type=results.VOTABLE,
                        headers=headers)

    async def run_query(make_adql, maxrec: int, kind: str, media: str, rewrite_fields=None,
                        uploads=None, direct=None) -> Response:
        """Translate, run and render in a worker thread; the event loop stays free for other clients.
        ``make_adql(served)`` gives the ADQL for the release that will answer (``direct``: see compute)."""
        if state["running"] >= limits.max_queries:
            return error_response(f"The service is busy ({limits.max_queries} queries running); try again in a "
                                  "second.", 503, {"Retry-After": "1"})
        state["running"] += 1
        try:
            # first in the quick lane: the answers from the row groups (cones); what needs DuckDB
            # then waits for a thread of the other lane, with what the first stage parsed
            carried: dict = {}
            answer = None
            if not uploads:
                answer = await anyio.to_thread.run_sync(
                    lambda: compute(make_adql, maxrec, kind, media, rewrite_fields, direct=direct, carried=carried),
                    limiter=quick)
            if answer is None:
                answer = await anyio.to_thread.run_sync(
                    lambda: compute(make_adql, maxrec, kind, media, rewrite_fields, uploads, direct=direct,
                                    carried=carried or None),
                    limiter=limiter)
        finally:
            state["running"] -= 1
        return Response(answer.body, status_code=answer.status, media_type=answer.media, headers=answer.headers)

    def compute(make_adql, maxrec, kind, media, rewrite_fields=None, uploads=None, timeout_s=None,
                should_stop=None, releases=None, direct=None, carried: dict | None = None) -> Answer | None:
        """One query, start to end: the answer's document (a result or an error) and headers.
        ``uploads``: the request's TAP_UPLOAD tables (stellardb.service.upload.Upload).
        ``direct(served)``, when given, may answer the ADQL itself: (Arrow table of every row,
        [adql.OutputColumn of each column]), or None (then the ADQL runs on DuckDB).

        In two stages (run_query) when ``carried`` is given: an empty dict, the first stage, answers
        only from the row groups (else None, and ``carried`` holds the text and its tree); the
        second, with that dict, goes on from there to DuckDB."""
        import duckdb

        from stellardb.service import adql
        from stellardb.service.served import NotOneSelect, QueryTimeout

        timeout_s = timeout_s or limits.timeout_s
        started = time.perf_counter()
        uploads = uploads or []
        with (releases or holder).lease() as served:
            headers = served_headers(served)

            def failed(message: str) -> Answer:
                return Answer(400, results.error_votable(message), results.VOTABLE, headers, error=message,
                              release=served.name)

            try:
                first_stage = carried is not None and not carried
                answered, text, tree = None, None, None
                if carried:  # the first stage found no answer in the row groups
                    text = make_adql(served)
                    tree = carried["tree"] if carried["text"] == text else None
                else:
                    answered = direct(served) if direct is not None else None
                if answered is None and text is None:
                    text = make_adql(served)
                    if direct is None and not uploads:
                        # one table's rows in one cone, nothing else (adql.plain_cone): read from the
                        # row groups as /scs does, the rows and columns DuckDB would give (a query
                        # of a shape seen before is not parsed again: adql.plain_cone_of_text)
                        query, tree = adql.plain_cone_of_text(text, served.tables, served.schema)
                        if query is not None:
                            answered = rowgroups.plain_cone(served, query, timeout_s)
                if answered is None and first_stage:
                    carried.update(text=text, tree=tree)
                    return None
                if answered is not None:
                    table, output = answered
                else:
                    tables = served.tables + tuple(u.adql_table for u in uploads)
                    translation = adql.translate(text, tables, default_schema=served.schema, tree=tree)
                    output = translation.columns
                # a result is built in Python after DuckDB: at most CELLS values of it (rows x columns)
                cells_cap = results.CELLS[kind] // max(1, len(output))
                rows = min(maxrec, cells_cap)
                if answered is None:
                    sql = f"select * from ({translation.sql}) limit {rows + 1}"
                    table = served.execute(sql, timeout_s, should_stop=should_stop,
                                           tables={k: v for u in uploads for k, v in u.tables().items()})
            except adql.AdqlError as exc:
                return failed(public_message(exc))
            except NotOneSelect:
                return failed("Only one SELECT statement can run; send a single ADQL query.")
            except QueryTimeout:
                if should_stop is not None and should_stop():
                    return failed("The job was aborted or ran past its execution duration.")
                return failed(f"The query ran longer than {timeout_s:g} s and was cancelled; constrain it (a CONTAINS "
                              "on a small region, TOP, a WHERE on an indexed column) or ask for fewer rows.")
            except duckdb.OutOfMemoryException:
                return failed("The query needs more memory than the service allows; constrain it (a region, "
                              "TOP, fewer columns) and run it again.")
            except duckdb.Error as exc:
                return failed(f"The query failed: {public_message(exc)}")
            overflow = None
            if table.num_rows > rows:
                table = table.slice(0, rows)
                overflow = "More rows match; raise MAXREC or narrow the query" if rows == maxrec else (
                    f"More rows match than one answer in this format holds ({results.CELLS[kind]:,} values); select "
                    "fewer columns, narrow the query, or ask for RESPONSEFORMAT=parquet")
            names = [c.name for c in output]
            if len(names) == table.num_columns:
                table = table.rename_columns(names)
            meta = []
            upload_meta = {u.name.lower(): u for u in uploads}
            for c in output:
                found = None
                if c.table is not None and c.column is not None:
                    if c.table.schema == "tap_upload":
                        found = upload_meta[c.table.name.lower()].column(c.column)
                    else:
                        key = c.table.name if c.table.schema == served.schema else f"tap_schema.{c.table.name}"
                        found = served.column(key, c.column)
                meta.append({"unit": found.unit, "ucd": found.ucd, "description": found.description}
                            if found else {})
            if rewrite_fields is not None:
                meta = rewrite_fields(table.column_names, meta)
            body = results.render(kind, table, meta, [("QUERY_STATUS", "OK", None), *release_infos(served)],
                                  overflow)
        headers["X-Stellardb-Query-Ms"] = f"{(time.perf_counter() - started) * 1e3:.1f}"
        return Answer(200, body, media, headers, rows=table.num_rows, release=served.name)

    def run_job(job, should_stop):
        """An asynchronous job, in the runner's thread: (result file, media type, rows, release)."""
        folder = jobs.folder(job.id)
        try:
            query, maxrec, kind, media = query_request(job.parameters, jobs_holder.get())
            files = {part: (folder / stored).read_bytes() for part, stored in job.parts.items()}
            uploads = read_uploads(job.parameters.get("upload"), files, limits.max_upload_rows_async)
        except ClientError as exc:
            raise uws.JobFailed(str(exc)) from None
        answer = compute(lambda _: query, maxrec, kind, media, uploads=uploads, timeout_s=job.execution_duration_s,
                         should_stop=should_stop, releases=jobs_holder)
        if answer.status != 200:
            raise uws.JobFailed(answer.error or "The query failed.")
        name = f"{uws.RESULT_STEM}.{results.EXTENSIONS[kind]}"
        temporary = folder / f".{name}.partial"
        temporary.write_bytes(answer.body)
        temporary.replace(folder / name)
        return name, media, answer.rows, answer.release

    runner = uws.Runner(jobs, run_job, limits.async_workers)

    def release_infos(served) -> list:
        model = (served.manifest.get("model") or {}).get("name")
        return [("release", served.name, "The stellardb release that answered"),
                ("release_created_utc", served.manifest.get("created_utc", ""), None),
                *([("model", model, "The model of the predictions")] if model else [])]

    # -- TAP ------------------------------------------------------------------------------------
    def query_request(params: dict, served) -> tuple[str, int, str, str]:
        """(ADQL, MAXREC, format kind, media type) of a doQuery request; ClientError if wrong."""
        request_kind = params.get("request", "doQuery")
        if request_kind.lower() != "doquery":
            raise ClientError(f"REQUEST={request_kind[:40]!r} is not offered; use REQUEST=doQuery.")
        lang = params.get("lang", "ADQL")
        if lang.upper() not in ("ADQL", "ADQL-2.0", "ADQL-2.1"):
            raise ClientError(f"LANG={lang[:40]!r} is not offered; use LANG=ADQL.")
        query = params.get("query")
        if not query or not query.strip():
            raise ClientError("QUERY is missing; give an ADQL query, e.g. QUERY=SELECT TOP 10 * FROM "
                              f"{served.schema}.catalogue")
        maxrec = _maxrec(params.get("maxrec"), limits)
        fmt = params.get("responseformat") or params.get("format")
        try:
            kind, media = results.response_format(fmt)
        except results.FormatError as exc:
            raise ClientError(str(exc)) from None
        return query, maxrec, kind, media

    def read_uploads(spec: str | None, files: dict, max_rows: int) -> list:
        """The request's TAP_UPLOAD tables (parsed here: call in a worker thread)."""
        from stellardb.service import upload

        if not spec:
            if files:
                raise ClientError("The request has a file but no UPLOAD parameter; add UPLOAD=name,param:"
                                  f"{next(iter(files))[:40]} to query it as TAP_UPLOAD.name.")
            return []
        try:
            found = []
            for name, kind, ref in upload.parse_spec(spec):
                if kind == "url":
                    data = upload.fetch(ref, limits.max_upload_bytes, limits.upload_from_private_hosts)
                elif ref in files:
                    data = files[ref] if isinstance(files[ref], bytes) else files[ref].read()
                else:
                    raise upload.UploadError(f"UPLOAD names the part {ref[:40]!r}, which the request does not "
                                             "have; send the table as a multipart part of that name")
                found.append(upload.read(name, data, max_rows))
            return found
        except upload.UploadError as exc:
            raise ClientError(f"Upload: {exc}.") from None

    async def sync(request: Request) -> Response:
        served = holder.get()
        files: dict = {}
        try:
            params = await params_of(request, files)
            query, maxrec, kind, media = query_request(params, served)
            # a few uploads are read at once: each may take as much memory as its rows
            uploads = await anyio.to_thread.run_sync(read_uploads, params.get("upload"), files,
                                                     limits.max_upload_rows_sync, limiter=upload_limiter)
        except ClientError as exc:
            return error_response(str(exc), exc.status, served_headers(served))
        return await run_query(lambda _: query, maxrec, kind, media, uploads=uploads)

    async def capabilities(request: Request) -> Response:
        return Response(vosi.capabilities_xml(root_url(request), limits), media_type="text/xml",
                        headers=served_headers(holder.get()))

    async def availability(request: Request) -> Response:
        served = holder.get()
        note = f"Serving release {served.name}"
        if served.mirror is not None:  # the cones' Arrow copies (stellardb.service.mirror)
            note += f"; {served.mirror.status()}"
        if holder.load_error:
            note += f"; the newest release could not be opened ({public_message(holder.load_error)})"
        return Response(vosi.availability_xml(True, note), media_type="text/xml", headers=served_headers(served))

    async def tables(request: Request) -> Response:
        def tableset():
            with holder.lease() as served:
                return tableset_xml(served), served_headers(served)

        body, headers = await anyio.to_thread.run_sync(tableset)
        return Response(body, media_type="text/xml", headers=headers)

    async def examples(request: Request) -> Response:
        served = holder.get()
        return Response(vosi.examples_xhtml(served.schema, served.name), media_type="application/xhtml+xml",
                        headers=served_headers(served))

    async def tap_root(request: Request) -> Response:
        return RedirectResponse(url=f"{root_url(request)}/", status_code=303)

    # -- Simple Cone Search -----------------------------------------------------------------------
    async def scs(request: Request) -> Response:
        served = holder.get()
        table = request.path_params.get("table", "catalogue")
        try:
            if table not in SCS_TABLES:
                raise ClientError(f"No cone search on {table[:40]!r}; tables: {', '.join(SCS_TABLES)}.", 404)
            params = await params_of(request)
            ra, dec, sr = (_number(params, key) for key in ("ra", "dec", "sr"))
            if not 0 <= ra <= 360 or not -90 <= dec <= 90:
                raise ClientError("RA must be within [0, 360] and DEC within [-90, 90] degrees (ICRS).")
            if not 0 <= sr <= SCS_MAX_SR_DEG:
                raise ClientError(f"SR must be within [0, {SCS_MAX_SR_DEG:g}] degrees; for larger regions use TAP.")
            verb = params.get("verb", "2")
            if verb not in ("1", "2", "3"):
                raise ClientError("VERB must be 1 (id and position), 2 (main columns) or 3 (every column).")
        except ClientError as exc:
            return error_response(str(exc), exc.status, served_headers(served), scs=True)
        id_column = SCS_TABLES[table]
        ra_col, dec_col = ("raj2000", "dej2000") if table == "skymapper" else ("ra", "dec")
        scs_ucds = {id_column: "ID_MAIN", ra_col: "POS_EQ_RA_MAIN", dec_col: "POS_EQ_DEC_MAIN"}

        def chosen(served) -> list[str]:
            columns = [c.name for c in served.columns[table]]
            if verb == "1":
                picked = [id_column, ra_col, dec_col]
            elif verb == "2":
                picked = [c for c in columns if c in SCS_VERB2]
            else:
                picked = columns
            return [id_column, ra_col, dec_col] + [c for c in picked if c not in (id_column, ra_col, dec_col)]

        def make_adql(served) -> str:
            select = ", ".join(f'"{c}"' for c in chosen(served))
            # SR=0 asks for the columns only (SCS 1.03): no row, and nothing read
            where = "1 = 0" if sr == 0 else \
                f'1 = CONTAINS(POINT("{ra_col}", "{dec_col}"), CIRCLE({ra!r}, {dec!r}, {sr!r}))'
            return f"SELECT {select} FROM {served.schema}.{table} WHERE {where}"

        def answer_directly(served):
            # the rows of make_adql's query read from the row groups of its _healpix_29 ranges with the
            # translation's exact test (rowgroups.cone): no translation, no DuckDB plan; a cone that
            # reaches too many row groups (or SR=0) runs on DuckDB
            return rowgroups.cone(served, table, (ra_col, dec_col), ra, dec, sr, chosen(served), limits.timeout_s)

        def rewrite(names, meta):
            return [{**m, "ucd": scs_ucds.get(name, m.get("ucd"))} for name, m in zip(names, meta)]

        return await run_query(make_adql, limits.maxrec_limit, "votable", results.VOTABLE, rewrite,
                               direct=answer_directly)

    routes = [
        *web.routes(holder, limits, root_url),
        Route("/tap", tap_root),
        Route("/tap/sync", sync, methods=["GET", "POST"]),
        *tap_async.routes(jobs, runner, holder, limits, root_url, params_of, error_response,
                          served_headers),
        Route("/tap/capabilities", capabilities),
        Route("/tap/availability", availability),
        Route("/tap/tables", tables),
        Route("/tap/examples", examples),
        Route("/scs", scs, methods=["GET", "POST"]),
        Route("/scs/{table}", scs, methods=["GET", "POST"]),
    ]

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 405:
            allowed = headers.get("Allow", "GET")
            text = f"Method {request.method[:10]} is not allowed on {request.url.path[:60]}; use {allowed}."
        else:
            text = "Not found; the service's endpoints are /tap (TAP), /scs (cone search) and / (this service's page)."
        return error_response(text, status, headers)

    async def server_error(request: Request, exc) -> Response:
        log.exception("internal error on %s", request.url.path)
        return error_response("Internal error in the service (logged); please report it with the query.", 500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        runner.close()  # running jobs are interrupted (a restart marks them ERROR, saying why)
        holder.stop_copying()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found, 500: server_error},
                    lifespan=lifespan)
    return BodyLimit(app, limits.max_request_bytes, limits.max_upload_bytes)


def _maxrec(value: str | None, limits: Limits) -> int:
    if value is None or value == "":
        return limits.maxrec_default
    try:
        maxrec = int(value)
    except ValueError:
        raise ClientError(f"MAXREC={value[:40]!r} is not a whole number; give the most rows wanted.") from None
    if maxrec < 0:
        raise ClientError("MAXREC must be 0 or more.")
    return min(maxrec, limits.maxrec_limit)


def _number(params: dict, key: str) -> float:
    import math

    value = params.get(key)
    if value is None:
        raise ClientError(f"{key.upper()} is missing; a cone search needs RA, DEC and SR in degrees (ICRS).")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ClientError(f"{key.upper()}={value[:40]!r} is not a number of degrees.")
    return number


class BodyTooLarge(ValueError):
    """A streamed request body went past its limit (raised into the form parser)."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, by its Content-Length or
    counted while it arrives, before the app sees any of it (the body is read here, at most
    ``limit`` bytes, and handed on)."""

    def __init__(self, app, limit: int, upload_limit: int | None = None):
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit or limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        limit = self.limit
        # a TAP query with uploaded tables (multipart): the upload limit (its rows are capped too)
        if scope.get("path", "").startswith("/tap/") and \
                headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
            limit = self.upload_limit
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(send, limit)
        if limit == self.upload_limit and limit != self.limit:
            # an upload is not held in memory here: counted as it passes (the form parser spools
            # its parts to disk); past the limit the form cannot be read, which the app answers
            seen = 0

            async def counted():
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"The request is larger than {limit:,} bytes; send a smaller upload.")
                return message

            return await self.app(scope, counted, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            seen += len(message.get("body", b""))
            if seen > limit:
                return await self._refuse(send, limit)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, given = b"".join(chunks), False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(self, send, limit: int):
        body = results.error_votable(f"The request is larger than {limit:,} bytes; send a shorter query or a "
                                     "smaller upload.")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", results.VOTABLE.encode()),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
