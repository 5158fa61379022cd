# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: quickstart test install bench clean

# Test-only: PyTorchVideo's X3D, the reference tests/test_x3d.py compares vidzoo's with, and what
# its models import. --no-deps: PyTorchVideo's own requirements add packages its models never use
# (networkx, parameterized); the ones fvcore and iopath need beyond these come with vidzoo.
X3D_REFERENCE := pytorchvideo==0.1.5 fvcore==0.1.5.post20221221 iopath==0.1.10 portalocker yacs tabulate termcolor

# The stamp is rebuilt whenever pyproject.toml or this file changes, so a fresh clone installs once.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m pip install --no-deps $(X3D_REFERENCE)
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
