"""`stellardb query` and `xmatch`, `stellardb.connect` and SQLAlchemy access (issue 3).

Query results are compared with the same SQL run directly through duckdb; SQL
errors with the message DuckDB itself gives.  A read-only query must leave every
table's rows and contents as they were.
"""

from __future__ import annotations

import io
import json
import re
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

import stellardb
from stellardb.cli.main import cli
from stellardb.errors import UserError

from ..helpers import error_line, invoke, snapshot


SQL = "select source_id, ra, dec, phot_g_mean_mag, teff_gspphot from stars order by source_id limit 200"


def direct(db_path, sql) -> pd.DataFrame:
    """``sql`` run on a plain read-only duckdb connection."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


# ---------------------------------------------------------------- stellardb query


def test_query_csv_to_stdout(sky_db_path):
    """--format csv prints every row, equal to the same query run directly."""
    result = invoke(sky_db_path, "query", SQL, "--format", "csv")
    assert result.exit_code == 0, result.output
    got = pd.read_csv(io.StringIO(result.stdout))
    want = direct(sky_db_path, SQL)
    assert got["source_id"].tolist() == want["source_id"].tolist()
    np.testing.assert_allclose(got["ra"], want["ra"], rtol=1e-15)
    np.testing.assert_allclose(got["teff_gspphot"], want["teff_gspphot"].astype(float), rtol=1e-6)


def test_query_json_lines(sky_db_path):
    """--format json writes one JSON object per row, 19-digit ids intact."""
    result = invoke(sky_db_path, "query", SQL, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    want = direct(sky_db_path, SQL)
    assert [r["source_id"] for r in rows] == want["source_id"].tolist()
    assert [r["dec"] for r in rows] == pytest.approx(want["dec"].tolist(), rel=1e-14)


def test_query_parquet_output_file(sky_db_path, tmp_path):
    """--format parquet --output FILE writes all rows (beyond the table preview) to Parquet."""
    out = tmp_path / "stars.parquet"
    sql = "select source_id, r_med_geo, skymapper_object_id from stars"
    result = invoke(sky_db_path, "query", sql, "--format", "parquet", "--output", out)
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).to_pandas().sort_values("source_id").reset_index(drop=True)
    want = direct(sky_db_path, sql).sort_values("source_id").reset_index(drop=True)
    assert len(got) == len(want) > 1000
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_query_text_output_file(fmt, sky_db_path, tmp_path):
    """--output FILE writes csv/json to the file, not the terminal."""
    out = tmp_path / f"result.{fmt}"
    result = invoke(sky_db_path, "query", "select source_id from gaia order by source_id limit 7", "--format", fmt, "-o", out)
    assert result.exit_code == 0, result.output
    assert str(direct(sky_db_path, "select min(source_id) as s from gaia")["s"][0]) not in result.stdout
    if fmt == "csv":
        ids = pd.read_csv(out)["source_id"].tolist()
    else:
        ids = [json.loads(line)["source_id"] for line in out.read_text().splitlines()]
    assert ids == direct(sky_db_path, "select source_id from gaia order by source_id limit 7")["source_id"].tolist()


def test_query_table_format(sky_db_path):
    """--format table (the default) shows the columns and at most --max-rows rows, and says so."""
    result = invoke(sky_db_path, "query", "select source_id, ra from gaia order by source_id", "--max-rows", "3")
    assert result.exit_code == 0, result.output
    first = direct(sky_db_path, "select source_id from gaia order by source_id limit 4")["source_id"].tolist()
    assert "source_id" in result.stdout and "ra" in result.stdout
    assert all(str(s) in result.stdout for s in first[:3])
    assert str(first[3]) not in result.stdout
    assert "first 3 rows shown" in result.stdout


def test_query_parquet_needs_output(sky_db_path):
    """--format parquet without --output is a one-line error."""
    line = error_line(invoke(sky_db_path, "query", "select 1", "--format", "parquet"))
    assert "--output" in line


@pytest.mark.parametrize(
    "sql",
    [
        "selec 1",  # parser error
        "select * from no_such_table",  # catalog error
        "select no_such_column from gaia",  # binder error
        "select sourceid from gaia",  # binder error with a candidate binding
        "select cast('not a number' as integer)",  # error raised while the rows are produced
    ],
)
@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_query_sql_error_as_duckdb_states_it(sql, fmt, sky_db_path):
    """A SQL error is DuckDB's own message in full (LINE/caret, candidates), without a traceback, exit status 1."""
    con = duckdb.connect(str(sky_db_path), read_only=True)
    try:
        with pytest.raises(duckdb.Error) as info:
            con.execute(sql).fetchall()
    finally:
        con.close()
    duckdb_says = str(info.value).rstrip()
    result = invoke(sky_db_path, "query", sql, "--format", fmt)
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    # DuckDB's whole message, its LINE 1: context and caret or candidate names included
    assert result.output.rstrip() == f"Error: {duckdb_says}"


