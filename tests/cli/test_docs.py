"""Meta-tests: every command documents itself with an example, every column users see is described,
and the repository stands alone (no reference to a folder beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner

from stellardb.catalog import db, schema
from stellardb.cli.main import cli

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


def test_views_named_in_query_help_exist():
    """The tables and views `stellardb query --help` names exist in a fresh database."""
    help_text = cli.commands["query"].help
    named = set()
    for label in ("Tables:", "Views:"):
        line = next(line for line in help_text.splitlines() if line.strip().startswith(label))
        named |= {n.strip(" .") for n in line.split(":", 1)[1].split(",")}
    con = duckdb.connect()
    try:
        schema.apply_sql(con)
        existing = {r[0] for r in con.execute("select table_name from duckdb_tables() union all "
                                              "select view_name from duckdb_views()").fetchall()}
    finally:
        con.close()
    assert named and named <= existing, named - existing


# ---------------------------------------------------------------- column metadata, standalone repository

REPO = Path(__file__).resolve().parents[2]
#: what users query; every column of these must have a unit/UCD/description entry
USER_FACING = ("gaia", "skymapper", "distances", "sos", "predictions", "xmatch", "xmatch_labels", "stars", "features",
               "scoring_set", "training_set", "why_not_scored", "stars_with_predictions", "labels", "best_labels",
               "gaia_src", "skymapper_src", "distances_src", "sos_src", "xmatch_src", "xmatch_labels_src",
               "predictions_src", "tmass", "allwise", "ps1", "sdss", "xmatch_tmass", "xmatch_allwise", "xmatch_ps1",
               "xmatch_sdss", "tmass_src", "allwise_src", "ps1_src", "sdss_src")


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


#: the name of the folder the project's first work lived in, beside the repository; spelled in two pieces
#: so that this file, too, never names it
_SIBLING = "sha" + "red"
_OUTSIDE = re.compile("|".join([rf"\.\./{_SIBLING}", rf"/work/{_SIBLING}", rf"{_SIBLING}/data/real",
                                rf"{_SIBLING} folder beside", r"CATALOGUES\.md", r"STYLE\.md"]))


def test_repository_stands_alone():
    """No tracked file refers to the folder beside the repository, which users do not have, or to its
    documents: the contract and conventions are docs/catalogues.md and CONTRIBUTING.md."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.suffix in (".fits", ".parquet", ".png", ".gz"):
            continue
        if _OUTSIDE.search(path.read_text(errors="replace")):
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


def test_python_names_in_the_docs_exist():
    """Every `stellardb.x.y` the README, CONTRIBUTING.md and docs/ name is a module or an attribute of one
    (a moved function must not leave the docs pointing at nothing)."""
    import importlib

    texts = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
    missing = []
    for path in texts:
        for name in set(re.findall(r"\bstellardb(?:\.[A-Za-z_][A-Za-z0-9_]*)+", path.read_text())):
            parts = name.split(".")
            if parts[-1] in ("duckdb", "wal", "py", "md", "sql"):
                continue  # a file name, not a Python name
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                    break
                except ImportError:
                    continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(f"{path.name}: {name}")
    assert not missing, missing


def test_every_setting_is_in_the_help_and_the_readme():
    """stellardb/config.py is the one list of settings: `stellardb --help` and README's table name each."""
    from stellardb import config

    help_text = CliRunner().invoke(cli, ["--help"]).output
    readme = (REPO / "README.md").read_text()
    for s in config.SETTINGS:
        assert s.envvar in help_text, s.envvar
        assert f"| `{s.envvar}` |" in readme, s.envvar
