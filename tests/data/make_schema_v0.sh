#!/bin/bash
# Rebuilds tests/data/schema_v0.duckdb.gz: a database written by stellardb before schema versions
# existed (commit 8491037), for tests/catalog/test_schema.py.  Usage, from the repository root:
#   git worktree add /tmp/v0 8491037 && bash tests/data/make_schema_v0.sh /tmp/v0
# Labels for every star (from the simulator's truth, with noise) keep the file under 500 kB while
# giving train enough labelled stars: 1,000 Gaia rows, 508 predictions, two model_runs rows.
set -euo pipefail
OLD=$(cd "$1" && pwd)
OUT=$(pwd)/tests/data/schema_v0.duckdb.gz
WORK=$(mktemp -d)
PY=$(pwd)/.venv/bin/python
export PYTHONPATH=$OLD
S="$PY -m stellardb --db $WORK/v0.duckdb"
cd "$WORK"
$PY -m stellardb simulate sky --stars 1000 --seed 7 -q --truth
$PY - <<'PY'
import numpy as np
import pyarrow.parquet as pq
t = pq.read_table("sky/truth.parquet").to_pandas()
rng = np.random.default_rng(7)
out = t[["source_id"]].copy()
out["teff"] = (t.teff_k + rng.normal(0, 50, len(t))).round(1); out["e_teff"] = 50.0
out["logg"] = (t.logg + rng.normal(0, 0.08, len(t))).round(3); out["e_logg"] = 0.08
out["feh"] = (t.feh + rng.normal(0, 0.06, len(t))).round(3); out["e_feh"] = 0.06
out["survey"] = "SIM"
out.to_csv("labels_all.csv", index=False)
PY
$S ingest gaia sky/gaia_source.csv.gz -q
$S ingest skymapper sky/skymapper_master.csv -q
$S ingest distances sky/bailer_jones_distances.csv -q
$S ingest sos labels_all.csv -q
$S xmatch
$S train --quick --name tiny --no-plots -q
$S score --model tiny -q
gzip -9 -c v0.duckdb > "$OUT"
rm -rf "$WORK"