@pytest.mark.parametrize(
    "sql",
    [
        "delete from gaia",
        "update settings set value = 5",
        "insert into xmatch select * from xmatch",
        "create table t as select 1",
        "drop view stars",
        "create or replace view stars as select 1",
        "alter table gaia drop column ra",
        "select 1; delete from sos",
        "attach ':memory:' as m; delete from gaia",
    ],
)
def test_query_cannot_modify_the_database(sql, copy_db):
    """Writing SQL through `stellardb query` fails (read-only), and every table and view is unchanged."""
    before = snapshot(copy_db)
    line = error_line(invoke(copy_db, "query", sql))
    assert "read-only" in line
    assert snapshot(copy_db) == before


@pytest.mark.parametrize("sql", [
    "copy gaia to '{tmp}/card.json'",
    "copy (select 1) to '{tmp}/card.json' (format json)",
    "export database '{tmp}/exported'",
    "attach '{tmp}/other.duckdb' as other",
    "set memory_limit = '1KB'",
    "set enable_external_access = true",
    "pragma memory_limit = '1KB'",
    "install httpfs",
    "load httpfs",
    "call checkpoint()",
    "select * from read_csv('{tmp}/card.json')",
])
def test_query_touches_no_file_and_no_setting(sql, copy_db, tmp_path):
    """`stellardb query` and a read-only stellardb.connect cannot write, attach or read other files,
    change settings, or install/load extensions: each kind of statement fails and every file is unchanged."""
    card = tmp_path / "card.json"
    card.write_text('{"name": "demo"}')
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("create table t as select 1 as a").close()
    before = snapshot(copy_db), card.read_bytes(), other.read_bytes()
    text = sql.format(tmp=tmp_path)
    result = invoke(copy_db, "query", text)
    assert result.exit_code == 1 and "Traceback" not in result.output
    con = stellardb.connect(copy_db)
    try:
        if not text.startswith("call"):  # (checkpoint of a read-only file is a no-op for DuckDB)
            with pytest.raises(duckdb.Error):
                con.execute(text).fetchall()
        assert con.execute("select current_setting('enable_external_access')").fetchone()[0] is False
    finally:
        con.close()
    assert (snapshot(copy_db), card.read_bytes(), other.read_bytes()) == before
    assert not (tmp_path / "exported").exists()


def test_query_needs_an_existing_database(tmp_path):
    """`stellardb query` on a missing file says how to create one, and creates nothing."""
    missing = tmp_path / "none.duckdb"
    line = error_line(invoke(missing, "query", "select 1"))
    assert "none.duckdb" in line and "stellardb ingest" in line
    assert not missing.exists()


def test_database_from_environment_variable(sky_db_path):
    """Without --db, $STELLARDB_DB names the database."""
    result = CliRunner().invoke(cli, ["query", "select count(*) as n from gaia", "--format", "csv"],
                                env={"STELLARDB_DB": str(sky_db_path)})
    assert result.exit_code == 0, result.output
    assert int(pd.read_csv(io.StringIO(result.stdout))["n"][0]) == direct(sky_db_path, "select count(*) as n from gaia")["n"][0]


