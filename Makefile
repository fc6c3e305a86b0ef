# One command to run the demo, one to run the tests. Both create .venv on first use.
# Installs take the exact versions of constraints.txt (what was tested); `make upgrade-deps` moves
# them forward within pyproject.toml's bounds, `make lock` re-pins after a dependency was added.
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
EXTRAS      := test,bench,otel
CONSTRAINTS := constraints.txt
LOCK_VENV   := .venv-lock

.PHONY: run test unit integration bench clean lock upgrade-deps _lock

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
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
	$(BIN)/pytest -q tests/unit workflows

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python -m bench.compile_bench
	$(BIN)/python -m bench.run

# A fresh venv, the newest versions within pyproject.toml's bounds, the unit tests (on the new
# pins: FLOW_CONSTRAINTS), then the pins replace constraints.txt. Run it on a schedule (monthly).
upgrade-deps:
	$(MAKE) --no-print-directory _lock LOCK_INSTALL="--upgrade --upgrade-strategy eager"

# A fresh venv with the current pins (plus anything new in pyproject.toml), the unit tests, the pins.
lock:
	$(MAKE) --no-print-directory _lock LOCK_INSTALL="-c $(CONSTRAINTS)"

_lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet $(LOCK_INSTALL) -e '.[$(EXTRAS)]'
	{ echo "# Exact versions tested with Flow, from \`make lock\` or \`make upgrade-deps\` (pip freeze of a"; \
	  echo "# fresh venv on Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'))."; \
	  echo "# Install with: pip install -c constraints.txt -e '.[$(EXTRAS)]'. Do not edit by hand."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | LC_ALL=C sort -f; } > $(CONSTRAINTS).new
	FLOW_CONSTRAINTS=$(CONSTRAINTS).new $(LOCK_VENV)/bin/pytest -q -p no:cacheprovider tests/unit \
	  || { rm -f $(CONSTRAINTS).new; echo "unit tests failed: $(CONSTRAINTS) left as it was"; exit 1; }
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)
	@echo "$(CONSTRAINTS) rewritten; review with: git diff $(CONSTRAINTS)"

clean:
	rm -rf $(VENV) $(LOCK_VENV) .flow .pytest_cache
