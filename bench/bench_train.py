"""Issue 4 benchmark: accuracy, repeatability and speed of `stellardb train`.

Gates (numbers in the output and bench/out/bench_train.json):

* accuracy: MAD(ML) / MAD(GSP-Phot) <= 0.5 per parameter on the test split of the
  simulated sky (same stars for both);
* peer: the MLP's MAD is no worse than LightGBM's, trained in the same run on the
  same 27 inputs and the same split (early stopping on the same validation split);
* repeatability: trainings with different seeds give test MADs within 5 K and
  0.01 dex of each other (max - min); the median |difference| of the predictions
  of two realisations is reported too;
* speed: training the three networks on 600k labelled stars takes at most 15 min
  on 2 cores (a sky where every star passing the cuts is labelled from the
  simulator's truth, so the row count is real, not resampled);
* real data: Gaia-only inputs on SWEET-Cat, 5-fold cross-validated MADs (no gate).

    python bench/bench_train.py [--stars 1000000] [--repeats 5] [--speed-stars 1200000]
                                [--skip accuracy,repeat,speed,sweetcat]

Databases are cached in bench/out/ (delete them to rebuild).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from stellardb.config import quiet_tensorflow_logs  # noqa: E402

quiet_tensorflow_logs()

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine, save  # noqa: E402

from stellardb.ml import train  # noqa: E402
from stellardb.catalog.db import connect  # noqa: E402
from stellardb.ml.metrics import residual_stats  # noqa: E402
from stellardb.ml.features import FEATURES, GSPPHOT, PARAMETERS, UNITS  # noqa: E402

# The full SWEET-Cat table (4,201 rows; not committed, tests use a 585-row cut): --sweetcat PATH or
# $STELLARDB_SWEETCAT; the stage is skipped, saying so, when it is not on this machine.
SWEETCAT = os.environ.get("STELLARDB_SWEETCAT")
TOLERANCE = {"teff": 5.0, "logg": 0.01, "feh": 0.01}


def sky_database(stars: int, seed: int, all_labelled: bool = False) -> Path:
    """Simulate, ingest and crossmatch a sky (cached); optionally label every star from the truth."""
    from stellardb.ingest import pipeline as ingest
    from stellardb.simulate import simulate

    OUT.mkdir(exist_ok=True)
    tag = f"sky_{stars}_{seed}{'_all_labelled' if all_labelled else ''}"
    path = OUT / f"{tag}.duckdb"
    if path.exists():
        return path
    sky_dir = OUT / f"{tag}_files"
    partial = OUT / f"{tag}.partial.duckdb"
    partial.unlink(missing_ok=True)
    t0 = time.perf_counter()
    summary = simulate(sky_dir, stars=stars, seed=seed, truth=True, overwrite=True)
    for table in ("gaia", "skymapper", "distances"):
        ingest.run(partial, table, [summary.files[table]])
    if all_labelled:
        # Labels for every star: the true parameters plus reference-like noise
        # (60 K, 0.1 dex, 0.07 dex), written as a label file and ingested like any survey.
        import pyarrow as pa
        import pyarrow.parquet as pq

        truth = pq.read_table(summary.files["truth"]).to_pandas()
        rng = np.random.default_rng(seed)
        n = len(truth)
        labels = pa.table({
            "source_id": truth["source_id"].to_numpy(),
            "teff": truth["teff_k"].to_numpy() + rng.normal(0, 60, n),
            "e_teff": np.full(n, 60.0),
            "logg": truth["logg"].to_numpy() + rng.normal(0, 0.1, n),
            "e_logg": np.full(n, 0.1),
            "feh": truth["feh"].to_numpy() + rng.normal(0, 0.07, n),
            "e_feh": np.full(n, 0.07),
            "survey": np.full(n, "TRUTH"),
        })
        label_file = sky_dir / "truth_labels.parquet"
        pq.write_table(labels, label_file)
        ingest.run(partial, "sos", [label_file])
    else:
        ingest.run(partial, "sos", [summary.files["sos"]])
    os.replace(partial, path)
    shutil.rmtree(sky_dir, ignore_errors=True)
    print(f"built {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def lightgbm_mads(db: Path, seed: int) -> dict:
    """LightGBM per parameter on the seed's inputs and split; MAD on the comparison sample."""
    con = connect(db)  # read-only
    data = train.load_training_set(con, list(FEATURES))
    con.close()
    return lightgbm_fit(data, list(FEATURES), seed)


