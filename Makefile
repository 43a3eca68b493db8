# jobtrail: `make run` to try it, `make test` to test it.
#
# Everything goes into .venv. Installs are recorded by stamp files inside .venv, so a
# re-run installs nothing until pyproject.toml changes (or .venv is removed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
SERVE_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test lint worker clean

help:
	@echo "make run     install, then serve on http://127.0.0.1:8000 (embedded without REDIS_URL)"
	@echo "make test    install with test extras, then run pytest (PYTEST_ARGS='...' passes through)"
	@echo "make lint    install with test extras, then run ruff and mypy (configured in pyproject.toml)"
	@echo "make worker  install, then run a worker (needs REDIS_URL)"
	@echo "make clean   remove .venv and build leftovers"

# The venv, with a current pip: the machine's own pip is too old for some wheels.
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: pyproject.toml | $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# `.[test]` includes the runtime dependencies, so it satisfies `run` too.
$(VENV)/.installed-test: pyproject.toml | $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/jobtrail serve $(SERVE_ARGS)

worker: $(VENV)/.installed
	@test -n "$$REDIS_URL" || { echo "make worker needs REDIS_URL (e.g. redis://127.0.0.1:6379/0)" >&2; exit 2; }
	$(BIN)/jobtrail worker

# pytest's exit status 5 (no tests collected) is a failure too, and says so.
test: $(VENV)/.installed-test
	@echo "$(BIN)/python -m pytest $(PYTEST_ARGS)"
	@status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

# ruff over the whole tree; mypy over the package as it installs (.ci/typecheck_tree.py says why).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python .ci/typecheck_tree.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
