# Two commands for a fresh machine: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test lint bench bench-full monitoring monitoring-check screenshots clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

DEMO_PROMETHEUS ?= /tmp/pve-exporter-demo-prometheus.yml

demo: install
	$(VENV)/bin/pve-exporter demo --prometheus-config $(DEMO_PROMETHEUS)

test: install
	$(VENV)/bin/ruff check pve_exporter tests benchmarks dashboards alerts tools
	$(PY) dashboards/generate.py --check
	$(PY) alerts/generate.py --check
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check pve_exporter tests benchmarks dashboards alerts tools

# Regenerate dashboards/*.json and alerts/pve-exporter.rules.yml from their generators.
monitoring: install
	$(PY) dashboards/generate.py
	$(PY) alerts/generate.py

monitoring-check: install
	$(PY) dashboards/generate.py --check
	$(PY) alerts/generate.py --check
	promtool check rules alerts/pve-exporter.rules.yml
	promtool test rules alerts/tests/*.yml

# The control page's screenshots in docs/img/ (README), taken by its headless Chromium tests.
screenshots: install
	PVE_EXPORTER_SCREENSHOTS=docs/img $(PY) -m pytest -q -p no:cacheprovider tests/test_control_page.py

# Benchmarks print figures and ratios (not tests). They need curl and openssl; vs_ppe installs
# prometheus-pve-exporter from PyPI into /tmp/venv-pve the first time.
bench: install
	$(PY) benchmarks/render.py
	$(PY) benchmarks/influx_lines.py
	$(PY) benchmarks/api_calls.py
	$(PY) benchmarks/scrape_latency.py

bench-full: bench
	$(PY) benchmarks/daemon_load.py
	$(PY) benchmarks/vs_ppe.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