def lightgbm_fit(data, features, seed: int) -> dict:
    """LightGBM per parameter on ``data`` (inputs ``features``), trained on its train split with early
    stopping on validation; statistics on the test stars that GSP-Phot has (the MLP's comparison sample)."""
    import lightgbm as lgb

    out = {}
    for p in PARAMETERS:
        y = data.labels[p]
        ok = np.isfinite(y)
        tr, va = ok & (data.split == "train"), ok & (data.split == "validation")
        gsp = data.x[:, list(features).index(GSPPHOT[p])]
        te = ok & (data.split == "test") & np.isfinite(gsp)
        params = dict(objective="huber", alpha=0.3 * float(np.std(y[tr])), learning_rate=0.03, num_leaves=63,
                      min_data_in_leaf=20, bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.8,
                      verbose=-1, num_threads=2, seed=seed)
        t0 = time.perf_counter()
        booster = lgb.train(params, lgb.Dataset(data.x[tr], y[tr]), 5000, valid_sets=[lgb.Dataset(data.x[va], y[va])],
                            callbacks=[lgb.early_stopping(100, verbose=False)])
        pred = booster.predict(data.x[te], num_iteration=booster.best_iteration)
        out[p] = {**residual_stats(pred, y[te]), "trees": booster.best_iteration, "fit_s": round(time.perf_counter() - t0, 1)}
    return out


def test_predictions(summary, db: Path):
    """Predictions of a trained model for the comparison sample, keyed by source_id order."""
    from stellardb.ml.model_store import fold_model, load_model_folder
    from stellardb.ml.scorer import NumpyScorer

    card, models = load_model_folder(summary.model, summary.folder.parent)
    con = connect(db)  # read-only
    data = train.load_training_set(con, list(FEATURES))
    con.close()
    scorer = NumpyScorer({p: fold_model(models[p]) for p in PARAMETERS})
    test = data.split == "test"
    pred = scorer.predict(data.x[test])
    return {p: pred[p][0].astype(float) for p in PARAMETERS}


def bench_accuracy(args, result):
    db = sky_database(args.stars, args.seed)
    models = OUT / "models"
    t0 = time.perf_counter()
    summary = train.run(db, model="bench", seed=1, models_dir=models, progress=None)
    result["train_s"] = round(time.perf_counter() - t0, 1)
    result["labelled_stars"] = summary.card["data_fingerprint"]["rows"]
    result["members"] = summary.card["architecture"]["members"]
    lgbm = lightgbm_mads(db, seed=1)
    acc = {}
    print(f"\nAccuracy on the test split, {args.stars:,}-star sky ({result['labelled_stars']:,} labelled), same stars for all; "
          f"trained in {result['train_s']:.0f} s; networks per parameter {result['members']}:")
    print(f"{'param':6s} {'n':>6s} {'MAD ML':>9s} {'MAD GSP':>9s} {'ratio':>6s} {'MAD LGBM':>9s} {'calib':>6s}  gates")
    for p in PARAMETERS:
        ml, gsp = summary.metrics[p]["mlp"], summary.metrics[p]["gspphot"]
        ratio = ml["mad"] / gsp["mad"]
        ok_ratio, ok_lgbm = ratio <= 0.5, ml["mad"] <= lgbm[p]["mad"]
        acc[p] = {"n": ml["n"], "mad_ml": ml["mad"], "mad_gspphot": gsp["mad"], "ratio": ratio, "mad_lightgbm": lgbm[p]["mad"],
                  "rmse_ml": ml["rmse"], "rmse_lightgbm": lgbm[p]["rmse"], "calibration_68": summary.metrics[p]["mlp_all_test"]["calibration_68"],
                  "lightgbm_trees": lgbm[p]["trees"], "pass_ratio": ok_ratio, "pass_vs_lightgbm": ok_lgbm}
        print(f"{p:6s} {ml['n']:6d} {ml['mad']:9.4g} {gsp['mad']:9.4g} {ratio:6.2f} {lgbm[p]['mad']:9.4g} {acc[p]['calibration_68']:6.3f}  "
              f"ratio<=0.5 {'PASS' if ok_ratio else 'FAIL'}, ML<=LGBM {'PASS' if ok_lgbm else 'FAIL'}", flush=True)
    result["accuracy"] = acc
    return db, summary


