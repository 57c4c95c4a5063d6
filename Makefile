# Two commands set everything up: `make book` and `make test`. Each creates .venv (Python
# 3.11 or newer) when it is missing or older than requirements.txt, installs the pinned
# requirements there, and runs. Nothing is installed into your own Python.
PYTHON ?= python3
# `make full`: the suite's budget in minutes (it skips what no longer fits, and resumes)
MINUTES ?= 15
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements.sha256

.PHONY: book test lint full clean venv

venv: $(STAMP)

# The stamp holds requirements.txt's hash: a changed requirement rebuilds the environment.
$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: set PYTHON=python3.11")'
	@if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" = "$$(sha256sum requirements.txt | cut -d' ' -f1)" ]; then \
		touch $(STAMP); \
	else \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
		$(BIN)/pip install --quiet -r requirements.txt && \
		sha256sum requirements.txt | cut -d' ' -f1 > $(STAMP); \
	fi

book: venv        ## execute every chapter and render _build/html (strict: warnings fail)
	@$(BIN)/python -c 'import sys; from lowrank.data.fashion_mnist import data_problem; p = data_problem(); p and print(p, file=sys.stderr); sys.exit(2 if p else 0)'
	$(BIN)/jupyter-book build . -W -n --keep-going

test: venv        ## unit tests and every chapter's checks, cell by cell
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check

full: venv        ## on a GPU: the suite at full scale within MINUTES, then the book from it
	$(BIN)/python -m lowrank suite --scale full --minutes $(MINUTES) --out results
	LOWRANK_SCALE=full $(BIN)/jupyter-book build . -W -n --keep-going

clean:            ## the built book, the execution cache and quick-scale tables
	rm -rf _build results/*-quick.csv results/*-quick.json
