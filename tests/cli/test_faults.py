"""Issue 10: nothing lost, nothing silently wrong.

Bad inputs that once stored wrong rows, faults (interrupts and kills at commit points,
a full disk) and the repairs after them.  Each test reproduces what was seen and checks
the database against an independent count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

import stellardb
from stellardb.ingest import pipeline as ingest
from stellardb.cli.main import cli
from stellardb.errors import InterruptedAfterCommit, UserError
from ..helpers import InterruptAfterCommit, error_line, fetch, invoke, small_sky, small_tmpfs, snapshot, write



# ---------------------------------------------------------------- 1. rows numbered so that no column shadows them


def test_rowid_column_does_not_multiply_rows(tmp_path):
    """A SkyMapper CSV with a column rowid = 7 stores its 30 rows once (it stored 30 x 30)."""
    _, sm, _, _ = small_sky()
    sm["rowid"] = 7
    path = tmp_path / "s.duckdb"
    result = ingest.run(path, "skymapper", [write(sm, tmp_path / "sm.csv")])
    assert result.files[0].rows == len(sm) == fetch(path, "select count(*) from skymapper")[0][0]
    assert sorted(r[0] for r in fetch(path, "select object_id from skymapper")) == sorted(sm["object_id"])


@pytest.mark.parametrize("column", ["ROWID", "_file_row", "file_row_number"])
def test_row_number_columns_of_a_file_keep_every_row(tmp_path, column):
    """Gaia rows with a column named like a row number (any case; Parquet's own names included) and
    --on-duplicate skip: every row stored (all were lost), and a duplicate is named by its true row."""
    gaia, _, _, _ = small_sky()
    gaia[column] = 1
    src = tmp_path / "g.parquet"
    pq.write_table(pa.Table.from_pandas(gaia, preserve_index=False), src)
    path = tmp_path / "g.duckdb"
    result = ingest.run(path, "gaia", [src], on_duplicate="skip")
    assert result.files[0].rows == len(gaia) == fetch(path, "select count(*) from gaia")[0][0]
    doubled = pd.concat([gaia, gaia.iloc[[4]]], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(doubled, preserve_index=False), src)
    with pytest.raises(UserError, match=r"data rows 5 and 31"):
        ingest.run(tmp_path / "h.duckdb", "gaia", [src])


# ---------------------------------------------------------------- 2, 3. plausible values only


@pytest.mark.parametrize("column, values, says", [
    ("teff", lambda n: np.log10(np.full(n, 5000.0)), "log10(Teff)"),
    ("logg", lambda n: np.full(n, 27000.0), "g itself"),
    ("feh", lambda n: np.full(n, 12.0), "[Fe/H] is in dex"),
    ("e_teff", lambda n: np.full(n, -5.0), "e_teff is a 1-sigma error"),
])
def test_label_values_in_the_wrong_unit_are_refused(db, tmp_path, column, values, says):
    """Teff in log10, log g linear, [Fe/H] not in dex, a negative error: refused naming column,
    value, how many rows and the first one, and the likely unit mistake; nothing changes."""
    _, _, _, labels = small_sky()
    labels["e_teff"] = 50.0
    labels[column] = values(len(labels))
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "sos", write(labels, tmp_path / "l.csv")))
    assert f"{len(labels)} row(s) with {column} = " in line and "first at data row 1" in line and says in line
    assert snapshot(db) == before


def test_wrong_column_can_be_fixed_with_rename(db, tmp_path):
    """A file whose teff column is log10 but which also has Teff in K: refused, then ingested with
    --rename teff_k=teff and the log10 column left out by --rename teff= (an empty target)."""
    _, _, _, labels = small_sky()
    labels = labels.rename(columns={"teff": "teff_k"})
    labels["teff"] = np.log10(labels["teff_k"])
    src = write(labels, tmp_path / "l.csv")
    assert "log10(Teff)" in error_line(invoke(db, "ingest", "sos", src, "--on-duplicate", "skip"))
    assert "already has a column teff" in error_line(invoke(db, "ingest", "sos", src, "--rename", "teff_k=teff"))
    result = invoke(db, "ingest", "sos", src, "--rename", "teff_k=teff", "--rename", "teff=", "--on-duplicate", "skip")
    assert result.exit_code == 0, result.output
    got = fetch(db, "select source_id, teff from sos where survey = 'GALAH' and ingest_id = (select max(ingest_id) "
                    "from ingests) order by source_id")
    want = labels.sort_values("source_id")
    assert [round(t, 6) for _, t in got] == [round(t, 6) for t in want["teff_k"]] or len(got) == 0


@pytest.mark.parametrize("change, says", [
    (lambda g: g.assign(ra=np.radians(g["ra"]), dec=np.radians(g["dec"])), "radians"),
    (lambda g: g.assign(pmra=np.where(np.arange(len(g)) == 3, 1e300, g["pmra"])), "proper motions are in mas/yr"),
    (lambda g: g.assign(parallax=np.where(np.arange(len(g)) == 2, np.inf, 1.0)), "parallax"),
    (lambda g: g.assign(phot_g_mean_mag=np.where(np.arange(len(g)) == 1, np.inf, 15.0)), "infinity is not"),
])
def test_absurd_gaia_rows_are_refused(db, tmp_path, change, says):
    """Gaia positions in radians (contradicting source_id), pmra = 1e300, infinite values: refused, nothing changes."""
    gaia, _, _, _ = small_sky(n=30, seed=5)
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "gaia", write(change(gaia), tmp_path / "g.csv")))
    assert says in line
    assert snapshot(db) == before


def test_crossmatch_skips_and_counts_unusable_stored_rows(db):
    """A row no check stopped (a database from before the checks) cannot poison the crossmatch:
    it is left out and counted, and the other pairs are found."""
    pairs_before = fetch(db, "select count(*) from xmatch")[0][0]
    con = stellardb.connect(db, read_only=False)
    con.execute("update gaia set pmra = 1e300 where source_id = (select min(source_id) from gaia)")
    con.close()
    result = invoke(db, "xmatch")
    assert result.exit_code == 0, result.output
    assert "1 Gaia rows" in result.output and "left out" in result.output
    assert pairs_before - 1 <= fetch(db, "select count(*) from xmatch")[0][0] <= pairs_before


# ---------------------------------------------------------------- 4. --db is a DuckDB file


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_text("source_id,ra\n1,2\n"), "is a text file, not a DuckDB database"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20)), "is a gzip file"),
])
def test_db_that_is_not_a_duckdb_file_is_refused(tmp_path, make, says):
    """--db naming a CSV or a .csv.gz is refused (it ingested into nothing and said "1,518 rows"); the file is untouched."""
    target = tmp_path / "gaia_source.csv"
    make(target)
    before = target.read_bytes()
    _, _, dist, _ = small_sky()
    line = error_line(CliRunner().invoke(cli, ["--db", str(target), "ingest", "distances",
                                               str(write(dist, tmp_path / "d.csv"))]))
    assert says in line
    assert target.read_bytes() == before


@pytest.mark.parametrize("target", [":memory:", "md:stellar", "s3://bucket/x.duckdb"])
def test_db_that_is_not_a_local_file_is_refused(tmp_path, target):
    """In-memory and cloud (md:, s3://) databases are refused by the CLI before anything runs."""
    _, _, dist, _ = small_sky()
    result = CliRunner().invoke(cli, ["--db", target, "ingest", "distances", str(write(dist, tmp_path / "d.csv"))])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--db" in result.output


# ---------------------------------------------------------------- 5. FITS with several tables


def test_fits_with_several_tables_needs_hdu(tmp_path):
    """A FITS file with two table HDUs is refused listing them; --hdu by number or name reads the one chosen."""
    _, _, dist, _ = small_sky()
    first = fits.BinTableHDU(Table.from_pandas(dist.iloc[:5]), name="FIRST")
    second = fits.BinTableHDU(Table.from_pandas(dist), name="ALL")
    src = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(), first, second]).writeto(src)
    path = tmp_path / "d.duckdb"
    line = error_line(invoke(path, "ingest", "distances", src))
    assert "2 table HDUs" in line and "1 'FIRST' (5 rows)" in line and "2 'ALL' (30 rows)" in line and "--hdu" in line
    assert not path.exists()
    assert invoke(path, "ingest", "distances", src, "--hdu", "ALL").exit_code == 0
    assert fetch(path, "select count(*) from distances")[0][0] == 30
    other = tmp_path / "e.duckdb"
    assert invoke(other, "ingest", "distances", src, "--hdu", "1").exit_code == 0
    assert fetch(other, "select count(*) from distances")[0][0] == 5


