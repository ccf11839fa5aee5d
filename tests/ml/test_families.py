"""A model per feature set, the best one per star: stellardb train/score on a sky with every survey."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from stellardb.catalog import db
from stellardb.cli.main import cli
from stellardb.errors import UserError
from stellardb.ml import feature_sets, selection
from stellardb.ml.features import PARAMETERS

pytest.importorskip("keras")

FILES = {"gaia": "gaia_source.csv.gz", "skymapper": "skymapper_master.csv", "tmass": "tmass_psc.csv",
         "allwise": "allwise_source.csv", "ps1": "ps1_dr2_mean.csv", "distances": "bailer_jones_distances.csv",
         "sos": "sos_spectro.csv"}
SETS = ["gaia", "gaia-skymapper", "gaia-tmass-allwise", "gaia-ps1"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A 30,000-star whole sky, four feature sets trained for two epochs, and the family scored."""
    from stellardb.ingest import pipeline
    from stellardb.ml import score, train
    from stellardb.simulate import simulate

    root = tmp_path_factory.mktemp("family")
    simulate(root / "sky", stars=30_000, seed=16, sky="all", workers=1)
    path = root / "fam.duckdb"
    for table, name in FILES.items():
        pipeline.run(path, table, [root / "sky" / name])
    models = root / "models"
    summary = train.run_family(path, "fam", feature_set_names=SETS, min_labels=100, models_dir=models, epochs=2,
                               seed=1, quick=True, plots=False)
    scored = score.run_family(path, "fam", models_dir=models)
    return root, path, models, summary, scored


def test_one_model_per_feature_set_with_its_own_inputs(family):
    root, path, models, summary, _ = family
    card = json.loads(selection.family_path(models, "fam").read_text())
    assert [m["feature_set"] for m in card["members"]] == SETS
    for m in summary.members:
        fs = feature_sets.parse(m.card["feature_set"])
        assert m.card["features"] == list(fs.features) and m.card["family"] == "fam"
        assert (models / m.model / "scorer.npz").is_file()
        # each model trained on exactly the labelled stars with its inputs
        con = db.connect(path)
        try:
            sql = ("select count(*) from training_set" if fs.name == "gaia-skymapper"
                   else f"select count(*) from labelled_features where {fs.where}")
            assert m.card["data_fingerprint"]["rows"] == con.execute(sql).fetchone()[0]
        finally:
            con.close()
    assert feature_sets.parse("gaia-skymapper").features == feature_sets.make("skymapper").features
    assert "j_m" in feature_sets.parse("gaia-tmass-allwise").features


def test_every_star_with_bp_rp_and_a_distance_gets_the_chosen_members_prediction(family):
    """One prediction per star that passes the Gaia cuts, from the member the family card chooses for its
    inputs (recomputed here from the card and the star's cuts); the rest counted by reason."""
    root, path, models, summary, scored = family
    card = selection.read_family(models, "fam")
    con = db.connect(path)
    try:
        cols = sorted({c for m in card["members"] for c in feature_sets.parse(m["feature_set"]).passes_columns})
        stars = con.execute(f"select source_id, {', '.join(cols)} from all_features").df()
        pred = con.execute("select source_id, feature_set, teff, logg, feh from predictions where model = 'fam'").df()
        reasons = con.execute("select count_if(phot_bp_mean_mag is null or phot_rp_mean_mag is null), "
                              "count_if(not (phot_bp_mean_mag is null or phot_rp_mean_mag is null) "
                              "and phot_g_mean_mag is null), count_if(phot_bp_mean_mag is not null and "
                              "phot_rp_mean_mag is not null and phot_g_mean_mag is not null and r_med_geo is null) "
                              "from all_features").fetchone()
    finally:
        con.close()
    assert pred.source_id.is_unique and pred[["teff", "logg", "feh"]].notna().all().all()
    names = [m["feature_set"] for m in card["members"]]
    elig = {n: np.all([stars[c].to_numpy() for c in feature_sets.parse(n).passes_columns], axis=0) for n in names}
    by_pattern = {tuple(sorted(c["eligible"])): c["chosen"] for c in card["choices"]}
    want = {}
    for i, sid in enumerate(stars.source_id):
        have = tuple(sorted(n for n in names if elig[n][i]))
        if not have:
            continue
        want[sid] = by_pattern.get(have) or next(n for n in card["fallback_order"] if n in have)
    assert dict(zip(pred.source_id, pred.feature_set)) == want
    assert len(want) == int(stars.passes_gaia_cuts.sum()) == scored.rows
    assert {k: v for k, v in scored.by_feature_set.items() if v} == dict(pred.feature_set.value_counts())
    expected_reasons = [n for n in reasons if n]
    assert sorted(scored.not_scored.values()) == sorted(expected_reasons)
    assert len(set(pred.feature_set)) >= 2


