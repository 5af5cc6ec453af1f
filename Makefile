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

.PHONY: install
install: $(PY) ## create .venv and install nnsight (builds the Rust extension) with dev tools
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

.PHONY: install-demo
install-demo: $(PY) ## install nnsight with the `language` extra only (what the demo needs)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[language]'

.PHONY: demo
demo: install-demo ## run the demo: LanguageModel on a small GPT-2 built locally, read, patch, generate, gradients
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
		tests/test_tutorials_02.py

.PHONY: test
test: lint test-rust test-python test-transformers4 ## everything CI runs: lints, Rust tests, Python tests (transformers 5 and 4)

.PHONY: bench
bench: install ## Python benchmark of the public API against the pure-Python reference
	$(PY) benches/bench_tracing.py

.PHONY: bench-models
bench-models: install ## End-to-end model benchmarks: traces vs plain forward hooks
	$(PY) benches/bench_models.py

.PHONY: bench-language
bench-language: install ## LanguageModel: generate vs hooks, wrapping a 7B config, shapes on demand
	cd benches && $(abspath $(PY)) bench_language.py

.PHONY: bench-callgrind
bench-callgrind: install ## The close model benchmarks counted in instructions (needs valgrind)
	$(PY) benches/count_instructions.py

.PHONY: bench-rust
bench-rust: ## criterion benchmark of the scheduler (node completions per second)
	cargo bench --bench scheduler
