# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions (with hashes) of everything `make demo` and `make test` install, pip and
# setuptools included; `make lock` regenerates it from pyproject.toml (README, "Dependencies").
LOCK := requirements/lock.txt
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml requirements/bootstrap.in --python-platform x86_64-manylinux_2_35 \
	--python-version 3.11 --generate-hashes --custom-compile-command "make lock" -q

.PHONY: demo test lint typecheck unit integration bench clean lock

# A new or changed lock gets a new virtualenv, so .venv holds exactly what the lock lists.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/servegate demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check adapters contracts gateway router autoscaler servegate tests loadtest
	$(VENV)/bin/mypy adapters contracts router autoscaler

test: lint
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# Re-resolve after editing pyproject.toml: pins already in the lock are kept where they still
# fit; `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them.
# requirements/runtime.txt (the container image) is the runtime subset at the same versions.
lock: $(STAMP)
	$(UV_COMPILE) --extra demo --extra sim --extra test -o $(LOCK) $(LOCK_ARGS)
	$(UV_COMPILE) -c $(LOCK) -o requirements/runtime.txt

bench: $(STAMP)
	$(PY) loadtest/bench_overhead.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