def bench_repeatability(args, result, db, first):
    summaries = [first]
    for seed in range(2, args.repeats + 1):
        summaries.append(train.run(db, model=f"bench_seed{seed}", seed=seed, models_dir=OUT / "models", progress=None, plots=False))
    preds = [test_predictions(s, db) for s in summaries]
    rep = {}
    print(f"\nRepeatability over {len(summaries)} seeds (test MAD max - min; median |pred_i - pred_1|):")
    for p in PARAMETERS:
        mads = [s.metrics[p]["mlp"]["mad"] for s in summaries]
        spread = max(mads) - min(mads)
        pair = [float(np.nanmedian(np.abs(pr[p] - preds[0][p]))) for pr in preds[1:]]
        ok = spread < TOLERANCE[p]
        rep[p] = {"mads": mads, "mad_spread": spread, "median_abs_prediction_difference": pair, "pass": ok}
        print(f"{p:6s} MADs {' '.join(f'{m:.4g}' for m in mads)}  spread {spread:.3g} {UNITS[p]} "
              f"(< {TOLERANCE[p]} {'PASS' if ok else 'FAIL'}); median |dpred| {np.mean(pair):.3g}", flush=True)
    result["repeatability"] = rep
    for s in summaries[1:]:
        shutil.rmtree(s.folder, ignore_errors=True)


def bench_speed(args, result):
    db = sky_database(args.speed_stars, args.seed + 1, all_labelled=True)
    con = connect(db)  # read-only
    n = con.execute("select count(*) from training_set").fetchone()[0]
    con.close()
    t0 = time.perf_counter()
    summary = train.run(db, model="bench_speed", seed=1, models_dir=OUT / "models", progress=None, plots=False)
    wall = time.perf_counter() - t0
    ok = wall <= 15 * 60 and n >= 600_000
    per = summary.card["training"]["per_parameter"]
    result["speed"] = {"labelled_stars": n, "train_s": round(wall, 1), "pass": ok, "members": summary.card["architecture"]["members"],
                       "epochs": {p: per[p]["epochs_run"] for p in PARAMETERS}, "batch_size": per["teff"]["batch_size"]}
    print(f"\nSpeed: {n:,} labelled stars, three models ({sum(result['speed']['members'].values())} networks) trained in {wall / 60:.1f} min "
          f"(epochs {', '.join(str(per[p]['epochs_run']) for p in PARAMETERS)}); <= 15 min and >= 600k rows {'PASS' if ok else 'FAIL'}", flush=True)
    shutil.rmtree(summary.folder, ignore_errors=True)


