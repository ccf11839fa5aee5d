"""Meta-tests: every command documents itself with an example, every SQL file defines the
object it is named after, and all of sql/ loads into a fresh database (STYLE.md sections 2, 3, 6)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner

from stellardb import db
from stellardb.cli import cli

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"
SQL_FILES = sorted(SQL_ROOT.glob("**/*.sql"))
CREATE = re.compile(
    r"^\s*create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+)?(view|table|macro)\s+(?:if\s+not\s+exists\s+)?"
    r"([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE | re.MULTILINE,
)
#: files that define several macros under other names (a known departure from "file name = object name")


def defined_objects(path: Path) -> list[tuple[str, str]]:
    """(kind, name) of every object a SQL file creates, comments stripped."""
    text = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
    return [(kind.lower(), name) for kind, name in CREATE.findall(text)]


def commands():
    return sorted(cli.commands.items())


@pytest.mark.parametrize("name, command", commands(), ids=[n for n, _ in commands()])
def test_command_has_help_with_example(name, command):
    """Each command's help has a summary and an Example: block that runs `stellardb [--db PATH] <command>`."""
    assert command.help, f"{name} is missing its help"
    summary, _, rest = command.help.partition("Example:")
    assert summary.strip(), f"{name}: no description before the example"
    assert rest.strip(), f"{name}: no Example: block"
    examples = [line.strip() for line in rest.splitlines() if line.strip()]
    assert examples and all(line.startswith("stellardb ") and name in line.split() for line in examples), examples


@pytest.mark.parametrize("name", [n for n, _ in commands()])
def test_command_help_prints(name):
    """`stellardb <command> --help` prints its help, including the example."""
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert re.search(rf"^\s+stellardb .*\b{name}\b", result.output.split("Example:", 1)[1], re.MULTILINE)


def test_group_help_lists_every_command():
    """`stellardb --help` lists every command."""
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in cli.commands:
        assert re.search(rf"^\s+{name}\b", result.output, re.MULTILINE), name


def test_every_option_of_ingest_query_xmatch_has_help():
    """The issue's commands (ingest, query, xmatch) document each option."""
    missing = [
        f"{name} {opt.opts[0]}"
        for name in ("ingest", "query", "xmatch")
        for opt in cli.commands[name].params
        if isinstance(opt, click.Option) and not opt.help
    ]
    assert not missing, missing


def test_sql_files_are_all_applied():
    """stellardb applies every .sql file under sql/ (no folder outside the known layers), in layer order."""
    assert SQL_FILES
    applied = [p.resolve() for p in db.sql_files()]
    assert sorted(applied) == sorted(p.resolve() for p in SQL_FILES)
    layers = [p.parent.name for p in applied]
    assert layers == sorted(layers, key=db.SQL_LAYERS.index)


@pytest.mark.parametrize(
    "path",
    SQL_FILES,
    ids=[f"{p.parent.name}/{p.name}" for p in SQL_FILES],
)
def test_sql_file_defines_object_named_like_it(path):
    """Each sql/**/*.sql creates a view, table or macro named after the file, with a comment saying what it is."""
    names = [name for _, name in defined_objects(path)]
    assert path.stem in names, f"{path.name} defines {names}"
    assert path.read_text().lstrip().startswith("--"), f"{path.name} has no leading comment"
    kinds = {kind for kind, name in defined_objects(path) if name == path.stem}
    expected = {"tables": {"table"}, "macros": {"macro"}}.get(path.parent.name, {"view", "macro"})
    assert kinds <= expected, (path.name, kinds)


def test_sql_loads_into_memory_database():
    """stellardb.db.connect(':memory:') creates every table, view and macro that sql/ defines."""
    con = db.connect(":memory:")
    try:
        views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        macros = {r[0] for r in con.execute(
            "select function_name from duckdb_functions() where function_type in ('macro', 'table_macro')").fetchall()}
        for path in SQL_FILES:
            for kind, name in defined_objects(path):
                where = {"view": views, "table": tables, "macro": macros}[kind]
                assert name in where, f"{path.name}: {kind} {name} was not created"
        # every view can be planned and run on the empty tables
        for view in sorted(views):
            con.execute(f"select * from {view} limit 0").fetchall()
    finally:
        con.close()


def test_apply_sql_is_idempotent(tmp_path):
    """Opening a database twice re-applies sql/ without error and without duplicating settings rows."""
    path = tmp_path / "twice.duckdb"
    db.connect(path, read_only=False, create=True).close()
    con = db.connect(path, read_only=False)
    try:
        names = [r[0] for r in con.execute("select name from settings order by name").fetchall()]
    finally:
        con.close()
    assert names == sorted(set(names)) and {"xmatch_radius_arcsec", "label_match_radius_arcsec"} <= set(names)


