# The two commands: `make demo` and `make test`. Both build .venv first when it is missing
# or older than pyproject.toml.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data

.PHONY: install browser demo test lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The web UI's browser tests drive the system's Chromium through its chromedriver. Nothing to
# do when both are there; else they are installed with apt (as root, or with sudo). Without
# a way to install them this fails: the browser tests must not be skipped silently.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make browser: $(CHROMIUM) or $(CHROMEDRIVER) is missing and there is no apt-get:" \
			"install Chromium and its chromedriver there" >&2; exit 1; fi; \
	if [ "$$(id -u)" -eq 0 ]; then as_root=""; \
	elif sudo -n true 2>/dev/null; then as_root="sudo -n"; \
	else echo "make browser: installing $(BROWSER_PACKAGES) needs root (or sudo)" >&2; exit 1; fi; \
	echo "make browser: installing $(BROWSER_PACKAGES)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$as_root apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) \
		|| { $$as_root apt-get update -q && \
			$$as_root apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); } \
		|| { echo "make browser: apt-get could not install $(BROWSER_PACKAGES)" >&2; exit 1; }; \
	[ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ] \
		|| { echo "make browser: still no $(CHROMIUM) / $(CHROMEDRIVER)" >&2; exit 1; }

demo: $(STAMP)
	$(BIN)/flywheel --data-dir $(DEMO_DIR) demo --fresh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Lint first (cheap), then the whole suite: unit and integration tests against the real
# PostgreSQL and Redis on loopback, and the web UI in headless Chromium (`make browser`).
# pytest exits non-zero on failures and on "no tests".
# Two pytest workers, one test file each at a time: the files that share a service (a Redis
# database, a worker deployment) keep their tests on one worker, in order.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