# ---------------------------------------------------------------- 6. --rename


@pytest.mark.parametrize("rename, says", [
    ("e_teff=teff", "the file already has a column teff"),
    ("teff=temperature", "the table has no column temperature"),
    ("teff=healpix_12", "computed by stellardb"),
])
def test_rename_that_would_lose_or_drop_a_column_is_refused(db, tmp_path, rename, says):
    """--rename onto a column the file has (it was silently discarded), to an unknown or a derived column: refused."""
    _, _, _, labels = small_sky()
    labels["e_teff"] = 50.0
    before = snapshot(db)
    line = error_line(invoke(db, "ingest", "sos", write(labels, tmp_path / "l.csv"), "--rename", rename))
    assert says in line
    assert snapshot(db) == before


# ---------------------------------------------------------------- 8. interrupted at commit


def test_interrupt_just_after_commit_reports_the_ingest_as_stored(tmp_path, monkeypatch):
    """Ctrl-C arriving as the ingest commits: the rows are stored and the command says so, exit 130, no
    traceback, no "cannot rollback" (it reported a failure with two tracebacks)."""
    from stellardb.catalog import db as db_module

    connect = db_module.connect
    monkeypatch.setattr(db_module, "connect", lambda *a, **k: InterruptAfterCommit(connect(*a, **k)))
    _, _, dist, _ = small_sky()
    path = tmp_path / "i.duckdb"
    with pytest.raises(InterruptedAfterCommit, match="is stored and complete"):
        ingest.run(path, "distances", [write(dist, tmp_path / "d.csv")])
    monkeypatch.setattr(db_module, "connect", connect)
    assert fetch(path, "select count(*) from distances")[0][0] == len(dist)
    monkeypatch.setattr(db_module, "connect", lambda *a, **k: InterruptAfterCommit(connect(*a, **k)))
    result = invoke(tmp_path / "j.duckdb", "ingest", "distances", tmp_path / "d.csv")
    assert result.exit_code == 130 and "Traceback" not in result.output and "is stored" in result.output


