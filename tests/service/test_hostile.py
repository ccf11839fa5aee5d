"""The hostile-query suite of ``stellardb serve`` (docs/service.md, "Safety").

Every request here is one an attacker (or a careless script) could send to a service on the
internet: file reads (``read_csv('/etc/passwd')``, ``read_text``, ``glob``, Parquet outside the
release, replacement scans, paths as table names), writes (``COPY ... TO``, ``CREATE``,
``INSERT``, ``ATTACH``, ``EXPORT``), ``INSTALL/LOAD``, ``SET/PRAGMA/CALL``, stacked statements,
comment tricks, join bombs, runaway series and recursion, deep nesting, huge and lying request
bodies.  Each must be refused with a DALI error document (``QUERY_STATUS=ERROR``, one line that
says what to fix, no stack trace, no path of the server) or cut off by the time limit, while the
server keeps answering other clients.

The effects are checked, not only the answers: a secret file and a Parquet file outside the
release hold a random token that must never come back; the release folder and the folder outside
it are snapshotted (listing, sizes, mtimes, sha256) before the suite and compared after it; the
in-memory catalogue of the served connection must be unchanged; and the locked-down DuckDB
connection itself is tried directly (defence in depth: SQL that got past the translator must still
be unable to read or write files).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io.votable import parse

from .conftest import start_server

SEED = 20261206
#: a request that must be cut off (the short server's limit is 1 s) is answered within this:
#: generous, so a slow CI machine passes, yet far below what an unbounded query would take
CUT_OFF_S = 15.0
#: the short server's time limit (s)
SHORT_TIMEOUT_S = 1.0
#: names of files a hostile query might write relative to the server's working directory
RELATIVE_TARGETS = ("stellardb-hostile-pwned.csv", "stellardb-hostile-pwned.duckdb")
#: an absolute file path (two or more components) in an error message; the service's own
#: endpoints (/tap/sync, /scs/gaia) may be named
PATH_RE = re.compile(r"(?:^|[\s'\"(=:,])(?:[A-Za-z]:)?/(?!(?:tap|scs)\b)(?:[\w.+~-]+/)+[\w.+~-]*")


# --- what must never happen ------------------------------------------------------------------

@dataclass(frozen=True)
class Outside:
    """Files outside the release that no query may read, and the token they hold."""

    dir: Path
    token: str
    csv: Path
    txt: Path
    parquet: Path
    nested: Path


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Outside:
    rng = random.Random(SEED)
    token = "stellardb-secret-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32))
    folder = tmp_path_factory.mktemp("outside")
    csv = folder / "secret.csv"
    csv.write_text(f"source_id,secret\n1,{token}\n")
    txt = folder / "secret.txt"
    txt.write_text(token + "\n")
    parquet = folder / "secret.parquet"
    # the same columns as the release's gaia where they meet, so a join would match
    pq.write_table(pa.table({"source_id": pa.array([1], pa.int64()), "secret": [token]}), parquet)
    (folder / "nested").mkdir()
    nested = folder / "nested" / "part-0.parquet"
    shutil.copy(parquet, nested)
    return Outside(folder, token, csv, txt, parquet, nested)


@pytest.fixture(scope="module")
def leaks(service_release, outside) -> list[str]:
    """Strings that must never reach a client: the secret, paths of the server, stack traces."""
    root, release = service_release
    found = [outside.token, str(release), str(root), str(Path(root).parent), str(outside.dir),
             str(Path.cwd()) + "/", "Traceback", 'File "', "site-packages", "root:x:0:0", "stellardb-release-"]
    home = str(Path.home())
    if len(home) > 1:
        found.append(home + "/")
    return found


def assert_no_leak(text: str, leaks: list[str]) -> None:
    for bad in leaks:
        assert bad not in text, f"{bad!r} reached the client: {text[:600]!r}"


def _snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder``: sizes, mtimes and sha256 of files, mtimes of folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        st = os.stat(dirpath)
        out[os.path.relpath(dirpath, folder) + "/"] = st.st_mtime_ns
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if os.path.isfile(path) else None
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _catalogue(con) -> dict:
    """The served connection's databases, schemas, tables and views (what a write would change)."""
    cur = con.cursor()
    try:
        return {
            "databases": sorted(r[0] for r in cur.execute("select database_name from duckdb_databases()").fetchall()),
            "tables": sorted(cur.execute("select database_name, schema_name, table_name from duckdb_tables()")
                             .fetchall()),
            "views": sorted(cur.execute("select database_name, schema_name, view_name, sql from duckdb_views() "
                                        "where not internal").fetchall()),
        }
    finally:
        cur.close()


@pytest.fixture(scope="module", autouse=True)
def untouched(service_release, outside, holder):
    """What the suite must leave as it found it, taken before the first test of this module."""
    _, release = service_release
    return {"release": _snapshot(release), "outside": _snapshot(outside.dir),
            "catalogue": _catalogue(holder.current.con)}


# --- the requests ------------------------------------------------------------------------------

def error_of(response, leaks: list[str], scs: bool = False) -> str:
    """The one-line message of the DALI error document ``response`` (checked on the way)."""
    text = response.content.decode("utf-8", "replace")
    assert_no_leak(text, leaks)
    media = response.headers.get("content-type", "")
    assert media.startswith(("application/x-votable+xml", "text/xml")), \
        f"HTTP {response.status_code}: the error is {media!r}, not a VOTable error document: {text[:300]!r}"
    try:
        votable = parse(io.BytesIO(response.content), verify="ignore")
    except Exception as exc:  # astropy raises ValueError and friends on malformed XML
        pytest.fail(f"HTTP {response.status_code}: the error document is not well-formed XML ({exc}): {text[:400]!r}")
    infos = [i for r in votable.resources for i in r.infos] + list(votable.infos)
    status = [i for i in infos if i.name == "QUERY_STATUS"]
    assert status and status[0].value == "ERROR", text[:400]
    message = (status[0].content or "").strip()
    assert message, "the error document says nothing"
    assert "\n" not in message and "\r" not in message, f"the message is not one line: {message!r}"
    assert len(message.split()) >= 3, f"the message does not say what to fix: {message!r}"
    assert "internal error" not in message.lower(), message
    assert not PATH_RE.search(message), f"a path in the message: {message!r}"
    if scs:
        assert any(i.name == "Error" for i in infos), f"no INFO name=\"Error\" (Simple Cone Search): {text[:400]!r}"
    return message


