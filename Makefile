# medbabel: one target per stage. `make help` lists them.
#   make setup   create .venv and install medbabel with its dev, ray, bench, kernels and lm-eval extras
#   make all     run every stage on the embedded sample (CONFIG=configs/demo.yaml, OUT=out)
#   make test    run the test suite (what CI runs); make test-fast: the in-process unit tests
# A stage re-runs only when its own config section, the registry, or an upstream stage changed:
# `python -m pipeline fingerprint` rewrites OUT/.fingerprints/<stage> only when its hash changed,
# and each stage's completion marker OUT/<stage>/.done depends on that file and on the upstream marker.

CONFIG ?= configs/demo.yaml
GRID ?= configs/sweeps/demo.yaml
OUT ?= out
VENV ?= .venv
PY ?= $(VENV)/bin/python
PYTHON_FOR_VENV ?= python3
# One token per `make` invocation: its stages share OUT's run lock (pipeline/run_lock.py), another run's fail.
RUN_TOKEN := $(shell od -An -N8 -tx8 /dev/urandom | tr -d ' ')
MEDBABEL = MEDBABEL_RUN=$(RUN_TOKEN) $(PY) -m pipeline
FP = $(OUT)/.fingerprints

STAGES := collect translate rewrite dedup langid families quality decontam shards train eval report

.DEFAULT_GOAL := help
.PHONY: help setup all sweep test test-fast bench lint clean FORCE $(STAGES)

help:
	@printf '%s\n' \
	  'medbabel targets (CONFIG=$(CONFIG) OUT=$(OUT)):' \
	  '  help       this list (the default target)' \
	  '  setup      create .venv: medbabel + dev, ray, bench, kernels, lm-eval extras at constraints.txt versions (CPU torch)' \
	  '  all        run every stage on CONFIG, ending with a short training run' \
	  '  collect    read every configured source into the record schema' \
	  '  translate  translate into target languages (translation memory, then an LLM endpoint)' \
	  '  rewrite    turn passages into QA pairs with an LLM (optional; enabled in the config)' \
	  '  dedup      exact + MinHash near-duplicate removal, per language' \
	  '  langid     fastText language ID and verification of declared languages' \
	  '  families   tag family, expert, expert id, tier from lang_families.yaml' \
	  '  quality    heuristic + medical-domain quality score, PII scrubbing' \
	  '  decontam   remove documents overlapping benchmark questions' \
	  '  shards     token counts, train/validation split, sharded Parquet + dataset card' \
	  '  train      upcycle a dense Qwen2 into family experts and train (Post-MoE)' \
	  '  eval       medical QA accuracy, perplexity, routing analysis' \
	  '  report     one HTML page for the whole run' \
	  '  sweep      train a grid of routing x upcycled layers (GRID=$(GRID)): one table and a plot' \
	  '  test       run the test suite (what CI runs)' \
	  '  test-fast  the in-process unit tests only (tests not marked slow)' \
	  '  bench      run the benchmarks under bench/ (writes bench/results/*.json)' \
	  '  lint       ruff' \
	  '  clean      remove OUT'

# Exact versions from constraints.txt (torch: the 2.13.0 CPU wheel, or a build you installed first).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON_FOR_VENV) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,ray,bench,kernels,lm-eval]'
	@touch $@

setup: $(VENV)/.installed

$(PY):
	@echo "error: $(PY) not found; run 'make setup' first" >&2; exit 2

# One recipe writes every stage's fingerprint file (grouped target, so `make -j` runs it once).
FINGERPRINTS := $(addprefix $(FP)/,$(STAGES))
$(FINGERPRINTS) &: FORCE | $(PY)
	@$(MEDBABEL) fingerprint --config $(CONFIG) --out $(OUT)

FORCE:

# stage_rule(stage, upstream stages)
define stage_rule
$(OUT)/$(1)/.done: $(FP)/$(1) $(foreach up,$(2),$(OUT)/$(up)/.done) | $(PY)
	$(MEDBABEL) run $(1) --config $(CONFIG) --out $(OUT)
$(1): $(OUT)/$(1)/.done
endef

$(eval $(call stage_rule,collect,))
$(eval $(call stage_rule,translate,collect))
$(eval $(call stage_rule,rewrite,collect))
$(eval $(call stage_rule,dedup,collect translate rewrite))
$(eval $(call stage_rule,langid,dedup))
$(eval $(call stage_rule,families,langid))
$(eval $(call stage_rule,quality,families))
$(eval $(call stage_rule,decontam,quality))
$(eval $(call stage_rule,shards,decontam))
$(eval $(call stage_rule,train,shards))
$(eval $(call stage_rule,eval,train))
$(eval $(call stage_rule,report,eval))

all: report
	@printf '%s\n' '' 'medbabel: every stage is done. Where to look:' \
	  '  report    $(OUT)/report/index.html      (the whole run on one page)' \
	  '  card      $(OUT)/shards/README.md       (dataset card; shards in $(OUT)/shards/data/)' \
	  '  model     $(OUT)/train/export/          (stock Qwen2MoeForCausalLM: transformers, vLLM)'

# The paper's experiments (moe_train/sweep.py): every cell of GRID trained on OUT/shards with one budget.
sweep: $(OUT)/shards/.done | $(PY)
	$(PY) -m moe_train.sweep --config $(CONFIG) --grid $(GRID) --out $(OUT)

test: | $(PY)
	$(PY) -m pytest -q

test-fast: | $(PY)
	$(PY) -m pytest -q -m "not slow"

bench: | $(PY)
	@set -e; for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script; done

lint: | $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(OUT)
