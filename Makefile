# Every target sets itself up: the first run makes .venv and installs the project — `make demo`
# only what the demo needs, every other target the dev extra too, into the same venv; later runs
# reinstall only when pyproject.toml's content changed (nbdev-export rewrites the file, so its
# date alone says nothing: each stamp holds the content's hash).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.wakea-installed-dev
DEMO_STAMP := $(VENV)/.wakea-installed
NB ?= nbs/index.ipynb nbs/[0-9]*.ipynb
# No progress bars in stored notebook outputs or test logs (the demo shows its progress).
QUIET := WAKEA_QUIET=1

.PHONY: help install demo test check pytest lab docs bench nbs

help:
	@echo "make demo   generate TinyWorld and run the course pipeline, artefacts under runs/"
	@echo "make test   sync checks, nbval on every notebook, pytest on tests/, wheel smoke test"
	@echo "make lab    JupyterLab on nbs/"
	@echo "make docs   the Quarto site (processed notebooks only where quarto is missing)"
	@echo "make bench  every bench/*.py but the shared _timing.py, one JSON object each"
	@echo "make nbs    re-execute notebooks in place (NB=nbs/01_world.ipynb for one)"

# $(call install,EXTRA,STAMP): pip install -e .EXTRA unless STAMP holds pyproject.toml's hash
define install
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "wakea-edu needs Python 3.10 or newer"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@hash=$$($(BIN)/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())'); \
	if [ "$$(cat $(2) 2>/dev/null)" = "$$hash" ]; then touch $(2); else \
	  echo "$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.$(1)'" && \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.$(1)' && echo "$$hash" > $(2); fi
endef

$(DEMO_STAMP): pyproject.toml
	$(call install,,$(DEMO_STAMP))

$(STAMP): pyproject.toml
	$(call install,[dev],$(STAMP))
	@cp $(STAMP) $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/wakea-edu demo --out runs/demo

test: check pytest

# The generated parts of the repo must be what their sources make.
check: $(STAMP)
	$(BIN)/nbdev-export
	@git diff --exit-code --stat -- wakea_edu || { echo "wakea_edu/ is out of sync with nbs/: run nbdev-export and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- wakea_edu)" || { git status --short -- wakea_edu; echo "untracked exported files: commit them"; exit 1; }
	@tmp=$$(mktemp -d) && $(BIN)/wakea-edu world generate --out $$tmp/tinyworld >/dev/null && \
	  diff -r --exclude=README.md datasets/tinyworld $$tmp/tinyworld && rm -rf $$tmp && echo "datasets/ regenerates byte-identically" \
	  || { echo "datasets/tinyworld does not match 'wakea-edu world generate': regenerate and commit"; exit 1; }
	@tmp=$$(mktemp -d) && $(BIN)/wakea-edu exercises build --out $$tmp >/dev/null && \
	  diff -r exercises $$tmp && rm -rf $$tmp && echo "exercises/ regenerates byte-identically" \
	  || { echo "exercises/ is out of date with solutions/: run 'wakea-edu exercises build' and commit"; exit 1; }
	$(BIN)/ruff check --select F --quiet wakea_edu tests bench tools conftest.py
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/python tools/docs.py --check

pytest: $(STAMP)
	$(QUIET) OMP_NUM_THREADS=1 WAKEA_FAST=1 $(BIN)/python -m pytest -n 2 --dist loadfile \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider nbs tests

lab: $(STAMP)
	$(BIN)/jupyter lab nbs

docs: $(STAMP)
	$(BIN)/python tools/docs.py

bench: $(STAMP)
	@for f in bench/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

nbs: $(STAMP)
	@for nb in $(NB); do echo "== $$nb"; \
	  $(QUIET) $(BIN)/jupyter nbconvert --log-level=WARN --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 \
	    --ExecutePreprocessor.store_widget_state=False $$nb || exit 1; done
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