def test_views_named_in_query_help_exist():
    """The tables and views `stellardb query --help` names exist in a fresh database."""
    help_text = cli.commands["query"].help
    named = set()
    for label in ("Tables:", "Views:"):
        line = next(line for line in help_text.splitlines() if line.strip().startswith(label))
        named |= {n.strip(" .") for n in line.split(":", 1)[1].split(",")}
    con = duckdb.connect()
    try:
        db.apply_sql(con)
        existing = {r[0] for r in con.execute("select table_name from duckdb_tables() union all "
                                              "select view_name from duckdb_views()").fetchall()}
    finally:
        con.close()
    assert named and named <= existing, named - existing


# ---------------------------------------------------------------- column metadata, standalone repository

REPO = Path(__file__).resolve().parent.parent
#: what users query; every column of these must have a unit/UCD/description entry
USER_FACING = ("gaia", "skymapper", "distances", "sos", "predictions", "xmatch", "xmatch_labels", "stars", "features",
               "scoring_set", "training_set", "why_not_scored", "stars_with_predictions", "labels", "best_labels")


def test_gaia_column_metadata_is_the_archives_own():
    """The gaia rows of column_metadata carry the Gaia archive's own unit, UCD and description
    (stellardb.simulate.gaia_schema, checked against real archive ECSV headers)."""
    from stellardb.simulate.gaia_schema import GAIA_SOURCE_COLUMNS

    con = db.connect(":memory:")
    try:
        rows = {r[0]: r[1:] for r in con.execute(
            "select column_name, unit, ucd, description from column_metadata where table_name = 'gaia'").fetchall()}
    finally:
        con.close()
    checked = 0
    for name, _, unit, ucd, description in GAIA_SOURCE_COLUMNS:
        if name in rows:
            assert rows[name] == (unit or None, ucd or None, description), name
            checked += 1
    assert checked >= 60


def test_every_user_facing_column_has_metadata():
    """Each column of the tables and views users query resolves to a description (and a UCD), so
    VOTable/FITS/ECSV exports describe every column."""
    con = db.connect(":memory:")
    try:
        missing = []
        for name in USER_FACING:
            columns = [d[0] for d in con.execute(f"select * from {name} limit 0").description]
            meta = db.column_metadata(con, columns, f"select * from {name}")
            missing += [f"{name}.{c}" for c in columns if not (meta.get(c) or {}).get("description")
                        or not meta[c].get("ucd")]
    finally:
        con.close()
    assert not missing, missing


def test_column_metadata_prefers_the_tables_the_query_reads():
    """teff is a reference label when read from sos and a prediction when read from predictions."""
    con = db.connect(":memory:")
    try:
        from_sos = db.column_metadata(con, ["teff"], "select teff from sos")["teff"]["description"]
        from_pred = db.column_metadata(con, ["teff"], "select teff from stars_with_predictions")["teff"]["description"]
    finally:
        con.close()
    assert "Reference" in from_sos and "prediction" in from_pred


def test_repository_stands_alone():
    """No tracked file refers to the folder beside the repository (../shared)."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = REPO / name
        if name == "tests/test_docs.py" or not path.is_file() or path.suffix in (".fits", ".parquet", ".png"):
            continue
        text = path.read_text(errors="replace")
        if re.search(r"\.\./shared|/work/shared|shared/data/real|shared folder beside", text):
            offenders.append(name)
    assert not offenders, offenders


def test_bench_results_render_every_figure(tmp_path):
    """bench/results.py writes each run's machine, date, command and every figure, peers included."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_results", REPO / "bench" / "results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    text = results.render({"simulate": {"machine": "vm", "date": "2026-12-06 10:00 UTC", "command": "bench_simulate.py",
                                        "seconds": 18.7, "peer_zlib_gzip_of_gaia_file_alone_s": 31.0,
                                        "nested": {"a": 1, "b": [1.5, 2]}}})
    assert "| seconds | 18.7 |" in text and "| peer_zlib_gzip_of_gaia_file_alone_s | 31 |" in text
    assert "| nested.b | [1.5, 2] |" in text and "- machine: vm" in text and "`bench_simulate.py`" in text
    assert "## bench_train" in text and "Not run yet" in text


def test_readme_links_the_benchmark_results():
    """README's results cite bench/RESULTS.md, which is committed."""
    assert "bench/RESULTS.md" in (REPO / "README.md").read_text()
    assert (REPO / "bench" / "RESULTS.md").is_file()


def test_environment_matches_the_lock():
    """The environment `make` builds is the one requirements.lock pins (every locked package that
    applies here is installed at its locked version), and the lock covers every dependency."""
    from importlib import metadata

    from packaging.markers import Marker
    from packaging.requirements import Requirement

    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = spec.strip().partition("==")
        locked[name.lower().replace("_", "-")] = version
    wrong = {}
    for name, version in locked.items():
        if name in ("pip", "setuptools", "wheel"):
            continue  # the venv's own installers, which `python -m venv` brings
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. a platform-only package
        if have != version:
            wrong[name] = (have, version)
    assert not wrong, f"installed vs locked: {wrong}; run `make lock` or rebuild the venv"
    requires = metadata.requires("stellardb") or []
    names = {Requirement(r).name.lower().replace("_", "-") for r in requires}
    assert names <= set(locked), names - set(locked)
