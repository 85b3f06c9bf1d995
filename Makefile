# The two commands a new machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# DEMO_TRAFFIC=0 serves without the simulated audience (`keyart serve --demo-traffic`).
DEMO_TRAFFIC ?= 1

run: $(STAMP)
	$(BIN)/keyart db upgrade
	$(BIN)/keyart demo
	$(BIN)/keyart serve $(if $(filter 1,$(DEMO_TRAFFIC)),--demo-traffic)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var .pytest_cache
