# One entry point per job. `make demo` and `make test` are README's two fresh-machine commands.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[worker,embedded,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/driftline demo $(DEMO_ARGS)

test: setup
	$(VENV)/bin/pytest

# mypy cannot follow setuptools' editable-install finder (package-dir maps driftline.schemas to
# schemas/), so it checks a view of the installed layout made of symlinks.
lint: setup
	$(VENV)/bin/ruff check driftline schemas detectors streams sinks tests bench
	rm -rf .typecheck && mkdir -p .typecheck/driftline
	ln -s ../../driftline/__init__.py .typecheck/driftline/__init__.py
	for p in schemas detectors streams sinks; do ln -s ../../$$p .typecheck/driftline/$$p; done
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p driftline

# make bench: full benchmark on a private embedded broker + chdb (~10-15 min on 2 cores), prints the
# table and targets; e.g. make bench BENCH_ARGS='--smoke' or BENCH_ARGS='--size 100000 --json out.json'.
# See bench/README.md; results of a full run: bench/RESULTS.md.
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .typecheck
