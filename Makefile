# The two set-up commands for a fresh machine: `make demo` (the light install: ONNX Runtime, no PyTorch) and
# `make test` (everything: PyTorch, the optional extras and the test tools). Both use .venv; `make test` after
# `make demo` adds to it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LIGHT := $(VENV)/.installed-light
DEV := $(VENV)/.installed-dev

.PHONY: demo test install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null

$(LIGHT): $(PY) pyproject.toml
	$(PY) -m pip install -e .
	touch $(LIGHT)

$(DEV): $(PY) pyproject.toml
	$(PY) -m pip install -e ".[dev]"
	touch $(DEV) $(LIGHT)

install: $(LIGHT)

install-dev: $(DEV)

demo: $(LIGHT)
	$(VENV)/bin/defocus predict examples -o outputs --save prob,mask,overlay

test: $(DEV)
	$(PY) -m pytest -n 2 tests

clean:
	rm -rf $(VENV) outputs