class _Response:
    """Enough of an httpx.Response for error_of."""

    def __init__(self, status: int, body: bytes, headers: dict | None = None):
        self.status_code, self.content = status, body
        self.headers = headers if headers is not None else {"content-type": "application/x-votable+xml"}

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def trailing_status(body: bytes) -> str | None:
    """The QUERY_STATUS INFO after the table (OVERFLOW), if any."""
    text = body.decode("utf-8")
    after = text.split("</TABLE>", 1)[1] if "</TABLE>" in text else ""
    found = re.search(r'<INFO name="QUERY_STATUS" value="(\w+)"', after)
    return found.group(1) if found else None


def rows_of(body: bytes) -> int:
    return len(parse(io.BytesIO(body), verify="ignore").get_first_table().array)


@pytest.fixture(scope="module")
def ctx(holder, service_release, outside) -> dict:
    """The values of the placeholders in the hostile queries."""
    _, release = service_release
    part = next(p for p in sorted(Path(release).rglob("*.parquet")))
    from stellardb.service import served

    return {"<FILECOL>": getattr(served, "FILE_COLUMN", "_stellardb_file"),"<S>": holder.current.schema, "<CSV>": str(outside.csv), "<TXT>": str(outside.txt),
            "<PQ>": str(outside.parquet), "<DIR>": str(outside.dir), "<REL>": str(release),
            "<RELPQ>": str(part), "<TRAVERSE>": os.path.relpath(outside.csv, release)}


def fill(template: str, ctx: dict) -> str:
    for key, value in ctx.items():
        template = template.replace(key, value)
    return template


#: longest URL query httpx (and so the TestClient) sends; longer GETs go to the app directly
_HTTPX_MAX_QUERY = 60_000


def asgi_get(app, path: str, params: dict) -> _Response:
    """GET ``path`` with ``params`` straight into the ASGI ``app`` (URLs of any length)."""
    import anyio

    sent: list = []
    received = []

    async def receive():
        if received:
            await anyio.sleep_forever()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": urlencode(params).encode(), "headers": [(b"host", b"testserver")],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return _Response(start["status"], body, {k.decode().lower(): v.decode() for k, v in start["headers"]})


def get(client, app, path: str, params: dict):
    """GET through the TestClient, or straight into the app when the URL is too long for httpx."""
    if len(urlencode(params)) < _HTTPX_MAX_QUERY:
        return client.get(path, params=params)
    return asgi_get(app, path, params)


def _nested_subqueries(n: int) -> str:
    return "SELECT TOP 1 source_id FROM " + "(SELECT source_id FROM " * n + "<S>.gaia" + ") AS t" * n