# ---------------------------------------------------------------- 10. scratch copies do not outlive their process


def test_scratch_copy_of_a_killed_ingest_is_swept(tmp_path):
    """An inflated copy whose owner process is gone (kill -9 skips every finally) is removed by the next
    gzip ingest; one whose owner lives is kept."""
    from stellardb.ingest import readers

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))
    stale = folder / f"{readers.SCRATCH_PREFIX}{int(dead.stdout)}-test.csv"
    alive = folder / f"{readers.SCRATCH_PREFIX}{os.getpid()}-test.csv"
    stale.write_text("x")
    alive.write_text("x")
    try:
        gaia, _, _, _ = small_sky()
        import gzip

        src = tmp_path / "g.csv.gz"
        src.write_bytes(gzip.compress(gaia.to_csv(index=False).encode()))
        ingest.run(tmp_path / "g.duckdb", "gaia", [src])
        assert not stale.exists() and alive.exists()
    finally:
        stale.unlink(missing_ok=True)
        alive.unlink(missing_ok=True)


# ---------------------------------------------------------------- 11. one model name rule


@pytest.mark.parametrize("name", ["./demo", "demo/", "../x/demo", "/tmp/demo", "demo\n", ""])
def test_model_names_that_are_paths_are_refused_everywhere(sky_db_path, name):
    """score --model and train --model take a name, never a path or a name with a newline."""
    for args in (["score", "--model", name], ["train", "--model", name, "--epochs", "1"]):
        line = error_line(CliRunner().invoke(cli, ["--db", str(sky_db_path), *args]))
        assert "is not allowed" in line, (args, line)


# ---------------------------------------------------------------- one-line errors


