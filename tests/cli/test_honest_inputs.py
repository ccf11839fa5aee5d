"""Inputs are taken for what they are: a Gaia DR2 file is not DR3, an epoch that is not in
the file is stated, and models live beside the database they belong to."""

from __future__ import annotations

import pytest
from astropy.table import Table
from click.testing import CliRunner

from stellardb.ingest import pipeline as ingest
from stellardb.cli.main import cli

from ..helpers import error_line, fetch




def test_gaia_dr2_file_is_refused(tmp_path, data_path):
    """A real DR2 export (its lum_val column) given as gaia: one-line error naming DR2, no database made."""
    path = tmp_path / "dr2.duckdb"
    line = error_line(CliRunner().invoke(cli, ["--db", str(path), "ingest", "gaia",
                                               str(data_path("real/gaia_dr2_m67_50rows.csv"))]))
    assert "is Gaia DR2, not DR3" in line and "lum_val" in line and "gaiadr3" in line
    assert not path.exists()


@pytest.mark.parametrize("column, value, says", [
    ("designation", "Gaia DR2 {sid}", "its designations say 'Gaia DR2"),
    ("designation", "GAIA DR2 {sid}", "its designations say 'GAIA DR2"),
    ("ref_epoch", 2015.5, "ref_epoch 2015.5, Gaia DR2's"),
])
def test_dr3_columns_with_dr2_content_are_refused(tmp_path, data_path, column, value, says):
    """Real DR3 rows whose designations or epochs are DR2's: refused, naming what gave it away."""
    t = Table.read(data_path("real/gaia_dr3_fixture_5rows.ecsv"), format="ascii.ecsv")
    if column == "designation":
        t["designation"] = [value.format(sid=s) for s in t["source_id"]]
    else:
        t["ref_epoch"] = value
    src = tmp_path / "gaia.csv"
    t.write(src, format="ascii.csv")
    path = tmp_path / "g.duckdb"
    line = error_line(CliRunner().invoke(cli, ["--db", str(path), "ingest", "gaia", str(src)]))
    assert says in line and "DR3" in line
    assert not path.exists()


def test_gaia_without_ref_epoch_says_it_assumed_dr3(tmp_path, data_path):
    """A Gaia file without ref_epoch is stored at J2016.0 and the report says it was assumed."""
    t = Table.read(data_path("real/gaia_dr3_fixture_5rows.ecsv"), format="ascii.ecsv")
    t.remove_column("ref_epoch")
    src = tmp_path / "gaia.csv"
    t.write(src, format="ascii.csv")
    path = tmp_path / "g.duckdb"
    result = CliRunner().invoke(cli, ["--db", str(path), "ingest", "gaia", str(src)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "J2016.0 (Gaia DR3) assumed" in result.output
    assert fetch(path, "select distinct ref_epoch from gaia") == [(2016.0,)]


def _labels(tmp_path):
    src = tmp_path / "labels.csv"
    src.write_text("ra,dec,teff,logg,feh\n10.0,-30.0,5000,4.5,0.0\n11.0,-31.0,6000,4.2,-0.5\n")
    return src


@pytest.mark.parametrize("args, epoch, says", [
    ([], 2000.0, "positions taken at J2000.0 (the default; --epoch YEAR to change)"),
    (["--epoch", "2015.5"], 2015.5, "positions taken at J2015.5 (--epoch)"),
])
def test_label_epoch_is_stated_and_stored(tmp_path, args, epoch, says):
    """Label positions without an epoch column: --epoch, else J2000, stored in ref_epoch and said in the report."""
    path = tmp_path / "l.duckdb"
    result = CliRunner().invoke(cli, ["--db", str(path), "ingest", "sos", str(_labels(tmp_path)), "--survey", "mine",
                                      *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert says in " ".join(result.output.split())
    assert fetch(path, "select distinct ref_epoch from sos") == [(epoch,)]


def test_epoch_out_of_range_or_for_another_table_is_refused(tmp_path):
    """--epoch is a Julian year for label files only."""
    path = tmp_path / "e.duckdb"
    line = error_line(CliRunner().invoke(cli, ["--db", str(path), "ingest", "sos", str(_labels(tmp_path)), "--survey",
                                               "mine", "--epoch", "51544"]))
    assert "--epoch is the Julian year" in line
    with pytest.raises(Exception, match="--epoch"):
        ingest.run(path, "gaia", [_labels(tmp_path)], epoch=2000.0)
    assert not path.exists()


def test_models_live_beside_the_database(tmp_path, monkeypatch, sky_db_path):
    """Without $STELLARDB_MODELS, models are looked up in models/ beside the database, not in the
    working directory, and the error names that folder by its absolute path."""
    import shutil

    from stellardb.ml.model_store import models_root

    monkeypatch.delenv("STELLARDB_MODELS", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    db_path = tmp_path / "data" / "sky.duckdb"
    shutil.copy(sky_db_path, db_path)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert models_root(None, "../data/sky.duckdb") == tmp_path / "data" / "models"
    line = error_line(CliRunner().invoke(cli, ["--db", "../data/sky.duckdb", "score", "--model", "nope"]))
    assert f"No models in {tmp_path / 'data' / 'models'}" in line
    monkeypatch.setenv("STELLARDB_MODELS", "mine")
    assert models_root(None, db_path) == tmp_path / "elsewhere" / "mine"


def test_sos_file_keeps_its_own_epoch(tmp_path):
    """A label file in the Survey-of-Surveys spelling with its own ref_epoch keeps it (auto-detection
    once chose GBS's preset, which renames ref_epoch away, and stored J2000 while saying it was absent)."""
    src = tmp_path / "epoch.csv"
    src.write_text("ra,dec,ref_epoch,teff,logg,feh,e_teff,e_logg,e_feh,survey\n10,-20,2010.0,5000,4,0,1,1,1,X\n")
    path = tmp_path / "e.duckdb"
    result = CliRunner().invoke(cli, ["--db", str(path), "ingest", "sos", str(src)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "no ref_epoch column" not in result.output and " sos " in result.output
    assert fetch(path, "select ref_epoch from sos") == [(2010.0,)]
    line = error_line(CliRunner().invoke(cli, ["--db", str(tmp_path / "f.duckdb"), "ingest", "sos", str(src),
                                               "--epoch", "2016"]))
    assert "this file has a ref_epoch column" in line