def bench_sweetcat(args, result):
    """Gaia-only inputs on real SWEET-Cat stars, 5-fold CV by the same hash (folds = bucket // 20)."""
    import keras
    import pandas as pd

    from stellardb.ml.mlp import build_mlp, heteroscedastic_loss, training_head, value_loss

    df = pd.read_csv(args.sweetcat)
    df = df.replace(-1, np.nan)
    df = df[(df["SWFlag"] == 1) & df["gaia_dr3"].notna() & df["Teff"].between(3500, 7000)]
    # Gaia-only inputs available in SWEET-Cat: distance, BP, RP (and G, parallax).
    cols = ["Distance_b", "BPmag", "RPmag", "Gmag", "Plx"]
    x = df[cols].to_numpy(np.float32)
    ids = df["gaia_dr3"].astype("int64").to_numpy()
    fold = train.split_bucket(ids) // 20
    labels = {"teff": df["Teff"].to_numpy(float), "logg": df["Logg"].to_numpy(float), "feh": df["[Fe/H]"].to_numpy(float)}
    out = {}
    for p, y in labels.items():
        pred = np.full(y.size, np.nan)
        for k in range(5):
            te, va = fold == k, fold == (k + 1) % 5
            tr = ~te & ~va & np.isfinite(y)
            va &= np.isfinite(y)
            m, s = train.feature_scaling(x[tr])
            keras.utils.set_random_seed(k)
            model = build_mlp(len(cols), (64, 64), 0.02, m, s, float(np.mean(y[tr])), float(np.std(y[tr])), name=p)
            head = training_head(model)
            head.compile(optimizer=keras.optimizers.Adam(3e-3), loss=heteroscedastic_loss(), metrics=[value_loss()])
            z = ((y - np.mean(y[tr])) / np.std(y[tr])).astype(np.float32)
            head.fit(x[tr], z[tr], validation_data=(x[va], z[va]), epochs=300, batch_size=64, verbose=0,
                     callbacks=[keras.callbacks.EarlyStopping(monitor="val_huber", mode="min", patience=20, restore_best_weights=True)])
            pred[te] = model.predict(x[te], verbose=0)[:, 0]
        s = residual_stats(pred, y)
        base = residual_stats(np.full(y.size, np.nanmedian(y)), y)
        out[p] = {"n": s["n"], "mad": s["mad"], "rmse": s["rmse"], "mad_median_baseline": base["mad"]}
        print(f"SWEET-Cat {p:5s} n={s['n']:5d} MAD {s['mad']:.4g} {UNITS[p]} (median baseline {base['mad']:.4g}), RMSE {s['rmse']:.4g}", flush=True)
    result["sweetcat"] = {"inputs": cols, "selection": "SWFlag == 1, gaia_dr3 present, 3500 < Teff < 7000", "folds": "splitmix64(gaia_dr3) % 100 // 20", **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stars", type=int, default=1_000_000, help="simulated stars for the accuracy sky")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speed-stars", type=int, default=1_200_000, help="simulated stars for the speed sky (about half pass the cuts)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: accuracy,repeat,speed,sweetcat")
    ap.add_argument("--sweetcat", default=SWEETCAT, help="the full SWEETCAT_Dataframe.csv (env STELLARDB_SWEETCAT)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    result = {"stars": args.stars, "seed": args.seed}
    print(machine(), flush=True)
    if "accuracy" not in skip:
        db, first = bench_accuracy(args, result)
        if "repeat" not in skip:
            bench_repeatability(args, result, db, first)
    if "sweetcat" not in skip:
        if args.sweetcat and Path(args.sweetcat).is_file():
            bench_sweetcat(args, result)
        else:
            print(f"SWEET-Cat stage SKIPPED: the full SWEETCAT_Dataframe.csv is not here ({args.sweetcat or 'not given'}); "
                  "pass --sweetcat PATH or set STELLARDB_SWEETCAT to run it", flush=True)
            skip.add("sweetcat")
    if "speed" not in skip:
        bench_speed(args, result)
    # Parts skipped in this run keep their numbers from the previous run.
    previous = OUT / "bench_train.json"
    if skip and previous.is_file():
        import json

        kept = {k: v for k, v in json.loads(previous.read_text()).items() if k not in result and k not in ("machine", "command")}
        result = {**kept, **result}
    print(f"\nwrote {save('bench_train', result)}")


if __name__ == "__main__":
    main()