def test_bad_text_files_get_one_line(db, tmp_path):
    """A Latin-1 CSV names the encoding; a ragged row names its line; a device is refused; nothing changes."""
    before = snapshot(db)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"ra,dec,teff,logg,feh,survey,name\n10,-20,5000,4,0,X,Caf\xe9\n")
    assert "not UTF-8 text" in error_line(invoke(db, "ingest", "sos", latin))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("ra,dec,teff,logg,feh,survey\n10,-20,5000,4,0,X\n11,-21,5000,4\n")
    assert "line 3 has 4 fields but the header has 6" in error_line(invoke(db, "ingest", "sos", ragged))
    assert "not a regular file" in error_line(invoke(db, "ingest", "gaia", "/dev/zero"))
    assert snapshot(db) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs (needs root and mount); skipped loudly where it cannot be made."""
    with small_tmpfs(tmp_path / "small", "300k") as folder:
        yield folder


def test_disk_full_is_one_line_and_leaves_no_file(sky_db_path, small_disk):
    """query --output to a full disk: one line, no partial file (the export is written beside, then renamed)."""
    for fmt in ("csv", "votable"):
        line = error_line(invoke(sky_db_path, "query", "select * from gaia", "--format", fmt,
                                 "--output", small_disk / f"out.{fmt}"))
        assert "no space left" in line.lower() or "full" in line.lower()
    assert list(small_disk.iterdir()) == []


_KILL_INGEST = """
import os, sys
from stellardb.catalog import db, xmatch
from stellardb.ingest import pipeline as ingest
point = sys.argv[3]
if point == "before_commit":
    # the last step before the commit: the crossmatch refresh
    xmatch.refresh_label_match = lambda con: os.kill(os.getpid(), 9)
else:
    connect = db.connect
    class Killed:
        def __init__(self, con): self._con = con
        def commit(self):
            self._con.commit()
            os.kill(os.getpid(), 9)
        def __getattr__(self, name): return getattr(self._con, name)
    db.connect = lambda *a, **k: Killed(connect(*a, **k))
ingest.run(sys.argv[1], "sos", [sys.argv[2]])
"""


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_ingest_killed_at_its_commit_leaves_one_consistent_state(db, tmp_path, point):
    """kill -9 of an ingest just before or just after its commit: the database holds either none of the
    file (and no ingests row) or all of it with its ingests row, never a mix."""
    _, _, _, labels = small_sky(n=30, seed=9)
    labels["survey"] = "KILLED"
    src = write(labels, tmp_path / "l.csv")
    before = snapshot(db)
    run = subprocess.run([sys.executable, "-c", _KILL_INGEST, str(db), str(src), point], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    rows = fetch(db, "select count(*) from sos where survey = 'KILLED'")[0][0]
    files = fetch(db, "select count(*) from ingests where file = $f", {"f": str(src.absolute())})[0][0]
    if point == "before_commit":
        assert (rows, files) == (0, 0) and snapshot(db) == before
    else:
        assert (rows, files) == (len(labels), 1)


# ---------------------------------------------------------------- second review


def test_gzipped_fits_ingests(tmp_path):
    """A single-table .fits.gz ingests (choosing the table once closed the in-memory copy)."""
    import gzip

    _, _, dist, _ = small_sky()
    plain = tmp_path / "d.fits"
    Table.from_pandas(dist).write(plain)
    src = tmp_path / "d.fits.gz"
    src.write_bytes(gzip.compress(plain.read_bytes()))
    path = tmp_path / "d.duckdb"
    assert invoke(path, "ingest", "distances", src).exit_code == 0
    assert fetch(path, "select count(*) from distances")[0][0] == len(dist)


@pytest.mark.parametrize("bad_id", [-5, 9_000_000_000_000_000_000 // 2 * 2 - 1])
def test_source_id_that_encodes_no_pixel_is_refused(db, tmp_path, bad_id):
    """A source_id outside Gaia's range (no HEALPix pixel) is refused, not stored with healpix_12 = -1."""
    gaia, _, _, _ = small_sky(n=30, seed=6)
    gaia.loc[3, "source_id"] = bad_id
    before = snapshot(db)
    result = invoke(db, "ingest", "gaia", write(gaia, tmp_path / "g.csv"))
    line = error_line(result)
    assert "no Gaia DR3 id" in line and "Error encountered" not in result.output
    assert snapshot(db) == before


def test_duckdb_interrupt_is_one_line_exit_130(db, monkeypatch):
    """A signal inside a DuckDB statement surfaces as RuntimeError("Query interrupted") in duckdb 2.0:
    still one line and exit 130."""
    from stellardb.catalog import query as query_lib

    def interrupted(*args, **kwargs):
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(query_lib, "run_query", interrupted)
    result = invoke(db, "query", "select 1")
    assert result.exit_code == 130 and result.output.strip().startswith("Interrupted") and "Traceback" not in result.output


