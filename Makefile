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

## Run the test suite (starts its own local HTTP, moto and scoring servers) and, beside it,
## the drills (marked slow): one live stack with `dagster dev` at a 1-minute cadence, on
## which a feed outage, a killed endpoint and drifted data follow each other (~18 min of real
## time, mostly waiting). The suite runs at the lowest CPU priority so that the stack's
## daemon keeps its cadence on 2 cores; the drills' output is printed when both have ended.
DRILL_TESTS := bikeshare_assets_tests/automation/test_drills.py
DRILLS_LOG  := $(BIKESHARE_HOME)/drills.log
PYTEST_DRILLS := $(BIN)/pytest -q -s -m slow -p no:cacheprovider $(DRILL_TESTS)
test: venv
	@mkdir -p $(BIKESHARE_HOME)
	@echo "drills: beside the suite, output in $(DRILLS_LOG)"
	@$(PYTEST_DRILLS) > $(DRILLS_LOG) 2>&1 & drills=$$!; \
	nice -n 19 $(BIN)/pytest -q; status=$$?; \
	echo "suite done (exit $$status); waiting for the drills"; \
	wait $$drills || status=1; \
	echo "---- drills"; cat $(DRILLS_LOG); \
	exit $$status

## The drills alone, their output as it happens.
drills: venv
	$(PYTEST_DRILLS)

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
