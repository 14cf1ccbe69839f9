# Two commands: `make test` and `make train`. Both create .venv when it is missing and install the pinned
# requirements into it; a stamp file makes the install happen again only when requirements.txt changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test train bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) bench/tokenizer.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
