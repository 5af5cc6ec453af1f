# Every target installs what it needs first, so each works on a fresh machine.
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

.PHONY: install
install: $(PY) ## create .venv and install nnsight (builds the Rust extension) with dev tools
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

.PHONY: demo
demo: install ## run the demo: build a graph by hand, run it, show what ran and was freed
	$(PY) -m nnsight

.PHONY: lint
lint: install ## rustfmt, clippy (with and without the bindings), ruff, mypy, stubtest of _core.pyi
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features python --lib -- -D warnings
	$(PY) -m ruff check nnsight tests benches
	$(PY) -m ruff format --check nnsight tests benches
	$(PY) -m mypy nnsight
	$(PY) -m mypy.stubtest nnsight._core

.PHONY: test-rust
test-rust: ## Rust unit tests of the pure graph core (no Python needed)
	cargo test

.PHONY: test-python
test-python: install ## Python test suite
	$(PY) -m pytest

.PHONY: test
test: lint test-rust test-python ## everything CI runs: lints, Rust tests, Python tests

.PHONY: bench
bench: install ## Python benchmark of the public API against the pure-Python reference
	$(PY) benches/bench_tracing.py

.PHONY: bench-models
bench-models: install ## End-to-end model benchmarks: traces vs plain forward hooks
	$(PY) benches/bench_models.py

.PHONY: bench-callgrind
bench-callgrind: install ## The close model benchmarks counted in instructions (needs valgrind)
	$(PY) benches/count_instructions.py

.PHONY: bench-rust
bench-rust: ## criterion benchmark of the scheduler (node completions per second)
	cargo bench --bench scheduler
