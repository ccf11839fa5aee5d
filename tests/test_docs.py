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
