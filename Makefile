# seedvlm: `make quickstart` runs the whole story on the embedded world; `make test` runs the fast tests (those not
# marked slow), `make test-all` every test (what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QS ?= runs/quickstart

.PHONY: venv test test-all quickstart clean

$(BIN)/seedvlm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first (the only wheel on local disk); then the package and its dependencies.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/seedvlm

venv: $(BIN)/seedvlm

test: venv
	$(BIN)/python -m pytest -q -m "not slow"

test-all: venv
	$(BIN)/python -m pytest -q

quickstart: venv
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/quickstart.sh $(QS)

clean:
	rm -rf $(QS) .pytest_cache
