# django-conversions — developer commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
# Extra pip requirement pinning the Django line, e.g. DJANGO="Django>=6.0,<7" (CI tests both).
DJANGO ?= Django>=5.2,<5.3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell echo '$(DJANGO)' | tr -c 'A-Za-z0-9.' '_')
PYTEST_ARGS ?=
DEMO_SERVE ?= 1
# The port `make demo` serves on: make demo PORT=8001.
PORT ?= 8000

.PHONY: test test-sqlite test-postgres lint typecheck demo bench bench-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' '$(DJANGO)'
	touch $@

# The django-oscar tests need Oscar's apps: a pytest process of their own, with their settings.
OSCAR_TESTS := tests/oscar --ds=tests.oscar.settings

## Run the whole suite on SQLite, then again on the local PostgreSQL server.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(OSCAR_TESTS) $(PYTEST_ARGS)
	CONVERSIONS_TEST_DB=postgres $(BIN)/python -m pytest $(PYTEST_ARGS)
	CONVERSIONS_TEST_DB=postgres $(BIN)/python -m pytest $(OSCAR_TESTS) $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(OSCAR_TESTS) $(PYTEST_ARGS)

test-postgres: $(STAMP)
	CONVERSIONS_TEST_DB=postgres $(BIN)/python -m pytest $(PYTEST_ARGS)
	CONVERSIONS_TEST_DB=postgres $(BIN)/python -m pytest $(OSCAR_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

## mypy with the django-stubs and djangorestframework-stubs plugins ([tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/python -m mypy django_conversions

## The example shop with sample orders delivered to the local provider sandbox, served at
## http://127.0.0.1:$(PORT)/ until Ctrl-C. DEMO_SERVE=0 stops after the summary (for scripts).
demo: $(STAMP)
	$(BIN)/python example_project/manage.py demo --port $(PORT) $(if $(filter 0,$(DEMO_SERVE)),--no-serve,)

## The benchmarks (docs/benchmarks.md), on PostgreSQL unless BENCH_DB=sqlite. Not part of `make test`.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

## A quick benchmark run that checks the benchmarks still work and leave nothing behind.
bench-check: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider benchmarks/test_quick_run.py

clean:
	rm -rf .venv .venv-* example_project/demo.sqlite3* .pytest_cache