def test_default_database_in_working_directory(data_path, tmp_path, monkeypatch):
    """Without --db or $STELLARDB_DB, ingest writes ./stellardb.duckdb."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STELLARDB_DB", raising=False)
    result = CliRunner().invoke(cli, ["ingest", "gaia", str(data_path("real/gaia_dr3_fixture_5rows.ecsv")), "-q"])
    assert result.exit_code == 0, result.output
    assert direct(tmp_path / "stellardb.duckdb", "select count(*) as n from gaia")["n"][0] == 5


# ---------------------------------------------------------------- stellardb xmatch


@pytest.mark.parametrize("radius", ["0", "-1", "31", "nan"])
def test_xmatch_bad_radius(radius, copy_db):
    """A radius outside (0, 30] arcsec is a one-line error and changes nothing."""
    before = snapshot(copy_db)
    line = error_line(invoke(copy_db, "xmatch", "--radius-arcsec", radius))
    assert "--radius-arcsec" in line
    assert snapshot(copy_db) == before


def test_xmatch_needs_both_tables(tmp_path, data_path):
    """xmatch on a database without SkyMapper rows says what to ingest."""
    db_path = tmp_path / "g.duckdb"
    assert invoke(db_path, "ingest", "gaia", data_path("real/gaia_dr3_fixture_5rows.ecsv"), "-q").exit_code == 0
    line = error_line(invoke(db_path, "xmatch"))
    assert "ingest" in line and "skymapper" in line


def test_xmatch_rerun_is_stable(copy_db):
    """Re-running xmatch at the stored radius reproduces table xmatch and reports its pair count."""
    before = direct(copy_db, "select * from xmatch order by skymapper_object_id")
    result = invoke(copy_db, "xmatch")
    assert result.exit_code == 0, result.output
    after = direct(copy_db, "select * from xmatch order by skymapper_object_id")
    pd.testing.assert_frame_equal(before, after)
    assert f"{len(after):,} Gaia-skymapper pairs within 1 arcsec" in result.output


def test_xmatch_plot_numbers_equal_pandas(copy_db, tmp_path):
    """--plot writes a PNG whose separation histogram and matched fraction per r_psf bin equal
    the same numbers computed in pandas from the xmatch and skymapper tables."""
    from stellardb.catalog.xmatch_plot import MAG_BIN, SEP_BINS, xmatch_diagnostics

    png = tmp_path / "plots" / "xmatch.png"
    result = invoke(copy_db, "xmatch", "--plot", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    pairs = direct(copy_db, "select skymapper_object_id, sep_arcsec from xmatch")
    sm = direct(copy_db, "select object_id, r_psf from skymapper where r_psf is not null")
    con = stellardb.connect(copy_db, read_only=True)
    try:
        got = xmatch_diagnostics(con, 1.0)
    finally:
        con.close()
    want_counts, want_edges = np.histogram(pairs["sep_arcsec"], bins=SEP_BINS, range=(0.0, 1.0))
    np.testing.assert_allclose(got["sep_edges_arcsec"], want_edges)
    np.testing.assert_array_equal(got["sep_counts"], want_counts)
    assert got["sep_counts"].sum() == len(pairs) > 0
    sm["lo"] = np.floor(sm["r_psf"].astype(float) / MAG_BIN) * MAG_BIN
    sm["matched"] = sm["object_id"].isin(pairs["skymapper_object_id"])
    want = sm.groupby("lo").agg(n=("matched", "size"), k=("matched", "sum")).reset_index()
    np.testing.assert_allclose(got["r_psf_lo_mag"], want["lo"])
    np.testing.assert_array_equal(got["n_sources"], want["n"])
    np.testing.assert_array_equal(got["n_matched"], want["k"])


def test_xmatch_plot_needs_a_png_name(copy_db, tmp_path):
    """--plot with another suffix is a one-line error before anything changes."""
    before = snapshot(copy_db)
    line = error_line(invoke(copy_db, "xmatch", "--radius-arcsec", "2", "--plot", tmp_path / "x.pdf"))
    assert "--plot writes a PNG" in line
    assert snapshot(copy_db) == before


def test_xmatch_plot_path_that_cannot_be_written_is_refused_first(copy_db, tmp_path):
    """A --plot path under a regular file is refused before the crossmatch (or its radius) changes."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    before = snapshot(copy_db)
    line = error_line(invoke(copy_db, "xmatch", "--radius-arcsec", "2", "--plot", blocker / "x.png"))
    assert "cannot write a file there" in line
    assert snapshot(copy_db) == before


def test_xmatch_with_no_pairs_reports_zero_and_still_plots(copy_db, tmp_path):
    """SkyMapper moved 36 arcsec north of every Gaia source: 0 pairs, said in the summary; the plot is written."""
    con = duckdb.connect(str(copy_db))
    con.execute("update skymapper set dej2000 = dej2000 + 0.01")
    con.close()
    png = tmp_path / "none.png"
    result = invoke(copy_db, "xmatch", "--plot", png)
    assert result.exit_code == 0, result.output
    assert "xmatch skymapper: 0 Gaia-skymapper pairs" in result.output and "0 with more than one candidate" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- Python and SQLAlchemy


def test_connect_from_python(copy_db):
    """stellardb.connect(path) gives the views: stars has one row per Gaia source, training_set its labelled subset."""
    con = stellardb.connect(copy_db)
    try:
        n_gaia = con.execute("select count(*) from gaia").fetchone()[0]
        assert con.execute("select count(*) from stars").fetchone()[0] == n_gaia
        assert con.execute("select count(*) from features").fetchone()[0] == n_gaia
        n_train = con.execute("select count(*) from training_set").fetchone()[0]
        n_score = con.execute("select count(*) from scoring_set").fetchone()[0]
    finally:
        con.close()
    assert 0 < n_train < n_score < n_gaia
    assert n_train == direct(copy_db, "select count(*) as n from training_set")["n"][0]


