# Two commands on a fresh machine with Python 3.11 and pip:
#   make demo   create .venv, install orca_jax, generate mini-Orca, train, evaluate (under 5 minutes on 2 cores
#               once installed), and print the result beside the study's students (results/mini_orca.json)
#   make test   create .venv, install orca_jax with test extras, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TPU_STAMP := $(VENV)/.installed-tpu
DEMO_DIR ?= demo

.PHONY: demo test lint install replicate

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,lm_eval]"
	touch $(STAMP)

demo: $(STAMP)
	@if [ -f $(DEMO_DIR)/data/tokenizer.model ]; then echo "reusing data in $(DEMO_DIR)/data"; \
	else $(BIN)/orca-data generate-mini --out $(DEMO_DIR)/data; fi
	$(BIN)/orca-train --gin_file=configs/runs/mini_orca.gin --gin.MODEL_DIR=$(DEMO_DIR)/model --gin.DATA_DIR=$(DEMO_DIR)/data
	$(BIN)/orca-eval --gin_file=configs/runs/eval_mini.gin --gin.CHECKPOINT_DIR=$(DEMO_DIR)/model --gin.DATA_DIR=$(DEMO_DIR)/data
	@echo
	$(BIN)/python -m orca_jax.cli.replicate --compare $(DEMO_DIR)/model --results results
	@echo
	@echo "Where everything went:"
	@echo "  data          $(DEMO_DIR)/data/train_{strong,intermediate,answer_only}.jsonl, heldout.jsonl, bbh/, bbh_hard/,"
	@echo "                tokenizer.model, manifest.json"
	@echo "  config        $(DEMO_DIR)/model/config.gin"
	@echo "  checkpoints   $(DEMO_DIR)/model/checkpoints/"
	@echo "  metrics       $(DEMO_DIR)/model/metrics.jsonl, TensorBoard: tensorboard --logdir $(DEMO_DIR)/model/tensorboard"
	@echo "  evaluation    $(DEMO_DIR)/model/eval/ (metrics JSON, one line per question in inferences JSONL)"
	@echo "Run 'make demo' again to resume and re-evaluate; delete $(DEMO_DIR)/ to start over."
	@echo "Explanations against answers alone, over 3 seeds: make replicate (see the README for its cost)."

# The mini-Orca study: three students (answer-only, explanations, progressive) x 3 seeds, trained and
# evaluated with the binaries; writes results/mini_orca.{md,json,png}. About 45 minutes on 2 cores.
replicate: $(STAMP)
	$(BIN)/python -m orca_jax.cli.replicate --seeds 0,1,2 --work replicate_runs --results results

# The tests also compile for real TPU topologies on this CPU, through libtpu (the `tpu` extra).
$(TPU_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,tpu,lm_eval]"
	touch $(TPU_STAMP)

test: $(TPU_STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses=4 --dist loadfile tests

lint: $(STAMP)
	$(BIN)/ruff check orca_jax tests benchmarks
	$(BIN)/ruff format --check orca_jax tests benchmarks