#: refused: each gets HTTP 4xx and an error document, whatever the translator's words
HOSTILE = {
    # -- reading files ----------------------------------------------------------------------
    "read_csv_passwd": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto_secret": "SELECT * FROM read_csv_auto('<CSV>')",
    "read_text_secret": "SELECT * FROM read_text('<TXT>')",
    "read_blob_secret": "SELECT content FROM read_blob('<TXT>')",
    "glob_root": "SELECT * FROM glob('/*')",
    "glob_release": "SELECT * FROM glob('<REL>/**')",
    "read_parquet_outside": "SELECT * FROM read_parquet('<PQ>')",
    "parquet_scan_outside": "SELECT * FROM parquet_scan('<DIR>/nested/*.parquet')",
    "read_parquet_release_file": "SELECT * FROM read_parquet('<RELPQ>')",
    "replacement_scan_literal": "SELECT * FROM '<PQ>'",
    "replacement_scan_identifier": 'SELECT * FROM "<PQ>"',
    "replacement_scan_csv": 'SELECT secret FROM "<CSV>"',
    "replacement_scan_relative": "SELECT * FROM 'secret.csv'",
    "replacement_scan_release_file": "SELECT * FROM '<RELPQ>'",
    "traversal_out_of_release": "SELECT * FROM '<REL>/<TRAVERSE>'",
    "path_as_schema": 'SELECT * FROM "<DIR>"."secret.parquet"',
    "path_in_release_schema": 'SELECT * FROM <S>."<PQ>"',
    "path_as_catalog": 'SELECT * FROM "<PQ>".<S>.gaia',
    "quoted_table_function": "SELECT * FROM \"read_csv\"('<CSV>')",
    "scalar_read_text": "SELECT TOP 1 read_text('<TXT>') AS x FROM <S>.gaia",
    "subquery_read_csv": "SELECT TOP 1 source_id FROM <S>.gaia WHERE source_id IN "
                         "(SELECT source_id FROM read_csv('<CSV>'))",
    "exists_read_csv": "SELECT TOP 1 source_id FROM <S>.gaia WHERE EXISTS (SELECT * FROM read_csv('/etc/passwd'))",
    "join_read_parquet": "SELECT g.source_id, p.secret FROM <S>.gaia AS g JOIN read_parquet('<PQ>') AS p "
                         "ON g.source_id = p.source_id",
    "union_read_csv": "SELECT TOP 1 designation FROM <S>.gaia UNION SELECT secret FROM read_csv('<CSV>')",
    "query_table_function": "SELECT * FROM query('SELECT * FROM read_csv(''<CSV>'')')",
    "internal_view": "SELECT TOP 1 * FROM gaia_src",
    "internal_schema_main": "SELECT TOP 1 * FROM main.gaia",
    "cone_macro": "SELECT * FROM gaia_cone(0, 0, 10)",
    "duckdb_views_paths": "SELECT sql FROM duckdb_views()",
    "information_schema": "SELECT * FROM information_schema.tables",
    "current_setting_spill_dir": "SELECT TOP 1 current_setting('temp_directory') AS t FROM <S>.gaia",
    "getenv": "SELECT TOP 1 getenv('HOME') AS h FROM <S>.gaia",
    "openrowset": "SELECT * FROM OPENROWSET(BULK '/etc/passwd', SINGLE_CLOB) AS x",
    # the served views' hidden column of file names (service.served.FILE_COLUMN) is not published
    "hidden_file_column": "SELECT TOP 1 <FILECOL> FROM <S>.gaia",
    "hidden_file_column_quoted": 'SELECT TOP 1 g."<FILECOL>" FROM <S>.gaia AS g',
    "hidden_file_column_where": "SELECT COUNT(*) FROM <S>.gaia WHERE <FILECOL> LIKE '/%'",
    # -- writing ------------------------------------------------------------------------------
    "copy_to_outside": "COPY (SELECT 1) TO '<DIR>/pwned-copy.csv'",
    "copy_table_into_release": "COPY <S>.gaia TO '<REL>/pwned.parquet' (FORMAT parquet)",
    "copy_relative": f"COPY (SELECT 1) TO '{RELATIVE_TARGETS[0]}'",
    "create_table": "CREATE TABLE <S>.pwned AS SELECT 1 AS x",
    "create_or_replace_view": "CREATE OR REPLACE VIEW <S>.gaia AS SELECT 1 AS source_id",
    "insert": "INSERT INTO <S>.gaia (source_id) VALUES (1)",
    "update": "UPDATE <S>.gaia SET ra = 0",
    "delete": "DELETE FROM <S>.gaia",
    "drop": "DROP VIEW <S>.gaia",
    "select_into": "SELECT TOP 1 source_id INTO pwned FROM <S>.gaia",
    "attach_file": "ATTACH '<DIR>/pwned.duckdb' AS pwned",
    "attach_relative": f"ATTACH '{RELATIVE_TARGETS[1]}' AS pwned",
    "attach_memory": "ATTACH ':memory:' AS pwned",
    "export_database": "EXPORT DATABASE '<DIR>/pwned-export'",
    "create_secret": "CREATE SECRET (TYPE s3)",
    # -- extensions, settings, other statements ----------------------------------------------------
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "reset": "RESET allowed_directories",
    "pragma": "PRAGMA enable_profiling",
    "call": "CALL duckdb_settings()",
    "checkpoint": "CHECKPOINT",
    "describe": "DESCRIBE <S>.gaia",
    "explain_analyze": "EXPLAIN ANALYZE SELECT 1",
    "from_first": "FROM read_csv('<CSV>')",
    "pivot": "PIVOT <S>.gaia ON ra USING COUNT(*)",
    # -- stacked statements and comment tricks ----------------------------------------------------
    "stacked_copy": "SELECT TOP 1 source_id FROM <S>.gaia; COPY (SELECT 1) TO '<DIR>/pwned-stacked.csv'",
    "stacked_drop": "SELECT TOP 1 source_id FROM <S>.gaia; DROP VIEW <S>.gaia",
    "stacked_after_line_comment": "SELECT TOP 1 source_id FROM <S>.gaia --\n; ATTACH ':memory:' AS pwned",
    "stacked_after_block_comment": "SELECT TOP 1 source_id FROM <S>.gaia /* x */; INSTALL httpfs",
    "block_comment_hides_select": "/* SELECT */ COPY (SELECT 1) TO '<DIR>/pwned-comment.csv'",
    "line_comment_first": "-- SELECT\nINSTALL httpfs",
    "comments_as_spaces": "SELECT/**/*/**/FROM/**/read_csv('<CSV>')",
    "unterminated_comment": "SELECT TOP 1 source_id FROM <S>.gaia /* ; COPY (SELECT 1) TO '<DIR>/pwned-open.csv'",
    "nul_byte": "SELECT TOP 1 source_id FROM <S>.gaia\x00; COPY (SELECT 1) TO '<DIR>/pwned-nul.csv'",
    "fullwidth_semicolon": "SELECT TOP 1 source_id FROM <S>.gaia\uff1b COPY (SELECT 1) TO '<DIR>/pwned-fw.csv'",
    # -- runaway series, recursion, nesting, DuckDB syntax ---------------------------------------
    "generate_series_table": "SELECT * FROM generate_series(1, 1000000000000)",
    "range_table": "SELECT COUNT(*) FROM range(1000000000000)",
    "generate_series_scalar": "SELECT TOP 1 generate_series(1, 1000000000000) AS x FROM <S>.gaia",
    "recursive_cte": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r",
    "recursive_cte_in_subquery": "SELECT * FROM (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                                 "SELECT n FROM r) AS t",
    "nested_parentheses": "SELECT TOP 1 " + "(" * 5000 + "1" + ")" * 5000 + " AS x FROM <S>.gaia",
    "nested_functions": "SELECT TOP 1 " + "ABS(" * 3000 + "ra" + ")" * 3000 + " AS x FROM <S>.gaia",
    "nested_subqueries": _nested_subqueries(1000),
    "unary_minus_chain": "SELECT TOP 1 " + "- " * 30000 + "1 AS x FROM <S>.gaia",
    "not_chain": "SELECT TOP 1 source_id FROM <S>.gaia WHERE " + "NOT " * 20000 + "1 = 1",
    "lambda": "SELECT TOP 1 list_transform([1, 2], x -> x + 1) AS y FROM <S>.gaia",
    "double_colon_cast": "SELECT TOP 1 ra::VARCHAR AS r FROM <S>.gaia",
    "star_exclude": "SELECT TOP 1 * EXCLUDE (ra) FROM <S>.gaia",
    "lateral": "SELECT TOP 1 * FROM <S>.gaia AS g, LATERAL (SELECT * FROM read_csv('<CSV>')) AS r",
    "dollar_quoted": "SELECT TOP 1 $$<CSV>$$ FROM <S>.gaia",
}

