# One command to run the demo, one to run the tests. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test unit integration bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench,otel]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flow check workflows/*.flow
	$(BIN)/flow deploy workflows/*.flow
	$(BIN)/flow run workflows/hello.flow --local -p name=newcomer
	@echo "Flow is starting on http://127.0.0.1:$${PORT:-3030} (Ctrl-C stops it)"
	$(BIN)/flow up

test: $(STAMP)
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python -m bench.compile_bench
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .flow .pytest_cache
