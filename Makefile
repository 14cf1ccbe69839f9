# Two commands: `make test` and `make train`. Both create .venv when it is missing and install the pinned
# requirements into it; a stamp file makes the install happen again only when requirements.txt changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test train lesson-model lesson-check bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

# -rs: the summary names every skipped test and why (the browser tests need Chromium: see the README).
test: $(STAMP)
	$(PY) -m pytest -q -rs tests

# The small preset on the shipped sample, on the CPU, offline. Each run gets its own directory (train.py
# refuses to overwrite a run); --time-budget caps the wall time on a slow or busy machine. When it has trained,
# runs/latest points at it: `python generate.py "soru"` and the README's examples read that name.
# PyTorch uses every core by default. On a machine whose cores are busy with other work, two OpenMP threads
# wait on each other and a single thread is much faster: make train TRAIN_FLAGS="--threads 1".
RUN ?= runs/small-$(shell date +%Y%m%d-%H%M%S)
override RUN := $(RUN)
TRAIN_FLAGS ?=
LATEST := runs/latest
train: $(STAMP)
	$(PY) train.py --config small --device cpu --data data/sample.json --out $(RUN) --time-budget 5 --link-latest $(LATEST) $(TRAIN_FLAGS)

# The lesson's model: the same recipe as `make train`, but a fixed number of steps on one thread and no time
# budget, so that every reader (and CI) trains the same model and gets the chapters' numbers. The stage blocks
# in lesson/ were printed from it; lesson-check trains it afresh and compares every number of every stage block
# to 3 significant digits (about 10 minutes on one core).
LESSON := runs/lesson
lesson-model: $(LESSON)/model.pt
$(LESSON)/model.pt: | $(STAMP)
	$(PY) train.py --config small --device cpu --data data/sample.json --out $(LESSON) --max-steps 500 --threads 1

lesson-check: lesson-model
	$(PY) -m minillm.machinery.chapters --check --stages $(LESSON) --digits 3

# Each benchmark prints its figures and the ratio to a peer measured in the same run.
bench: $(STAMP)
	$(PY) bench/tokenizer.py
	$(PY) bench/data.py
	$(PY) bench/model.py
	$(PY) bench/generate.py

# The CUDA tests, two bf16 training runs of the base preset (without and with torch.compile) and the generation
# benchmark on the GPU (with the compiled decode step: never run on a GPU yet), with a PASS/FAIL summary; it was
# planned for under 8 minutes on one H100/H200. DEVICE=cpu: a short dry run.
DEVICE ?= cuda
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py --device $(DEVICE)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
