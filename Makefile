# Two entry points (see README.md): `make demo` and `make test`; `make docs` builds the site.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow test-all lint bench clean mutation docs

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, from the pinned CPU wheel, so nothing below can pull a CUDA build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	# dev: the test suite; docs: mkdocs, which the site's tests (tests/docs) build with.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,docs]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/bayesmeta demo

# -rs prints the reason of every skip; in CI (CI set) a skip is a failure (tests/conftest.py).
# Bytecode caching on, even where the environment turns it off (PYTHONDONTWRITEBYTECODE): without
# it every run recompiles the package and re-rewrites the asserts of every test module (~3 s of
# collection; docs/benchmarks.md, "Imports and test collection").
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest
test: $(STAMP)
	$(PYTEST) -q -rs -m "not slow"

# The `slow` tests alone (CI runs them after `make test`; see docs/testing.md).
test-slow: $(STAMP)
	$(PYTEST) -q -rs -m slow

test-all: $(STAMP)
	$(PYTEST) -q -rs

# Mutation testing of the core modules with mutmut (config: [tool.mutmut] in pyproject.toml;
# docs/testing.md has the last score and the triage of survivors). Not in CI: the whole set
# takes about an hour on 2 cores, so run it in pieces by mutant name, e.g.
#   make mutation MUTANTS='bayesmeta.io.* bayesmeta.tasks.batch.*'
# Results accumulate in mutants/ (git-ignored); `mutmut show NAME` prints one mutant's diff.
MUTANTS ?=
mutation: $(STAMP)
	$(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results

# The documentation site (mkdocs.yml), into site/: strict, so a broken link or reference, a page
# missing from the nav or a docstring that does not parse fails it. Open site/index.html.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check bayesmeta tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
