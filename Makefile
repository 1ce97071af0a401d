# Two commands for a fresh machine: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/pve-exporter demo

test: install
	$(VENV)/bin/ruff check pve_exporter tests benchmarks
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check pve_exporter tests benchmarks
	$(VENV)/bin/ruff format --check pve_exporter

bench: install
	$(PY) benchmarks/render.py
	$(PY) benchmarks/scrape_latency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
