# The two commands of the README: `make run` (the embedded demo) and `make test` (the whole suite).
# Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install controlplane clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/etcdcron dev

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# kube-apiserver and kube-controller-manager for tests/k8s, and kubelet, kube-scheduler, kube-proxy and
# CoreDNS for tests/e2e's local node, built from their Go modules once and cached in ~/.cache/etcdcron
# (about 20 min on a new machine, under a second afterwards).
controlplane: $(STAMP)
	$(PY) -m etcdcron.testing build

test: $(STAMP) lint controlplane
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