#: may be answered (they are harmless once translated) or refused; either way nothing leaks
AMBIGUOUS = {
    "literal_holding_copy": "SELECT TOP 1 'x'';COPY (SELECT 1) TO ''<DIR>/pwned-literal.csv'';--' AS x FROM <S>.gaia",
    "alias_holding_read_csv": 'SELECT TOP 1 1 AS "x"" FROM read_csv(\'<CSV>\') --" FROM <S>.gaia',
    "backslash_literal": "SELECT TOP 1 'x\\' AS a, 'FROM read_csv(''<CSV>'')' AS b FROM <S>.gaia",
    "nested_comment": "SELECT TOP 1 source_id /* /* */ FROM read_csv('<CSV>') -- */ FROM <S>.gaia",
    "long_or_chain": "SELECT TOP 1 source_id FROM <S>.gaia WHERE "
                     + " OR ".join(f"source_id = {i}" for i in range(3000)),
    "deep_but_allowed": "SELECT TOP 1 " + "ABS(" * 150 + "ra" + ")" * 150 + " AS x FROM <S>.gaia",
    "many_subqueries": _nested_subqueries(90),
    "huge_in_list": "SELECT TOP 1 source_id FROM <S>.gaia WHERE source_id IN ("
                    + ", ".join(str(i) for i in range(10000)) + ")",
    "like_pattern": "SELECT TOP 1 designation FROM <S>.gaia WHERE designation LIKE '" + "%_" * 2000 + "x'",
    "top_overflow": "SELECT TOP 100000000000000000000 source_id FROM <S>.gaia",
    "runtime_error": "SELECT TOP 5 CAST(designation AS INTEGER) AS x FROM <S>.gaia",
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_query_is_refused(client, app, ctx, leaks, name, method):
    query = fill(HOSTILE[name], ctx)
    # text formats, so that a secret in a result would show (BINARY2 is base64)
    params = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query,
              "RESPONSEFORMAT": "csv" if method == "GET" else "votable/td"}
    started = time.monotonic()
    response = get(client, app, "/tap/sync", params) if method == "GET" else client.post("/tap/sync", data=params)
    assert 400 <= response.status_code < 500, \
        f"{name}: HTTP {response.status_code}: {response.content[:400]!r}"
    error_of(response, leaks)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_odd_query_leaks_nothing(client, ctx, leaks, outside, name):
    query = fill(AMBIGUOUS[name], ctx)
    response = client.post("/tap/sync", data={"QUERY": query, "RESPONSEFORMAT": "csv"})
    assert response.status_code in (200, 400), f"HTTP {response.status_code}: {response.content[:400]!r}"
    if response.status_code == 400:
        error_of(response, leaks)
    else:  # a path the query itself holds may come back as data
        assert_no_leak(response.text, [bad for bad in leaks if bad not in query])
        assert_no_leak(response.text, [outside.token, "root:x:0:0", "Traceback"])
    if name == "literal_holding_copy" and response.status_code == 200:
        # the literal is data: it comes back as written, and nothing ran
        assert f"COPY (SELECT 1) TO '{outside.dir}/pwned-literal.csv'" in response.text.replace('""', '"')
    assert not list(outside.dir.glob("pwned*"))


def test_control_characters_give_well_formed_documents(client, leaks, holder):
    """XML 1.0 has no place for U+0001 or U+FFFF: a query that names them still gets a document
    its client can parse (an error, or the result with the characters replaced)."""
    schema = holder.current.schema
    for query, fmt in [(f'SELECT TOP 1 "\x01" FROM {schema}.gaia', None),
                       (f'SELECT TOP 1 "a\x00b" FROM {schema}.gaia', None),
                       (f'SELECT TOP 1 1 AS "a\x01b" FROM {schema}.gaia', None),
                       (f"SELECT TOP 1 'a\x01b' AS x FROM {schema}.gaia", "votable/td"),
                       (f"SELECT TOP 1 '\uffff' AS x FROM {schema}.gaia", "votable/td")]:
        response = client.post("/tap/sync", data={"QUERY": query, "RESPONSEFORMAT": fmt or ""})
        if response.status_code == 200:
            try:
                parse(io.BytesIO(response.content), verify="ignore").get_first_table()
            except Exception as exc:
                pytest.fail(f"{query!r}: the result is not well-formed XML ({exc}): {response.content[:500]!r}")
        else:
            assert 400 <= response.status_code < 500, response.status_code
            error_of(response, leaks)


# --- nothing outside the release is read, even past the translator ------------------------------

def _refused(cur, sql: str) -> str | None:
    """None when DuckDB refuses ``sql``; else what it returned."""
    try:
        result = cur.execute(sql).fetchall()
    except duckdb.Error:
        return None
    return repr(result)[:200]


def test_locked_connection_refuses_files_settings_and_extensions(holder, outside):
    cur = holder.current.con.cursor()
    release = holder.current.path
    sibling = release.parent / (release.name + "-hostile")  # shares the release folder's name as a prefix
    target = outside.dir / "x.csv"
    statements = [
        f"select * from read_csv('{outside.csv}')",
        f"select * from read_csv_auto('{outside.csv}')",
        f"select * from read_text('{outside.txt}')",
        f"select * from read_blob('{outside.txt}')",
        f"select * from read_parquet('{outside.parquet}')",
        f"select * from '{outside.parquet}'",
        f"select * from glob('{outside.dir}/*')",
        "select * from read_csv('/etc/passwd')",
        f"select * from read_csv('{release}/{os.path.relpath(outside.csv, release)}')",  # ../ out of the release
        f"select * from read_csv('{sibling}/secret.csv')",
        "set enable_external_access = true",
        "reset enable_external_access",
        "set allowed_directories = ['/']",
        "set lock_configuration = false",
        f"set temp_directory = '{outside.dir}'",
        f"copy (select 1) to '{target}'",
        f"export database '{outside.dir}/export'",
        f"attach '{outside.dir}/pwned.duckdb' as hostile_file",
        "attach ':memory:' as hostile_x",
        "install httpfs",
        "load httpfs",
        "pragma enable_profiling",
    ]
    got_through = {}
    try:
        sibling.mkdir()
        shutil.copy(outside.csv, sibling / "secret.csv")
        for sql in statements:
            result = _refused(cur, sql)
            if result is not None:
                got_through[sql] = result
    finally:
        for name in ("hostile_x", "hostile_file"):
            _refused(cur, f"detach {name}")
        cur.close()
        shutil.rmtree(sibling, ignore_errors=True)
    assert not got_through, f"the locked connection ran: {got_through}"
    assert not target.exists()
    assert not (outside.dir / "export").exists() and not (outside.dir / "pwned.duckdb").exists()


