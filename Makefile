# taskpass: two commands on a fresh machine — `make run` and `make test`.
# `make run CONFIG=path/to/taskpass.toml` runs with your own configuration instead of the dev one.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?=
DEV_CERTS := certs/dev

.PHONY: setup run demo test lint proto proto-check certs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

certs: setup
	@if [ ! -f $(DEV_CERTS)/bundle.pem ]; then \
	  $(BIN)/taskpass certs init --trust-domain example.org --out $(DEV_CERTS); \
	else echo "dev PKI already in $(DEV_CERTS) (delete it to make a new one)"; fi

run: certs
	$(BIN)/taskpass serve $(if $(CONFIG),--config $(CONFIG),--dev)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

proto: setup
	$(BIN)/python proto/generate.py

proto-check: setup
	$(BIN)/python proto/generate.py --check

# `make bench BENCH_ARGS=--quick` for a smoke run; `python -m bench --help` lists the flags.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
