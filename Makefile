# Thin: every target calls `attend …` or pytest. The virtualenv is created on first use.
PYTHON ?= python3
VENV   ?= .venv
PRESET ?= default
TEST_WORKERS ?= 2
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install train prepare test lint bench tensorboard clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

prepare: $(STAMP)
	$(BIN)/attend prepare --preset $(PRESET)

train: $(STAMP)
	$(BIN)/attend train --preset $(PRESET) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

bench: $(STAMP)
	$(BIN)/attend bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/lint-imports

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir models/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