def test_locked_connection_cannot_write_into_the_release(service_release, tmp_path):
    """The release's own folder is readable: it must still not be writable (a copy of the release,
    opened as the service opens it, so that the real one stays untouched)."""
    from stellardb.service.served import open_release

    _, release = service_release
    copy = tmp_path / Path(release).name
    shutil.copytree(release, copy)
    before = _snapshot(copy)
    served = open_release(copy, memory_limit="500MB")
    cur = served.con.cursor()
    got_through = {}
    try:
        for sql in [f"copy (select 1) to '{copy}/pwned.csv'",
                    f"copy (select * from {served.schema}.gaia) to '{copy}/gaia/pwned.parquet' (format parquet)",
                    f"attach '{copy}/pwned.duckdb' as hostile_rel",
                    f"export database '{copy}/pwned-export'"]:
            result = _refused(cur, sql)
            if result is not None:
                got_through[sql.replace(str(copy), "<release>")] = result
    finally:
        _refused(cur, "detach hostile_rel")
        cur.close()
        served.retire()
    assert not got_through, f"the locked connection wrote into the release: {sorted(got_through)}"
    assert _snapshot(copy) == before


def test_execute_runs_only_one_select(holder, outside):
    """The second line of defence: Served.execute refuses anything but one SELECT before it runs
    (statements harmless if they did run, so a failure cannot damage the session's release)."""
    from stellardb.service.served import NotOneSelect

    served = holder.current
    for sql in [f"copy (select 1) to '{outside.dir}/x-exec.csv'", "attach ':memory:' as hostile_y",
                "select 1; select 2", "select 1; install httpfs", "pragma version", "call pragma_version()",
                "explain select 1", "set threads = 1", "install httpfs", "load httpfs", "checkpoint"]:
        try:
            with pytest.raises(NotOneSelect):
                served.execute(sql, 10.0)
        finally:
            cur = served.con.cursor()
            _refused(cur, "detach hostile_y")
            cur.close()
    assert not (outside.dir / "x-exec.csv").exists()


# --- limits ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_limits():
    from stellardb.service.app import Limits

    return Limits(timeout_s=SHORT_TIMEOUT_S, maxrec_default=1000, maxrec_limit=5000, max_queries=8,
                  max_request_bytes=200_000)


@pytest.fixture(scope="module")
def short_app(holder, short_limits):
    from stellardb.service.app import create_app

    return create_app(holder, short_limits)


