# ueoz-migration — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Debian's python3 (used when it is 3.11 or later and can make a venv) is built with
# profile-guided and link-time optimisation and linked statically; the pyenv build these
# machines also carry is a shared-library build without either, and costs a login ~20 %
# more CPU (docs/performance.md, "Fourth round"). Any other interpreter:
# `rm -r .venv && make PYTHON=/path/to/python3 install`.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; assert sys.version_info >= (3, 11)' 2>/dev/null && echo /usr/bin/python3 || echo python3)
PGPORT ?= 55432
export TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:$(PGPORT)/postgres

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed ## Create the virtualenv and install the service with its test tools

system-deps: ## Install what the tests need from Debian (PostgreSQL, Chromium, Graphviz, fonts, Node.js)
	scripts/system-deps.sh

# The interoperability test's relying party (tests/interop): openid-client, as its lock pins it.
INTEROP := tests/interop
$(INTEROP)/node_modules/.installed: $(INTEROP)/package.json $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

interop-deps: $(INTEROP)/node_modules/.installed ## Install the relying party the interoperability test runs (npm ci)

run: install ## Set up and start the service on its embedded default (SQLite, stand-in node, Maildir)
	$(BIN)/ueoz-migration dev

test: install system-deps interop-deps ## Set up everything and run the whole suite (SQLite, PostgreSQL, Chromium)
	scripts/postgres.sh start >/dev/null
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

lint: install ## Check style, formatting and the types of the domain core
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

fmt: install ## Format the code and apply safe lint fixes
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

diagram: install ## Render the flow into docs/state-diagram.md
	$(BIN)/ueoz-migration diagram

bench: install system-deps ## Run the benchmarks and write docs/performance.md
	scripts/bench.sh

soak: install system-deps ## Run the production shape under load while its parts die (about 8 minutes)
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

.PHONY: help install system-deps interop-deps run test lint fmt diagram bench soak
