"""Predictions for every star (issue 15): a model per feature set on a simulated whole sky, the best per star.

    python bench/bench_feature_sets.py                       # 1 M stars, all sky, full training (1-2 h on 2 cores)
    python bench/bench_feature_sets.py --stars 100000 --quick  # a dry run

On one simulated all-sky run (every survey, the same stars), with the family trained by
``stellardb.ml.train.run_family`` on the standard feature sets:

1. per feature set, on its test split: MAD of ML - reference and of GSP-Phot - reference on the same
   stars (ratio), and LightGBM's MAD on the same inputs and split (MLP no worse than LightGBM);
2. targets: Gaia-only ratio <= 0.8 for Teff and log g and <= 1 for [Fe/H]; Gaia + SkyMapper <= 0.5
   on all three; a set with a metallicity band (SkyMapper v, SDSS u) [Fe/H] ratio <= 0.6;
3. adding a survey never makes the chosen prediction worse: on the validation stars with each set's
   inputs, the family's chosen prediction against each smaller set's (its subsets) prediction,
   mean MAD / unit over the parameters (the rule's own yardstick);
4. the scorer on every member's stars (NumpyScorer, inputs in memory): stars/s for all sets together,
   each member's best of 3 calls (bench_score.py's method) with the first call beside it
   (``--scorer-only``: this step alone, on an earlier run's database and models in --work); its peer,
   timed the same way beside each member: the bare matrix products the scorer does on those stars
   (its own weights, the same chunks and threads, no element-wise work), the floor of its time and a
   gauge of how fast the VM ran at that moment.

Output: bench/out/feature_sets.json and a summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import lightgbm_fit  # noqa: E402  (the peer of bench_train, on each set's inputs)
from common import OUT, machine, save  # noqa: E402

from stellardb.catalog.db import connect  # noqa: E402
from stellardb.ml import feature_sets, selection, train  # noqa: E402
from stellardb.ml.features import PARAMETERS  # noqa: E402
from stellardb.ml.model_store import load_scorer  # noqa: E402
from stellardb.ml.scorer import NumpyScorer, blas_on_one_thread  # noqa: E402

FILES = {"gaia": "gaia_source.csv.gz", "skymapper": "skymapper_master.csv", "tmass": "tmass_psc.csv",
         "allwise": "allwise_source.csv", "ps1": "ps1_dr2_mean.csv", "sdss": "sdss_dr17_photoobj.csv",
         "distances": "bailer_jones_distances.csv", "sos": "sos_spectro.csv"}
UNITS = train.SELECTION_UNITS


def build(work: Path, stars: int, seed: int) -> Path:
    from stellardb.ingest import pipeline
    from stellardb.simulate import simulate

    db = work / f"allsky_{stars}_{seed}.duckdb"
    if db.exists():
        return db
    t0 = time.perf_counter()
    simulate(work / "sky", stars=stars, seed=seed, sky="all", overwrite=True)
    for table, name in FILES.items():
        pipeline.run(db, table, [work / "sky" / name])
    print(f"simulated and ingested {stars:,} stars in {time.perf_counter() - t0:.0f} s", flush=True)
    return db


def mean_mad(pred: dict, labels: dict, rows) -> float:
    vals = []
    for p in PARAMETERS:
        r = pred[p][rows] - labels[p][rows]
        r = r[np.isfinite(r)]
        vals.append(np.median(np.abs(r - np.median(r))) / UNITS[p])
    return float(np.mean(vals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 1 M stars: at 400k (0.7-19k labels a set) several sets were short of labels, not of epochs
    ap.add_argument("--stars", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="train --quick (40 epochs at most)")
    ap.add_argument("--work", type=Path, default=OUT / "feature_sets")
    ap.add_argument("--scorer-only", action="store_true",
                    help="time the scorer (step 4) alone on the database and family an earlier run left in --work")
    args = ap.parse_args()
    if args.scorer_only:
        scorer_only(args.work, args.stars, args.seed)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    db = build(args.work, args.stars, args.seed)
    models = args.work / "models"
    shutil.rmtree(models, ignore_errors=True)
    t0 = time.perf_counter()
    fam = train.run_family(db, "bench", models_dir=models, seed=1, quick=args.quick, plots=False)
    train_s = time.perf_counter() - t0
    result = {"machine": machine(), "stars": args.stars, "seed": args.seed, "quick": args.quick,
              "train_s": round(train_s, 1), "sets": {}, "skipped": fam.skipped}
    print(f"trained {len(fam.members)} feature sets in {train_s / 60:.1f} min; skipped {fam.skipped}", flush=True)

    con = connect(db)
    datas = {}
    try:
        for m in fam.members:
            fs = feature_sets.parse(m.card["feature_set"])
            datas[fs.name] = train.load_training_set(con, list(fs.features), fs.name)
    finally:
        con.close()
    # 1-2: per set, ML and GSP-Phot on the same test stars, LightGBM on the same inputs and split
    for m in fam.members:
        name = m.card["feature_set"]
        fs = feature_sets.parse(name)
        row = {"labelled": int(m.card["data_fingerprint"]["rows"]),
               "dropout": m.card["architecture"]["dropout"],  # each network's rate, chosen on validation
               "members": m.card["architecture"]["members"]}  # Teff: 2 where the ensemble trial paid
        lgbm = {p: v["mad"] for p, v in lightgbm_fit(datas[name], list(fs.features), seed=1).items()}
        for p in PARAMETERS:
            ml, gsp = m.metrics[p]["mlp"]["mad"], m.metrics[p]["gspphot"]["mad"]
            row[p] = {"n": m.metrics[p]["mlp"]["n"], "mlp_mad": ml, "gspphot_mad": gsp, "ratio": ml / gsp,
                      "lightgbm_mad": lgbm[p], "mlp_no_worse_than_lightgbm": ml <= lgbm[p]}
        result["sets"][name] = row
        print(f"{name:30s} n={row['labelled']:6,d} " + "  ".join(
            f"{p} {row[p]['mlp_mad']:.3g} (GSP {row[p]['ratio']:.2f}, LGBM {row[p]['lightgbm_mad']:.3g})" for p in PARAMETERS),
            flush=True)
    sets = result["sets"]
    targets = {}
    if "gaia" in sets:
        g = sets["gaia"]
        targets["gaia_only"] = {"teff<=0.8": g["teff"]["ratio"] <= 0.8, "logg<=0.8": g["logg"]["ratio"] <= 0.8,
                                "feh<=1.0": g["feh"]["ratio"] <= 1.0}
    if "gaia-skymapper" in sets:
        targets["gaia_skymapper<=0.5"] = {p: sets["gaia-skymapper"][p]["ratio"] <= 0.5 for p in PARAMETERS}
    for name in sets:
        if "skymapper" in name or "sdss" in name:
            targets[f"{name} feh<=0.6"] = sets[name]["feh"]["ratio"] <= 0.6
    targets["mlp_no_worse_than_lightgbm"] = {n: all(s[p]["mlp_no_worse_than_lightgbm"] for p in PARAMETERS)
                                             for n, s in sets.items()}
    result["targets"] = targets

    # 3: the chosen prediction against every subset set's, on the validation stars with the set's inputs
    card = fam.card
    names = [m["feature_set"] for m in card["members"]]
    con = connect(db)
    try:
        cols = sorted({c for n in names for c in feature_sets.parse(n).features}
                      | {c for n in names for c in feature_sets.parse(n).passes_columns}, key=str.lower)
        table = con.sql(f"select source_id, {', '.join(chr(34) + c + chr(34) for c in cols)}, teff, logg, feh, "
                        f"{selection.chosen_sql(card['members'], card['choices'])} as chosen "
                        "from labelled_features where passes_gaia_cuts").to_arrow_table()
    finally:
        con.close()
    sid = table.column("source_id").to_numpy().astype(np.int64)
    val = train.assign_split(sid) == "validation"
    labels = {p: table.column(p).to_numpy(zero_copy_only=False).astype(float)[val] for p in PARAMETERS}
    chosen = np.asarray(table.column("chosen").to_pylist(), dtype=object)[val]
    preds, elig = {}, {}
    for m in card["members"]:
        fs = feature_sets.parse(m["feature_set"])
        x = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(float)[val] for c in fs.features], axis=1)
        _, folded = load_scorer(m["model"], models)
        out = NumpyScorer(folded).predict(x.astype(np.float32))
        preds[fs.name] = {p: out[p][0].astype(float) for p in PARAMETERS}
        elig[fs.name] = np.all([table.column(c).to_numpy(zero_copy_only=False).astype(bool)[val]
                                for c in fs.passes_columns], axis=0)
    chosen_pred = {p: np.full(val.sum(), np.nan) for p in PARAMETERS}
    for n in names:
        for p in PARAMETERS:
            chosen_pred[p][chosen == n] = preds[n][p][chosen == n]
    never_worse = {}
    for n in names:
        fs = feature_sets.parse(n)
        rows = elig[n]
        if rows.sum() < 30:
            continue
        subsets = [k for k in names if k != n and set(feature_sets.parse(k).surveys) < set(fs.surveys)]
        mine = mean_mad(chosen_pred, labels, rows)
        never_worse[n] = {"validation_stars": int(rows.sum()), "chosen": mine,
                          **{f"vs {k}": mean_mad(preds[k], labels, rows) for k in subsets}}
        never_worse[n]["ok"] = all(mine <= v + 1e-12 for k, v in never_worse[n].items() if k.startswith("vs "))
    result["adding_a_survey_never_worse"] = never_worse
    print("chosen vs subsets (mean MAD/unit on validation stars with each set's inputs):", flush=True)
    for n, v in never_worse.items():
        print(f"  {n:30s} " + ", ".join(f"{k} {x:.3f}" if isinstance(x, float) else f"{k} {x}" for k, x in v.items()))

    # 4: the scorer, all members on all their stars (inputs in memory)
    result["scorer"] = scorer_speed(db, models, card)
    print(json.dumps(result["targets"], indent=1))
    save("feature_sets", result)


#: scorer timings per member: best of this many (bench_score.py's method for its 1.11 M stars/s)
SCORER_REPEATS = 3


def scorer_speed(db: Path, models: Path, card: dict) -> dict:
    """NumpyScorer over every member's stars (as many as the family chooses it for), inputs in
    memory: stars/s for all sets together, each member's time the best of SCORER_REPEATS calls (the
    steady state, as bench_score.py measures one model), and its first call after a 1000-row
    warm-up (pattern caches, thread pool and output pages still cold) beside it."""
    con = connect(db)
    try:
        counts = dict(con.execute(f"select {selection.chosen_sql(card['members'], card['choices'])} as fs, count(*) "
                                  "from all_features group by fs").fetchall())
        best_s, first_s, floor_s, total_n, per_set = 0.0, 0.0, 0.0, 0, {}
        for m in card["members"]:
            fs = feature_sets.parse(m["feature_set"])
            n = max(int(counts.get(fs.name) or 0), 1)
            x = con.sql(f"select {', '.join(chr(34) + c + chr(34) for c in fs.features)} from all_features "
                        f"where {fs.where} limit {n}").fetchnumpy()
            arr = np.stack([np.asarray(x[c], dtype=np.float32) for c in fs.features], axis=1)
            _, folded = load_scorer(m["model"], models)
            scorer = NumpyScorer(folded)
            scorer.predict(arr[:1000])
            times, floor = [], []
            for _ in range(SCORER_REPEATS):  # alternated, so both see the VM in the same state
                t1 = time.perf_counter()
                scorer.predict(arr)
                times.append(time.perf_counter() - t1)
                floor.append(products_only_seconds(scorer, arr.shape[0]))
            best_s += min(times)
            floor_s += min(floor)
            first_s += times[0]
            total_n += arr.shape[0]
            per_set[fs.name] = {"stars": arr.shape[0], "inputs": scorer.n_inputs,
                                "stars_per_s": round(arr.shape[0] / min(times)),
                                "products_only_stars_per_s": round(arr.shape[0] / min(floor))}
    finally:
        con.close()
    found = {"stars": total_n, "seconds": round(best_s, 3), "stars_per_s": round(total_n / best_s),
             "first_call_seconds": round(first_s, 3), "first_call_stars_per_s": round(total_n / first_s),
             "method": f"each member's best of {SCORER_REPEATS} calls (first call beside)", "sets": per_set,
             "products_only_seconds": round(floor_s, 3), "products_only_stars_per_s": round(total_n / floor_s),
             "scorer_over_products_time": round(best_s / floor_s, 2),
             "target_1m_stars_per_s": total_n / best_s >= 1e6}
    print(f"scorer: {total_n:,} stars over {len(card['members'])} feature sets in {best_s:.3f} s = "
          f"{total_n / best_s / 1e6:.2f} M stars/s (best of {SCORER_REPEATS}; first call {total_n / first_s / 1e6:.2f}); "
          f"peer, its bare matrix products: {floor_s:.3f} s = {total_n / floor_s / 1e6:.2f} M stars/s "
          f"(the scorer takes {best_s / floor_s:.2f}x their time)", flush=True)
    return found


def products_only_seconds(scorer: NumpyScorer, n: int) -> float:
    """Seconds for the matrix products ``scorer`` does on ``n`` rows, alone: its own weights (the
    first layer's rows for the inputs and one more in the bias row's place; no flag rows: they vary
    by chunk), random inputs, the same chunks of rows on the same threads with BLAS on one thread
    each, into buffers allocated once, with no element-wise work."""
    from concurrent.futures import ThreadPoolExecutor

    from stellardb.ml import scorer as scorer_module

    rows = scorer_module.CHUNK_ROWS
    chunks = list(range(0, n, rows))
    threads = min(scorer.threads, len(chunks))
    first = np.ascontiguousarray(scorer.first_weight[: scorer.n_inputs + 1])
    x = np.asfortranarray(np.random.default_rng(0).normal(size=(rows, first.shape[0])).astype(np.float32))

    def work(k):
        h = np.empty((rows, first.shape[1]), np.float32)
        # (the hidden layers' weights as the scorer uses them: the first with its bias row)
        buffers = [[np.empty((rows, w.shape[1]), np.float32) for w in weights] for weights in scorer.hidden_weights]
        heads = np.empty((len(scorer.nets), rows, 2), np.float32)
        for lo in chunks[k::threads]:
            r = min(rows, n - lo)  # (the last chunk is partial, as the scorer's)
            np.matmul(x[:r], first, out=h[:r])
            for j, (net, cols) in enumerate(zip(scorer.nets, scorer.net_columns)):
                a = h[:r, cols]
                for w, out in zip(scorer.hidden_weights[j], buffers[j]):
                    a = np.matmul(a, w, out=out[:r])
                np.matmul(a, net.head_weight, out=heads[j, :r])

    t0 = time.perf_counter()
    with blas_on_one_thread(), ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return time.perf_counter() - t0


def scorer_only(work: Path, stars: int, seed: int) -> None:
    """Step 4 alone, on the database and family an earlier run left in ``work``."""
    db, models = work / f"allsky_{stars}_{seed}.duckdb", work / "models"
    card_path = models / "bench.family.json"
    if not db.exists() or not card_path.exists():
        raise SystemExit(f"--scorer-only needs an earlier run's {db.name} and models/bench.family.json in {work}; "
                         "run the benchmark without it first.")
    card = json.loads(card_path.read_text())
    result = {"stars": stars, "seed": seed, "family_trained_at": card.get("trained_at"),
              "scorer": scorer_speed(db, models, card)}
    print(f"-> {save('feature_sets_scorer', result)}")


if __name__ == "__main__":
    main()