def test_connect_read_only(sky_db_path):
    """stellardb.connect(path, read_only=True) reads the views and refuses writes."""
    con = stellardb.connect(sky_db_path, read_only=True)
    try:
        assert con.execute("select count(*) from stars").fetchone()[0] > 0
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("delete from gaia")
    finally:
        con.close()


def test_connect_missing_file_read_only(tmp_path):
    """A connect to a missing file is a UserError, not a new empty database, read-only or not."""
    for read_only in (True, False):
        with pytest.raises(UserError, match="No stellardb database"):
            stellardb.connect(tmp_path / "missing.duckdb", read_only=read_only)
    assert not (tmp_path / "missing.duckdb").exists()


def test_connect_is_read_only_by_default_and_locks_no_reader_out(sky_db_path):
    """stellardb.connect(path) opens read-only: writes fail, and another process can read the
    file while the connection is open (a read-write open would hold DuckDB's write lock)."""
    import subprocess
    import sys

    con = stellardb.connect(sky_db_path)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("delete from predictions")
        other = subprocess.run(
            [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
             "print(c.execute('select count(*) from gaia').fetchone()[0])", str(sky_db_path)],
            capture_output=True, text=True, timeout=120)
        n = con.execute("select count(*) from gaia").fetchone()[0]
    finally:
        con.close()
    assert other.returncode == 0, other.stderr
    assert int(other.stdout) == n > 0


@pytest.mark.parametrize("read_only", [True, False])
def test_connect_and_sqlalchemy_in_one_process(copy_db, read_only):
    """stellardb.connect and a duckdb:/// engine opened the same way work side by side in one
    process (DuckDB refuses a second open of a file with another configuration)."""
    con = stellardb.connect(copy_db, read_only=read_only)
    engine = create_engine(f"duckdb:///{copy_db}", connect_args={"read_only": read_only})
    try:
        with engine.connect() as conn:
            via_sqlalchemy = conn.execute(text("select count(*) from training_set")).scalar()
        via_stellardb = con.execute("select count(*) from training_set").fetchone()[0]
        # and a second stellardb connection while both are open
        again = stellardb.connect(copy_db, read_only=read_only)
        assert again.execute("select count(*) from training_set").fetchone()[0] == via_stellardb
        again.close()
    finally:
        engine.dispose()
        con.close()
    assert via_sqlalchemy == via_stellardb > 0


