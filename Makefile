# Two entry points for a fresh machine: `make run` (install + demo) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast install bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Install, then run the whole stack on the built-in demo scene (output in out/demo).
run: $(STAMP)
	$(BIN)/agegender run --out out/demo

## Install, then run every test (real processes, sockets, clips from ../shared).
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600

## Only the quick tests (no `slow` marker).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --timeout=300

## Pipeline benchmark on the 720p clip (prints JSON).
bench: $(STAMP)
	$(BIN)/python -m bench.pipeline --source ../shared/videos/walking-and-pause-720p-loop.mp4 --baseline serial

clean:
	rm -rf $(VENV) out .pytest_cache
