# Two commands on a fresh machine with Python 3.11 and pip:
#   make demo   create .venv, install orca_jax, generate mini-Orca, train, evaluate (~10 minutes on 2 cores)
#   make test   create .venv, install orca_jax with test extras, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test lint install

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	@if [ -f $(DEMO_DIR)/data/train.jsonl ]; then echo "reusing data in $(DEMO_DIR)/data"; \
	else $(BIN)/orca-data generate-mini --out $(DEMO_DIR)/data; fi
	$(BIN)/orca-train --gin_file=configs/runs/mini_orca.gin --gin.MODEL_DIR=$(DEMO_DIR)/model --gin.DATA_DIR=$(DEMO_DIR)/data
	$(BIN)/orca-eval --gin_file=configs/runs/eval_mini.gin --gin.CHECKPOINT_DIR=$(DEMO_DIR)/model --gin.DATA_DIR=$(DEMO_DIR)/data
	@echo
	@echo "Where everything went:"
	@echo "  data          $(DEMO_DIR)/data/{train,heldout}.jsonl, heldout_bbh.json"
	@echo "  config        $(DEMO_DIR)/model/config.gin"
	@echo "  checkpoints   $(DEMO_DIR)/model/checkpoints/"
	@echo "  metrics       $(DEMO_DIR)/model/metrics.jsonl, TensorBoard: tensorboard --logdir $(DEMO_DIR)/model/tensorboard"
	@echo "  evaluation    $(DEMO_DIR)/model/eval/ (metrics JSON, one line per question in inferences JSONL)"
	@echo "Run 'make demo' again to resume and re-evaluate; delete $(DEMO_DIR)/ to start over."

test: $(STAMP)
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check orca_jax tests benchmarks