def _brute_force_score(preds, labels, units, j, rows):
    return np.mean([np.median(np.abs((preds[j][p][rows] - labels[p][rows]) - np.median(preds[j][p][rows] - labels[p][rows])))
                    / units[p] for p in PARAMETERS])


def test_the_choice_is_the_most_accurate_member_on_stars_with_exactly_those_inputs():
    """selection.choose against a brute force: for each pattern of inputs, the member with the smallest
    mean MAD/unit on the validation stars with exactly that pattern (the stars it will predict)."""
    rng = np.random.default_rng(4)
    n, k = 3000, 3
    units = {"teff": 100.0, "logg": 0.1, "feh": 0.1}
    labels = {p: rng.normal(0, 1, n) for p in PARAMETERS}
    eligible = np.ones((n, k), bool)
    eligible[:, 1] = rng.uniform(size=n) < 0.5
    eligible[:, 2] = rng.uniform(size=n) < 0.3
    noise = [0.3, 0.2, 0.5]  # member 1 is best where it can be used, member 2 worst
    preds = [{p: np.where(eligible[:, j], labels[p] + rng.normal(0, noise[j] * units[p], n), np.nan)
              for p in PARAMETERS} for j in range(k)]
    members = [{"feature_set": f"set{j}", "score": float(noise[j])} for j in range(k)]
    choices = selection.choose(members, eligible, preds, labels, units)
    assert len(choices) == 4  # every pattern the stars have
    for c in choices:
        cols = [int(e[3:]) for e in c["eligible"]]
        pattern = np.zeros(k, bool)
        pattern[cols] = True
        rows = np.all(eligible == pattern, axis=1)
        assert rows.sum() >= selection.MIN_VALIDATION_STARS and c["n_validation"] == rows.sum()
        scores = {j: _brute_force_score(preds, labels, units, j, rows) for j in cols}
        assert c["chosen"] == f"set{min(scores, key=scores.get)}"
    assert {tuple(c["eligible"]): c["chosen"] for c in choices}[("set0", "set1")] == "set1"
    assert {tuple(c["eligible"]): c["chosen"] for c in choices}[("set0", "set1", "set2")] == "set1"


