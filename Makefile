# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Extra arguments for `p2pmoments run`, e.g. make run ARGS="--api 127.0.0.1:0 --no-mdns"
ARGS   ?=
# Your display name on first run, e.g. make run NAME=Alice (otherwise you are asked)
NAME   ?=

# `make soak`: how long the chaos lasts (seconds), and a seed to replay a schedule
SOAK_SECONDS ?= 1800
SOAK_SEED    ?=

.PHONY: run test lint typecheck bench soak clean help

help:
	@echo "make run    create .venv, install, create an identity if none (NAME=Alice), start the daemon"
	@echo "make test   create .venv with the test extras, run lint and the whole suite"
	@echo "make lint   ruff and mypy --strict"
	@echo "make bench  benchmarks, each beside a baseline from the same run"
	@echo "make soak   the chaos soak, 5 daemons on a namespaced LAN, as root (SOAK_SECONDS=1800, SOAK_SEED=)"
	@echo "make clean  remove .venv and caches"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "p2pmoments needs Python 3.11 or newer; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/p2pmoments init --exist-ok $(if $(NAME),--name "$(NAME)")
	@echo "The commands are in $(BIN): run them as $(BIN)/p2pmoments, or 'source $(BIN)/activate' first."
	exec $(BIN)/p2pmoments run $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Workers for `make test` (pytest-xdist); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/startup.py --json bench-results/startup.json
	$(BIN)/python benchmarks/links.py --json bench-results/links.json
	$(BIN)/python benchmarks/cipher.py --json bench-results/cipher.json
	$(BIN)/python benchmarks/moments.py --json bench-results/moments.json
	$(BIN)/python benchmarks/memory.py --json bench-results/memory.json
	$(BIN)/python benchmarks/replication.py --json bench-results/replication.json
	$(BIN)/python benchmarks/webapp.py --json bench-results/webapp.json
	$(BIN)/python benchmarks/gallery.py --json bench-results/gallery.json
	$(BIN)/python benchmarks/devices.py --json bench-results/devices.json
	$(BIN)/python benchmarks/notes.py --json bench-results/notes.json
	$(BIN)/python benchmarks/peers.py --replication bench-results/replication.json --json bench-results/peers.json
	$(BIN)/python benchmarks/versions.py --json bench-results/versions.json
	$(BIN)/python benchmarks/mesh.py --json bench-results/mesh.json
	$(BIN)/python benchmarks/bigstore.py --json bench-results/bigstore.json
	$(BIN)/python benchmarks/costs.py --json bench-results/costs.json

soak: $(VENV)/.installed-test
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) SOAK_DIR=$(CURDIR)/soak-results $(BIN)/python -m pytest -s -m soak tests/test_chaos_soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build src/*.egg-info soak-results
