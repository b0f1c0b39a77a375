# Two commands for a new machine: `make demo` (train, translate, score) and `make test`.
PYTHON ?= python3
VENV ?= .venv
NMT := $(VENV)/bin/nmt
RUN ?= runs/demo
CONFIG ?= configs/multi30k_de_en.yaml
MULTI30K_DIR ?= ../shared/data/multi30k
TEST_SPLIT := test_2016_flickr

.PHONY: setup demo data test lint format smoke clean

setup: $(VENV)/.installed

# torch is installed first and pinned on machines without a GPU: an unpinned
# torch from PyPI is a multi-GB CUDA build; 2.13.0 is the CPU wheel we test on.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(VENV)/bin/pip install -q torch; \
	else $(VENV)/bin/pip install -q torch==2.13.0; fi
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

data:
	@MULTI30K_DIR=$(MULTI30K_DIR) bash scripts/prepare_data.sh

# Train (or finish an interrupted run), then translate its test split (data.test) and
# score it: RUN/test_2016_flickr.hyp.en and RUN/bleu.json.
demo: setup
	@set -e; dir=$$(MULTI30K_DIR=$(MULTI30K_DIR) bash scripts/prepare_data.sh); \
	if [ -f $(RUN)/config.yaml ]; then $(NMT) train --resume --out $(RUN); \
	else $(NMT) train $(CONFIG) --out $(RUN) data.train=$$dir/train data.valid=$$dir/val \
		data.test=$$dir/$(TEST_SPLIT); fi; \
	$(NMT) evaluate --model $(RUN) --format json -o $(RUN)/bleu.json \
		--translations $(RUN)/$(TEST_SPLIT).hyp.en

test: setup
	$(VENV)/bin/ruff check nmt tests scripts
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check nmt tests scripts
	$(VENV)/bin/ruff format --check nmt tests scripts

format: setup
	$(VENV)/bin/ruff format nmt tests scripts
	$(VENV)/bin/ruff check --fix nmt tests scripts

smoke: setup
	$(NMT) train configs/tiny.yaml --out runs/smoke train.max_steps=20

clean:
	rm -rf runs/smoke .pytest_cache .ruff_cache .hypothesis