def test_a_pattern_is_chosen_for_by_its_own_stars_not_by_richer_ones():
    """Member 1 is better than member 0 only on the stars that also have member 2's inputs; on
    the stars with inputs {0, 1} alone member 0 is better, and is chosen there (comparing on every
    star with inputs 0 and 1, the richer ones included, would choose member 1).  A pattern with
    fewer than MIN_VALIDATION_STARS stars of its own is compared on the stars with all its inputs."""
    rng = np.random.default_rng(5)
    units = {"teff": 100.0, "logg": 0.1, "feh": 0.1}
    n01, n012, n0 = 200, 2000, 300
    n = n01 + n012 + n0
    eligible = np.zeros((n, 3), bool)
    eligible[:, 0] = True
    eligible[: n01 + n012, 1] = True
    eligible[n01: n01 + n012, 2] = True
    labels = {p: rng.normal(0, 1, n) for p in PARAMETERS}
    rich = eligible[:, 2]
    sigma = [np.full(n, 0.3), np.where(rich, 0.1, 0.6), np.full(n, 0.5)]
    preds = [{p: np.where(eligible[:, j], labels[p] + rng.normal(0, 1, n) * sigma[j] * units[p], np.nan)
              for p in PARAMETERS} for j in range(3)]
    members = [{"feature_set": f"set{j}", "score": 0.3} for j in range(3)]
    by = {tuple(c["eligible"]): c for c in selection.choose(members, eligible, preds, labels, units)}
    assert by[("set0", "set1")]["chosen"] == "set0"
    assert by[("set0", "set1", "set2")]["chosen"] == "set1"
    # the rule it replaced would have chosen set1 for the {0, 1} stars:
    broad = np.all(eligible[:, :2], axis=1)
    assert _brute_force_score(preds, labels, units, 1, broad) < _brute_force_score(preds, labels, units, 0, broad)

    assert by[("set0", "set1")]["n_validation"] == n01
    assert by[("set0", "set1")]["how"] == "compared on the validation stars with exactly these inputs"

    # too few stars of its own (10 of pattern {0, 1}): compared on every star with those inputs
    few = np.zeros(n, bool)
    few[:10] = True
    keep = few | rich | ~eligible[:, 1]
    by = {tuple(c["eligible"]): c for c in selection.choose(
        members, eligible[keep], [{p: v[keep] for p, v in pr.items()} for pr in preds],
        {p: v[keep] for p, v in labels.items()}, units)}
    assert by[("set0", "set1")]["n_validation"] == 10 + n012
    assert by[("set0", "set1")]["how"].startswith("compared on the validation stars with all these inputs")
    assert by[("set0", "set1")]["chosen"] == "set1"


def test_a_pattern_whose_own_stars_lack_a_label_is_compared_on_the_wider_stars():
    """Forty stars of pattern {0, 1} with Teff and log g labels only: too few labelled stars of
    their own, so the pattern is compared on every star with inputs 0 and 1 (where member 1 is
    better), not left to the members' own scores (which prefer member 0)."""
    rng = np.random.default_rng(0)
    n01, n012 = 40, 500
    n = n01 + n012
    eligible = np.ones((n, 3), bool)
    eligible[:n01, 2] = False
    labels = {p: rng.normal(0, 1, n) for p in PARAMETERS}
    labels["feh"][:n01] = np.nan
    units = {"teff": 100.0, "logg": 0.1, "feh": 0.1}
    preds = [{p: np.where(eligible[:, j], labels[p] + rng.normal(0, s * units[p], n), np.nan) for p in PARAMETERS}
             for j, s in enumerate([0.5, 0.1, 0.3])]
    for j in range(3):  # a prediction wherever a member has inputs, label or not
        for p in PARAMETERS:
            preds[j][p] = np.where(eligible[:, j], np.nan_to_num(preds[j][p], nan=0.0), np.nan)
    members = [{"feature_set": f"set{j}", "score": s} for j, s in enumerate([0.2, 0.9, 0.5])]
    by = {tuple(c["eligible"]): c for c in selection.choose(members, eligible, preds, labels, units)}
    c = by[("set0", "set1")]
    assert c["chosen"] == "set1" and c["n_validation"] == n
    assert c["how"].startswith("compared on the validation stars with all these inputs")
    # with no star labelled in [Fe/H] at all, the members' own scores decide, and say so
    labels["feh"][:] = np.nan
    by = {tuple(c["eligible"]): c for c in selection.choose(members, eligible, preds, labels, units)}
    assert by[("set0", "set1")]["chosen"] == "set0" and "own scores" in by[("set0", "set1")]["how"]


def test_zero_eligible_stars_is_an_error_naming_what_is_missing(family, tmp_path):
    """Without distances no star can be scored: score and train say so, and change nothing."""
    root, path, models, _, _ = family
    copy = tmp_path / "nodist.duckdb"
    shutil.copy(path, copy)
    con = db.connect(copy, read_only=False)
    try:
        con.execute("delete from distances")
        before = con.execute("select count(*) from predictions").fetchone()[0]
    finally:
        con.close()
    from stellardb.ml import score, train

    with pytest.raises(UserError, match="distance"):
        score.run_family(copy, "fam", models_dir=models)
    with pytest.raises(UserError, match="distance"):
        train.run_family(copy, "fam2", feature_set_names=["gaia"], min_labels=100, models_dir=tmp_path / "m")
    con = db.connect(copy)
    try:
        assert con.execute("select count(*) from predictions").fetchone()[0] == before
    finally:
        con.close()


