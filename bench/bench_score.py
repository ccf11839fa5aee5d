"""Issue 4 benchmark: scoring speed of the NumPy scorer against Keras, and `stellardb score` end to end.

Gates (same run, same machine):

* the NumPy scorer (BatchNorm and input scaling folded into the Dense weights,
  all first layers, ensemble members included, in one matrix product) predicts Teff, log g and [Fe/H]
  with errors for at least 1M stars/s on 2 cores;
* it is faster than Keras ``model.predict`` of the same three models;
* its output equals Keras's within float32 tolerance (max |difference| relative
  to each target's spread, reported).

Also reported (no gate): `stellardb score` throughput end to end - DuckDB view,
Arrow batches, scorer, insert in one transaction - on the benchmark sky.

    python bench/bench_score.py [--stars 2000000] [--model bench]

Uses the model bench/out/models/MODEL from bench_train.py when present,
otherwise trains a quick one on a small simulated sky first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stellardb.config import quiet_tensorflow_logs  # noqa: E402

quiet_tensorflow_logs()

import duckdb  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import sky_database  # noqa: E402
from common import OUT, machine, save  # noqa: E402

from stellardb.ml import score  # noqa: E402
from stellardb.ml import model_store, train  # noqa: E402
from stellardb.ml.scorer import NumpyScorer  # noqa: E402
from stellardb.catalog.db import connect  # noqa: E402
from stellardb.ml.features import FEATURES, PARAMETERS  # noqa: E402


def _best_of(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stars", type=int, default=2_000_000, help="rows scored in memory (real feature rows, tiled)")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--sky-stars", type=int, default=1_000_000, help="simulated sky for the end-to-end run")
    ap.add_argument("--keras-stars", type=int, default=300_000, help="rows for the (slower) Keras timing")
    args = ap.parse_args()
    print(machine(), flush=True)
    models_dir = OUT / "models"
    db = sky_database(args.sky_stars, 11)
    if not (models_dir / args.model / "card.json").is_file():
        print(f"no model {args.model} in {models_dir}: training a quick one", flush=True)
        train.run(db, model=args.model, quick=True, seed=1, models_dir=models_dir, progress=None, plots=False)
    card, models = model_store.load_model_folder(args.model, models_dir)
    hidden = card["architecture"]["hidden_units"]
    members = card["architecture"].get("members", {q: 1 for q in PARAMETERS})

    con = connect(db)  # read-only
    table = con.sql(f"select {', '.join(FEATURES)} from scoring_set").to_arrow_table()
    n_eligible = table.num_rows
    con.close()
    base = score.batch_to_matrix(table, list(FEATURES))
    x = np.tile(base, (int(np.ceil(args.stars / len(base))), 1))[: args.stars]
    missing = float(np.mean(~np.isfinite(x)))

    numpy_scorer = NumpyScorer({p: model_store.fold_model(models[p]) for p in PARAMETERS})
    numpy_s, pred = _best_of(lambda: numpy_scorer.predict(x))
    numpy_rate = len(x) / numpy_s

    xk = x[: args.keras_stars]
    for p in PARAMETERS:  # trace the predict functions before timing
        models[p].predict(xk[:1000], batch_size=8192, verbose=0)
    keras_s, keras_pred = _best_of(lambda: {p: models[p].predict(xk, batch_size=8192, verbose=0) for p in PARAMETERS}, repeats=2)
    keras_rate = len(xk) / keras_s

    agree = {}
    for p in PARAMETERS:
        scale = models[p].get_layer("target_scaling").scale
        k = keras_pred[p]
        agree[p] = {
            "max_abs_diff_value": float(np.max(np.abs(pred[p][0][: len(xk)] - k[:, 0]))),
            "max_abs_diff_error": float(np.max(np.abs(pred[p][1][: len(xk)] - k[:, 1]))),
            "target_scale": scale,
        }
        agree[p]["pass"] = agree[p]["max_abs_diff_value"] <= 1e-4 * scale and agree[p]["max_abs_diff_error"] <= 1e-4 * scale

    t0 = time.perf_counter()
    summary = score.run(db, model=args.model, models_dir=models_dir, progress=None)
    end_to_end_s = time.perf_counter() - t0
    # peer for the loop: DuckDB alone reading the same columns of scoring_set
    con = duckdb.connect(str(db), read_only=True)
    t0 = time.perf_counter()
    n_read = sum(b.num_rows for b in con.sql(f"select source_id, {', '.join(FEATURES)} from scoring_set").to_arrow_reader(131072))
    read_s = time.perf_counter() - t0
    con.close()

    ok_rate, ok_faster, ok_equal = numpy_rate >= 1e6, numpy_rate > keras_rate, all(a["pass"] for a in agree.values())
    n_inputs = len(FEATURES) + len(card["scaling"].get("colours", []))
    print(f"model {args.model}: hidden units {hidden}, networks per parameter {members} ({sum(members.values())} in all), "
          f"inputs {len(FEATURES)} features + {n_inputs - len(FEATURES)} colours (+ {n_inputs} missing flags)")
    print(f"NumPy scorer: {len(x):,} stars (tiled from {n_eligible:,} real rows, {missing:.1%} inputs missing), all three parameters "
          f"in {numpy_s:.3f} s = {numpy_rate / 1e6:.2f} M stars/s  (>= 1 M/s {'PASS' if ok_rate else 'FAIL'})")
    print(f"Keras predict: {len(xk):,} stars, three models in {keras_s:.3f} s = {keras_rate / 1e6:.3f} M stars/s; "
          f"NumPy is {numpy_rate / keras_rate:.1f}x faster ({'PASS' if ok_faster else 'FAIL'})")
    for p, a in agree.items():
        print(f"  {p:5s} max |NumPy - Keras| value {a['max_abs_diff_value']:.3g}, error {a['max_abs_diff_error']:.3g} "
              f"(target spread {a['target_scale']:.3g}; {'PASS' if a['pass'] else 'FAIL'} at 1e-4 of it)")
    print(f"stellardb score end to end: {summary.rows:,} stars from DuckDB in {end_to_end_s:.2f} s = "
          f"{summary.rows / end_to_end_s / 1e6:.2f} M stars/s (loading the models, then read, score, insert in one "
          f"transaction); the read-score-insert loop alone {summary.seconds:.2f} s = {summary.rows / summary.seconds / 1e6:.2f} "
          f"M stars/s; peer: DuckDB reading those columns of scoring_set alone {read_s:.2f} s = {n_read / read_s / 1e6:.2f} M stars/s")
    result = {
        "model": args.model,
        "hidden_units": hidden,
        "members": members,
        "numpy": {"stars": len(x), "seconds": numpy_s, "stars_per_s": numpy_rate, "pass_1M_per_s": ok_rate},
        "keras": {"stars": len(xk), "seconds": keras_s, "stars_per_s": keras_rate, "numpy_faster": ok_faster},
        "agreement": agree,
        "end_to_end": {"stars": summary.rows, "seconds": end_to_end_s, "stars_per_s": summary.rows / end_to_end_s,
                       "loop_seconds": summary.seconds, "loop_stars_per_s": summary.rows / summary.seconds,
                       "peer_duckdb_read_scoring_set_s": read_s, "peer_read_stars_per_s": n_read / read_s},
    }
    print(f"wrote {save('bench_score', result)}")


if __name__ == "__main__":
    main()