def test_readme_library_example_runs(sky_db_path, tmp_path):
    """The README's "Using as a library" block runs as written (on demo/stellardb.duckdb) and
    prints what DuckDB gives directly."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Using as a library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "demo").mkdir()
    path = tmp_path / "demo" / "stellardb.duckdb"
    shutil.copy(sky_db_path, path)
    con = stellardb.connect(path, read_only=False)
    # 37 metal-poor giants and 100 other predictions of model demo
    con.execute("insert into predictions (source_id, teff, logg, feh, model, scored_at) "
                "select source_id, 4800, case when row_number() over () <= 37 then 2.0 else 4.5 end, -1.5, 'demo', now() "
                "from (select source_id from gaia order by source_id limit 137)")
    con.close()
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    want = direct(path, "select count(*) as n from stars_with_predictions where model = 'demo' and feh < -1 and logg < 3")
    assert want["n"][0] == 37 and re.search(r"\b37\b", run.stdout.split("predictions:")[0])
    assert "predictions: 137" in run.stdout


def test_sqlalchemy_reads_tables_and_views(copy_db):
    """SQLAlchemy (duckdb:///path, duckdb-engine) reads the tables and the views, as duckdb does."""
    engine = create_engine(f"duckdb:///{copy_db}")
    try:
        with engine.connect() as conn:
            n_gaia = conn.execute(text("select count(*) from gaia")).scalar()
            n_stars = conn.execute(text("select count(*) from stars")).scalar()
            rows = conn.execute(text("select source_id, teff from training_set order by source_id limit 5")).fetchall()
        frame = pd.read_sql(text("select * from features where passes_feature_cuts"), engine)
        names = inspect(engine)
        tables, views = set(names.get_table_names()), set(names.get_view_names())
    finally:
        engine.dispose()
    want = direct(copy_db, "select source_id, teff from training_set order by source_id limit 5")
    assert n_gaia == n_stars == direct(copy_db, "select count(*) as n from gaia")["n"][0]
    assert [r[0] for r in rows] == want["source_id"].tolist()
    assert len(frame) == direct(copy_db, "select count(*) as n from scoring_set")["n"][0]
    assert {"gaia", "skymapper", "distances", "sos", "xmatch", "ingests"} <= tables
    assert {"stars", "features", "scoring_set", "training_set", "labels"} <= views


def test_sqlalchemy_read_only(sky_db_path, tmp_path):
    """A read-only SQLAlchemy engine reads views and cannot write."""
    path = tmp_path / "ro.duckdb"
    shutil.copy(sky_db_path, path)
    before = snapshot(path)
    engine = create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from training_set")).scalar() > 0
            with pytest.raises(Exception, match="read-only"):
                conn.execute(text("delete from gaia"))
    finally:
        engine.dispose()
    assert snapshot(path) == before


# ---------------------------------------------------------------- presets


def test_presets_command_lists_every_preset():
    """`stellardb presets` lists each preset with its table."""
    from stellardb.ingest.presets import PRESETS

    result = CliRunner().invoke(cli, ["presets"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(PRESETS)
    for line, (name, preset) in zip(lines, PRESETS.items()):
        assert line.split()[:2] == [name, preset.table]


def test_database_from_a_newer_duckdb_is_refused_clearly(sky_db_path, tmp_path):
    """A file whose header says a later DuckDB major version made it gets a one-line error
    naming that version and the fix, from the library and from every command; the file is untouched."""
    from stellardb.catalog import db

    path = tmp_path / "newer.duckdb"
    shutil.copy(sky_db_path, path)
    assert db.file_creator(path) == "v" + duckdb.__version__  # the header as DuckDB wrote it
    with open(path, "r+b") as fh:  # the creator field of the main header (see db._HEADER)
        fh.seek(52)
        fh.write(b"v9.1.0".ljust(32, b"\0"))
    before = path.read_bytes()
    for read_only in (True, False):
        with pytest.raises(UserError, match=r"written by DuckDB v9\.1\.0, a newer file format .* upgrade stellardb"):
            stellardb.connect(path, read_only=read_only)
    for args in (["query", "select 1"], ["xmatch"]):
        result = invoke(path, *args)
        assert result.exit_code == 1 and "DuckDB v9.1.0" in error_line(result), result.output
    assert path.read_bytes() == before


# ---------------------------------------------------------------- exports


EXPORT_SQL = ("select source_id, ra, dec, phot_g_mean_mag, teff_gspphot, teff, teff_err, scored_at, "
              "teff_outside_training, inputs_outside_training, label_survey from stars_with_predictions order by source_id")


@pytest.fixture(scope="module")
def export_db(sky_db_path, tmp_path_factory):
    """The sky with predictions of one model for 300 stars: NULL flags, a timestamp, NULL labels."""
    path = tmp_path_factory.mktemp("export") / "export.duckdb"
    shutil.copy(sky_db_path, path)
    con = stellardb.connect(path, read_only=False)
    con.execute("insert into predictions (source_id, teff, teff_err, logg, feh, model, scored_at, teff_outside_training) "
                "select source_id, 4000 + source_id % 3000, 80.5, 4.4, -0.3, 'm', timestamp '2026-12-01 10:20:30', "
                "case when source_id % 3 = 0 then null else source_id % 2 = 0 end "
                "from (select source_id from gaia order by source_id limit 300)")
    con.close()
    return path


@pytest.mark.parametrize("fmt, suffix", [("votable", "vot"), ("fits", "fits"), ("ecsv", "ecsv")])
def test_export_astropy_reads_values_units_and_nulls(export_db, tmp_path, fmt, suffix):
    """VOTable, FITS and ECSV read back by astropy: every row and value as DuckDB gives them, NULL
    masked, the timestamp as ISO text, units and (VOTable) UCDs and descriptions from column_metadata."""
    from astropy.table import Table

    out = tmp_path / f"result.{suffix}"
    result = invoke(export_db, "query", EXPORT_SQL, "--format", fmt, "--output", out)
    assert result.exit_code == 0, result.output
    got = Table.read(out, format={"vot": "votable", "fits": "fits", "ecsv": "ascii.ecsv"}[suffix])
    want = direct(export_db, EXPORT_SQL)
    assert len(got) == len(want) == 300 and got.colnames == list(want.columns)
    assert got["source_id"].tolist() == want["source_id"].tolist()
    np.testing.assert_array_equal(np.asarray(got["ra"]), want["ra"].to_numpy())
    np.testing.assert_allclose(np.asarray(got["teff"], dtype=float), want["teff"].to_numpy(), rtol=0)
    flag = got["teff_outside_training"]
    null = want["teff_outside_training"].isna().to_numpy()
    assert null.any() and (~null).any()
    assert np.array_equal(np.ma.getmaskarray(flag), null)
    assert [bool(v) for v in np.asarray(flag)[~null]] == want["teff_outside_training"][~null].astype(bool).tolist()
    # text has no null in FITS, nor in astropy's reading of VOTable: NULL is masked or empty
    survey_null = np.ma.getmaskarray(got["label_survey"]) | (np.ma.filled(got["label_survey"], "") == "")
    assert survey_null.tolist() == want["label_survey"].isna().tolist()
    assert {str(v)[:19] for v in got["scored_at"]} == {"2026-12-01T10:20:30"}
    assert str(got["ra"].unit) == "deg" and str(got["teff"].unit) == "K" and str(got["phot_g_mean_mag"].unit) == "mag"
    description = "1-sigma uncertainty of teff (calibrated on the validation split)"
    if fmt == "fits":  # astropy does not read TCOMMn back as the description; the header has it
        from astropy.io import fits

        header = fits.getheader(out, 1)
        i = got.colnames.index("teff_err") + 1
        assert header[f"TCOMM{i}"] == description and header[f"TUCD{i}"] == "stat.error;phys.temperature.effective"
    else:
        assert got["teff_err"].description == description
    if fmt == "votable":
        from astropy.io.votable import parse

        fields = {f.name: f for f in parse(out).get_first_table().fields}
        assert fields["ra"].ucd == "pos.eq.ra;meta.main" and fields["teff"].ucd == "phys.temperature.effective"
        assert fields["scored_at"].xtype == "timestamp"


def test_votable_null_flags_are_arrows_is_null_for_every_kind_of_array():
    """The VOTable writer's NULL mask is Arrow's is_null, also where Arrow's null_count is 0 with
    NULLs in the array (a DuckDB UNION, a dictionary holding a NULL, run-end encoded), where it
    skips is_null only for the arrays whose NULLs null_count counts (review)."""
    import pyarrow as pa

    from stellardb.catalog import export

    union = duckdb.sql("select case when i % 2 = 0 then null else union_value(k := i::int) end"
                       "::union(k int, s varchar) as u from range(6) r(i) order by i").to_arrow_table().column("u")
    columns = {
        "union": union,
        "dictionary_null_value": pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 1], pa.int32()), pa.array(["x", None])),
        "dictionary_null_index": pa.DictionaryArray.from_arrays(pa.array([0, None, 1, 0], pa.int32()), pa.array(["x", "y"])),
        "run_end": pa.RunEndEncodedArray.from_arrays(pa.array([2, 3, 5], pa.int32()), pa.array([1.5, None, 2.5])),
        "float": pa.array([1.0, None, float("nan"), 2.0]),
        "float_no_null": pa.array([1.0, float("nan"), 2.0]),
        "int": pa.chunked_array([[1, 2], [None, 4]]),
        "bool": pa.array([True, None, False]),
        "text": pa.array(["a", None, ""]),
    }
    for name, array in columns.items():
        (column,) = export.vo_columns(pa.table({name: array}), {})
        assert np.asarray(column.mask).tolist() == array.is_null().to_pylist(), name
    assert union.null_count == 0 and any(union.is_null().to_pylist())