@pytest.fixture(scope="module")
def short_client(short_app):
    from starlette.testclient import TestClient

    with TestClient(short_app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def short_url(short_app):
    url, stop = start_server(short_app)
    yield url
    stop()


def _small_query(schema: str) -> dict:
    return {"QUERY": f"SELECT TOP 5 source_id, ra, dec FROM {schema}.gaia ORDER BY source_id",
            "RESPONSEFORMAT": "csv"}


def _assert_small_answer(response) -> None:
    assert response.status_code == 200, response.text[:300]
    assert len(response.text.strip().splitlines()) == 6  # header and 5 rows


EXPENSIVE = {
    "cross_join_bomb": "SELECT COUNT(*) FROM <S>.gaia AS a, <S>.gaia AS b, <S>.gaia AS c",
    "cross_join_sort": "SELECT TOP 1 a.source_id FROM <S>.gaia AS a, <S>.gaia AS b ORDER BY a.ra * b.dec",
    "distance_join": "SELECT COUNT(*) FROM <S>.gaia AS a JOIN <S>.gaia AS b "
                     "ON DISTANCE(POINT(a.ra, a.dec), POINT(b.ra, b.dec)) < 90",
    "three_catalogues": "SELECT COUNT(*) FROM <S>.catalogue AS a, <S>.skymapper AS b, <S>.distances AS c "
                        "WHERE a.source_id + b.object_id > c.source_id",
}


@pytest.mark.parametrize("name", sorted(EXPENSIVE))
def test_expensive_query_is_cut_off(short_url, ctx, leaks, name):
    started = time.monotonic()
    response = httpx.post(f"{short_url}/tap/sync", data={"QUERY": fill(EXPENSIVE[name], ctx)},
                          timeout=CUT_OFF_S + 30)
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text[:400]
    message = error_of(response, leaks)
    assert re.search(r"longer than|time limit|memory", message, re.I), message
    assert elapsed < CUT_OFF_S, f"answered after {elapsed:.1f} s with a {SHORT_TIMEOUT_S:g} s limit"


def test_server_answers_others_while_bombs_run(holder, leaks):
    """Three join bombs at once on a server with a 5 s limit: while they run, another client's
    small query, the availability and the capabilities are answered; then each bomb gets the
    time-limit error."""
    from stellardb.service.app import Limits, create_app

    schema = holder.current.schema
    app = create_app(holder, Limits(timeout_s=5.0, maxrec_limit=5000, max_queries=8, max_request_bytes=200_000))
    url, stop = start_server(app)
    served = holder.current
    results: dict[int, tuple] = {}

    def bomb(i: int) -> None:
        started = time.monotonic()
        try:
            r = httpx.post(f"{url}/tap/sync", timeout=CUT_OFF_S + 30,
                           data={"QUERY": f"SELECT COUNT(*) FROM {schema}.gaia AS a, {schema}.gaia AS b, "
                                          f"{schema}.gaia AS c"})
            results[i] = (r, time.monotonic() - started)
        except Exception as exc:  # reported below
            results[i] = (exc, time.monotonic() - started)

    threads = [threading.Thread(target=bomb, args=(i,), daemon=True) for i in range(3)]
    try:
        active_before = served._active
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        # the bombs hold the release (Holder.lease) once they run
        while served._active < active_before + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with httpx.Client(base_url=url, timeout=30) as other:
            _assert_small_answer(other.get("/tap/sync", params=_small_query(schema)))
            assert other.get("/tap/availability").status_code == 200
            assert other.get("/tap/capabilities").status_code == 200
            answered_while_running = sum(t.is_alive() for t in threads)
        for t in threads:
            t.join(CUT_OFF_S + 40)
    finally:
        stop()
    assert answered_while_running > 0, "the bombs had all finished before the small query was answered"
    for i in range(3):
        response, elapsed = results[i]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 400, response.text[:300]
        assert "longer than" in error_of(response, leaks)
        assert elapsed < CUT_OFF_S + 5, f"bomb {i} answered after {elapsed:.1f} s with a 5 s limit"


def test_busy_server_answers_503_with_retry_after(holder, leaks):
    from stellardb.service.app import Limits, create_app

    schema = holder.current.schema
    app = create_app(holder, Limits(timeout_s=3.0, maxrec_limit=5000, max_queries=1, max_request_bytes=200_000))
    url, stop = start_server(app)
    slow = {"QUERY": f"SELECT COUNT(*) FROM {schema}.gaia AS a, {schema}.gaia AS b, {schema}.gaia AS c"}
    done: dict = {}
    sent = threading.Event()

    def run_slow() -> None:
        with httpx.Client(base_url=url, timeout=CUT_OFF_S + 30) as c:
            while True:  # until it got in (the poller below may hold the only slot for a moment)
                sent.set()
                r = c.post("/tap/sync", data=slow)
                if r.status_code != 503:
                    done["slow"] = r
                    return

    thread = threading.Thread(target=run_slow, daemon=True)
    busy = None
    try:
        thread.start()
        sent.wait(10)
        with httpx.Client(base_url=url, timeout=30) as other:
            while thread.is_alive():
                r = other.get("/tap/sync", params=_small_query(schema))
                if r.status_code == 503:
                    busy = r
                    break
                time.sleep(0.05)
            thread.join(CUT_OFF_S + 30)
            # the slot is free again
            _assert_small_answer(other.get("/tap/sync", params=_small_query(schema)))
    finally:
        stop()
    assert busy is not None, "no 503 while the only slot was taken"
    assert busy.headers.get("Retry-After", "").strip().isdigit(), busy.headers
    assert int(busy.headers["Retry-After"]) >= 1
    error_of(busy, leaks)
    assert done["slow"].status_code == 400 and "longer than" in error_of(done["slow"], leaks)


@pytest.mark.parametrize("maxrec, rows", [("1000000000000", 5000), ("10", 10), ("0", 0),
                                          ("99999999999999999999999", 5000)])
def test_maxrec_is_capped_with_overflow(short_client, holder, maxrec, rows):
    """The short server's hard limit is 5,000 rows; gaia has 40,000: OVERFLOW after the table."""
    schema = holder.current.schema
    response = short_client.get("/tap/sync", params={"QUERY": f"SELECT source_id FROM {schema}.gaia",
                                                     "MAXREC": maxrec})
    assert response.status_code == 200, response.text[:300]
    assert rows_of(response.content) == rows
    assert trailing_status(response.content) == "OVERFLOW"


def test_maxrec_without_overflow_and_json(short_client, holder):
    schema = holder.current.schema
    response = short_client.get("/tap/sync", params={"QUERY": f"SELECT TOP 3 source_id FROM {schema}.gaia",
                                                     "MAXREC": "1000000000"})
    assert rows_of(response.content) == 3 and trailing_status(response.content) is None
    response = short_client.get("/tap/sync", params={"QUERY": f"SELECT source_id FROM {schema}.gaia",
                                                     "MAXREC": "1000000000", "RESPONSEFORMAT": "json"})
    body = response.json()
    assert body["query_status"] == "OVERFLOW" and len(body["data"]) == 5000


def test_huge_body_gets_413(client, limits, leaks):
    query = "SELECT TOP 1 source_id FROM gaia WHERE " + "ra IS NOT NULL AND " * (limits.max_request_bytes // 18)
    response = client.post("/tap/sync", data={"QUERY": query})
    assert response.status_code == 413, response.text[:300]
    assert re.search(r"\d", error_of(response, leaks))  # says the limit


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_query_of_150_kb_is_refused(client, app, holder, leaks, method):
    query = f"SELECT TOP 1 source_id FROM {holder.current.schema}.gaia WHERE " + "ra IS NOT NULL AND " * 7900 \
        + "dec IS NOT NULL"
    assert len(query) > 150_000
    response = get(client, app, "/tap/sync", {"QUERY": query}) if method == "GET" \
        else client.post("/tap/sync", data={"QUERY": query})
    assert response.status_code in (400, 413), response.text[:300]
    error_of(response, leaks)


def _raw(url: str, request: bytes, hold: bool = False, timeout: float = 20.0):
    """Send ``request`` bytes as they are (with Connection: close); (status, body) of the response,
    or the open socket when ``hold`` (the caller closes it)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    sock.sendall(request)
    if hold:
        return sock
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return status, body[:int(length.group(1))] if length else body


def _post(host: str, length: str, body: bytes) -> bytes:
    return (f"POST /tap/sync HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode() + body


def test_content_length_lies(short_url, holder, leaks):
    host = urlsplit(short_url).netloc
    schema = holder.current.schema
    query = f"QUERY=SELECT+TOP+1+source_id+FROM+{schema}.gaia".encode()
    # far more than the limit is announced, little is sent: refused at once, without waiting
    status, body = _raw(short_url, _post(host, "1000000000", query))
    assert status == 413
    error_of(_Response(status, body), leaks)
    # nonsense lengths
    for length in ("abc", "-5", "1e3"):
        status, body = _raw(short_url, _post(host, length, query))
        assert status is not None and 400 <= status < 500, (length, status, body[:200])
        assert_no_leak(body.decode("utf-8", "replace"), leaks)
    # less announced than sent: the form is cut where the length says (QUERY= is empty)
    status, body = _raw(short_url, _post(host, "5", query))
    assert status == 400
    assert "QUERY" in error_of(_Response(status, body), leaks)
    # more announced than sent, and the connection held open: other clients are still answered
    sock = _raw(short_url, _post(host, "5000", query), hold=True)
    try:
        _assert_small_answer(httpx.get(f"{short_url}/tap/sync", params=_small_query(schema), timeout=30))
    finally:
        sock.close()


def test_chunked_body_over_the_limit_gets_413(short_url, short_limits, leaks):
    """No Content-Length (chunked): the body is counted as it arrives and refused past the limit."""
    def chunks():
        yield b"QUERY=SELECT+"
        for _ in range(short_limits.max_request_bytes // 10_000 + 5):
            yield b"x" * 10_000

    response = httpx.post(f"{short_url}/tap/sync", content=chunks(), timeout=30,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413, f"HTTP {response.status_code}: {response.text[:300]}"
    error_of(response, leaks)


def test_long_url_on_the_live_server(short_url, holder, leaks):
    """A 150 KB URL: refused (by the HTTP layer or the service) and the server goes on."""
    query = f"SELECT TOP 1 source_id FROM {holder.current.schema}.gaia WHERE " + "ra IS NOT NULL AND " * 7900 + "1=1"
    host = urlsplit(short_url).netloc
    request = f"GET /tap/sync?{urlencode({'QUERY': query})} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    status, body = _raw(short_url, request.encode())
    assert status is not None and 400 <= status < 500, (status, body[:200])
    assert_no_leak(body.decode("utf-8", "replace"), leaks)
    _assert_small_answer(httpx.get(f"{short_url}/tap/sync", params=_small_query(holder.current.schema), timeout=30))


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data", b"garbage"),
    ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-data; name=\"QUERY\"\r\n\r\nSELECT"),
    ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-data; name=\"QUERY\"; "
                                          b"filename=\"q.adql\"\r\n\r\nSELECT 1\r\n--abc--\r\n"),
    ("application/json", b'{"QUERY": "SELECT 1"}'),
    ("application/x-www-form-urlencoded", b"QUERY=%ZZ%00&&&=&QUERY"),
])
def test_odd_bodies_get_error_documents(client, leaks, content_type, body):
    response = client.post("/tap/sync", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text[:300]
    error_of(response, leaks)


# --- endpoints and parameters --------------------------------------------------------------------

@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nope", 404), ("GET", "/etc/passwd", 404), ("GET", "/tap/sync/extra", 404),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", 404), ("GET", "/scs/nope", 404), ("GET", "/scs/..%2f..%2fetc", 404),
    ("PUT", "/tap/sync", 405), ("DELETE", "/tap/sync", 405), ("PATCH", "/scs", 405), ("POST", "/tap/tables", 405),
    ("DELETE", "/tap/capabilities", 405), ("PUT", "/tap/async", 405), ("GET", "/tap/async/nojob", 404),
    ("GET", "/tap/async/..%2f..%2fetc%2fpasswd/results/result", 404), ("PATCH", "/tap/async/x/phase", 405),
])
def test_unknown_endpoints_and_methods(client, leaks, method, path, status):
    response = client.request(method, path, params={"RA": "1", "DEC": "1", "SR": "0.1"} if "scs" in path else None)
    assert response.status_code == status, response.text[:300]
    error_of(response, leaks)
    if status == 405:  # RFC 9110: a 405 names the methods that work
        assert "GET" in response.headers.get("Allow", ""), dict(response.headers)


@pytest.mark.parametrize("params, names", [
    ({"MAXREC": "abc"}, "MAXREC"), ({"MAXREC": "-1"}, "MAXREC"), ({"MAXREC": "1e3"}, "MAXREC"),
    ({"RESPONSEFORMAT": "xlsx"}, "RESPONSEFORMAT"), ({"FORMAT": "application/x-evil"}, "RESPONSEFORMAT"),
    ({"QUERY": None}, "QUERY"), ({"QUERY": "   "}, "QUERY"), ({"LANG": "SQL"}, "LANG"),
    ({"LANG": "PostgreSQL"}, "LANG"), ({"REQUEST": "getCapabilities"}, "REQUEST"),
])
def test_bad_tap_parameters(client, holder, leaks, params, names):
    full = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": f"SELECT TOP 1 source_id FROM {holder.current.schema}.gaia"}
    full.update(params)
    full = {k: v for k, v in full.items() if v is not None}
    for response in (client.get("/tap/sync", params=full), client.post("/tap/sync", data=full)):
        assert response.status_code == 400, response.text[:300]
        assert names in error_of(response, leaks)


def test_query_given_twice(client, holder, leaks):
    schema = holder.current.schema
    response = client.get("/tap/sync", params=[("QUERY", f"SELECT TOP 1 source_id FROM {schema}.gaia"),
                                               ("query", "SELECT * FROM read_csv('/etc/passwd')")])
    assert response.status_code == 400
    assert "QUERY" in error_of(response, leaks)


@pytest.mark.parametrize("params", [
    {"RA": "nan", "DEC": "0", "SR": "0.1"}, {"RA": "inf", "DEC": "0", "SR": "0.1"},
    {"RA": "-1", "DEC": "0", "SR": "0.1"}, {"RA": "361", "DEC": "0", "SR": "0.1"},
    {"RA": "10", "DEC": "91", "SR": "0.1"}, {"RA": "10", "DEC": "-91", "SR": "0.1"},
    {"RA": "10", "DEC": "0", "SR": "1e9"}, {"RA": "10", "DEC": "0", "SR": "-1"}, {"RA": "10", "DEC": "0", "SR": "nan"},
    {"RA": "abc", "DEC": "0", "SR": "0.1"}, {"RA": "1e400", "DEC": "0", "SR": "0.1"},
    {"DEC": "0", "SR": "0.1"}, {"RA": "10", "SR": "0.1"}, {"RA": "10", "DEC": "0"}, {},
    {"RA": "10", "DEC": "0", "SR": "0.1", "VERB": "4"},
    {"RA": "10", "DEC": "0", "SR": "0.1'); COPY (SELECT 1) TO 'x.csv'; --"},
])
@pytest.mark.parametrize("path", ["/scs", "/scs/gaia"])
def test_bad_cone_searches(client, leaks, params, path):
    for response in (client.get(path, params=params), client.post(path, data=params)):
        assert response.status_code == 400, response.text[:300]
        error_of(response, leaks, scs=True)


def test_unknown_cone_table(client, leaks):
    response = client.get("/scs/tap_schema.columns", params={"RA": "1", "DEC": "1", "SR": "0.1"})
    assert response.status_code == 404
    error_of(response, leaks, scs=True)


def test_public_documents_show_no_paths(client, holder, leaks):
    for path in ("/", "/tap/capabilities", "/tap/availability", "/tap/tables", "/tap/examples"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_no_leak(response.text, leaks)
    for table in ("tables", "columns", "schemas"):
        response = client.get("/tap/sync", params={"QUERY": f"SELECT * FROM tap_schema.{table}",
                                                   "RESPONSEFORMAT": "csv", "MAXREC": "100000"})
        assert response.status_code == 200
        assert_no_leak(response.text, leaks)


def _pole_polygon(n: int) -> str:
    """POLYGON of ``n`` vertices on the circle dec = 1 deg around the north pole: convex however the
    RAs are rounded (all on one small circle), and short to write."""
    return "POLYGON(" + ",".join(f"{360 * k / n:.3f},1" for k in range(n)) + ")"


def test_time_limit_holds_when_it_fires_before_execution(service_release):
    """The timer may fire while DuckDB still parses and binds a large query (a POLYGON of 500
    vertices binds for a while): the query must still be cut off, not run unbounded.
    On a connection of its own, so that a runaway can be stopped by the test."""
    from stellardb.service import adql
    from stellardb.service.served import QueryTimeout, open_release

    _, release = service_release
    served = open_release(release, memory_limit="500MB")
    cursor = served.con.cursor()
    served._cursors.put(cursor)  # the cursor execute() takes, kept here to stop a runaway
    schema = served.schema
    query = (f"SELECT COUNT(*) FROM {schema}.gaia AS a, {schema}.gaia AS b, {schema}.gaia AS c "
             f"WHERE 1 = CONTAINS(POINT(a.ra, a.dec), {_pole_polygon(500)})")
    sql = f"select * from ({adql.translate(query, served.tables, schema).sql}) limit 10"
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            served.execute(sql, 0.05)
            outcome["result"] = "finished"
        except QueryTimeout:
            outcome["result"] = "timeout"
        except Exception as exc:  # reported below
            outcome["result"] = repr(exc)
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10.0)
    runaway = thread.is_alive()
    if runaway:
        cursor.interrupt()
        thread.join(30)
    served.retire()
    assert not runaway, "a 0.05 s limit that fired before execution began was lost: the query ran on " \
                        "for 10 s (stopped by the test)"
    assert outcome["result"] == "timeout", outcome


@pytest.mark.parametrize("table", ["gaia", "skymapper", "distances", "labels", "xmatch", "predictions",
                                   "catalogue"])
def test_select_star_shows_no_paths(client, holder, leaks, table):
    """Every published column of every table, as text: no path of the server among them."""
    response = client.get("/tap/sync", params={"QUERY": f"SELECT TOP 50 * FROM {holder.current.schema}.{table}",
                                               "RESPONSEFORMAT": "csv"})
    assert response.status_code == 200, response.text[:300]
    assert_no_leak(response.text, leaks)
    assert not PATH_RE.search(response.text.splitlines()[0]), response.text.splitlines()[0]


def test_large_polygon_is_cut_off(short_url, holder, leaks):
    """A convex POLYGON of 4,000 vertices (40 KB of ADQL): its translation and its run together
    must keep to the time limit, and other clients are answered meanwhile."""
    schema = holder.current.schema
    query = f"SELECT COUNT(*) FROM {schema}.gaia WHERE 1 = CONTAINS(POINT(ra, dec), {_pole_polygon(4000)})"
    result: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            result["response"] = httpx.post(f"{short_url}/tap/sync", data={"QUERY": query}, timeout=CUT_OFF_S + 1)
        except httpx.TimeoutException as exc:
            result["response"] = exc
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)
    _assert_small_answer(httpx.get(f"{short_url}/tap/sync", params=_small_query(schema), timeout=60))
    thread.join(CUT_OFF_S + 10)
    response = result.get("response")
    assert isinstance(response, httpx.Response), \
        f"no answer within {CUT_OFF_S + 1:g} s with a {SHORT_TIMEOUT_S:g} s limit ({response!r})"
    assert result["elapsed"] < CUT_OFF_S, \
        f"answered after {result['elapsed']:.1f} s with a {SHORT_TIMEOUT_S:g} s limit"
    assert response.status_code in (200, 400), response.text[:300]
    if response.status_code == 400:
        error_of(response, leaks)


# --- after all that ------------------------------------------------------------------------------

def test_still_answering_and_unchanged(client, holder, release_con, untouched, leaks):
    schema = holder.current.schema
    assert client.get("/tap/availability").status_code == 200
    _assert_small_answer(client.get("/tap/sync", params=_small_query(schema)))
    for table in ("gaia", "catalogue", "predictions"):
        response = client.get("/tap/sync", params={"QUERY": f"SELECT COUNT(*) AS n FROM {schema}.{table}",
                                                   "RESPONSEFORMAT": "csv"})
        assert response.status_code == 200
        expected = release_con.execute(f"select count(*) from {table}").fetchone()[0]
        assert int(response.text.splitlines()[1]) == expected
    assert _catalogue(holder.current.con) == untouched["catalogue"]


def test_nothing_was_written(service_release, outside, untouched):
    """Last: the release folder and the folder outside it are as they were before the suite."""
    _, release = service_release
    assert _snapshot(release) == untouched["release"]
    assert _snapshot(outside.dir) == untouched["outside"]
    for name in RELATIVE_TARGETS:
        assert not (Path.cwd() / name).exists()
        assert not (Path(release) / name).exists()
    assert len(untouched["release"]) > 10  # the snapshot saw the release
