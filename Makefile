# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: quickstart test install bench clean

# The stamp is rebuilt whenever pyproject.toml changes, so a fresh clone installs once.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(BIN)/vidzoo quickstart --out runs/quickstart

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/decode.py

clean:
	rm -rf runs .pytest_cache
