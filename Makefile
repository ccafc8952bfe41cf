# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Images for the demo: CNX2LITE_DATA_ROOT when set, else ../shared/data when present, else data/
# (where the demo downloads Imagenette).
DATA ?= $(or $(CNX2LITE_DATA_ROOT),$(wildcard ../shared/data))

.PHONY: demo notebooks test install install-dev minkowski browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# MinkowskiEngine, the reference sparse engine: built from source once, then cached (see README).
minkowski: $(VENV)/.installed-dev
	bash scripts/install_minkowski.sh $(BIN)/python

# Debian's Chromium for the browser test of the notebook widgets.
browser:
	bash scripts/install_browser.sh

demo: $(VENV)/.installed
	$(BIN)/python -m cnx2lite demo $(if $(DATA),--data $(DATA))

# The models the notebooks share, trained once (about half an hour on 2 CPU cores), then every notebook run from its
# source and its printed numbers compared with the stored ones (cnx2lite/notebook/replay.py).
notebooks: $(VENV)/.installed
	$(if $(DATA),CNX2LITE_DATA_ROOT=$(DATA)) $(BIN)/python -m cnx2lite.notebook.replay

# test processes; each test file runs whole in one (its module fixtures are built once)
TEST_WORKERS ?= 2

test: $(VENV)/.installed-dev minkowski browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
