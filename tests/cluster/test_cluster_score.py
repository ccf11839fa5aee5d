"""stellardb score --engine dask (issue 16): the scorer per HATS partition of a release gives the
predictions the embedded ``score`` wrote into the database, star by star."""

from __future__ import annotations

import json
import threading

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from stellardb.cli.main import cli

from ..helpers import dictionary_encoded

pytest.importorskip("keras")

FILES = {"gaia": "gaia_source.csv.gz", "skymapper": "skymapper_master.csv", "distances": "bailer_jones_distances.csv",
         "sos": "sos_spectro.csv"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A 20,000-star sky, a family of two feature sets (Gaia only; Gaia + SkyMapper) trained for two
    epochs and scored embedded, and a release in partitions of at most 1,500 rows."""
    from stellardb.ingest import pipeline
    from stellardb.ml import score, train
    from stellardb.release.writer import write_release
    from stellardb.simulate import simulate

    root = tmp_path_factory.mktemp("cluster_score")
    simulate(root / "sky", stars=20_000, seed=21, workers=1)
    path = root / "s.duckdb"
    for table, name in FILES.items():
        pipeline.run(path, table, [root / "sky" / name])
    models = root / "models"
    train.run_family(path, "fam", feature_set_names=["gaia", "gaia-skymapper"], min_labels=100, models_dir=models,
                     epochs=2, seed=1, quick=True, plots=False)
    score.run_family(path, "fam", models_dir=models)
    release = write_release(path, "r1", model="fam", max_rows=1_500, margin_arcsec=30.0).path
    return root, path, models, release


def embedded(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("select * exclude (model, scored_at) from predictions where model = 'fam' "
                           "order by source_id").df()
    finally:
        con.close()


def cluster(folder):
    return duckdb.sql(f"select * exclude (model, scored_at, _healpix_29, ra, dec) from read_parquet("
                      f"'{folder}/predictions/predictions/dataset/Norder=*/*/*.parquet') order by source_id").df()


def assert_same_predictions(got, want):
    assert got["source_id"].tolist() == want["source_id"].tolist()
    assert got["feature_set"].tolist() == want["feature_set"].tolist()
    for column in ("teff", "teff_err", "logg", "logg_err", "feh", "feh_err"):
        # the networks run in float32 and BLAS may sum a row of a batch of another size in another
        # order: a last-bit difference, which the errors (exp of a log-variance) carry to ~3e-6
        np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-5, atol=1e-5, err_msg=column)
    for column in ("teff_outside_training", "logg_outside_training", "feh_outside_training",
                   "inputs_outside_training"):
        assert got[column].tolist() == want[column].tolist(), column


def run_cli(root, path, models, release, out, *extra):
    return CliRunner().invoke(cli, ["--db", str(path), "score", "--engine", "dask", "--release", str(release),
                                    "--model", "fam", "--workers", "2", "--out", str(out), *extra],
                              env={"STELLARDB_MODELS": str(models)})


def test_dask_predictions_equal_embedded_star_by_star(scored, tmp_path):
    import lsdb
    from hats.io.validation import is_valid_catalog

    root, path, models, release = scored
    result = run_cli(root, path, models, release, tmp_path / "out")
    assert result.exit_code == 0, result.output
    want = embedded(path)
    got = cluster(tmp_path / "out")
    assert len(want) > 10_000 and set(want["feature_set"]) == {"gaia", "gaia-skymapper"}
    assert_same_predictions(got, want)
    assert f"Scored {len(want):,} stars" in result.output
    # a HATS catalogue co-partitioned with gaia, which hats validates and lsdb reads
    assert is_valid_catalog(tmp_path / "out" / "predictions", strict=True)
    frame = lsdb.open_catalog(tmp_path / "out" / "predictions").compute()
    assert len(frame) == len(want)
    gaia_pixels = sorted(p.name for p in (release / "gaia" / "gaia" / "dataset").rglob("Npix=*.parquet"))
    files = sorted((tmp_path / "out" / "predictions" / "predictions" / "dataset").rglob("Npix=*.parquet"))
    assert sorted(p.name for p in files) == gaia_pixels
    # each file in a release's order, (_healpix_29, source_id), however the task's batches came
    for file in files:
        rows = pq.read_table(file, columns=["_healpix_29", "source_id"]).to_pandas()
        assert rows.equals(rows.sort_values(["_healpix_29", "source_id"], ignore_index=True)), file
    assert sum(pq.ParquetFile(f).metadata.num_rows > 0 for f in files) > 3
    # each star's position and spatial index are its Gaia source's, from the release's gaia files
    where = duckdb.sql(
        f"select count(*), count(g.source_id) from read_parquet('{tmp_path}/out/predictions/predictions/dataset/"
        f"Norder=*/*/*.parquet') as p left join read_parquet('{release}/gaia/gaia/dataset/Norder=*/*/*.parquet') as g "
        "on g.source_id = p.source_id and g._healpix_29 = p._healpix_29 and g.ra = p.ra and g.dec = p.dec").fetchall()
    assert where == [(len(want), len(want))], where
    # dictionaries only for the strings: ids and values written plain (docs/cluster.md)
    seen = dictionary_encoded(tmp_path / "out" / "predictions")
    assert seen["model"] and seen["feature_set"], seen
    assert not any(v for k, v in seen.items() if k not in ("model", "feature_set")), seen


def test_a_worker_killed_mid_run_still_scores_every_star_once(scored, tmp_path):
    root, path, models, release = scored
    marker = tmp_path / "killed"
    result = CliRunner().invoke(cli, ["--db", str(path), "score", "--engine", "dask", "--release", str(release),
                                      "--model", "fam", "--workers", "2", "--out", str(tmp_path / "out")],
                                env={"STELLARDB_MODELS": str(models), "STELLARDB_TEST_KILL_ONCE": str(marker)})
    assert result.exit_code == 0, result.output
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert_same_predictions(cluster(tmp_path / "out"), embedded(path))


def test_every_worker_killed_at_once_still_scores_every_star_once(scored, tmp_path, monkeypatch):
    """Both workers die together, taking the scattered model with them: Dask forgets it and cancels
    the tasks that need it (CI saw a FutureCancelledError when a race killed both); the model is
    sent again, the tasks resubmitted, and every star is scored once."""
    import distributed

    root, path, models, release = scored
    marker = tmp_path / "killed"
    sent = []
    scatter = distributed.Client.scatter

    def counting_scatter(self, *args, **kwargs):
        sent.append(1)
        return scatter(self, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "scatter", counting_scatter)
    result = CliRunner().invoke(cli, ["--db", str(path), "score", "--engine", "dask", "--release", str(release),
                                      "--model", "fam", "--workers", "2", "--out", str(tmp_path / "out")],
                                env={"STELLARDB_MODELS": str(models), "STELLARDB_TEST_KILL_ONCE": str(marker),
                                     "STELLARDB_TEST_KILLS": "2"})
    assert result.exit_code == 0, result.output
    killed = sorted(p.read_text() for p in tmp_path.glob("killed.*"))
    assert len(killed) == 2, "two workers were not killed: the test proves nothing"
    assert len(sent) == 2, "the model was not lost and sent again: the test proves nothing"
    assert_same_predictions(cluster(tmp_path / "out"), embedded(path))


def test_score_with_the_cluster_crossmatch_and_bad_input(scored, tmp_path):
    """The Dask crossmatch's output feeds the Dask scorer (same predictions); an unknown model is
    a one-line error that writes nothing."""
    root, path, models, release = scored
    runner = CliRunner()
    xm = runner.invoke(cli, ["--db", str(path), "xmatch", "--engine", "dask", "--release", str(release),
                             "--workers", "2", "--out", str(tmp_path / "xm")])
    assert xm.exit_code == 0, xm.output
    result = run_cli(root, path, models, release, tmp_path / "out", "--xmatch", str(tmp_path / "xm" / "xmatch"))
    assert result.exit_code == 0, result.output
    assert_same_predictions(cluster(tmp_path / "out"), embedded(path))
    bad = CliRunner().invoke(cli, ["--db", str(path), "score", "--engine", "dask", "--release", str(release),
                                   "--model", "nope", "--out", str(tmp_path / "bad")],
                             env={"STELLARDB_MODELS": str(models)})
    assert bad.exit_code != 0 and "nope" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "predictions").exists()


def test_a_partition_whose_predictions_would_not_fit_the_budget_is_refused(scored, tmp_path, monkeypatch):
    """A task holds its partition's predictions: a partition too large for the worker's budget is a
    one-line error before any work (no folder, no cluster), naming the smallest budget that fits."""
    import re

    from stellardb.cluster import catalogues, engine, score as cluster_score
    from stellardb.cluster.stats import RowGroupIndex
    from stellardb.errors import UserError

    root, path, models, release = scored
    monkeypatch.setattr(cluster_score, "PREDICTION_BYTES_PER_ROW", 10**6)  # a 1,000-row partition: 1 GB

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the memory check")

    monkeypatch.setattr(engine, "client", no_work)
    monkeypatch.setattr(engine, "output_folder", no_work)
    result = run_cli(root, path, models, release, tmp_path / "out")
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert "work started" not in result.output
    suggested = int(re.search(r"--memory-per-worker (\d+)GB", result.output)[1])
    assert not (tmp_path / "out").exists()
    gaia = catalogues.release_catalogue(release, "gaia")
    rows = RowGroupIndex.of(gaia.path, [p.file for p in gaia.partitions])
    sizes = {str(p.pixel): rows.rows_in(p.pixel.lo, p.pixel.hi) for p in gaia.partitions}
    assert f"{max(sizes.values()):,} rows" in result.output
    cluster_score._check_memory(sizes, engine.Budget(engine.parse_bytes(f"{suggested}GB")))  # it fits
    with pytest.raises(UserError):
        cluster_score._check_memory(sizes, engine.Budget(engine.parse_bytes(f"{suggested - 1}GB")))
    # the partition size it names fits the budget given
    monkeypatch.setattr(cluster_score, "PREDICTION_BYTES_PER_ROW", 240)
    two_gb = engine.Budget(engine.parse_bytes("2GB"))
    with pytest.raises(UserError, match=r"--max-rows-per-partition (\d+)") as refused:
        cluster_score._check_memory({"1_44": 5_000_000}, two_gb)
    fits = int(re.search(r"--max-rows-per-partition (\d+)", str(refused.value))[1])
    cluster_score._check_memory({"1_44": fits}, two_gb)
    assert 1_000_000 <= fits < 5_000_000


def test_a_release_from_the_cluster_outputs_equals_the_embedded_release(scored, tmp_path):
    """xmatch and score on Dask, then `release --from-release`: the catalogue the service and lsdb
    read equals the one the embedded release wrote (predictions to float32 rounding)."""
    import lsdb
    from hats.io.validation import is_valid_catalog

    from stellardb.release import reader

    root, path, models, release = scored
    runner = CliRunner()
    env = {"STELLARDB_MODELS": str(models)}
    assert runner.invoke(cli, ["--db", str(path), "xmatch", "--engine", "dask", "--release", str(release),
                               "--workers", "2", "--out", str(tmp_path / "c")]).exit_code == 0
    assert run_cli(root, path, models, release, tmp_path / "c", "--xmatch", str(tmp_path / "c" / "xmatch")).exit_code == 0
    made = runner.invoke(cli, ["--db", str(path), "release", "r2", "--from-release", str(release), "--xmatch",
                               str(tmp_path / "c"), "--predictions", str(tmp_path / "c"), "--workers", "2",
                               "--out", str(tmp_path / "rel")], env=env)
    assert made.exit_code == 0, made.output
    new = tmp_path / "rel" / "r2"
    assert (tmp_path / "rel" / "latest").resolve() == new.resolve()
    assert is_valid_catalog(new / "catalogue", strict=True)
    lsdb_rows = len(lsdb.open_catalog(new / "catalogue").compute())

    def catalogue(folder):
        con = reader.connect(folder)
        try:
            return con.execute("select * exclude (scored_at) from catalogue order by source_id").df()
        finally:
            con.close()

    got, want = catalogue(new), catalogue(release)
    assert lsdb_rows == len(want)
    assert list(got.columns) == list(want.columns)
    assert got["source_id"].tolist() == want["source_id"].tolist()
    floats = [c for c in want.columns if want[c].dtype.kind == "f"]
    others = [c for c in want.columns if c not in floats]
    def plain(series):
        return [None if pd.isna(x) else x for x in series]

    for c in others:
        assert plain(got[c]) == plain(want[c]), c
    for c in floats:
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=c)
    # the margin cache: the catalogue rows of gaia's margin rows
    margin = duckdb.sql(f"select source_id from read_parquet('{new}/catalogue/catalogue_30arcs/dataset/Norder=*/*/*.parquet') "
                        "order by 1").df()
    gaia_margin = duckdb.sql(f"select source_id from read_parquet('{release}/gaia/gaia_30arcs/dataset/Norder=*/*/*.parquet') "
                             "order by 1").df()
    assert len(margin) > 0 and margin["source_id"].tolist() == gaia_margin["source_id"].tolist()

    # what a release is made of is checked: each refusal one line, nothing published
    def refused(*args):
        bad = runner.invoke(cli, ["--db", str(path), "release", "bad", "--from-release", str(release), *args,
                                  "--workers", "1", "--out", str(tmp_path / "rel")], env=env)
        assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1, bad.output
        assert not (tmp_path / "rel" / "bad").exists()
        return bad.output

    assert "give --predictions too" in refused("--xmatch", str(tmp_path / "c"))
    # predictions scored from the release's own crossmatch, with another crossmatch
    assert run_cli(root, path, models, release, tmp_path / "own").exit_code == 0
    assert "another crossmatch" in refused("--xmatch", str(tmp_path / "c"), "--predictions", str(tmp_path / "own"))
    # outputs of another release
    assert "was not made from release" in runner.invoke(
        cli, ["--db", str(path), "release", "bad", "--from-release", str(new), "--xmatch", str(tmp_path / "c"),
              "--predictions", str(tmp_path / "c"), "--workers", "1", "--out", str(tmp_path / "rel")], env=env).output


def test_a_distance_without_its_gaia_source_does_not_stop_the_cluster(scored, tmp_path):
    """A release puts a distance whose Gaia source it lacks in a partition of its own outside gaia's;
    the cluster scorer accepts that release and scores the same stars."""
    import shutil

    import healpy

    from stellardb.release.writer import write_release

    root, path, models, _ = scored
    copy = tmp_path / "copy.duckdb"
    shutil.copy(path, copy)
    pixel = int(healpy.ang2pix(4096, 10.0, 60.0, nest=True, lonlat=True))  # the north: no simulated Gaia star
    con = duckdb.connect(str(copy))
    con.execute("insert into distances (source_id, r_med_geo, healpix_12, ingest_id) values (?, 100.0, ?, 1)",
                [pixel * 2**35 + 7, pixel])
    con.close()
    release = write_release(copy, "lone", model="fam", max_rows=1_500, margin_arcsec=30.0, out=tmp_path / "rel").path
    gaia = {p.name for p in (release / "gaia" / "gaia" / "dataset").rglob("Npix=*.parquet")}
    distances = {p.name for p in (release / "distances" / "distances" / "dataset").rglob("Npix=*.parquet")}
    assert distances - gaia, "the test needs a distances partition outside gaia's"
    result = run_cli(root, copy, models, release, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert_same_predictions(cluster(tmp_path / "out"), embedded(copy))


def test_a_member_needing_a_survey_the_release_lacks_is_refused():
    from stellardb.cluster.score import _check_surveys
    from stellardb.errors import UserError

    with pytest.raises(UserError, match="no tmass crossmatch"):
        _check_surveys({"name": "f", "members": {"gaia": None, "gaia-tmass": None}}, {"skymapper"})
    with pytest.raises(UserError, match="no skymapper crossmatch"):
        _check_surveys({"name": "f", "members": {"gaia-skymapper": None}}, set())
    _check_surveys({"name": "f", "members": {"gaia": None, "gaia-skymapper": None}}, {"skymapper"})


def _partition_files(release, catalogue):
    return {p.name: str(p) for p in (release / catalogue / catalogue / "dataset").rglob("Npix=*.parquet")}


def test_a_kept_partition_database_reads_only_the_files_of_its_current_task(scored, tmp_path):
    """A worker thread keeps its partition database from task to task (stellardb.cluster.partition):
    each task must see its own files and nothing of the one before, as a database opened afresh does."""
    import duckdb as plain

    from stellardb.cluster.partition import _kept, close_kept, kept_partition, open_partition

    root, path, models, release = scored
    gaia, xmatch, distances = (_partition_files(release, c) for c in ("gaia", "xmatch", "distances"))
    survey = sorted(_partition_files(release, "skymapper").values())
    both = sorted(set(gaia) & set(xmatch) & set(distances),
                  key=lambda n: -pq.ParquetFile(xmatch[n]).metadata.num_rows)[:2]
    assert len(both) == 2, "the test needs two partitions with pairs"

    def task(name, spill="spill", run="run1"):
        return {"gaia": gaia[name], "threads": 1, "limit": "500MB", "spill": str(tmp_path / spill), "survey_files": survey,
                "run": run}

    def counts(con):
        return con.execute("select (select count(*) from gaia_src), (select count(*) from xmatch_src), "
                           "(select count(*) from distances_src), (select count(*) from skymapper_src), "
                           "(select count(*) from scoring_set)").fetchall()[0]

    def fresh(t, views):
        con = open_partition(t, views)
        try:
            return counts(con)
        finally:
            con.close()

    with_files = lambda n: {"distances_src": distances[n], "xmatch_src": xmatch[n]}  # noqa: E731
    without = {"distances_src": None, "xmatch_src": None}
    first, second = both
    with kept_partition(task(first), with_files(first)) as con:
        kept = con
        assert counts(con) == fresh(task(first), with_files(first))
        assert counts(con)[1] == plain.sql(f"select count(*) from '{xmatch[first]}'").fetchall()[0][0] > 0
    # the next task on this thread: the same database, pointed at the other partition's files
    with kept_partition(task(second), with_files(second)) as con:
        assert con is kept
        assert counts(con) == fresh(task(second), with_files(second))
        assert counts(con)[0] == pq.ParquetFile(gaia[second]).metadata.num_rows
    # a task without a crossmatch or distances: the schema's empty tables again, not the last files
    with kept_partition(task(first), without) as con:
        assert con is kept
        got = counts(con)
        assert got == fresh(task(first), without) and got[1:] == (0, 0, 0, 0) and got[0] > 0
    # a task naming one view only: every other gets its schema definition back, its files' view goes
    with kept_partition(task(second), with_files(second)) as con:
        pass
    only = {"distances_src": distances[first]}
    with kept_partition(task(first), only) as con:
        assert con is kept
        got = counts(con)
        assert got == fresh(task(first), only) and got[1] == got[3] == 0 and got[2] > 0
        left = {r[0] for r in con.execute("select view_name from duckdb_views() where view_name like '%_part'").fetchall()}
        assert left == {"gaia_part", "distances_src_part"}, left
    # a failed task closes the database; the next opens a new one
    with pytest.raises(ZeroDivisionError):
        with kept_partition(task(first), with_files(first)) as con:
            1 / 0
    with pytest.raises(plain.ConnectionException):
        kept.execute("select 1")
    with kept_partition(task(first), with_files(first)) as con:
        assert con is not kept and counts(con) == fresh(task(first), with_files(first))
        again = con
    # another spill folder (another run on a worker that stays): DuckDB cannot move its temporary files
    with kept_partition(task(first, spill="spill2"), with_files(first)) as con:
        assert con is not again
        assert con.execute("select current_setting('temp_directory')").fetchall()[0][0] == str(tmp_path / "spill2")
        last = con
    with pytest.raises(plain.ConnectionException):
        again.execute("select 1")
    # another run's database, idle on another thread
    other = {}

    def on_another_thread():
        with kept_partition(task(second, spill="spill3", run="run2"), with_files(second)) as con:
            other["con"] = con

    worker = threading.Thread(target=on_another_thread)
    worker.start()
    worker.join()
    # the end of a run closes its idle databases (their memory and spill folder are let go), not another's
    assert close_kept("run1") == 1
    with pytest.raises(plain.ConnectionException):
        last.execute("select 1")
    assert close_kept("run1") == 0
    assert other["con"].execute("select count(*) from gaia_src").fetchall()[0][0] > 0
    # a task of the ended run that ends now (it was running when the run ended) keeps nothing
    with kept_partition(task(first), with_files(first)) as con:
        late = con
    with pytest.raises(plain.ConnectionException):
        late.execute("select 1")
    assert close_kept("run2") == 1
    with pytest.raises(plain.ConnectionException):
        other["con"].execute("select 1")
    # a view the partition database has no file-backed definition for is a programming error, and
    # the database it was pointing is not kept
    with pytest.raises(ValueError, match="cannot point view stars"):
        with kept_partition(task(first, run="run3"), {"stars": xmatch[first]}):
            pass
    assert not [v for v in _kept.values() if v[2] == "run3"]


def test_a_run_on_a_cluster_that_stays_leaves_no_partition_database_behind(scored, tmp_path):
    """Workers of a --scheduler cluster outlive the run: score closes their kept partition databases
    (here the workers are threads of this process, so their databases are visible to the test)."""
    from distributed import LocalCluster

    from stellardb.cluster import catalogues, partition
    from stellardb.cluster import score as cluster_score

    root, path, models, release = scored
    cat = {c: catalogues.release_catalogue(release, c) for c in ("gaia", "distances", "xmatch", "skymapper")}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        result = cluster_score.run(cat["gaia"], cat["distances"], cat["xmatch"], cat["skymapper"], "fam",
                                   tmp_path / "out", models_dir=models, db_path=path, scheduler=cluster.scheduler_address)
        assert result.rows == len(embedded(path))
        run = json.loads((tmp_path / "out" / "predictions" / "cluster_run.json").read_text())["run_id"]
        assert run in partition._ended
        held = [v for v in partition._kept.values() if v[2] == run]
        assert not held, "a worker thread still holds a partition database after the run"


#: the state of _task_of_a_failing_run (module level: Dask pickles a task's function by reference)
_failing = {}


def _task_of_a_failing_run(task, model):
    """The first task to start waits until the run has failed and ended, then opens its partition
    database as score_task does, then runs score_task itself; every other task fails."""
    from stellardb.cluster.partition import kept_partition
    from stellardb.errors import UserError

    with _failing["lock"]:
        first = not _failing["started"]
        _failing["started"].append(task["key"])
    if not first:
        raise UserError("a partition of this test fails")
    try:
        assert _failing["release"].wait(120), "the run did not end"
        with kept_partition(task, {"distances_src": task["distances"], "xmatch_src": task["xmatch"]}) as con:
            _failing["con"], _failing["run"] = con, task["run"]
            con.execute("select count(*) from scoring_set").fetchall()
        try:
            _failing["real"](task, model)
        except RuntimeError as exc:
            _failing["late"] = str(exc)
    finally:
        _failing["done"].set()
    return {}


def test_a_task_still_running_when_its_run_fails_keeps_no_partition_database(scored, tmp_path, monkeypatch):
    """A task fails and the run ends, while another task runs on (Dask cancels it, but cannot stop
    it): that one closes its partition database when it ends, instead of keeping it for a run that
    is over."""
    from distributed import LocalCluster

    from stellardb.cluster import catalogues, partition
    from stellardb.cluster import score as cluster_score
    from stellardb.errors import UserError

    root, path, models, release = scored
    cat = {c: catalogues.release_catalogue(release, c) for c in ("gaia", "distances", "xmatch", "skymapper")}
    _failing.update(lock=threading.Lock(), started=[], release=threading.Event(), done=threading.Event(),
                    real=cluster_score.score_task, late=None)
    monkeypatch.setattr(cluster_score, "score_task", _task_of_a_failing_run)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        try:
            with pytest.raises(UserError, match="a partition of this test fails"):
                cluster_score.run(cat["gaia"], cat["distances"], cat["xmatch"], cat["skymapper"], "fam",
                                  tmp_path / "out", models_dir=models, db_path=path,
                                  scheduler=cluster.scheduler_address)
        finally:
            _failing["release"].set()  # whatever happened: the held task must not outlive the test
        assert _failing["done"].wait(120), "the held task did not end"
    assert _failing["run"] in partition._ended
    assert not [v for v in partition._kept.values() if v[2] == _failing["run"]]
    with pytest.raises(duckdb.ConnectionException):
        _failing["con"].execute("select 1")
    # nor does it make the run's folders again after the run removed them: nothing would sweep them
    assert _failing["late"] == "this task's run has ended and removed its folders"
    assert not list((tmp_path / "out").glob(".predictions.*")), list((tmp_path / "out").iterdir())


def test_the_gaia_rows_of_the_predictions_are_found_by_source_id(tmp_path):
    import pyarrow as pa

    from stellardb.cluster.score import _GaiaRows

    rng = np.random.default_rng(5)
    ids = rng.choice(10**15, size=5_000, replace=False).astype(np.int64)
    table = pa.table({"_healpix_29": rng.integers(0, 10**17, 5_000), "source_id": ids,
                      "ra": rng.uniform(0, 360, 5_000), "dec": rng.uniform(-90, 90, 5_000)})
    pq.write_table(table, tmp_path / "g.parquet", row_group_size=700)
    rows = _GaiaRows(str(tmp_path / "g.parquet"))
    wanted = rng.permutation(ids)[:3_000]
    where = {int(s): i for i, s in enumerate(ids)}  # brute force: the row of each id
    got = rows.rows_of(pa.array(wanted)).to_numpy()
    assert got.tolist() == [where[int(s)] for s in wanted]
    assert rows.ra.take(pa.array(got)).to_numpy().tolist() == table.column("ra").to_numpy()[got].tolist()
    with pytest.raises(RuntimeError, match="not in its Gaia partition"):
        rows.rows_of(pa.array([ids[0], 10**15 + 1]))
    with pytest.raises(RuntimeError, match="not in its Gaia partition"):
        rows.rows_of(pa.array([np.sort(ids)[0] - 1]))


def test_a_failing_end_of_run_call_does_not_hide_the_runs_own_error(scored, tmp_path, monkeypatch):
    """With the scheduler gone, closing the workers' databases fails too: the user must still see
    why the run failed, not the cleanup's connection error."""
    from distributed import Client, LocalCluster
    from distributed.comm.core import CommClosedError

    from stellardb.cluster import catalogues
    from stellardb.cluster import engine
    from stellardb.cluster import score as cluster_score
    from stellardb.errors import UserError

    root, path, models, release = scored
    cat = {c: catalogues.release_catalogue(release, c) for c in ("gaia", "distances", "xmatch", "skymapper")}
    calls = []

    def gone(self, *args, **kwargs):
        calls.append(args)
        raise CommClosedError("ConnectionPool closing.")

    def run_tasks(*args, **kwargs):
        raise UserError("score: no Dask worker took the data every task needs (OSError)")

    monkeypatch.setattr(Client, "run", gone)
    monkeypatch.setattr(engine, "run_tasks", run_tasks)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(UserError, match="no Dask worker took the data"):
            cluster_score.run(cat["gaia"], cat["distances"], cat["xmatch"], cat["skymapper"], "fam", tmp_path / "out",
                              models_dir=models, db_path=path, scheduler=cluster.scheduler_address)
    assert calls, "the end-of-run call was not made: the test proves nothing"
