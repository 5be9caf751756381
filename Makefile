# The two commands a newcomer needs: `make demo` and `make test`. Both set up first.
VENV := .venv
PY := $(VENV)/bin/python
PICKET := $(VENV)/bin/picket

.PHONY: setup test unit lint demo clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

unit: setup
	$(PY) -m pytest tests/unit -q

test: setup lint
	$(PY) -m pytest tests -q --durations=30

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
