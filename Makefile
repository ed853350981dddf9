# The two set-up commands in the README are `make demo` and `make test`; both create the
# virtual environment on first use. Everything else here is a convenience.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export BIKESHARE_HOME ?= $(CURDIR)/.bikeshare
export DAGSTER_HOME   ?= $(BIKESHARE_HOME)/dagster_home

.PHONY: demo test bench ui live drills dashboard lint lock docs venv clean

venv: $(VENV)/.installed

# Exact versions from constraints.txt (reproducible installs); `make lock` refreshes them.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $@

## Run the main job end to end on the embedded default (offline replay, SQLite, local files).
demo: venv
	$(BIN)/bikeshare demo $(ARGS)

## Run every test: the suite (its own local HTTP, moto and scoring servers) and, beside it at
## nice 19, the drills on one live stack (~15 min of real time, mostly waiting; their output
## in $(BIKESHARE_HOME)/test-drills.log, shown at the end). bikeshare_assets_tests/__main__.py.
test: venv
	$(BIN)/python -m bikeshare_assets_tests --drills-log $(BIKESHARE_HOME)/test-drills.log

## Run the drills alone (part of `make test`): one live stack with `dagster dev` on a 1-minute
## cadence, on which a feed outage, a killed endpoint and drifted data follow each other.
## Marked `slow`, so a bare `pytest` leaves them out.
drills: venv
	$(BIN)/python -m bikeshare_assets_tests --drills-only

## Run the benchmarks and print the tables recorded in docs/performance.md.
bench: venv
	$(BIN)/python -m bikeshare_assets_tests.benchmarks

## Open the Dagster UI on the same instance the demo wrote to.
ui: venv
	mkdir -p $(DAGSTER_HOME)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dagster dev -w workspace.yaml

## Watch the loop run itself offline: a local live Paris feed + `dagster dev` in live mode
## (needs the champion `make demo` registers; docs/live.md).
live: venv
	DAGSTER_HOME=$(BIKESHARE_HOME)/live/dagster_home $(BIN)/bikeshare live $(ARGS)

## Rewrite the doc tables generated from the code (environment variables, null budgets).
docs: venv
	$(BIN)/python -m bikeshare_assets_tests.docs_sync

## Open the operations dashboard (Streamlit) on the lake the demo wrote.
dashboard: venv
	$(BIN)/bikeshare dashboard $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Refresh constraints.txt: resolve pyproject.toml afresh from PyPI in a throw-away venv
## (newest versions that satisfy it), then pin exactly what that installed. Review the diff,
## run `make test`, commit both.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev]'
	$(LOCK_VENV)/bin/python .ci/lock.py > constraints.txt
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt refreshed; reinstall with: rm -rf $(VENV) && make venv"

clean:
	rm -rf $(BIKESHARE_HOME)
