# seglab: `make train` and `make test` each work on a fresh machine with only Python and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install train test bench compile-check lint format clean

# Creates .venv and installs seglab with its dev, pretrained and trackers extras; re-runs only
# when pyproject.toml changes, so a second call is instant.
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,pretrained,trackers]"
	touch $(STAMP)

# The default training run: the built-in shapes dataset and a small U-Net.
train: install
	$(BIN)/python src/train.py $(ARGS)

# Two pytest workers (pytest-xdist; tests are mostly single-threaded Python); the slowest
# tests are listed at the end. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=15 $(ARGS)

# The model table of docs/performance.md: every model config through the benchmark command, same settings
# (256x256 crops of the built-in dataset, batch 4, the default precision), then a markdown
# table of outputs/bench/*/benchmark.json. BENCH_MODELS / BENCH_ARGS narrow or change it.
# (the semantic models; Mask R-CNN, task=instance, maskrcnn_*, is not benchmarked; _*.yaml are
# base configs that the others pull in)
BENCH_MODELS ?= $(filter-out maskrcnn_% _%,$(basename $(notdir $(wildcard conf/model/*.yaml))))
BENCH_ARGS ?= data.crop_size=256 data.dataset.min_size.train=256 \
	data.dataset.max_size.train=256 data.batch_size=4 bench.warmup=2 bench.steps=2 \
	bench.repeats=4 bench.onnx=false bench.loader_batches=5
bench: install
	for m in $(BENCH_MODELS); do \
		$(BIN)/python src/benchmark.py model=$$m $(BENCH_ARGS) hydra.run.dir=outputs/bench/$$m \
		|| exit 1; done
	$(BIN)/python -m seglab.benchmark outputs/bench

# torch.compile for every model config: one fast dev run each (a training and a validation
# step, compiled), at the default precision; prints ok / FAILED / TIMEOUT per model and the
# time. COMPILE_TIMEOUT (s) stops a model whose compilation does not end.
COMPILE_ARGS ?= debug=fdr data.crop_size=64 data.dataset.min_size.train=64 \
	data.dataset.max_size.train=64 data.batch_size=2 logger=csv \
	callbacks.rich_progress_bar=null callbacks.model_summary=null
COMPILE_TIMEOUT ?= 1200
compile-check: install
	@mkdir -p outputs
	@for m in $(BENCH_MODELS); do \
		start=$$(date +%s); \
		timeout $(COMPILE_TIMEOUT) $(BIN)/python src/train.py model=$$m model.compile=true \
			model.pretrained=false $(COMPILE_ARGS) hydra.run.dir=outputs/compile/$$m \
			> outputs/compile-$$m.log 2>&1; rc=$$?; t=$$(( $$(date +%s) - start )); \
		if [ $$rc = 0 ]; then echo "$$m ok $$t s"; \
		elif [ $$rc = 124 ]; then echo "$$m TIMEOUT $$t s (outputs/compile-$$m.log)"; \
		else echo "$$m FAILED $$t s (outputs/compile-$$m.log)"; fi; \
	done

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: install
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
