"""`stellardb ingests`, `stellardb forget` (undo an ingest) and `ingest --keep COL`.

The state after forgetting a file is compared with a database into which that file
was never ingested: same tables, same crossmatch, predictions only of stars that exist.
"""

from __future__ import annotations

import shutil

import duckdb
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from stellardb.ingest import forget as forget_lib
from stellardb.ingest import pipeline as ingest
from stellardb.cli.main import cli

from ..helpers import ecsv_header_lines, error_line, fetch, snapshot




@pytest.fixture(scope="module")
def halves(sky, tmp_path_factory):
    """The simulated Gaia file split in two CSV files (first and second half of its rows)."""
    folder = tmp_path_factory.mktemp("halves")

    con = duckdb.connect()
    header = ecsv_header_lines(sky.files["gaia"])
    table = con.execute(f"select * from read_csv('{sky.files['gaia']}', skip = {header}, header = true, "
                        "nullstr = 'null')").to_arrow_table()
    n = table.num_rows // 2
    paths = []
    for k, part in enumerate((table.slice(0, n), table.slice(n))):
        path = folder / f"gaia_part{k}.csv"
        pacsv.write_csv(part, path)
        paths.append(path)
    return paths, int(pc.min(table.slice(n)["source_id"]).as_py())


def _build(path, sky, gaia_files):
    for table, files in (("gaia", gaia_files), ("skymapper", [sky.files["skymapper"]]),
                         ("distances", [sky.files["distances"]]), ("sos", [sky.files["sos"]])):
        ingest.run(path, table, files)


@pytest.fixture(scope="module")
def both_and_first(halves, sky, tmp_path_factory):
    """Two databases: both Gaia halves ingested, and only the first (the reference for forgetting the second)."""
    folder = tmp_path_factory.mktemp("forget")
    both, first = folder / "both.duckdb", folder / "first.duckdb"
    _build(both, sky, halves[0])
    _build(first, sky, halves[0][:1])
    return both, first


def _add_predictions(path):
    import stellardb

    con = stellardb.connect(path, read_only=False)
    con.execute("insert into predictions (source_id, teff, logg, feh, model, scored_at) "
                "select source_id, 5000, 4.4, 0.0, 'm', now()::timestamp from gaia")
    con.close()


