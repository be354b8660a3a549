# The two commands: `make run` and `make test`. Both build .venv from pyproject.toml
# (pinned by constraints.txt) when it is missing or older than either file.
# The interpreter: the operating system's own python3.11 when there is one (Debian's has
# the interpreter in its executable, not in a shared libpython, and is an optimised build;
# served side by side it cost 0.91x the CPU per request of pyenv's --enable-shared build
# without --enable-optimizations: docs/performance.md), else the first
# python3.11, else python3 on PATH; each only if it can make a venv (ensurepip).
# `make ... PYTHON=...` picks another.
PYTHON ?= $(shell for p in /usr/bin/python3.11 "$$(command -v python3.11)" "$$(command -v python3)"; do if [ -x "$$p" ] && "$$p" -c 'import ensurepip' 2>/dev/null; then echo "$$p"; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest fuzz fuzz-api soak bench bench-quick bench-rss bench-profile bench-instr bench-tools clean node-deps

# instructor (tests/clients) caps jiter below the version openai needs and works with it,
# so it is installed on its own, without its dependencies (the rest are in dev).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt instructor
	touch $(STAMP)

# The Node clients of tests/clients: `npm ci` (pinned by package-lock.json) whenever
# node_modules is missing or older than the lock. Without npm the Node client tests
# skip, unless CI is set: then this step fails.
NODE_DIR := tests/clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.package-lock.json; \
	elif [ -n "$$CI" ]; then \
		echo "node and npm are needed for tests/clients (CI is set)"; exit 1; \
	else \
		echo "npm not found: the Node client tests will skip"; \
	fi

# `make run` serves on 127.0.0.1:3000 with ./data/gateway.db (created on first start);
# override any of them on the command line: `make run PORT=8080`.
HOST ?= 127.0.0.1
PORT ?= 3000
DATABASE_URL ?= sqlite:///data/gateway.db

run: $(STAMP)
	$(BIN)/umg serve --host $(HOST) --port $(PORT) --database-url $(DATABASE_URL)

test: $(STAMP) node-deps lint typecheck pytest

node-deps: $(NODE_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# core (pyproject's `files`), then adapters, server and bench with the same strict settings
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy adapters
	$(BIN)/mypy server
	$(BIN)/mypy bench

# The suite on PYTEST_WORKERS processes (pytest-xdist); --dist loadfile keeps each test
# file on one worker, so a file's module fixtures (a gateway, a browser) start once.
# `make test PYTEST_WORKERS=0` runs it in this process; PYTEST_ARGS adds pytest options.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
pytest: $(STAMP) node-deps
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Long runs, not part of `make test`.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/core

# schemathesis over /openapi.json as served: every check, positive and negative cases,
# >= 5,000 test cases (tests/api_fuzz.py); a short run is tests/server/test_api_fuzz.py.
fuzz-api: $(STAMP)
	$(BIN)/python -m tests.api_fuzz --examples 200 --min-cases 5000

# The fault run: N requests through two upstreams that fail at random, then the ledger
# audit (tests/soak.py); a short version is tests/server/test_soak.py in `make test`.
SOAK_REQUESTS ?= 2000
soak: $(STAMP)
	$(BIN)/python -m tests.soak --requests $(SOAK_REQUESTS)

# `make bench`: this gateway beside Portkey, LiteLLM and the bare fake provider, every
# scenario, one run (about 5 minutes). Competitors and wrk are installed on first use into
# a cache outside the repo (bench/competitors.sh); one that cannot be is left out and said.
# Subsets: `make bench BENCH_TARGETS=direct,ours BENCH_SCENARIOS=json16,stream16`, or
# any option of `python -m bench.run --help` in BENCH_ARGS.
BENCH_TARGETS ?= direct,ours,ours-pg,portkey,litellm
BENCH_SCENARIOS ?= c1,json16,json64,stream16,ttfb1,slow
BENCH_ARGS ?=
BENCH := $(BIN)/python -m bench.run

bench-tools:
	-bench/competitors.sh

bench: $(STAMP) bench-tools
	$(BENCH) --targets $(BENCH_TARGETS) --scenarios $(BENCH_SCENARIOS) $(BENCH_ARGS)

# About a minute and a half: no LiteLLM, no Postgres, no slow streams.
bench-quick: $(STAMP) bench-tools
	$(BENCH) --targets direct,ours,portkey --scenarios c1,json16,json64,stream16,ttfb1 $(BENCH_ARGS)

# RSS after 10k and after 100k requests (long: about 100k / the gateway's req/s).
bench-rss: $(STAMP)
	$(BENCH) --targets ours --scenarios rss $(BENCH_ARGS)

# py-spy samples of this gateway during the c=16 JSON run, summarised (bench/profile.py);
# BENCH_PROFILE=stream16 (or slow, json64, c1) samples that scenario instead.
BENCH_PROFILE ?= json16
bench-profile: $(STAMP)
	mkdir -p data
	$(BENCH) --targets ours --scenarios $(BENCH_PROFILE) --profile-scenario $(BENCH_PROFILE) --seconds 10 --profile data/bench-profile.txt $(BENCH_ARGS)
	$(BIN)/python -m bench.profile data/bench-profile.txt

# Instructions per served request under callgrind (bench/instr_count.py), a count the
# host's noise does not move; INSTR_ARGS="--scenario stream --top 25" and so on.
INSTR_TARGETS ?= floor-proxy,ours,ours-logtm
INSTR_ARGS ?=
bench-instr: $(STAMP)
	$(BIN)/python -m bench.instr_count --targets $(INSTR_TARGETS) $(INSTR_ARGS)

# The console's usage and requests queries on a 1,000,000-row ledger (ROWS=... to change).
ROWS ?= 1000000
bench-console: $(STAMP)
	$(BIN)/python -m bench.console_queries --rows $(ROWS)

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache $(NODE_DIR)/node_modules

# The Idempotency-Key layer alone (server/idempotent.py), with and without the header.
bench-idempotency: $(STAMP)
	$(BIN)/python -m bench.idempotency

# A prune (core/retention.py) of a 1,000,000-row ledger: its time and longest batch.
bench-prune: $(STAMP)
	$(BIN)/python -m bench.prune --rows $(ROWS)