def test_a_feature_set_with_too_few_labels_or_an_unknown_survey_is_refused(family, tmp_path):
    root, path, models, _, _ = family
    runner = CliRunner()
    env = {"STELLARDB_MODELS": str(tmp_path / "m")}
    # gaia-ps1 has a few hundred labelled stars here; ask for more than it has
    con = db.connect(path, read_only=False)
    try:
        n = con.execute(f"select count(*) from labelled_features where {feature_sets.parse('gaia-ps1').where}").fetchone()[0]
        con.execute("update settings set value = $v where name = 'min_labels_per_feature_set'", {"v": n + 1})
    finally:
        con.close()
    try:
        few = runner.invoke(cli, ["--db", str(path), "train", "--model", "x", "--feature-set", "gaia-ps1", "--epochs", "1"],
                            env=env)
        assert few.exit_code == 1 and few.output.count("\n") == 1, few.output
        assert "gaia-ps1" in few.output and f"{n:,} labelled stars" in few.output
        bad = runner.invoke(cli, ["--db", str(path), "train", "--model", "x", "--feature-set", "gaia-galex"], env=env)
        assert bad.exit_code == 1 and "unknown survey 'galex'" in bad.output and bad.output.count("\n") == 1
    finally:
        con = db.connect(path, read_only=False)
        try:
            con.execute("update settings set value = 200 where name = 'min_labels_per_feature_set'")
        finally:
            con.close()
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_score_cli_reports_feature_sets_and_reasons(family, tmp_path):
    root, path, models, _, _ = family
    result = CliRunner().invoke(cli, ["--db", str(path), "score", "--model", "fam"], env={"STELLARDB_MODELS": str(models)})
    assert result.exit_code == 0, result.output
    assert "By feature set (predictions.feature_set): gaia " in result.output
    assert "Not scored:" in result.output and "Bailer-Jones distance" in result.output


REAL = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "real"


def test_real_sweetcat_gaia_only_through_the_command_line_with_cross_validation(tmp_path):
    """A database of real files only (SWEET-Cat's Gaia DR3 photometry, Bailer-Jones distances and labels):
    train fits the Gaia-only model, 3-fold cross-validates it on every labelled star with Gaia inputs,
    writes the out-of-fold plot, and score predicts every star with BP, RP and a distance."""
    from PIL import Image

    path, models = tmp_path / "real.duckdb", tmp_path / "models"
    runner = CliRunner()
    env = {"STELLARDB_MODELS": str(models)}
    for table, preset in (("gaia", "sweetcat-gaia"), ("distances", "sweetcat-distances"), ("sos", "sweetcat")):
        r = runner.invoke(cli, ["--db", str(path), "ingest", table, str(REAL / "sweetcat_subset.csv"), "--preset", preset,
                                "--on-duplicate", "skip", "-q"], env=env)
        assert r.exit_code == 0, r.output
    con = db.connect(path)
    try:
        n_lab = con.execute("select count(*) from labelled_features where passes_gaia_cuts").fetchone()[0]
        n_star = con.execute("select count(*) from all_features where passes_gaia_cuts").fetchone()[0]
        epochs = con.execute("select min(ref_epoch), max(ref_epoch) from gaia").fetchone()
    finally:
        con.close()
    assert epochs == (2000.0, 2000.0) and n_lab > 300
    r = runner.invoke(cli, ["--db", str(path), "train", "--model", "real", "--feature-set", "gaia", "--cv", "3",
                            "--epochs", "3", "--quick"], env=env)
    assert r.exit_code == 0, r.output
    assert f"3-fold cross-validation, ML on all {n_lab:,} stars" in r.output
    card = json.loads((models / "real.family.json").read_text())
    cv = card["members"][0]["cv"]
    assert cv["stars"] == n_lab and cv["folds"] == 3
    labelled = {p: cv["parameters"][p]["mlp_all"]["n"] for p in PARAMETERS}
    con = db.connect(path)
    try:
        want = con.execute("select count(teff), count(logg), count(feh) from labelled_features where passes_gaia_cuts").fetchone()
    finally:
        con.close()
    assert tuple(labelled[p] for p in PARAMETERS) == want  # every labelled star predicted once, out of fold
    with Image.open(models / "real.gaia" / "plots" / "cv.png") as im:
        assert im.size[0] > 1000 and len(set(im.convert("L").getdata())) > 20
    s = runner.invoke(cli, ["--db", str(path), "score", "--model", "real"], env=env)
    assert s.exit_code == 0 and f"Scored {n_star:,} stars" in s.output, s.output


def test_a_family_that_cannot_be_trained_changes_nothing(family, tmp_path):
    """A named set whose labels fall short for one parameter is refused before any member is trained or
    any prediction deleted (the review found a half-replaced family); a family name with '.' too."""
    from stellardb.ml import train

    root, path, models, _, _ = family
    copy, mcopy = tmp_path / "f.duckdb", tmp_path / "models"
    shutil.copy(path, copy)
    shutil.copytree(models, mcopy)
    con = db.connect(copy, read_only=False)
    try:
        ps1 = feature_sets.parse("gaia-ps1").where
        con.execute(f"update sos set logg = null where source_id in (select source_id from labelled_features where {ps1})")
        before = con.execute("select count(*) from predictions where model = 'fam'").fetchone()[0]
    finally:
        con.close()
    card_before = (mcopy / "fam.gaia" / "card.json").read_bytes()
    with pytest.raises(UserError, match="gaia-ps1: Too few stars with a logg label"):
        train.run_family(copy, "fam", feature_set_names=["gaia", "gaia-ps1"], min_labels=100, models_dir=mcopy,
                         epochs=1, quick=True, plots=False)
    assert (mcopy / "fam.gaia" / "card.json").read_bytes() == card_before
    con = db.connect(copy)
    try:
        assert con.execute("select count(*) from predictions where model = 'fam'").fetchone()[0] == before > 0
    finally:
        con.close()
    with pytest.raises(UserError, match="no '.'"):
        train.run_family(copy, "fam.x", feature_set_names=["gaia"], models_dir=mcopy)


def test_an_edited_family_card_cannot_reach_sql(family, tmp_path):
    """A choice naming no member (or carrying SQL) makes the card corrupt: score refuses it, nothing changes."""
    from stellardb.ml import score

    root, path, models, _, _ = family
    copy, mcopy = tmp_path / "f.duckdb", tmp_path / "models"
    shutil.copy(path, copy)
    shutil.copytree(models, mcopy)
    card = json.loads((mcopy / "fam.family.json").read_text())
    card["choices"][0]["chosen"] = "gaia' end as fs, 1 from all_features limit 0; delete from sos; select case when false then 'gaia"
    (mcopy / "fam.family.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="corrupt"):
        score.run_family(copy, "fam", models_dir=mcopy)
    con = db.connect(copy)
    try:
        assert con.execute("select count(*) from sos").fetchone()[0] > 0
    finally:
        con.close()


def test_forgetting_a_survey_keeps_predictions_that_never_used_it(family, tmp_path):
    root, path, models, _, _ = family
    copy = tmp_path / "f.duckdb"
    shutil.copy(path, copy)
    con = db.connect(copy)
    try:
        ingest_id = con.execute("select ingest_id from ingests where table_name = 'ps1'").fetchone()[0]
        keep = con.execute("select count(*) from predictions where model = 'fam' and feature_set not like '%ps1%'").fetchone()[0]
    finally:
        con.close()
    r = CliRunner().invoke(cli, ["--db", str(copy), "forget", str(ingest_id), "--yes"])
    assert r.exit_code == 0, r.output
    con = db.connect(copy)
    try:
        assert con.execute("select count(*) from predictions where model = 'fam'").fetchone()[0] == keep > 0
    finally:
        con.close()
