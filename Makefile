# Two entry points: `make demo` and `make test`. Both create .venv and install the
# pinned stack (constraints.txt) on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.labelwise-installed
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-all test-reliability venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch torchvision
	$(PIP_INSTALL) mmcv-lite -e '.[mm,timm,onnx,plot,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m labelwise demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# crash recovery (kill -9), determinism and data-safety tests, all of them (docs/reliability.md)
test-reliability: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m reliability $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
