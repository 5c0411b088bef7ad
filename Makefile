# CytoLoop: make run | make test | make bench | make lint   (see README.md)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# this machine's pip configuration warns about every missing local index entry; keep real errors
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export PYTHONPATH := $(CURDIR)/platform:$(CURDIR)

LSVENV := .venv-ls
LABEL_STUDIO_VERSION := 1.23.2

.PHONY: run test test-slow bench lint typecheck static install install-dev labelstudio chromium clean help

help:
	@echo "make run    - set up and start the platform on embedded defaults (SQLite, filesystem broker)"
	@echo "make test   - install what tests need and run the suite but the long ML fits (-m 'not slow')"
	@echo "make test-slow - only the long ML fits marked slow (each has a short version in make test)"
	@echo "make bench  - run the benchmarks under bench/ (ONLY=name for one)"
	@echo "make lint   - ruff check, then mypy on the pure modules (make typecheck alone)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel $(QUIET_PIP)
	$(PY) -m pip install -q -e . $(QUIET_PIP)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev]' $(QUIET_PIP)
	touch $@

# Label Studio pins its own Django REST framework, drf-spectacular and redis: its own virtualenv
$(LSVENV)/.installed:
	test -x $(LSVENV)/bin/python || $(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/python -I -m pip install -q --upgrade pip $(QUIET_PIP)
	$(LSVENV)/bin/python -I -m pip install -q "label-studio==$(LABEL_STUDIO_VERSION)" $(QUIET_PIP)
	touch $@

labelstudio: $(LSVENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

static: node_modules/.package-lock.json
	node scripts/vendor.mjs

run: install static labelstudio
	@bash scripts/run.sh $(HOST) $(PORT)

chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for browser tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core; }

test: install-dev static labelstudio chromium
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

test-slow: install-dev
	$(PY) -m pytest -n 2 --dist loadfile -m slow $(PYTEST_ARGS)

bench: install-dev
	$(PY) -m bench $(if $(ONLY),--only $(ONLY),)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck

# the pure modules ([tool.mypy] files in pyproject.toml)
typecheck: install-dev
	$(PY) -m mypy

clean:
	rm -rf var/ node_modules/ static/vendor/ $(LSVENV)/
