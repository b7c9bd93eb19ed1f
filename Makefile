# Two entry points: `make demo` (the main job) and `make test` (the test suite).
# On a machine whose python3 already has torch with a CUDA GPU, nothing is installed and kernels run
# compiled. Anywhere else a pinned CPU setup is made in .venv and kernels run in Triton's interpreter.
SHELL := /bin/bash
GPU := $(shell python3 -c 'import torch, triton, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1 && echo 1)
ifeq ($(GPU),1)
PY := python3
RUN := PYTHONPATH=$(CURDIR)/src
SETUP :=
else
PY := $(CURDIR)/.venv/bin/python
RUN := PYTHONPATH=$(CURDIR)/src TRITON_INTERPRET=1
SETUP := .venv/.installed
endif
JOBS ?= 2

.PHONY: demo test gpu-check lint
demo: $(SETUP)
	$(RUN) $(PY) -m trifuse demo

test: $(SETUP)
	$(RUN) $(PY) -m pytest -n $(JOBS) tests

gpu-check:
	bash scripts/gpu_check.sh

lint: $(SETUP)
	$(PY) -m ruff check src tests

.venv/.installed: requirements-cpu.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements-cpu.txt ruff
	touch $@
