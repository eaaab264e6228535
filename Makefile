# The README's two commands: `make book` and `make test`. Both set up .venv first (`make install`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default

.PHONY: install book test lab bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

book: install
	$(PY) -m gradcam_lib.runner --profile $(PROFILE)

test: install
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval-lax --nbval-current-env book/*.ipynb

lab: install
	$(VENV)/bin/jupyter lab book/

clean:
	rm -rf _build results

bench: install
	$(PY) bench/benchmark.py