def test_interrupt_before_begin_is_not_reported_as_stored():
    """Only a transaction that had begun can have committed."""
    from stellardb.catalog import db as db_module

    con = duckdb.connect()
    db_module.undo_or_report(con, KeyboardInterrupt(), "x", begun=False)  # no error: nothing was stored
    with pytest.raises(InterruptedAfterCommit):
        db_module.undo_or_report(con, KeyboardInterrupt(), "x", begun=True)


def test_doctor_spares_running_trains_and_dotted_names(tmp_path):
    """A model whose name contains ".old-" is restored from its parked copy, and the folders of a train
    that is still running (its PID alive) are left alone."""
    import hashlib
    import json

    from stellardb.ml import doctor

    models = tmp_path / "models"
    name = "v1.old-2"
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    parked = models / f".{name}.old-{dead}-abc" / name
    parked.mkdir(parents=True)
    (parked / "card.json").write_text(json.dumps({"n": "recorded"}))
    (models / name).mkdir()
    (models / name / "card.json").write_text(json.dumps({"n": "unrecorded"}))
    live = models / f".other.partial-{os.getpid()}-xyz"
    live.mkdir()
    con = duckdb.connect()
    con.execute("create table model_runs as select 'train' as command, $m as model, now() as run_at, $s as card_sha256",
                {"m": name, "s": hashlib.sha256((parked / "card.json").read_bytes()).hexdigest()})
    findings = doctor.diagnose(con, models, repair=True)
    assert json.loads((models / name / "card.json").read_text()) == {"n": "recorded"}
    assert live.is_dir() and not parked.parent.exists()
    assert [f.action for f in findings] == ["put the recorded model back"]


def test_label_crossmatch_skips_unusable_stored_rows(db):
    """A stored position-only label with an absurd epoch (a database from before the checks) does not
    stop the crossmatch."""
    con = stellardb.connect(db, read_only=False)
    con.execute("insert into sos (survey, ra, dec, ref_epoch, teff, ingest_id) values ('OLD', 10, -20, 1e300, 5000, 99)")
    con.close()
    result = invoke(db, "xmatch")
    assert result.exit_code == 0, result.output


def test_explain_analyze_runs_only_selects(db):
    """EXPLAIN ANALYZE runs what it explains: only a SELECT is allowed there too."""
    assert "read-only" in error_line(invoke(db, "query", "explain analyze create temp table t as select 1"))
    assert invoke(db, "query", "explain analyze select count(*) from gaia").exit_code == 0


def test_path_and_name_messages(db, tmp_path):
    """--rename to a column in another case works; a folder-like, scheme-like or empty --db file says what to
    do; an empty query says so."""
    _, _, _, labels = small_sky()
    labels = labels.rename(columns={"teff": "T"})
    result = invoke(db, "ingest", "sos", write(labels, tmp_path / "l.csv"), "--rename", "T=Teff", "--on-duplicate",
                    "skip")
    assert result.exit_code == 0, result.output
    assert "write ./data:2024.duckdb" in error_line(CliRunner().invoke(cli, ["--db", "data:2024.duckdb", "query", "select 1"]))
    assert "names a folder" in error_line(CliRunner().invoke(cli, ["--db", f"{tmp_path}/nope/", "ingest", "sos",
                                                                   str(tmp_path / "l.csv")]))
    empty = tmp_path / "empty.duckdb"  # (DuckDB 2 refuses an empty file as a database)
    empty.write_bytes(b"")
    _, _, dist, _ = small_sky()
    assert "is an empty file" in error_line(invoke(empty, "ingest", "distances", write(dist, tmp_path / "d.csv")))
    assert "No SQL given" in error_line(invoke(db, "query", ""))


def test_disk_full_while_creating_a_database_leaves_nothing(tmp_path):
    """A full disk while a new database is made: one line, and no half-made file left behind."""
    with small_tmpfs(tmp_path / "tiny", "64k") as folder:
        _, _, dist, _ = small_sky()
        line = error_line(invoke(folder / "new.duckdb", "ingest", "distances", write(dist, tmp_path / "d.csv")))
        assert "disk is full" in line
        assert list(folder.iterdir()) == []
