# pgwarden — every target does its own setup on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all test lint demo bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	@# The browser tests drive Debian's chromium through Playwright; install it when missing (skipped where apt is not).
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) || true
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/decide.py

demo: $(STAMP)
	$(BIN)/pgwarden demo --state .demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
