# Thin: every target calls `attend …` or pytest. The virtualenv is created on first use.
PYTHON ?= python3
VENV   ?= .venv
PRESET ?= default
TEST_WORKERS ?= 2
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install train prepare test lint bench serve tensorboard screenshot browser clean

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
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10 $(ARGS)

bench: $(STAMP)
	$(BIN)/attend bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app tests docs
	$(BIN)/ruff format --check app tests docs
	$(BIN)/lint-imports

# the newest run's export, with TF Serving's REST (8501) and gRPC (8500) APIs and a page at http://127.0.0.1:8501/
SERVE_RUN ?= $(shell ls -td models/*/ 2>/dev/null | head -1)
serve: $(STAMP)
	test -n "$(SERVE_RUN)" || (echo "no run in models/: make train first, or make serve SERVE_RUN=DIR" && false)
	$(BIN)/attend serve $(SERVE_RUN) $(ARGS)

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir models/

# docs/tensorboard.png (in the README): TensorBoard's Custom Scalars tab of RUN in headless Chromium
# (Debian's chromium and chromium-driver, installed here if missing; selenium comes with .[dev])
RUN ?= $(lastword $(sort $(wildcard models/smoke-*)))
screenshot: $(STAMP) browser
	test -n "$(RUN)" || (echo "no models/smoke-* run: make train PRESET=smoke, or make screenshot RUN=DIR" && false)
	$(BIN)/python docs/tensorboard_screenshot.py $(RUN) docs/tensorboard.png

# Debian's chromium and chromium-driver (root), for the screenshot and the TensorBoard page test
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
