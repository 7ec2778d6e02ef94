# The two commands the README starts with: `make run` and `make test`.
# Both create .venv and install Herald (pinned by constraints.txt) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install tools lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Programs some tests run: promtool (Debian package prometheus) checks the alert rules;
## chromium with chromedriver (chromium, chromium-driver) opens the console's pages.
## Installed when missing and root; otherwise those tests skip (and fail under CI=true).
tools:
	@command -v promtool >/dev/null || [ "$$(id -u)" != 0 ] || $(APT_INSTALL) prometheus \
		|| (apt-get update -qq && $(APT_INSTALL) prometheus)
	@command -v chromedriver >/dev/null || [ "$$(id -u)" != 0 ] \
		|| $(APT_INSTALL) chromium chromium-driver \
		|| (apt-get update -qq && $(APT_INSTALL) chromium chromium-driver)

APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

## Run Herald: API on http://127.0.0.1:8000, SQLite in ./herald.db, email to the log.
run: $(STAMP)
	$(BIN)/herald serve

## The whole test suite, with lint and type checks first, in two processes (each test has its
## own databases, topics, key prefixes and ports). The tests that start Herald processes and
## break things come after the others: they mostly wait (for sessions to expire, processes to
## drain), two at a time took 7 minutes instead of 12, and their deadlines are generous.
TEST_PROCESSES ?= 2
test: $(STAMP) tools lint
	$(BIN)/pytest -n $(TEST_PROCESSES) tests/unit tests/integration
	$(BIN)/pytest -n $(TEST_PROCESSES) tests/e2e tests/faults

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache herald.db herald.db-*