def test_votable_fields_of_long_names_or_descriptions_are_not_kept():
    """FIELD elements are kept for reuse only when short: a 100 kB alias or description (anyone's, in
    a TAP query or an upload) is written correctly and not kept in the worker's memory."""
    import pyarrow as pa

    from stellardb.catalog import export

    long = "<&>" * 40_000
    table = pa.table({"ra": [1.0], "x" * 5000: [2.0]})
    before = export._kept_field.cache_info().currsize
    for _ in range(3):
        text = export.votable_xml(export.vo_columns(table, {"ra": {"unit": "deg", "description": long}}))
    assert text.count("&lt;&amp;&gt;") == 40_000 and 'name="' + "x" * 5000 + '"' in text
    assert export._kept_field.cache_info().currsize == before
    export.votable_xml(export.vo_columns(pa.table({"short_name_kept": [1.0]}), {}))
    assert export._kept_field.cache_info().currsize == before + 1


@pytest.mark.parametrize("fmt, suffix", [("votable", "vot"), ("fits", "fits"), ("ecsv", "ecsv"), ("csv", "csv")])
def test_export_stilts_reads_it(export_db, tmp_path, stilts, fmt, suffix):
    """STILTS (TOPCAT's engine) reads every export: row and column counts, units and descriptions."""
    import subprocess

    out = tmp_path / f"result.{suffix}"
    assert invoke(export_db, "query", EXPORT_SQL, "--format", fmt, "--output", out).exit_code == 0
    ifmt = {"vot": "votable", "fits": "fits", "ecsv": "ecsv", "csv": "csv"}[suffix]
    count = subprocess.run([stilts, "tpipe", f"in={out}", f"ifmt={ifmt}", "omode=count"],
                           capture_output=True, text=True, timeout=120)
    assert count.returncode == 0, count.stderr
    assert count.stdout.split() == ["columns:", "11", "rows:", "300"]
    rows = subprocess.run([stilts, "tpipe", f"in={out}", f"ifmt={ifmt}", "omode=out", "ofmt=csv"],
                          capture_output=True, text=True, timeout=120)
    assert rows.returncode == 0, rows.stderr
    got = pd.read_csv(io.StringIO(rows.stdout))
    want = direct(export_db, EXPORT_SQL)
    assert got["source_id"].tolist() == want["source_id"].tolist()
    np.testing.assert_allclose(got["teff"], want["teff"])
    assert got["teff_outside_training"].isna().sum() == want["teff_outside_training"].isna().sum()
    if fmt != "csv":
        meta = subprocess.run([stilts, "tpipe", f"in={out}", f"ifmt={ifmt}", "omode=meta"],
                              capture_output=True, text=True, timeout=120).stdout
        assert re.search(r"\bra\(Double\)/deg\b", meta) and re.search(r"\bteff\(Double\)/K - stellardb prediction", meta)


