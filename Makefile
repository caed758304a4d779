# pgwarden — every target does its own setup on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all test lint demo bench clean scanner

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# The optional compiled relay scanner of the wire proxy (pure-Python fallback when it cannot be built).
scanner: $(STAMP)
	$(BIN)/python scripts/build_scanner.py

test: $(STAMP) scanner lint
	@# The browser tests drive Debian's chromium through Playwright; install it when missing (skipped where apt is not).
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) || true
	$(BIN)/pytest -q

bench: $(STAMP) scanner
	$(BIN)/python benchmarks/decide.py

demo: $(STAMP) scanner
	$(BIN)/pgwarden demo --state .demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info src/pgwarden/wire_proxy/_scan.c \
		src/pgwarden/wire_proxy/_scan.*.so
