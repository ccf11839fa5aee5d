# stellardb: every target creates (once) and reuses its own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DIR   ?= demo
DEMO_STARS ?= 200000
SDB := $(VENV)/bin/stellardb --db $(DEMO_DIR)/stellardb.duckdb

.PHONY: demo serve test bench bench-big venv clean lock

venv: $(STAMP)

# requirements.lock pins every package (made by `make lock`), so README's outputs are reproducible
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[ml,dev,bench]'
	touch $(STAMP)

## make lock: re-resolve requirements.lock from pyproject.toml (uv, all platforms, Python 3.11)
lock: $(STAMP)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra ml --extra dev --extra bench --universal \
		--python-version 3.11 --quiet -o requirements.lock

## make demo: the main job end to end on the embedded default (simulated) sky, published as a release
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	rm -f $(DEMO_DIR)/stellardb.duckdb $(DEMO_DIR)/stellardb.duckdb.wal
	$(VENV)/bin/stellardb simulate $(DEMO_DIR)/sky --stars $(DEMO_STARS) --seed 42 --sky all --overwrite
	$(SDB) ingest gaia $(DEMO_DIR)/sky/gaia_source.csv.gz
	$(SDB) ingest skymapper $(DEMO_DIR)/sky/skymapper_master.csv
	$(SDB) ingest tmass $(DEMO_DIR)/sky/tmass_psc.csv
	$(SDB) ingest allwise $(DEMO_DIR)/sky/allwise_source.csv
	$(SDB) ingest ps1 $(DEMO_DIR)/sky/ps1_dr2_mean.csv
	$(SDB) ingest sdss $(DEMO_DIR)/sky/sdss_dr17_photoobj.csv
	$(SDB) ingest distances $(DEMO_DIR)/sky/bailer_jones_distances.csv
	$(SDB) ingest sos $(DEMO_DIR)/sky/sos_spectro.csv
	$(SDB) xmatch --plot $(DEMO_DIR)/xmatch.png
	$(SDB) train --quick --model demo
	$(SDB) score --model demo --plot $(DEMO_DIR)/kiel.png
	$(SDB) query "select feature_set, count(*) as stars, round(median(teff_err)) as median_teff_err_k from stars_with_predictions where model = 'demo' group by feature_set order by stars desc"
	$(SDB) query "select count(*) as metal_poor_giants, round(median(teff)) as median_teff_k from stars_with_predictions where model = 'demo' and feh < -1 and logg < 3"
	rm -rf $(DEMO_DIR)/releases
	$(SDB) release demo-1 --model demo
	$(SDB) query --release latest "select count(*) as stars_within_1_deg, round(median(teff)) as median_teff_k from catalogue_cone(150.0, -45.0, 3600) where teff is not null"

## make serve: TAP (ADQL) and Simple Cone Search on the demo's release (make demo first); Ctrl-C stops
serve: $(STAMP)
	@test -e $(DEMO_DIR)/releases/latest || { echo "No demo release in $(DEMO_DIR)/releases: run make demo first." >&2; exit 1; }
	$(SDB) serve

## make test: the offline, seeded test suite
test: $(STAMP)
	$(PY) -m pytest -q

## make bench: speed, memory and accuracy benchmarks (JSON in bench/out/, summary in bench/RESULTS.md)
bench: $(STAMP)
	test -x bench/.venv-lsdb/bin/python || ($(PYTHON) -m venv bench/.venv-lsdb && bench/.venv-lsdb/bin/pip install --quiet lsdb) || echo "lsdb did not install; its peer is skipped"
	$(PY) bench/bench_simulate.py
	$(PY) bench/bench_ingest_xmatch.py
	$(PY) bench/bench_score.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_feature_sets.py
	$(PY) bench/bench_release.py
	$(PY) bench/bench_serve.py
	$(PY) bench/bench_serve.py --workers 2 --no-switch
	$(PY) bench/bench_cluster.py --memory-check
	$(PY) bench/results.py

## make bench-big: the 10 M-star memory check and release benchmark (about an hour)
bench-big: $(STAMP)
	$(PY) bench/bench_ingest_xmatch.py --stars 10000000 --skymapper-rows 8000000 --memory
	$(PY) bench/bench_release.py --stars 10000000
	$(PY) bench/bench_serve.py --stars 10000000
	$(PY) bench/bench_cluster.py --stars 10000000
	$(PY) bench/bench_async.py
	$(PY) bench/results.py

clean:
	rm -rf $(DEMO_DIR) bench/out .pytest_cache
