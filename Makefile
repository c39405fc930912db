# Everything installs itself: `make demo` and `make test` work on a fresh machine,
# offline beside ../shared, elsewhere downloading weights and photos once (verified, cached).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

# Offline machines (dev, CI) keep real ImageNet weights beside the checkout.
SHARED := $(abspath ../shared)
ifneq ($(wildcard $(SHARED)/weights/imagenet_class_index.json),)
export MTL_WEIGHTS_DIR ?= $(SHARED)/weights
endif
# Keras' default width; ../shared holds 1.0 and 0.75 (the fast option: README, Benchmarks).
ALPHA ?= 1.0
# Without ../shared, DATA stays empty: the demo runs `mtl fetch --dataset hymenoptera`.
ifneq ($(wildcard $(SHARED)/data/hymenoptera/train),)
export MTL_DATA_DIR ?= $(SHARED)/data
DATA ?= $(SHARED)/data/hymenoptera/train
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help install demo test test-unit check bench bench-accuracy bench-review browser clean

help:
	@echo "make demo   - set up .venv and run mtl end to end on real photos"
	@echo "make test   - set up .venv with the test extra and run the tests"
	@echo "make test-unit - the unit layer only (tests/unit: no TensorFlow, no weights; seconds)"
	@echo "make check  - ruff (lint + format check) and mypy on mtl/"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make bench-accuracy - held-out accuracy: mtl vs the Keras recipe and a linear probe"
	@echo "make bench-review - mtl review on injected noise (bench/review_noise.results.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The full set: `pip install mtl` alone is the light, inference-only install (docs/install.md).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[all]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	MTL_ALPHA=$(ALPHA) DATA=$(DATA) BIN=$(BIN) bash scripts/demo.sh

# The review page is checked in a real headless Chromium (tests/test_review.py). pip has no
# Chromium that runs offline, so: Debian's, installed when root may (best effort; the test
# skips, saying why, where there is none). NO_BROWSER=1 skips the attempt.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || [ -n "$(NO_BROWSER)" ] || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
	  || (apt-get install -y -q chromium >/dev/null 2>&1 \
	      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "no Chromium: the review page test will be skipped"

test: $(VENV)/.installed-test browser
	$(BIN)/python -m tests.assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit layer (tests/README.md): neither TensorFlow nor weights, so neither is looked
# for. An existing venv that has pytest is used as it is (VENV=... points at one);
# only a missing one is installed.
test-unit: | $(BIN)/python
	@$(BIN)/python -c "import pytest" 2>/dev/null || $(MAKE) --no-print-directory $(VENV)/.installed-test
	env -u MTL_WEIGHTS_DIR -u MTL_DATA_DIR $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# ... and the import contract (docs/architecture.md, "Layering rules"): tests/unit/test_imports.py.
check: $(VENV)/.installed-test
	$(BIN)/ruff check mtl tests bench
	$(BIN)/ruff format --check mtl tests bench
	$(BIN)/mypy mtl
	$(BIN)/python -m pytest -q tests/unit/test_imports.py

# Benchmarks run where a user's `pip install 'mtl[train]'` lands: runtime dependencies only.
# (TensorFlow and Keras import JAX and scikit-learn when present: the test extra
# would add ~1.7 s to every TensorFlow start, in both arms.)
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[train]'
	touch $@

bench: $(BENCH_VENV)/.installed
	$(if $(DATA),,$(error bench: set DATA=folder-per-class photos, e.g. DATA=demo/data/hymenoptera/train after make demo))
	$(BENCH_VENV)/bin/python bench/train_vs_naive.py --data $(DATA) --alpha $(ALPHA) --repeat 3
	$(BENCH_VENV)/bin/python bench/predict_vs_naive.py --data $(DATA) --alpha $(ALPHA)

# Held-out accuracy of mtl's defaults against the plain Keras recipe and a linear probe,
# on every shared dataset plus scikit-learn's digits, 6 seeds each (docs/benchmarks.md#accuracy).
bench-accuracy: $(VENV)/.installed-test
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/accuracy.py --alpha $(ALPHA) --seeds 6 \
	  --datasets hymenoptera,clothing,digits --arms mtl,mtl_noprior,probe,probe_cv,recipe

# mtl review on injected noise (swapped labels, off-topic photos) in both shared datasets.
bench-review: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/review_noise.py --alpha $(ALPHA) --shared $(SHARED)/data

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs demo .pytest_cache .mypy_cache .ruff_cache
