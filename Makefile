# The only entry points of the study. `make setup && make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DELETE_ON_ERROR:

PROFILE ?= cpu
NB ?= 00_upstream
RUN ?= main
# Runs at once in `make runs` / `make book`. The smoke runs are mostly single-threaded Python
# and kernel start-up, so two at once nearly halve the smoke book; the cpu runs keep both cores
# busy, where two at once would only inflate the wall time each run records on its page.
JOBS ?= $(if $(filter smoke,$(PROFILE)),2,1)
VENV := .venv
PY := $(VENV)/bin/python
export TQDM_DISABLE ?= 1
export PYTHONHASHSEED := 0

.PHONY: setup test run runs book check bench clean help

help:
	@echo "make setup                      create .venv with the pinned dependencies"
	@echo "make test                       run the test suite"
	@echo "make run NB=<nb> RUN=<run> PROFILE=<profile>   execute one notebook run"
	@echo "make book [PROFILE=cpu] [JOBS=n] every run in dependency order, then the book in _build/html"
	@echo "make check                      validate every config of every profile"
	@echo "make bench                      print benchmark ratios"

$(PY):
	python3 -m venv $(VENV)

setup: $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --progress-bar off \
		-c constraints.txt -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	@$(PY) -c "import torch, torchvision, timm, torch_pruning, openTSNE, jupyter_book; \
		print('setup ok: torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"

test:
	$(PY) -m pytest -q

run:
	$(PY) -m compstudy.runner run $(NB) $(RUN) --profile $(PROFILE)

runs:
	$(PY) -m compstudy.runner all --profile $(PROFILE) --jobs $(JOBS)

# --all: when no page is out of date Sphinx stops before copying book/_static, so an edit to the
# book's CSS alone would never reach _build/html; rendering every page takes about 4 s.
book: runs
	$(VENV)/bin/jupyter-book build book -n -W --keep-going -q --all

check:
	$(PY) -m compstudy.runner check

bench:
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script; done

clean:
	rm -rf _build book/runs results
