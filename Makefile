# ifu-extract: set-up, demo and tests.  Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv is keyed by the pinned stack: change constraints or pyproject and it is rebuilt.
STACK_KEY := $(shell cat requirements/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stack-$(STACK_KEY)
DEMO_OUT ?= demo-out
.DEFAULT_GOAL := help

.PHONY: venv demo test lint pytest bench clean help

# Galaxy server, wrappers and planemo (issue: Galaxy wrappers); container image (issue: container).
-include mk/*.mk

help:
	@echo "make demo   - run ifu-extract on the real MUSE minicube shipped with mpdaf"
	@echo "make test   - install everything and run every test (lint first)"
	@echo "make lint   - ruff (configuration in pyproject.toml)"
	@echo "make bench  - benchmarks against peers (slow; results in bench/README.md)"

venv: $(STAMP)

$(STAMP): requirements/constraints.txt pyproject.toml
	@if [ ! -x $(PY) ]; then $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip setuptools wheel -c requirements/build-constraints.txt
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[test,service]'
	rm -f $(VENV)/.stack-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/ifu-extract demo -o $(DEMO_OUT)

# Extra test targets (Galaxy, container) append themselves to TEST_TARGETS from mk/*.mk;
# TEST_TARGETS_LAST run after them (the cluster test: its own servers, after the shared one's).
test: lint pytest $(TEST_TARGETS) $(TEST_TARGETS_LAST)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

pytest: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
