"""`stellardb serve` from the command line: a real process, its URLs, its one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ..helpers import error_line, invoke


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_without_a_release_says_how_to_make_one(tmp_path):
    result = invoke(tmp_path / "none.duckdb", "serve", "--port", str(_free_port()))
    assert result.exit_code != 0
    assert "stellardb release NAME" in error_line(result)


def test_serve_help_explains_the_settings():
    from click.testing import CliRunner

    from stellardb import config
    from stellardb.cli import cli

    out = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--release" in out and "--port" in out and "TAP" in out
    top = CliRunner().invoke(cli, ["--help"]).output
    for name in ("serve_host", "serve_port", "serve_release", "query_timeout_s", "maxrec_limit", "max_queries"):
        assert config.setting(name).envvar in top


def test_bad_limit_settings_are_one_line(service_release, monkeypatch):
    root, _ = service_release
    monkeypatch.setenv("STELLARDB_MAXREC_LIMIT", "lots")
    result = invoke(root.parent / "x.duckdb", "serve", "--releases", str(root), "--port", str(_free_port()))
    assert result.exit_code != 0 and "STELLARDB_MAXREC_LIMIT='lots'" in error_line(result)


def test_a_taken_port_is_one_line(service_release):
    root, _ = service_release
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke(root.parent / "x.duckdb", "serve", "--releases", str(root), "--port", str(port))
    assert result.exit_code != 0 and f"127.0.0.1:{port}" in error_line(result)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_process_answers_and_stops_on_sigterm(service_release, workers):
    """A real `stellardb serve` (with 2 workers: two processes, each with its own DuckDB)."""
    root, _ = service_release
    port = _free_port()
    env = {**os.environ, "STELLARDB_SERVE_PORT": str(port), "STELLARDB_SERVE_WORKERS": str(workers)}
    proc = subprocess.Popen([sys.executable, "-m", "stellardb", "--db", str(root.parent / "x.duckdb"), "serve",
                             "--releases", str(root), "--release", "svc-1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{base}/tap/availability", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and r.headers["server"].startswith("stellardb/")
        assert r.headers["X-Stellardb-Release"] == "svc-1"
        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 200 and f"{base}/tap" in page.text
        for _ in range(4):  # every worker answers from the release
            cone = httpx.get(f"{base}/scs", params={"RA": 10, "DEC": -30, "SR": 2}, timeout=30)
            assert cone.status_code == 200 and 'name="QUERY_STATUS" value="OK"' in cone.text
        # the cone cache: every worker has its copies of the catalogue's files (made once, by
        # whichever worker got to each first), beside the database
        from stellardb.release import layout

        files = len(layout.data_files(root / "svc-1", "catalogue"))
        ready = 0
        while ready < 4 * workers:
            note = httpx.get(f"{base}/tap/availability", timeout=5).text
            ready = ready + 1 if f"cone cache: {files} of {files} files ready" in note else 0
            assert "cone cache: " in note and time.monotonic() < deadline + 60, note
            time.sleep(0.05)
        copies = list((root.parent / "serve-cache").glob("svc-1-*/catalogue/*.arrow"))
        assert len(copies) == files > 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert f"http://localhost:{port}/tap" in out and f"http://localhost:{port}/scs" in out
    assert "Traceback" not in out
    assert proc.returncode is not None
    if workers > 1:
        assert f"{workers} workers" in out


def test_a_port_out_of_range_is_one_line(tmp_path):
    result = invoke(tmp_path / "x.duckdb", "serve", "--port", "70000")
    assert result.exit_code != 0 and error_line(result) == "Error: --port 70000 is not a whole number from 1 to 65535."
