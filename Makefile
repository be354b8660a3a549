# The two commands: `make run` and `make test`. Both build .venv from pyproject.toml
# (pinned by constraints.txt) when it is missing or older than either file.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest fuzz soak bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# `make run` serves on 127.0.0.1:3000 with ./data/gateway.db (created on first start);
# override any of them on the command line: `make run PORT=8080`.
HOST ?= 127.0.0.1
PORT ?= 3000
DATABASE_URL ?= sqlite:///data/gateway.db

run: $(STAMP)
	$(BIN)/umg serve --host $(HOST) --port $(PORT) --database-url $(DATABASE_URL)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# Long runs, not part of `make test`.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/core

# The fault run: N requests through two upstreams that fail at random, then the ledger
# audit (tests/soak.py); a short version is tests/server/test_soak.py in `make test`.
SOAK_REQUESTS ?= 2000
soak: $(STAMP)
	$(BIN)/python -m tests.soak --requests $(SOAK_REQUESTS)

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache
