# `make run` and `make test` are the only two commands a new user needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-stress bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fleet up

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the suite beside two busy loops (a loaded 2-core machine); tests/stress.py ends the loops with the run
test-stress: $(STAMP)
	$(BIN)/python tests/stress.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
