# The two set-up commands of the README: `make demo` (a search on the embedded synthetic data set)
# and `make test`. Both create the virtual environment on first use, from requirements.lock: the one
# pinned set that the laptop, CI and every cluster node install (`make lock` refreshes it).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The packages of PyPI's CUDA torch wheel that a CPU install leaves out (GPU nodes take them too).
CUDA_ONLY := ^(nvidia-|cuda-|triton==)
# The lock's own record of its pins (`make lock` writes it): a hand-edited pin is refused.
PINS_SHA = grep -E '^[A-Za-z0-9._-]+==' $(LOCK) | sha256sum | cut -d' ' -f1
UV := $(shell sed -n 's/^uv==//p' $(LOCK))

.PHONY: demo test test-fast install lock lint clean

# A fresh venv every time the lock or pyproject.toml changes, so nothing stale stays in it.
$(STAMP): pyproject.toml $(LOCK)
	@grep -qx "# pins sha256: $$($(PINS_SHA))" $(LOCK) || \
	  { echo "error: $(LOCK): its pins do not match its 'pins sha256' line; run 'make lock'" >&2; exit 2; }
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU build of the lock's version where one is at hand (a local wheel), so that
	# nothing pulls the multi-GB CUDA build; then every other pin exactly, without resolving again.
	$(BIN)/pip install -q "torch==$$(sed -n 's/^torch==//p' $(LOCK))"
	grep -vE '$(CUDA_ONLY)' $(LOCK) > $(VENV)/lock-cpu.txt
	$(BIN)/pip install -q --no-deps -r $(VENV)/lock-cpu.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve pyproject.toml (with its dev extra) and requirements.in into the lock for Python 3.11 on
# Linux x86_64, keeping every pin that still fits; needs the package index. Then `make install`.
lock:
	$(PY) -m venv .cache/uv && .cache/uv/bin/pip install -q "uv==$(UV)"
	.cache/uv/bin/uv pip compile -q pyproject.toml requirements.in --extra dev -o $(LOCK) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28
	echo "# pins sha256: $$($(PINS_SHA))" >> $(LOCK)

demo: $(STAMP)
	$(BIN)/python -m uclser_tune.search --space smoke.yaml --data synthetic

# Two pytest-xdist workers, each test file whole in one of them (a module's Ray cluster stays with its
# tests; tests/conftest.py makes the shared store and smoke search once for both). The suite waits on
# processes and clusters much of the time, so 2 workers on 2 cores take about 2/3 of one worker's time.
XDIST := -n 2 --dist loadfile

# The whole suite: what CI runs (.ci/run), every test including the searches and the local clusters.
test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

# The inner loop: the tests not marked slow (no search, no Ray cluster, no CLI run end to end), under
# 2 minutes on 2 cores. CI runs `make test`, not this.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check uclser_tune analysis tests benchmarks experiments

clean:
	rm -rf $(VENV)
