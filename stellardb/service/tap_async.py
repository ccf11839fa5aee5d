"""``/tap/async``: TAP's asynchronous jobs as UWS 1.1 resources (jobs kept by stellardb.service.uws).

    POST /tap/async                      create (PHASE=RUN starts it too); 303 to the job
    GET  /tap/async?PHASE=&LAST=&AFTER=  the caller's jobs
    GET  /tap/async/{id}[?WAIT=n[&PHASE=p]]   the job; WAIT blocks while it is PENDING/QUEUED/EXECUTING
    POST /tap/async/{id} ACTION=DELETE, or DELETE /tap/async/{id}: gone (303 to the list)
    GET/POST .../phase (RUN, ABORT), .../executionduration, .../destruction, .../parameters
    GET  .../error, .../quote, .../owner, .../results, .../results/result

Every write answers 303 to the resource (UWS 1.1 section 2.2.3); errors about the request are
DALI error documents (one line), like the synchronous endpoint's.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from stellardb.service import results, uws
from stellardb.service.uws import ClientError

_XML = "text/xml"
#: parameters a job keeps (DALI/TAP names, lower case); others are ignored, as DALI asks
_JOB_PARAMETERS = {"request", "lang", "query", "maxrec", "responseformat", "format", "upload", "runid", "phase",
                   "executionduration", "destruction"}


def routes(store: uws.JobStore, runner: uws.Runner, holder, limits, root_url, params_of,
           error_response, served_headers) -> list[Route]:
    """The asynchronous endpoints (see the module's doc); the other arguments are create_app's."""
    def base(request: Request) -> str:
        return f"{root_url(request)}/tap/async"

    def owner(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def error(exc: Exception, status: int = 400) -> Response:
        return error_response(str(exc), getattr(exc, "status", status), served_headers(holder.get()))

    def see(request: Request, job_id: str | None = None) -> Response:
        return RedirectResponse(base(request) + (f"/{job_id}" if job_id else ""), status_code=303)

    def text(value) -> Response:
        return Response("" if value is None else str(value), media_type="text/plain", headers=named())

    def xml(body: str) -> Response:
        return Response(body, media_type=_XML, headers=named())

    def named() -> dict:
        return served_headers(holder.get())

    def apply(job_id: str, params: dict) -> None:
        """EXECUTIONDURATION, DESTRUCTION and PHASE of a create or change."""
        if "executionduration" in params:
            set_duration(job_id, params["executionduration"])
        if "destruction" in params:
            set_destruction(job_id, params["destruction"])
        phase = params.get("phase")
        if phase is not None:
            if phase.upper() == "RUN":
                runner.start(job_id)
            elif phase.upper() == "ABORT":
                runner.abort(job_id)
            else:
                raise ClientError(f"PHASE={phase[:20]!r}: a job can be sent RUN or ABORT.")

    def duration_of(value: str) -> int:
        try:
            seconds = int(value)
        except ValueError:
            raise ClientError(f"EXECUTIONDURATION={value[:20]!r} is not a whole number of seconds.") from None
        # 0 means "no limit" in UWS: the service's longest
        return limits.async_max_duration_s if seconds <= 0 else min(seconds, limits.async_max_duration_s)

    def set_duration(job_id: str, value: str) -> None:
        seconds = duration_of(value)
        job = store.get(job_id)
        if job.phase not in ("PENDING", "QUEUED"):
            raise ClientError(f"The job is {job.phase}; its execution duration can be changed only before it runs.")
        store.update(job_id, execution_duration_s=seconds)

    def set_destruction(job_id: str, value: str) -> None:
        moment = uws.parse_iso(value)
        latest = uws.now_utc() + timedelta(seconds=limits.job_lifetime_s)
        store.update(job_id, destruction=uws.iso(min(moment, latest)))

    async def job_list(request: Request) -> Response:
        try:
            if request.method == "POST":
                return await create(request)
            phases = [p.upper() for k, p in request.query_params.multi_items() if k.lower() == "phase"]
            if any(p not in uws.PHASES for p in phases):
                raise ClientError(f"PHASE must be one of {', '.join(uws.PHASES)}.")
            last = after = None
            for key, value in request.query_params.multi_items():
                if key.lower() == "last":
                    try:
                        last = int(value)
                    except ValueError:
                        raise ClientError("LAST must be a whole number of jobs.") from None
                    if last <= 0:
                        raise ClientError("LAST must be a positive number of jobs.")
                elif key.lower() == "after":
                    after = uws.parse_iso(value)
            if limits.job_list == "none":  # behind a shared address: a job's address is its only key
                jobs = []
            else:
                jobs = store.list(owner=owner(request), phases=phases or None, last=last, after=after)
            if not phases:  # UWS 1.1: without PHASE, ARCHIVED jobs are not listed (none are kept here)
                jobs = [j for j in jobs if j.phase != "ARCHIVED"]
            return xml(uws.jobs_xml(jobs, base(request)))
        except (ClientError, uws.JobError) as exc:
            return error(exc)

    async def create(request: Request) -> Response:
        files: dict = {}
        params = await params_of(request, files)
        # UWS: a job is made whatever its query parameters; a wrong query is the job's ERROR when it
        # runs, and parameters TAP does not define are ignored (DALI).  Its own settings are checked
        # first: a request refused leaves no job behind
        if "executionduration" in params:
            duration_of(params["executionduration"])
        if "destruction" in params:
            uws.parse_iso(params["destruction"])
        if params.get("phase", "RUN").upper() not in ("RUN", "ABORT"):
            raise ClientError(f"PHASE={params['phase'][:20]!r}: a job can be sent RUN or ABORT.")
        kept = {k: v for k, v in params.items() if k in _JOB_PARAMETERS
                and k not in ("phase", "executionduration", "destruction")}
        job = await asyncio.to_thread(store.create, owner(request), kept, files)
        apply(job.id, params)
        return see(request, job.id)

    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            if request.method == "DELETE":
                store.delete(job_id)
                return see(request)
            if request.method == "POST":
                params = await params_of(request)
                action = params.get("action", "")
                if action.upper() != "DELETE":
                    raise ClientError("POST to a job takes ACTION=DELETE; change its phase at .../phase.")
                store.delete(job_id)
                return see(request)
            current = store.get(job_id)
            wait = request.query_params.get("WAIT") or request.query_params.get("wait")
            if wait is not None:
                try:
                    seconds = float(wait)
                except ValueError:
                    raise ClientError("WAIT must be a number of seconds (-1: as long as the service allows).") \
                        from None
                seconds = uws.MAX_WAIT_S if seconds < 0 else min(seconds, uws.MAX_WAIT_S)
                phase = (request.query_params.get("PHASE") or request.query_params.get("phase") or "").upper()
                if current.phase in uws.ACTIVE and (not phase or phase == current.phase):
                    current = await _wait(job_id, current.phase, seconds)
            return xml(current.summary_xml(base(request)))
        except (ClientError, uws.JobError) as exc:
            return error(exc)

    async def _wait(job_id: str, phase: str, seconds: float) -> uws.Job:
        deadline = time.monotonic() + seconds
        while True:
            current = store.get(job_id)
            if current.phase != phase or time.monotonic() >= deadline:
                return current
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def job_property(param: str, usage: str, change, value):
        """A job resource that is one value: GET gives ``value(job)`` as text, POST ``param=...``
        calls ``change(job_id, given)`` and answers 303 to the job."""
        async def endpoint(request: Request) -> Response:
            job_id = request.path_params["job_id"]
            try:
                if request.method == "POST":
                    params = await params_of(request)
                    if param not in params:
                        raise ClientError(f"POST to .../{request.url.path.rsplit('/', 1)[1]} takes {usage}.")
                    store.get(job_id)
                    change(job_id, params[param])
                    return see(request, job_id)
                return text(value(store.get(job_id)))
            except (ClientError, uws.JobError) as exc:
                return error(exc)

        return endpoint

    phase = job_property("phase", "PHASE=RUN or PHASE=ABORT", lambda job_id, given: apply(job_id, {"phase": given}),
                         lambda job: job.phase)
    execution_duration = job_property("executionduration", "EXECUTIONDURATION=seconds", set_duration,
                                      lambda job: job.execution_duration_s)
    destruction = job_property("destruction", "DESTRUCTION=an ISO 8601 time", set_destruction,
                               lambda job: job.destruction)

    async def parameters(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            current = store.get(job_id)
            if request.method == "POST":
                params = await params_of(request)
                if current.phase != "PENDING":
                    raise ClientError(f"The job is {current.phase}; its parameters can be changed only while it "
                                      "is PENDING.")
                merged = {**current.parameters, **{k: v for k, v in params.items() if k in _JOB_PARAMETERS
                                                   and k not in ("phase", "executionduration", "destruction")}}
                store.update(job_id, parameters=merged)
                apply(job_id, params)
                return see(request, job_id)
            body = current.summary_xml(base(request))
            start, end = body.index("<uws:parameters>"), body.index("</uws:parameters>") + len("</uws:parameters>")
            return xml('<?xml version="1.0" encoding="UTF-8"?>\n'
                       + body[start:end].replace("<uws:parameters>", f'<uws:parameters xmlns:uws="{uws.UWS_NS}">', 1))
        except (ClientError, uws.JobError) as exc:
            return error(exc)

    async def job_error(request: Request) -> Response:
        try:
            current = store.get(request.path_params["job_id"])
        except uws.JobError as exc:
            return error(exc)
        if current.phase != "ERROR":
            return error(ClientError(f"The job is {current.phase}; it has no error.", 404))
        # the error document is the same DALI VOTable a synchronous query answers with
        return Response(results.error_votable(current.error or "The job failed."), media_type=results.VOTABLE,
                        headers=named())

    async def quote(request: Request) -> Response:
        try:
            store.get(request.path_params["job_id"])
        except uws.JobError as exc:
            return error(exc)
        return text("")  # no estimate of when it ends: UWS allows an empty quote

    async def job_owner(request: Request) -> Response:
        try:
            store.get(request.path_params["job_id"])
        except uws.JobError as exc:
            return error(exc)
        return text("")  # anonymous service: no authenticated owner

    async def job_results(request: Request) -> Response:
        try:
            current = store.get(request.path_params["job_id"])
        except uws.JobError as exc:
            return error(exc)
        body = current.summary_xml(base(request))
        start, end = body.index("<uws:results>"), body.index("</uws:results>") + len("</uws:results>")
        return xml('<?xml version="1.0" encoding="UTF-8"?>\n'
                   + body[start:end].replace("<uws:results>", f'<uws:results xmlns:uws="{uws.UWS_NS}" '
                                             'xmlns:xlink="http://www.w3.org/1999/xlink">', 1))

    async def result(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            current = store.get(job_id)
            if current.phase != "COMPLETED" or not current.result_file:
                raise ClientError(f"The job is {current.phase}; it has no result"
                                  + (" (see .../error)." if current.phase == "ERROR" else " yet."), 404)
        except (ClientError, uws.JobError) as exc:
            return error(exc)
        path = store.folder(job_id) / current.result_file
        if not path.is_file():
            return error(ClientError("The job's result is gone (the job was deleted meanwhile).", 404))
        headers = {"X-Stellardb-Release": current.release} if current.release else {}
        return FileResponse(path, media_type=current.result_media, headers=headers)

    def job_route(path: str, endpoint, methods=("GET",)) -> Route:
        return Route("/tap/async/{job_id}" + path, endpoint, methods=list(methods))

    return [
        Route("/tap/async", job_list, methods=["GET", "POST"]),
        job_route("", job, ("GET", "POST", "DELETE")),
        job_route("/phase", phase, ("GET", "POST")),
        job_route("/executionduration", execution_duration, ("GET", "POST")),
        job_route("/destruction", destruction, ("GET", "POST")),
        job_route("/parameters", parameters, ("GET", "POST")),
        job_route("/error", job_error),
        job_route("/quote", quote),
        job_route("/owner", job_owner),
        job_route("/results", job_results),
        job_route("/results/result", result),
    ]
