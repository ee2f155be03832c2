# The two commands a fresh machine needs: `make demo` and `make test`.
# Everything they need (virtualenv, Python packages, Debian packages for the
# test servers) is installed by the targets below; nothing by hand.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

SOAK_ARGS ?= --members 500 --processes 5 --minutes 10

.PHONY: soak demo test unit functional conformance test-consul-real bench bench-scale services venv lint clean sample-config stress-test

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded default: SQLite, no server.
demo: $(STAMP)
	$(PY) -m servicegroup demo

## Every test: lint first (seconds), unit, functional against real servers,
## tooz conformance.
test: $(STAMP) lint services
	$(PY) -m pytest -q tests functional
	$(MAKE) --no-print-directory conformance

unit: $(STAMP)
	$(PY) -m pytest -q tests

functional: $(STAMP) services
	$(PY) -m pytest -q functional

## tooz's own suite against every backend this project writes.
conformance: $(STAMP) services
	PY=$(PY) bash scripts/conformance

## The Consul tests and tooz's suite against a real agent only: CONSUL_HTTP_ADDR's,
## else a private `consul agent -dev`; fails saying why when neither exists.
test-consul-real: $(STAMP)
	PY=$(PY) bash scripts/consul-real

## The functional suite STRESS_RUNS times (5) in a row beside a CPU hog,
## stopping at the first failure (STRESS_SELECT picks a subset). Long: not
## part of `make test`.
stress-test: $(STAMP) services
	PY=$(PY) bash scripts/stress-test

## Clustered backends under a random nemesis (docs/clusters.md): 500 members
## over 5 processes, 10 minutes per cluster (ZooKeeper, etcd, Redis Sentinel);
## the history checker's result is printed as JSON, exit 1 on a violation.
soak: $(STAMP) services
	$(PY) -m functional.soak --cluster all $(SOAK_ARGS)

## Installs (apt) and starts what the functional tests need.
services:
	bash scripts/ensure-services

bench: $(STAMP) services
	$(PY) -m bench.run

## Fleets of 1,000 / 5,000 / 10,000 per backend beside raw tooz (docs/scale.md):
## long (about an hour); SIZES=1000 BACKENDS=zk,redis narrow it.
SIZES    ?= 1000,5000,10000
BACKENDS ?= zk,redis,mc,etcd,db-postgresql,db-mysql,consul-fake
bench-scale: $(STAMP) services
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.scale --sizes $(SIZES) --backends $(BACKENDS)

## ruff's rules, ruff's formatter and mypy --strict (config in
## pyproject.toml, versions pinned in setup.cfg's lint extra); fails on any
## finding. `ruff format $(LINTED)` fixes the formatting.
LINTED := servicegroup tests functional bench examples
lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy

## etc/servicegroup.conf.sample from the options in servicegroup/conf.py
## (tests/test_sample_config.py fails until it is regenerated and committed).
sample-config: $(STAMP)
	$(VENV)/bin/oslo-config-generator --config-file etc/oslo-config-generator/servicegroup.conf

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache servicegroup.sqlite