def test_export_json_and_csv_through_duckdb_copy(export_db, tmp_path):
    """CSV and JSON lines are DuckDB's own COPY output: NULL empty / null, NaN kept, ids exact."""
    out = tmp_path / "r.json"
    sql = "select source_id, teff_outside_training, 'nan'::double as x from stars_with_predictions order by source_id limit 5"
    assert invoke(export_db, "query", sql, "--format", "json", "-o", out).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = direct(export_db, sql)
    assert [r["source_id"] for r in rows] == want["source_id"].tolist()
    assert [r["teff_outside_training"] for r in rows] == [None if pd.isna(v) else bool(v) for v in want["teff_outside_training"]]
    assert all(r["x"] != r["x"] for r in rows)  # NaN


def test_export_failure_leaves_no_file(export_db, tmp_path):
    """An error while the rows are produced leaves neither the output nor a partial file."""
    out = tmp_path / "bad.vot"
    result = invoke(export_db, "query", "select cast(label_survey || 'x' as integer) from stars", "--format", "votable",
                    "-o", out)
    assert result.exit_code == 1 and "Conversion Error" in result.output
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- terminal output


def test_wide_result_elides_middle_columns(sky_db_path):
    """A result wider than the terminal shows its first and last columns around one '…' and says
    how many it left out; --format line shows every column of each row."""
    sql = "select * from gaia order by source_id limit 2"
    result = CliRunner().invoke(cli, ["--db", str(sky_db_path), "query", sql], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    n_columns = len(direct(sky_db_path, sql).columns)
    hidden = re.search(r"(\d+) of (\d+) columns not shown", result.output)
    assert hidden and int(hidden.group(2)) == n_columns and 0 < int(hidden.group(1)) < n_columns
    assert "solution_id" in result.output and "ingest_id" in result.output and "…" in result.output
    full = invoke(sky_db_path, "query", sql, "--format", "line")
    assert full.exit_code == 0, full.output
    want = direct(sky_db_path, sql)
    assert sum(line.strip().startswith(tuple(f"{c} =" for c in want.columns)) for line in full.output.splitlines()) \
        == 2 * n_columns
    assert f"source_id = {want['source_id'][1]}" in full.output


def test_values_that_look_like_markup_print_verbatim(sky_db_path):
    """Values and names are printed as they are: '[bold]' stays, '[/x]' does not crash."""
    result = invoke(sky_db_path, "query", """select '[bold]x[/bold]' as "[/x]", '[red]' as b""")
    assert result.exit_code == 0, result.output
    assert "[bold]x[/bold]" in result.output and "[/x]" in result.output and "[red]" in result.output


def test_csv_to_a_redirected_stdout_appends(export_db, tmp_path):
    """`query --format csv >> FILE` appends to what FILE held, and text printed before it in the same
    redirected stream stays (COPY to /dev/fd/1 reopened the file at offset 0)."""
    import subprocess
    import sys

    out = tmp_path / "out.csv"
    exe = [sys.executable, "-m", "stellardb", "--db", str(export_db), "query", "select 1 as a", "--format", "csv"]
    script = f'echo first > "{out}"; "$@" >> "{out}"; {{ echo "# header"; "$@"; echo "# trailer"; }} >> "{out}"'
    run = subprocess.run(["sh", "-c", script, "sh", *exe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == "first\na\n1\n# header\na\n1\n# trailer\n"


def test_export_files_are_readable_like_any_file(export_db, tmp_path):
    """Exports get the permissions of a plain file (umask), not the scratch file's 0600."""
    import os

    old = os.umask(0o022)
    try:
        for fmt in ("votable", "fits", "ecsv", "csv"):
            out = tmp_path / f"r.{fmt}"
            assert invoke(export_db, "query", "select 1 as a", "--format", fmt, "-o", out).exit_code == 0
            assert out.stat().st_mode & 0o777 == 0o644, fmt
    finally:
        os.umask(old)


def test_export_of_a_join_with_repeated_names_and_odd_types(export_db, tmp_path, stilts):
    """A join's repeated column names get _2; HUGEINT stays exact text, lists/structs are JSON, and a
    computed column is not described as the table column it happens to share a name with."""
    import subprocess

    from astropy.table import Table

    out = tmp_path / "j.vot"
    sql = ("select g.source_id, p.source_id, 170141183460469231731687303715884105727::hugeint as h, [1, 2] as l, "
           "{'a': 1} as s, true as b from gaia g join predictions p on g.source_id = p.source_id limit 3")
    result = invoke(export_db, "query", sql, "--format", "votable", "-o", out)
    assert result.exit_code == 0, result.output
    t = Table.read(out, format="votable")
    assert t.colnames == ["source_id", "source_id_2", "h", "l", "s", "b"]
    assert str(t["h"][0]) == "170141183460469231731687303715884105727" and json.loads(str(t["s"][0])) == {"a": 1}
    assert t["b"].description is None and t["b"].unit is None  # not gaia's Galactic latitude
    count = subprocess.run([stilts, "tpipe", f"in={out}", "omode=count"], capture_output=True, text=True, timeout=120)
    assert count.stdout.split() == ["columns:", "6", "rows:", "3"], count.stderr


def test_fits_refuses_non_ascii_text_in_one_line(export_db, tmp_path):
    """FITS text is ASCII: a non-ASCII value is a one-line error naming the column and the formats that keep it."""
    out = tmp_path / "a.fits"
    line = error_line(invoke(export_db, "query", "select 'α Cen' as name", "--format", "fits", "-o", out))
    assert "name" in line and "votable or ecsv" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert invoke(export_db, "query", "select 'α Cen' as name", "--format", "votable", "-o", tmp_path / "a.vot").exit_code == 0
    from astropy.table import Table

    assert Table.read(tmp_path / "a.vot", format="votable")["name"][0] == "α Cen"


def test_output_in_an_unwritable_place_is_one_line(export_db):
    """--output where no file can be made: one-line error, no traceback."""
    line = error_line(invoke(export_db, "query", "select 1 as a", "--format", "csv", "-o", "/proc/x.csv"))
    assert "Cannot write /proc/x.csv" in line


def test_runtime_sql_error_points_at_the_users_line(export_db, tmp_path):
    """An error raised while rows are written (COPY) gives DuckDB's text with the user's own line number."""
    sql = "select 1 as a,\n  cast('x' as integer) as b"
    result = invoke(export_db, "query", sql, "--format", "csv", "-o", tmp_path / "e.csv")
    assert result.exit_code == 1
    assert "LINE 2:   cast('x' as integer) as b" in result.output


def test_memory_limit_setting_errors_are_one_line(export_db, monkeypatch):
    """STELLARDB_MEMORY_LIMIT: empty means the default; nonsense is a one-line error."""
    monkeypatch.setenv("STELLARDB_MEMORY_LIMIT", "")
    assert invoke(export_db, "query", "select 1 as a", "--format", "csv").exit_code == 0
    monkeypatch.setenv("STELLARDB_MEMORY_LIMIT", "abc")
    assert "STELLARDB_MEMORY_LIMIT='abc'" in error_line(invoke(export_db, "query", "select 1"))


def test_interrupt_is_one_line_exit_130(export_db, monkeypatch):
    """Ctrl-C during a command: exit 130 and one line, no traceback."""
    from stellardb.catalog import query as query_lib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(query_lib, "run_query", interrupted)
    result = invoke(export_db, "query", "select 1")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.output.strip().startswith("Interrupted")


def test_plain_duckdb_connect_beside_stellardb_says_how(copy_db):
    """A plain duckdb.connect of a file stellardb holds open: a UserError that names the fix, and the
    fix (engine_config) works."""
    from stellardb.catalog import db

    other = duckdb.connect(str(copy_db), read_only=True)
    try:
        with pytest.raises(UserError, match=r"engine_config\(\)"):
            stellardb.connect(copy_db)
    finally:
        other.close()
    con = stellardb.connect(copy_db)
    same = duckdb.connect(str(copy_db), read_only=True, config=db.engine_config())
    try:
        assert same.execute("select count(*) from gaia").fetchone() == con.execute("select count(*) from gaia").fetchone()
    finally:
        same.close()
        con.close()