def test_ingests_lists_every_file(both_and_first, halves):
    """`stellardb ingests` lists each file with its table, rows stored and rows still there."""
    both, _ = both_and_first
    listed = forget_lib.list_ingests(both)
    assert [i.table for i in listed] == ["gaia", "gaia", "skymapper", "distances", "sos"]
    assert listed[0].file == str(halves[0][0].absolute()) and listed[0].rows == listed[0].rows_now > 0
    assert sum(i.rows_now for i in listed if i.table == "gaia") == fetch(both, "select count(*) from gaia")[0][0]
    result = CliRunner().invoke(cli, ["--db", str(both), "ingests"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "gaia_part0.csv" in result.output and "skymapper_master.csv" in result.output
    assert f"{listed[2].rows:,}" in result.output


def test_forget_gives_the_database_without_that_file(both_and_first, halves, tmp_path):
    """Forgetting the second Gaia half leaves the same gaia, xmatch and xmatch_labels as never ingesting it;
    predictions of its stars go, the others stay; the file can then be ingested again."""
    both, first = both_and_first
    path = tmp_path / "work.duckdb"
    shutil.copy(both, path)
    _add_predictions(path)
    n_pred = fetch(path, "select count(*) from predictions")[0][0]
    second = [i for i in forget_lib.list_ingests(path) if i.file == str(halves[0][1].absolute())][0]
    plan = forget_lib.plan_forget(path, str(second.ingest_id))
    assert plan.rows == second.rows and plan.predictions == second.rows and plan.xmatch_pairs > 0

    result = CliRunner().invoke(cli, ["--db", str(path), "forget", str(halves[0][1]), "--yes"])
    assert result.exit_code == 0, result.output
    assert f"{second.rows:,} rows of gaia" in result.output
    for table, key in (("gaia", "source_id"), ("xmatch", "skymapper_object_id, gaia_source_id"),
                       ("xmatch_labels", "survey, label_ra, label_dec, gaia_source_id")):
        sql = f"select * exclude (ingest_id) from {table} order by {key}" if table == "gaia" else \
            f"select * from {table} order by {key}"
        assert fetch(path, sql) == fetch(first, sql), table
    assert fetch(path, "select count(*) from predictions")[0][0] == n_pred - second.rows
    assert fetch(path, "select count(*) from predictions where source_id >= " + str(halves[1]))[0][0] == 0
    assert str(halves[0][1].absolute()) not in [i.file for i in forget_lib.list_ingests(path)]
    again = ingest.run(path, "gaia", [halves[0][1]])
    assert again.files[0].skipped is None and again.files[0].rows == second.rows


def test_forget_asks_first_and_no_means_nothing_changes(both_and_first, tmp_path):
    """Without --yes, `forget` asks; answering no exits non-zero and changes nothing."""
    both, _ = both_and_first
    path = tmp_path / "ask.duckdb"
    shutil.copy(both, path)
    before = snapshot(path)
    result = CliRunner().invoke(cli, ["--db", str(path), "forget", "3"], input="n\n")
    assert result.exit_code == 1 and "Forget ingest 3:" in result.output and "of skymapper" in result.output
    assert "Aborted" in result.output and snapshot(path) == before
    result = CliRunner().invoke(cli, ["--db", str(path), "forget", "3"], input="y\n")
    assert result.exit_code == 0, result.output
    assert fetch(path, "select count(*) from skymapper")[0][0] == 0 and fetch(path, "select count(*) from xmatch")[0][0] == 0


def test_forget_unknown_target_is_one_line(both_and_first, tmp_path):
    """An id or file that was never ingested: one-line error, database unchanged."""
    both, _ = both_and_first
    path = tmp_path / "unknown.duckdb"
    shutil.copy(both, path)
    before = snapshot(path)
    for target in ("99", str(tmp_path / "never.csv")):
        line = error_line(CliRunner().invoke(cli, ["--db", str(path), "forget", target, "--yes"]))
        assert "stellardb ingests" in line
    assert snapshot(path) == before


def test_forget_is_one_transaction(both_and_first, tmp_path, monkeypatch):
    """A failure while the crossmatch is rebuilt leaves every row where it was."""
    both, _ = both_and_first
    path = tmp_path / "fail.duckdb"
    shutil.copy(both, path)
    before = snapshot(path)

    def broken(con):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(forget_lib.xmatch, "refresh_xmatch", broken)
    with pytest.raises(RuntimeError):
        forget_lib.forget(path, "1")
    assert snapshot(path) == before


def test_keep_stores_an_extra_column_and_the_report_names_the_others(tmp_path, data_path):
    """`ingest --keep SWFlag` stores SWEET-Cat's flag as a column of sos, value for value; the
    report names the columns it did not store."""
    path = tmp_path / "keep.duckdb"
    src = data_path("real/sweetcat_subset.csv")
    result = CliRunner().invoke(cli, ["--db", str(path), "ingest", "sos", str(src), "--preset", "sweetcat",
                                      "--on-duplicate", "skip", "--keep", "SWFlag"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "not stored" in result.output and "Vmag" in result.output and "--keep COL" in result.output
    assert "SWFlag," not in result.output.split("not stored", 1)[1]
    stored = pd.DataFrame(fetch(path, "select source_id, swflag from sos where source_id is not null"),
                          columns=["source_id", "swflag"])
    raw = pd.read_csv(src)
    raw = raw[raw["gaia_dr3"].notna()].drop_duplicates("gaia_dr3")
    want = dict(zip(raw["gaia_dr3"].astype("int64"), raw["SWFlag"]))
    assert len(stored) > 100
    assert all(want[s] == f for s, f in zip(stored["source_id"], stored["swflag"]))


def test_keep_of_a_missing_column_is_refused(tmp_path, data_path):
    """--keep naming no column of the file: one-line error, no database left behind."""
    path = tmp_path / "nokeep.duckdb"
    line = error_line(CliRunner().invoke(cli, ["--db", str(path), "ingest", "sos", str(data_path("real/sweetcat_subset.csv")),
                                               "--preset", "sweetcat", "--keep", "NoSuchColumn"]))
    assert "--keep NoSuchColumn names no column" in line
    assert not path.exists()


@pytest.mark.parametrize("table", ["skymapper", "distances"])
def test_forget_deletes_predictions_made_from_the_rows(both_and_first, tmp_path, table):
    """Forgetting the SkyMapper or distance file deletes the predictions whose inputs it gave
    (every scored star here has both) and keeps those of stars it did not touch."""
    both, _ = both_and_first
    path = tmp_path / f"{table}.duckdb"
    shutil.copy(both, path)
    _add_predictions(path)
    if table == "skymapper":
        touched = fetch(path, "select count(*) from predictions where source_id in (select gaia_source_id from xmatch)")
    else:
        touched = fetch(path, "select count(*) from predictions where source_id in (select source_id from distances)")
    n_before = fetch(path, "select count(*) from predictions")[0][0]
    target = [i for i in forget_lib.list_ingests(path) if i.table == table][0]
    plan = forget_lib.plan_forget(path, str(target.ingest_id))
    assert plan.predictions == touched[0][0] > 0
    forget_lib.forget(path, str(target.ingest_id))
    assert fetch(path, "select count(*) from predictions")[0][0] == n_before - touched[0][0] > 0
