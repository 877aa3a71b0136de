# ifu-extract: set-up, demo and tests.  Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv is keyed by the pinned stack: change constraints or pyproject and it is rebuilt.
STACK_KEY := $(shell cat requirements/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stack-$(STACK_KEY)
DEMO_OUT ?= demo-out

.PHONY: venv demo test test-fast bench clean help

help:
	@echo "make demo   - run ifu-extract on the real MUSE minicube shipped with mpdaf"
	@echo "make test   - install everything and run every test"
	@echo "make bench  - benchmarks against peers (slow; results in bench/README.md)"

venv: $(STAMP)

$(STAMP): requirements/constraints.txt pyproject.toml
	@if [ ! -x $(PY) ]; then $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip setuptools wheel -c requirements/build-constraints.txt
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[test]'
	rm -f $(VENV)/.stack-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/ifu-extract demo -o $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
