# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23" 

# torch is pinned to the local CPU build (see pyproject.toml); install it first so
# nothing resolves an unpinned torch with CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/bci demo

# The browser tests drive Debian's Chromium (Playwright's own browser download is
# blocked here); installed when missing and allowed (root), skipped by the tests otherwise.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && \
		  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) || \
		echo "chromium could not be installed: the browser tests will be skipped"

test: $(TEST_STAMP) browser
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) sessions build *.egg-info
