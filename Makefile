# Every target installs what it needs first, so each works on a fresh machine.
.DEFAULT_GOAL := help
# The virtual environment you have activated, else .venv (created on first use).
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

# What an install depends on: with an editable install Python edits are live, so only these
# make a new build (of the Rust extension) worth its 30 s. A stamp per extra and environment.
BUILD_INPUTS := pyproject.toml Cargo.toml Cargo.lock $(shell find rust -name '*.rs')

$(VENV)/.nnsight-%.installed: $(BUILD_INPUTS) | $(PY)
	@echo "installing nnsight with '.[$*]' into $(VENV) (the first time, torch is a few GB)"
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[$*]'
	@touch $@

.PHONY: tools
tools: ## check what the demo needs: python3 >= 3.10, cargo and rustc >= 1.95
	@command -v python3 >/dev/null || { echo "make: python3 is missing: install Python 3.10 or later"; exit 1; }
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "make: Python 3.10 or later is needed, python3 is $$(python3 --version)"; exit 1; }
	@command -v cargo >/dev/null && command -v rustc >/dev/null || { echo "make: cargo is missing: install Rust 1.95 or later (https://rustup.rs)"; exit 1; }
	@rustc --version | python3 -c 'import sys; v = sys.stdin.read().split()[1]; sys.exit(tuple(map(int, v.split(".")[:2])) < (1, 95))' || { echo "make: Rust 1.95 or later is needed, rustc is $$(rustc --version): rustup update"; exit 1; }

.PHONY: test-tools
test-tools: tools ## check what make test needs besides: rustfmt and clippy
	@cargo fmt --version >/dev/null 2>&1 || { echo "make: rustfmt is missing: rustup component add rustfmt"; exit 1; }
	@cargo clippy --version >/dev/null 2>&1 || { echo "make: clippy is missing: rustup component add clippy"; exit 1; }

.PHONY: install
install: test-tools $(VENV)/.nnsight-dev.installed ## install nnsight (builds the Rust extension) with the dev tools, if not up to date

.PHONY: install-demo
install-demo: tools $(VENV)/.nnsight-language.installed ## install nnsight with the `language` extra only (what the demo needs), if not up to date

.PHONY: demo
demo: install-demo ## run the demo: LanguageModel on a small GPT-2 built locally, read, patch, generate, gradients
	$(PY) -m nnsight

.PHONY: lint
lint: install ## rustfmt, clippy (with and without the bindings), ruff, mypy, stubtest of _core.pyi
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features python --lib -- -D warnings
	$(PY) -m ruff check nnsight tests benches examples
	$(PY) -m ruff format --check nnsight tests benches examples
	$(PY) -m mypy nnsight
	$(PY) -m mypy.stubtest nnsight._core

.PHONY: test-rust
test-rust: tools ## Rust unit tests of the pure graph core (no Python needed)
	cargo test

.PHONY: test-python
test-python: install ## Python test suite
	$(PY) -m pytest

# transformers 4.x, installed beside .venv's 5.x and put first on the path for the tests of
# Hugging Face models (GPT-2 blocks return a tuple in 4.x and a tensor in 5.x).
TF4 := .venv-transformers4

.PHONY: test-transformers4
test-transformers4: install ## the Hugging Face tests again under transformers 4.x
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
		--target $(TF4) 'transformers>=4.57,<5' 'tokenizers>=0.22,<0.23' \
		'huggingface_hub>=0.34,<1.0' requests urllib3 idna charset_normalizer certifi
	PYTHONPATH=$(abspath $(TF4)) $(PY) -c \
		"import transformers as t; assert t.__version__.startswith('4.'), t.__version__"
	PYTHONPATH=$(abspath $(TF4)) $(PY) -m pytest tests/test_language_model.py \
		tests/test_transformers.py tests/test_generate.py tests/test_readme.py tests/test_demo.py \
		tests/test_tutorials_02.py tests/test_device_maps.py tests/test_skip.py tests/test_stop.py \
		tests/test_cache.py tests/test_steps.py tests/test_examples.py tests/test_edit.py

.PHONY: test-wire
test-wire: install ## the Python tests again, every trace sent through the wire format to an in-process worker
	NNSIGHT_WIRE_ROUNDTRIP=1 $(PY) -m pytest -p no:cacheprovider

.PHONY: test
test: lint test-rust test-python test-transformers4 test-wire ## everything CI runs: lints, Rust tests, Python tests (transformers 5 and 4, and over the wire)

.PHONY: bench
bench: install ## Python benchmark of the public API against the pure-Python reference
	$(PY) benches/bench_tracing.py

.PHONY: bench-models
bench-models: install ## End-to-end model benchmarks: traces vs plain forward hooks
	$(PY) benches/bench_models.py

.PHONY: bench-workflows
bench-workflows: install ## modern workflows: tracer.cache vs hooks, stop_early vs a full pass
	cd benches && $(abspath $(PY)) bench_workflows.py

.PHONY: bench-language
bench-language: install ## LanguageModel: generate vs hooks, wrapping a 7B config, shapes on demand
	cd benches && $(abspath $(PY)) bench_language.py

.PHONY: bench-remote
bench-remote: install ## the graph wire format (us and bytes per node), a remote round trip, a worker's throughput
	cd benches && $(abspath $(PY)) bench_remote.py

.PHONY: bench-callgrind
bench-callgrind: install ## The close model benchmarks counted in instructions (needs valgrind)
	$(PY) benches/count_instructions.py

.PHONY: bench-rust
bench-rust: ## criterion benchmark of the scheduler (node completions per second)
	cargo bench --bench scheduler
