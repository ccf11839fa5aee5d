"""sql/ is the only schema source: layers in order, files after what they use, views read stored
tables only through 20_sources, first error named with its file, numbered migrations with a stored
schema version, and a database written before this scheme migrates without loss."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from stellardb.catalog import db, schema
from stellardb.cli.main import cli
from stellardb.errors import UserError
from stellardb.errors import UserError

from ..helpers import DATA

SQL_ROOT = Path(__file__).resolve().parents[2] / "sql"
OBJECT_FILES = sorted(p for p in SQL_ROOT.glob("*/*.sql") if p.parent.name != schema.MIGRATIONS)
CREATE = re.compile(
    r"^\s*create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+)?(view|table|macro)\s+(?:if\s+not\s+exists\s+)?"
    r"([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE | re.MULTILINE,
)
#: a database written by stellardb before schema versions existed (commit 8491037): 1,000 simulated stars,
#: all four tables, xmatch, model tiny trained and scored (made by tests/data/make_schema_v0.sh)
V0_FIXTURE = DATA / "schema_v0.duckdb.gz"
STORED = sorted(p.stem for p in (SQL_ROOT / "00_tables").glob("*.sql"))


def defined_objects(path: Path) -> list[tuple[str, str]]:
    """(kind, name) of every object a SQL file creates, comments stripped."""
    text = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
    return [(kind.lower(), name) for kind, name in CREATE.findall(text)]


def mentioned(path: Path) -> set[str]:
    """Identifiers in a SQL file, comments and string literals left out (independent of schema.py)."""
    text = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
    text = re.sub(r"'[^']*'", "", text)
    return set(re.findall(r"\b[a-z_][a-z0-9_]*\b", text.lower()))


# ---------------------------------------------------------------- layers and order


def test_sql_folders_are_the_known_layers():
    """`ls sql/` shows the layers, in the order they are applied, plus migrations/; nothing else."""
    folders = sorted(p.name for p in SQL_ROOT.iterdir() if p.is_dir())
    assert folders == sorted([*schema.SQL_LAYERS, schema.MIGRATIONS])
    assert list(schema.SQL_LAYERS) == sorted(schema.SQL_LAYERS)  # the numbers give the order


def test_every_object_file_is_applied_once_in_layer_order():
    applied = [p.resolve() for p in schema.sql_files()]
    assert sorted(applied) == sorted(p.resolve() for p in OBJECT_FILES)
    layers = [p.parent.name for p in applied]
    assert layers == sorted(layers, key=schema.SQL_LAYERS.index)


def test_files_come_after_the_objects_they_use():
    """Within a layer each file is applied after every file of that layer whose object it mentions;
    an object of a later layer is never used.  (Tables use nothing: their column names, such as
    model_runs.stars, may repeat a view's name.)"""
    order = schema.sql_files()
    position = {p.stem: i for i, p in enumerate(order)}
    layer_of = {p.stem: schema.SQL_LAYERS.index(p.parent.name) for p in order}
    for i, path in enumerate(order):
        if path.parent.name == "00_tables":
            continue
        for name in mentioned(path) & set(position) - {path.stem}:
            assert layer_of[name] <= layer_of[path.stem], f"{path.name} uses {name} of a later layer"
            if layer_of[name] == layer_of[path.stem]:
                assert position[name] < i, f"{path.name} is applied before {name}, which it uses"


def test_order_comes_from_dependencies_not_names(tmp_path):
    """A view named to sort first but using another is applied after it; a cycle is refused by name."""
    for name, body in {"a_uses_b": "create view a_uses_b as select * from z_base;",
                       "z_base": "create view z_base as select 1 as x;",
                       "m_alone": "create view m_alone as select 2 as y;"}.items():
        (tmp_path / f"{name}.sql").write_text(f"-- {name}\n{body}\n")
    ordered = schema._ordered(sorted(tmp_path.glob("*.sql")))
    assert [p.stem for p in ordered].index("z_base") < [p.stem for p in ordered].index("a_uses_b")
    (tmp_path / "z_base.sql").write_text("-- cycle\ncreate view z_base as select * from a_uses_b;\n")
    with pytest.raises(schema.SchemaError, match="a_uses_b, z_base"):
        schema._ordered(sorted(tmp_path.glob("*.sql")))


def test_block_comments_and_strings_name_nothing(tmp_path):
    """A name inside /* */, a string or a comment is no dependency; a cycle names only its own files,
    not those that merely wait for it."""
    files = {"a_first": "create view a_first as select '-- z_second' as s /* z_second */, 1 as x; -- z_second",
             "z_second": "create view z_second as select * from a_first;"}
    for name, body in files.items():
        (tmp_path / f"{name}.sql").write_text(f"-- {name}\n{body}\n")
    assert [p.stem for p in schema._ordered(sorted(tmp_path.glob("*.sql")))] == ["a_first", "z_second"]
    (tmp_path / "a_first.sql").write_text("-- now a cycle\ncreate view a_first as select * from z_second;\n")
    (tmp_path / "m_downstream.sql").write_text("-- waits\ncreate view m_downstream as select * from a_first;\n")
    with pytest.raises(schema.SchemaError, match=r"cycle: a_first, z_second$"):
        schema._ordered(sorted(tmp_path.glob("*.sql")))


def test_sql_loads_into_memory_database():
    """connect(':memory:') creates every table, view and macro that sql/ defines, and every view runs."""
    con = db.connect(":memory:")
    try:
        views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        macros = {r[0] for r in con.execute(
            "select function_name from duckdb_functions() where function_type in ('macro', 'table_macro')").fetchall()}
        for path in OBJECT_FILES:
            for kind, name in defined_objects(path):
                where = {"view": views, "table": tables, "macro": macros}[kind]
                assert name in where, f"{path.name}: {kind} {name} was not created"
        for view in sorted(views):  # every view can be planned and run on the empty tables
            con.execute(f"select * from {view} limit 0").fetchall()
    finally:
        con.close()


def test_apply_sql_is_idempotent(tmp_path):
    """Opening a database twice re-applies sql/ without error and without duplicating settings or
    schema_migrations rows."""
    path = tmp_path / "twice.duckdb"
    db.connect(path, read_only=False, create=True).close()
    con = db.connect(path, read_only=False)
    try:
        names = [r[0] for r in con.execute("select name from settings order by name").fetchall()]
        versions = [r[0] for r in con.execute("select version from schema_migrations").fetchall()]
    finally:
        con.close()
    assert names == sorted(set(names)) and {"xmatch_radius_arcsec", "label_match_radius_arcsec"} <= set(names)
    assert sorted(versions) == list(range(1, schema.latest_version() + 1))


@pytest.mark.parametrize("path", OBJECT_FILES, ids=[f"{p.parent.name}/{p.name}" for p in OBJECT_FILES])
def test_sql_file_defines_object_named_like_it(path):
    """Each file creates the table, macro or view it is named after, with a comment saying what it is;
    00_tables holds only tables, 10_macros only macros, the other layers views (or macros)."""
    names = [name for _, name in defined_objects(path)]
    assert path.stem in names, f"{path.name} defines {names}"
    assert path.read_text().lstrip().startswith("--"), f"{path.name} has no leading comment"
    kinds = {kind for kind, name in defined_objects(path) if name == path.stem}
    expected = {"00_tables": {"table"}, "10_macros": {"macro"}}.get(path.parent.name, {"view", "macro"})
    assert kinds <= expected, (path.name, kinds)


def test_tables_are_defined_only_in_sql():
    """No Python module creates or alters a stored table: DDL lives in sql/.  Temporary tables are scratch,
    and `ingest --keep` adding the user's column to the user's table is the one documented exception."""
    package = Path(__file__).resolve().parents[2] / "stellardb"
    ddl = re.compile(r"(create\s+(?:or\s+replace\s+)?table|alter\s+table)\s+(?:if\s+(?:not\s+)?exists\s+)?([\w{}.\[\]]+)",
                     re.IGNORECASE)
    offenders = []
    for path in package.rglob("*.py"):
        for statement, target in ddl.findall(path.read_text()):
            allowed = path.name == "staging.py" and target == "{spec.name}"  # ingest --keep COL
            scratch = path.name == "readers.py" and target == "{stage}"  # a temp table of readers.py
            # TAP_SCHEMA lives in the service's private DuckDB file, never in the database
            service = path.name == "metadata.py" and path.parent.name == "service" and target == "tap_schema.{table}"
            if not (allowed or scratch or service):
                offenders.append(f"{path.relative_to(package)}: {statement} {target}")
    assert not offenders, offenders


# ---------------------------------------------------------------- 20_sources is the only reader of stored tables


def test_views_read_stored_tables_only_through_sources():
    """Every crossmatch, mart and ML view reads `<table>_src`, never a stored table (settings, which
    holds parameters, excepted); each source view reads its own table and nothing else."""
    stored = set(STORED) - set(schema.PARAMETER_TABLES)
    for path in schema.sql_files():
        layer = path.parent.name
        if layer in ("00_tables", "10_macros"):
            continue
        used = mentioned(path) & stored
        if layer == schema.SOURCE_LAYER:
            assert path.stem == used.pop() + "_src" and not used, (path.name, used)
        else:
            assert not used, f"{layer}/{path.name} reads stored tables {sorted(used)}: read their _src views"


def test_pointing_a_source_view_elsewhere_changes_every_view_above_it(sky, tmp_path):
    """Redefine gaia_src (as a release would, over other storage): stars and features follow it,
    which shows they read Gaia through it."""
    from stellardb.ingest import pipeline as ingest

    path = tmp_path / "s.duckdb"
    ingest.run(path, "gaia", [sky.files["gaia"]])
    con = db.connect(path, read_only=False)
    try:
        count = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
        full, stored = count("select count(*) from stars"), count("select count(*) from gaia")
        con.execute("create or replace view gaia_src as select * from gaia where source_id % 2 = 0")
        even = count("select count(*) from gaia where source_id % 2 = 0")
        assert full == stored and 0 < even < stored
        assert count("select count(*) from stars") == even
        assert count("select count(*) from features") == even
    finally:
        con.close()


# ---------------------------------------------------------------- errors and migrations


def copy_sql(tmp_path) -> Path:
    root = tmp_path / "sql"
    shutil.copytree(SQL_ROOT, root)
    return root


def test_first_sql_error_is_reported_with_its_file(tmp_path, monkeypatch):
    root = copy_sql(tmp_path)
    (root / "40_marts" / "stars.sql").write_text("-- broken\ncreate or replace view stars as select nonsense from gaia_src;\n")
    monkeypatch.setattr(schema, "sql_dir", lambda: root)
    with pytest.raises(schema.SchemaError, match=r"^sql/40_marts/stars\.sql: .*nonsense"):
        db.connect(":memory:")


def test_new_database_is_at_the_latest_version(tmp_path):
    path = tmp_path / "new.duckdb"
    db.connect(path, read_only=False, create=True).close()
    con = db.connect(path)
    try:
        assert schema.schema_version(con) == schema.latest_version() >= 1
        versions = [r[0] for r in con.execute("select version from schema_migrations order by 1").fetchall()]
        assert versions == list(range(1, schema.latest_version() + 1))
    finally:
        con.close()


def unpack_v0(tmp_path) -> Path:
    path = tmp_path / "v0.duckdb"
    path.write_bytes(gzip.decompress(V0_FIXTURE.read_bytes()))
    return path


def table_contents(path) -> dict:
    """Every stored table's rows, sorted, read with plain DuckDB (independent of stellardb)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "select table_name from duckdb_tables() where table_name <> 'schema_migrations' order by 1").fetchall()]
        return {t: sorted(con.execute(f'select * from "{t}"').fetchall(), key=repr) for t in names}
    finally:
        con.close()


def test_database_from_before_schema_versions_migrates_without_loss(tmp_path):
    """The committed v0 file: read-only commands refuse it with a one-line message naming migrate
    (0002 adds a column the views show), touching nothing; migrate runs 0001 and 0002; every row of every table is still there, the views work on it, and a second
    migrate does nothing."""
    path = unpack_v0(tmp_path)
    before = table_contents(path)
    assert before["gaia"] and before["predictions"] and before["model_runs"]
    as_is = CliRunner().invoke(cli, ["--db", str(path), "query", "select count(*) as n from stars_with_predictions"])
    # 0002 adds predictions.feature_set, which stars_with_predictions shows: a reader is told to migrate
    assert as_is.exit_code == 1 and "0002_predictions_feature_set" in as_is.output and "migrate" in as_is.output, as_is.output
    assert table_contents(path) == before
    with pytest.raises(UserError, match="migrate"):
        db.connect(path)
    result = CliRunner().invoke(cli, ["--db", str(path), "migrate"])
    assert result.exit_code == 0, result.output
    assert f"from schema version 0 to {schema.latest_version()}" in result.output
    assert "0001_predictions_extrapolation_flags" in result.output and "0002_predictions_feature_set" in result.output
    after = table_contents(path)
    # column_metadata is stellardb's own description of the columns, rewritten by each version (one
    # UCD was corrected since the v0 file): every column keeps its row; the rest is the user's data
    assert {r[:2] for r in before.pop("column_metadata")} <= {r[:2] for r in after.pop("column_metadata")}
    # later versions add tables (empty) and settings rows (defaults); the v0 rows stay as they were
    new_tables = set(after) - set(before)
    assert new_tables and all(after.pop(t) == [] for t in new_tables), new_tables
    assert set(before.pop("settings")) <= set(after.pop("settings"))
    # predictions gained feature_set: the seed's set for every row scored before it existed
    assert [r[:-1] for r in after.pop("predictions")] == before["predictions"]
    after["predictions"] = before["predictions"]
    assert after == before
    con = db.connect(path)  # read-only now works
    try:
        assert schema.schema_version(con) == schema.latest_version()
        assert con.execute("select count(*) from stars").fetchall()[0][0] == len(before["gaia"])
        n_pred = con.execute("select count(*) from stars_with_predictions where model = 'tiny'").fetchall()[0][0]
        assert n_pred == len(before["predictions"])
    finally:
        con.close()
    again = CliRunner().invoke(cli, ["--db", str(path), "migrate"])
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_old_file_without_a_table_or_with_other_tables_gets_the_schema(tmp_path):
    """A version-0 file lacking predictions migrates (the migration alters it only if it exists; 00_tables
    then makes it); a DuckDB file holding someone's own table gains stellardb's beside it."""
    path = unpack_v0(tmp_path)
    con = duckdb.connect(str(path))
    con.execute("drop view stars_with_predictions")
    con.execute("drop table predictions")
    con.close()
    with pytest.raises(UserError, match="0001_predictions_extrapolation_flags.*migrate"):
        db.connect(path)  # readers would miss the table
    result = CliRunner().invoke(cli, ["--db", str(path), "migrate"])
    assert result.exit_code == 0, result.output
    con = db.connect(path)
    try:
        assert con.execute("select count(inputs_outside_training) from predictions").fetchall() == [(0,)]
    finally:
        con.close()
    other = tmp_path / "mine.duckdb"
    con = duckdb.connect(str(other))
    con.execute("create table notes as select 42 as answer")
    con.close()
    db.connect(other, read_only=False).close()
    con = db.connect(other)
    try:
        assert con.execute("select answer from notes").fetchall() == [(42,)]
        assert schema.schema_version(con) == schema.latest_version()
    finally:
        con.close()


def test_errors_that_are_not_about_the_sql_pass_through(tmp_path, monkeypatch):
    """Out of memory while sql/ is applied is the command line's one-line memory message, not a SchemaError;
    a broken file of sql/ is one line too."""
    path = unpack_v0(tmp_path)
    monkeypatch.setenv("STELLARDB_MEMORY_LIMIT", "500KB")
    result = CliRunner().invoke(cli, ["--db", str(path), "migrate"])
    assert result.exit_code == 1 and "ran out of memory" in result.output and result.output.count("\n") == 1, \
        result.output
    monkeypatch.delenv("STELLARDB_MEMORY_LIMIT")
    root = copy_sql(tmp_path)
    (root / "50_ml" / "scoring_set.sql").write_text("-- broken\ncreate or replace view scoring_set as select nonsense;\n")
    monkeypatch.setattr(schema, "sql_dir", lambda: root)
    result = CliRunner().invoke(cli, ["--db", str(path), "migrate"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: sql/50_ml/scoring_set.sql:") and "unchanged" in result.output


def test_a_failing_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    root = copy_sql(tmp_path)
    broken = f"{schema.latest_version() + 1:04d}_broken"
    (root / "migrations" / f"{broken}.sql").write_text("-- broken on purpose\nalter table no_such_table add column x int;\n")
    monkeypatch.setattr(schema, "sql_dir", lambda: root)
    path = unpack_v0(tmp_path)
    before = table_contents(path)
    with pytest.raises(schema.SchemaError, match=rf"sql/migrations/{broken}\.sql"):
        db.connect(path, read_only=False)
    assert table_contents(path) == before
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert schema.schema_version(con) == 0  # the migrations before it were rolled back with it
    finally:
        con.close()


def test_migrations_must_be_numbered_without_gaps(tmp_path, monkeypatch):
    root = copy_sql(tmp_path)
    (root / "migrations" / f"{schema.latest_version() + 2:04d}_skipped_one.sql").write_text("-- gap\nselect 1;\n")
    monkeypatch.setattr(schema, "sql_dir", lambda: root)
    with pytest.raises(schema.SchemaError, match="without gaps"):
        schema.migrations()


def test_file_from_a_newer_stellardb_is_refused(tmp_path):
    path = tmp_path / "newer.duckdb"
    db.connect(path, read_only=False, create=True).close()
    con = duckdb.connect(str(path))
    con.execute("insert into schema_migrations values (99, 'future', now()::timestamp)")
    con.close()
    for read_only in (True, False):
        with pytest.raises(UserError, match="schema version 99, written by a newer stellardb"):
            db.connect(path, read_only=read_only)


def test_a_users_table_named_like_a_stellardb_view_is_named_in_one_line(tmp_path):
    """A table of the user's called gaia_src: a UserError saying whose it is and how to rename it, the file unchanged."""
    path = unpack_v0(tmp_path)
    con = duckdb.connect(str(path))
    con.execute("create table gaia_src as select 1 as mine")
    con.close()
    before = table_contents(path)
    result = CliRunner().invoke(cli, ["--db", str(path), "migrate"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "holds a table named gaia_src" in result.output and "rename" in result.output
    assert table_contents(path) == before
