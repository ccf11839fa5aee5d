# stellardb: every target creates (once) and reuses its own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DIR   ?= demo
DEMO_STARS ?= 200000

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## make demo: the main job end to end on the embedded default (simulated) sky
demo: $(STAMP)
	$(VENV)/bin/stellardb simulate $(DEMO_DIR)/sky --stars $(DEMO_STARS) --seed 42 --overwrite

## make test: the offline, seeded test suite
test: $(STAMP)
	$(PY) -m pytest -q

## make bench: speed and memory benchmarks (results in bench/out/)
bench: $(STAMP)
	$(PY) bench/bench_simulate.py

clean:
	rm -rf $(DEMO_DIR) bench/out .pytest_cache
