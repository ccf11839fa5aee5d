"""STILTS taplint, the IVOA reference TAP validator, against the running service.

Stages run: TMV TME TMS TMC (table metadata: XML schema, /tables, TAP_SCHEMA, their
agreement), CPV CAP (capabilities: schema and TAPRegExt content), AVV (availability),
QGE QPO QAS (ADQL queries in sync GET and POST, and as asynchronous jobs), UWS (the job
resources, phases and documents), UPL (table uploads), MDQ (result columns against the declared
metadata), EXA (the examples document: each example parsed and run).  Left out: OBS/LOC
(ObsCore, ObsLocTAP: not this kind of service).  The test fails on any ERROR or FAILURE report, and on any warning
outside the short, explained list below.
"""

from __future__ import annotations

import re
import subprocess

STAGES = ("TMV", "TME", "TMS", "TMC", "CPV", "CAP", "AVV", "QGE", "QPO", "QAS", "UWS", "UPL", "MDQ", "EXA")

#: warnings accepted, and why
ACCEPTED_WARNINGS = {
    # the in-process test server is plain uvicorn without stellardb's Server header (serve adds it)
    "W-CAP-SVR0",
}


def test_taplint_reports_no_errors(live_url, stilts):
    run = subprocess.run(
        [stilts, "taplint", f"tapurl={live_url}/tap", f"stages={' '.join(STAGES)}", "report=EWF", "maxrepeat=20",
         "truncate=400"],
        capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    sections = set(re.findall(r"^Section (\w+):", out, re.M))
    assert set(STAGES) <= sections, out[-3000:]
    problems = [line for line in out.splitlines() if re.match(r"^[EF]-\w{3}-\w{4}", line)]
    warnings = [line for line in out.splitlines() if re.match(r"^W-\w{3}-\w{4}", line)
                and not line.startswith(tuple(ACCEPTED_WARNINGS))]
    assert not problems, "\n".join(problems)
    assert not warnings, "\n".join(warnings)
    assert re.search(r"Totals: Errors: 0;", out), out[-2000:]
