"""The release commands from the command line: what they print, and what bad input gets (one line,
a non-zero exit, the database, the releases and ``latest`` exactly as they were)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from stellardb.release import layout

from ..helpers import error_line, invoke, small_tmpfs, snapshot
from .conftest import add_predictions


@pytest.fixture
def scored_copy(scored_db, tmp_path):
    path = tmp_path / "db" / "sky.duckdb"
    path.parent.mkdir()
    shutil.copy(scored_db, path)
    return path


def releases_state(root):
    """What a reader sees: the listed releases, where latest points, and every file name."""
    latest = os.readlink(root / "latest") if (root / "latest").is_symlink() else None
    return ([r.name for r in layout.list_releases(root)], latest,
            sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else [])


def test_release_then_releases_then_query(scored_copy):
    result = invoke(scored_copy, "release", "2026-12a", "--max-rows-per-partition", "5000", "-q")
    assert result.exit_code == 0, result.output
    root = scored_copy.parent / "releases"
    assert os.readlink(root / "latest") == "2026-12a"
    listed = invoke(scored_copy, "releases")
    assert listed.exit_code == 0 and "2026-12a *" in listed.output and "m1" in listed.output
    n = invoke(scored_copy, "query", "--release", "latest", "select count(*) as n from catalogue", "--format", "csv")
    assert n.exit_code == 0 and n.output.split() == ["n", str(snapshot(scored_copy)["gaia"][0])]


def test_a_second_release_moves_latest_and_keeps_the_first(scored_copy):
    add_predictions(scored_copy, model="m2", seed_offset=3600)  # scored later: the default model
    for name in ("a", "b"):
        assert invoke(scored_copy, "release", name, "--max-rows-per-partition", "5000", "-q").exit_code == 0
    root = scored_copy.parent / "releases"
    assert [r.name for r in layout.list_releases(root)] == ["a", "b"]
    assert os.readlink(root / "latest") == "b"
    assert layout.list_releases(root)[0].manifest["model"]["name"] == "m2"
    old = invoke(scored_copy, "query", "--release", "a", "select count(*) from predictions", "--format", "csv")
    assert old.exit_code == 0


@pytest.mark.parametrize("name, expected", [
    ("../x", "is not allowed"), ("a/b", "is not allowed"), ("..", "is not allowed"), (".hidden", "is not allowed"),
    ("latest", "names the pointer"), ("", "is not allowed"),
])
def test_bad_names_are_refused(scored_copy, name, expected):
    before = snapshot(scored_copy)
    assert expected in error_line(invoke(scored_copy, "release", name))
    assert snapshot(scored_copy) == before
    assert not (scored_copy.parent / "releases").exists()


def test_an_existing_release_is_never_overwritten(scored_copy):
    assert invoke(scored_copy, "release", "a", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    root = scored_copy.parent / "releases"
    before = releases_state(root)
    assert "already exists" in error_line(invoke(scored_copy, "release", "a"))
    assert releases_state(root) == before


def test_nothing_scored_unknown_model_and_empty_database_are_refused(scored_copy, sky_db_path, tmp_path):
    before = snapshot(scored_copy)
    assert "has no predictions" in error_line(invoke(scored_copy, "release", "x", "--model", "nope"))
    unscored = tmp_path / "unscored.duckdb"
    shutil.copy(sky_db_path, unscored)
    assert "Nothing is scored yet" in error_line(invoke(unscored, "release", "x"))
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert "holds no Gaia sources" in error_line(invoke(empty, "release", "x"))
    assert "No stellardb database" in error_line(invoke(tmp_path / "missing.duckdb", "release", "x"))
    assert snapshot(scored_copy) == before
    for folder in (scored_copy.parent, tmp_path):
        assert not (folder / "releases").exists() or layout.list_releases(folder / "releases") == []


def test_bad_options_are_refused(scored_copy):
    assert "--max-rows-per-partition must be" in error_line(invoke(scored_copy, "release", "x",
                                                                   "--max-rows-per-partition", "0"))
    assert "--margin-arcsec must be" in error_line(invoke(scored_copy, "release", "x", "--margin-arcsec", "-1"))
    # a margin wider than the smallest partitions allow is refused, and nothing is left
    line = error_line(invoke(scored_copy, "release", "x", "--max-rows-per-partition", "500", "--margin-arcsec", "900"))
    assert "--margin-arcsec" in line
    assert layout.list_releases(scored_copy.parent / "releases") == []
    assert [p.name for p in (scored_copy.parent / "releases").iterdir()] == []


_RELEASE = "from stellardb.cli.main import cli; cli(prog_name='stellardb')"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_an_interrupted_release_is_never_listed_and_latest_is_unchanged(scored_copy, how):
    assert invoke(scored_copy, "release", "first", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    root = scored_copy.parent / "releases"
    before = releases_state(root)
    process = subprocess.Popen([sys.executable, "-c", _RELEASE, "--db", str(scored_copy), "release", "second",
                                "--max-rows-per-partition", "500", "-q"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(root.glob(".second.partial-*/skymapper")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert process.poll() is None, "the release ended before it could be interrupted"
    process.send_signal(how)
    process.wait(60)
    assert process.returncode != 0
    listed, latest, _ = releases_state(root)
    assert (listed, latest) == before[:2]
    if how == signal.SIGTERM:  # it cleaned up after itself
        assert releases_state(root) == before
    else:  # killed outright: the next release removes what it left
        assert any(root.glob(".second.partial-*"))
        assert invoke(scored_copy, "release", "third", "--max-rows-per-partition", "5000", "-q").exit_code == 0
        assert not any(root.glob(".second.partial-*"))
        assert not (root / "second").exists()


def test_a_full_disk_leaves_no_release(scored_copy, tmp_path):
    with small_tmpfs(tmp_path / "small", "2m") as folder:
        line = error_line(invoke(scored_copy, "release", "x", "--out", folder))
        assert "nothing was published" in line and "space" in line
        assert list(folder.iterdir()) == []


def test_query_release_works_while_another_process_writes_the_database(scored_copy):
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('open', flush=True); time.sleep(60)", str(scored_copy)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"open"
        assert "in use by another process" in error_line(invoke(scored_copy, "query", "select 1"))
        result = invoke(scored_copy, "query", "--release", "r", "select count(*) as n from gaia", "--format", "csv")
        assert result.exit_code == 0, result.output
    finally:
        holder.kill()
        holder.wait()


def test_query_release_is_read_only_and_names_unknown_releases(scored_copy):
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    line = error_line(invoke(scored_copy, "query", "--release", "nope", "select 1"))
    assert "No release 'nope'" in line and "r" in line
    for sql, expected in (("select * from read_csv('/etc/passwd')", "file system operations are disabled"),
                          ("copy (select 1) to 'x.csv'", "read-only"), ("create table t (a int)", "read-only")):
        result = invoke(scored_copy, "query", "--release", "r", sql)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.startswith("Error:") and expected in result.output.splitlines()[0]
    assert not (scored_copy.parent / "x.csv").exists()
    assert "No releases in" in error_line(invoke(scored_copy, "releases", "--out", scored_copy.parent / "none"))


def test_ingest_refuses_folders_that_are_not_the_right_hats_catalogue(scored_copy, tmp_path):
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    release = scored_copy.parent / "releases" / "r"
    target = tmp_path / "new.duckdb"
    assert "not a HATS catalogue" in error_line(invoke(target, "ingest", "gaia", tmp_path))
    assert "margin catalogue" in error_line(invoke(target, "ingest", "gaia", release / "gaia" / "gaia_10arcs"))
    assert "looks like a skymapper file" in error_line(invoke(target, "ingest", "gaia", release / "skymapper"))
    broken = tmp_path / "broken"
    shutil.copytree(release / "distances" / "distances", broken)
    next(broken.rglob("Npix=*.parquet")).unlink()
    assert "is missing" in error_line(invoke(target, "ingest", "gaia", broken))
    assert not target.exists()


def test_a_release_ingests_back_into_the_same_tables(scored_copy, tmp_path):
    """gaia and skymapper of a release ingest into a new database with the rows they came from."""
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    release = scored_copy.parent / "releases" / "r"
    target = tmp_path / "new.duckdb"
    for table in ("gaia", "skymapper"):
        assert invoke(target, "ingest", table, release / table, "-q").exit_code == 0
    con = duckdb.connect()
    try:
        con.execute(f"attach '{scored_copy}' as a (read_only); attach '{target}' as b (read_only)")
        for table in ("gaia", "skymapper", "xmatch"):
            names = ", ".join(r[0] for r in con.execute(
                "select column_name from duckdb_columns() where database_name = 'a' and table_name = $t "
                "and column_name <> 'ingest_id'", {"t": table}).fetchall())
            for x, y in (("a", "b"), ("b", "a")):
                assert con.execute(f"select count(*) from (select {names} from {x}.{table} except all "
                                   f"select {names} from {y}.{table})").fetchone()[0] == 0, table
    finally:
        con.close()


def test_query_release_exports_carry_units_and_ucds(scored_copy, tmp_path, stilts):
    """A VOTable from a release has the units and UCDs of the database's own exports (STILTS and astropy read it)."""
    from astropy.table import Table

    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    sql = "select source_id, parallax, r_med_geo, teff, feh from catalogue where teff is not null limit 20"
    released, stored = tmp_path / "release.vot", tmp_path / "db.vot"
    assert invoke(scored_copy, "query", "--release", "r", sql, "--format", "votable", "-o", released).exit_code == 0
    assert invoke(scored_copy, "query", sql.replace("catalogue", "catalogue_of_model('m1')"), "--format", "votable",
                  "-o", stored).exit_code == 0
    a, b = Table.read(released, format="votable"), Table.read(stored, format="votable")
    assert [str(c.unit) for c in a.columns.values()] == [str(c.unit) for c in b.columns.values()]
    assert str(a["parallax"].unit) == "mas" and str(a["teff"].unit) == "K"
    assert a["teff"].meta.get("ucd") == b["teff"].meta.get("ucd") == "phys.temperature.effective"
    out = subprocess.run([stilts, "tpipe", f"in={released}", "ifmt=votable", "omode=meta"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "mas" in out.stdout, out.stderr


def test_a_regional_database_without_margin_rows_releases(scored_copy):
    """A small field: no star lies within the margin of another partition, so there is no margin cache."""
    import json

    from hats.io.validation import is_valid_catalog

    con = duckdb.connect(str(scored_copy))
    con.execute("delete from gaia where not (ra between 200 and 205 and dec between -45 and -40)")
    for table, key in (("distances", "source_id"), ("xmatch", "gaia_source_id"), ("predictions", "source_id"),
                       ("sos", "source_id")):
        con.execute(f"delete from {table} where {key} not in (select source_id from gaia)")
    n = con.execute("select count(*) from gaia").fetchone()[0]
    con.close()
    assert n > 0
    result = invoke(scored_copy, "release", "r", "-q")
    assert result.exit_code == 0, result.output
    release = scored_copy.parent / "releases" / "r"
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["catalogues"]["gaia"]["margin_rows"] == 0
    assert not (release / "gaia" / "gaia_10arcs").exists()
    assert is_valid_catalog(release / "gaia", strict=True)


def test_outputs_never_land_in_a_release_or_on_the_database(scored_copy):
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    release = scored_copy.parent / "releases" / "r"
    before = releases_state(release.parent)
    for target in (release / "manifest.json", release / "gaia" / "gaia" / "dataset" / "x.parquet"):
        assert "inside release r" in error_line(invoke(scored_copy, "query", "--release", "r", "select 1",
                                                       "--format", "csv", "-o", target))
    assert "is the database file itself" in error_line(invoke(scored_copy, "query", "select 1", "--format", "csv",
                                                              "-o", scored_copy))
    assert "inside release r" in error_line(invoke(scored_copy, "release", "s", "--out", release / "gaia"))
    assert releases_state(release.parent) == before
    assert snapshot(scored_copy)["gaia"][0] > 0


def test_a_latest_that_is_not_a_link_is_refused_before_writing(scored_copy):
    root = scored_copy.parent / "releases"
    (root / "latest").mkdir(parents=True)
    assert "is not the link stellardb keeps" in error_line(invoke(scored_copy, "release", "r"))
    assert sorted(p.name for p in root.iterdir()) == ["latest"]


def test_rows_without_a_sky_position_are_refused(scored_copy):
    con = duckdb.connect(str(scored_copy))
    con.execute("insert into distances (source_id, r_med_geo, healpix_12, ingest_id) values (-5, 100, 0, 1)")
    con.close()
    before = snapshot(scored_copy)
    line = error_line(invoke(scored_copy, "release", "r"))
    assert "distances: 1 rows have a source_id that is not a Gaia DR3 source_id" in line
    assert snapshot(scored_copy) == before
    assert layout.list_releases(scored_copy.parent / "releases") == []


def test_a_damaged_release_is_one_line_and_listed_as_damaged(scored_copy):
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    release = scored_copy.parent / "releases" / "r"
    (release / "manifest.json").write_text("{ not json")
    assert "Release r is damaged" in error_line(invoke(scored_copy, "query", "--release", "r", "select 1"))
    listed = invoke(scored_copy, "releases")
    assert listed.exit_code == 0 and "damaged" in listed.output


def test_cone_exports_carry_units_and_unrelated_manifests_are_not_releases(scored_copy, tmp_path):
    """A cone search's VOTable has the catalogue's units; a folder that merely holds some manifest.json
    (a web app's) is not mistaken for a release by release or query --output."""
    from astropy.table import Table

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "manifest.json").write_text("{}")
    db = project / "data" / "sky.duckdb"
    shutil.copy(scored_copy, db)
    assert invoke(db, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    out = project / "cone.vot"
    assert invoke(db, "query", "--release", "r", "select * from catalogue_cone(150.0, -45.0, 7200)",
                  "--format", "votable", "-o", out).exit_code == 0
    table = Table.read(out, format="votable")
    assert len(table) > 0 and str(table["ra"].unit) == "deg" and str(table["parallax"].unit) == "mas"


def test_rows_whose_gaia_source_is_missing_are_released_in_partitions_of_their_own(scored_copy):
    """Distances of Gaia sources not in the database (a regional Gaia extract, an all-sky distance
    file) sit in their source_id's order-12 pixel, in valid partitions that never overlap gaia's."""
    import pyarrow.parquet as pq
    from hats.io.validation import is_valid_catalog

    from stellardb.release.partition import Pixel

    assert invoke(scored_copy, "release", "pre", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    gaia_pixels = [Pixel(int(f.parts[-3].split("=")[1]), int(f.stem.split("=")[1]))
                   for f in layout.data_files(scored_copy.parent / "releases" / "pre", "gaia")]
    # three order-12 pixels that no gaia partition holds (the simulated sky is southern), 40 sources each
    spread = range(0, 12 * 4**12, 4**10)  # one order-12 pixel per order-2 pixel
    free = [p for p in spread if not any(q.lo <= (p << 34) < q.hi for q in gaia_pixels)][:3]
    assert len(free) == 3
    con = duckdb.connect(str(scored_copy))
    con.execute("insert into distances (source_id, r_med_geo, healpix_12, ingest_id) "
                "select (p::bigint << 35) + n, 500, p, 1 from unnest($free) a(p), range(40) b(n)", {"free": free})
    expected = con.execute("select count(*) from distances").fetchone()[0]
    con.close()
    assert invoke(scored_copy, "release", "r", "--max-rows-per-partition", "5000", "-q").exit_code == 0
    release = scored_copy.parent / "releases" / "r"
    assert is_valid_catalog(release / "distances", strict=True)
    rows = sum(pq.read_metadata(f).num_rows for f in layout.data_files(release, "distances"))
    assert rows == expected
    gaia = {(p.parts[-3], p.name) for p in layout.data_files(release, "gaia")}
    moved = [f for f in layout.data_files(release, "distances") if (f.parts[-3], f.name) not in gaia]
    found = set()
    for f in moved:
        table = pq.read_table(f, columns=["source_id", "_healpix_29"]).to_pydict()
        found |= {s for s, h in zip(table["source_id"], table["_healpix_29"]) if h == (s >> 35) << 34}
    assert found == {(p << 35) + n for p in free for n in range(40)}
