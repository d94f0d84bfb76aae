# edgeai.fleet: the two commands a user needs are `make demo` and `make test`.
# Both install what is missing (Debian packages, Docker daemon, Python venv) and reuse what
# exists. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON_FOR_VENV ?= python3
LAB := tests/lab/lab
LAB_FLEET ?= default
# The demo's release: version 2 of the demo model (scripts/demo-release writes it).
RELEASE ?= .lab/demo/release-2.yml
MOLECULE_SCENARIOS ?= $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help host venv demo test lint sanity unit images integration fleet molecule lab-up lab-down bench build

help:
	@echo "make demo   - bring up the lab and run playbooks/deploy_model.yml against it"
	@echo "make test   - every suite: lint, sanity, unit, integration, molecule"
	@echo "make bench  - run the benchmarks and rewrite docs/benchmarks.md"
	@echo "make lab-up / lab-down, make lint|sanity|unit|images|integration|molecule, make build"
	@echo "make fleet  - the 12-device fleet test (not in make test: 10 to 16 minutes)"

host:
	scripts/host-setup

# The venv is rebuilt when a requirements file changes.
$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt requirements/builder.txt $(wildcard images/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON_FOR_VENV) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements/dev.txt
	touch $@

.collections/ansible_collections/edgeai/fleet:
	mkdir -p .collections/ansible_collections/edgeai
	ln -sfn ../../.. $@

venv: $(VENV)/.installed .collections/ansible_collections/edgeai/fleet

lab-up: host venv
	$(LAB) up --fleet $(LAB_FLEET)

lab-down: venv
	$(LAB) down

# The main job: bootstrap the lab's devices (drivers, engine, inference server, event relay),
# then roll the demo model out with deploy_model.yml; its report says what is where.
demo: lab-up
	$(BIN)/python scripts/demo-release
	ansible-playbook -i .lab/inventory/lab.device_registry.yml playbooks/bootstrap.yml
	ansible-playbook -i .lab/inventory/lab.device_registry.yml playbooks/deploy_model.yml -e @$(RELEASE)

# Two stages (scripts/run-parallel prefixes each line with its stream and says how each ended):
# lint, and sanity then unit, run beside the image tests and the lab coming up; then integration
# runs beside molecule, whose scenarios have devices of their own.
test: host venv
	scripts/run-parallel "lint=$(MAKE) --no-print-directory lint" \
	  "sanity+unit=$(MAKE) --no-print-directory sanity unit" \
	  "lab=$(MAKE) --no-print-directory images lab-up"
	scripts/run-parallel "integration=$(MAKE) --no-print-directory integration" \
	  "molecule=$(MAKE) --no-print-directory molecule"
	@echo "make test: every suite passed"

# galaxy-check: galaxy-importer (what Galaxy runs on an upload) on the built tarball, offline, and
# antsibull-docs lint-collection-docs on its docs; role-readmes: the role READMEs match their
# meta/argument_specs.yml (run scripts/role-readmes to rewrite them); py38-import: the device-side
# code imports with Python 3.8 (when one is installed).
lint: venv
	ruff check plugins tests images benchmarks molecule scripts/demo-release scripts/role-readmes scripts/check-demo-run scripts/fetch-test-models scripts/run-parallel
	tests/sanity/py38-import
	ansible-lint --profile production
	antsibull-changelog lint
	$(BIN)/python scripts/role-readmes --check
	tests/sanity/galaxy-check
	@echo "lint: passed"

sanity: venv
	tests/sanity/run
	@echo "sanity: passed"

unit: venv
	pytest -q tests/unit tests/lab/tests

# The project's own containers are Python packages with their own tests (some build and run
# the image, so a Docker engine must answer).
images: host venv
	$(LAB) base
	@for d in $(wildcard images/*/tests); do \
	  echo "== pytest $$d"; (cd $$(dirname $$d) && PYTHONPATH=src $(BIN)/pytest -q tests) || exit 1; \
	done

integration: host venv
	$(LAB) up --fleet $(LAB_FLEET)
	pytest -q --durations=15 -m 'not fleet' tests/integration

# The 12-device fleet test (tests/integration/test_rollout_fleet.py): 10 to 16 minutes on 2 cores,
# so make test (CI's run, 90 minutes at most) leaves it out; run it before a release.
fleet: host venv
	$(LAB) up --fleet $(LAB_FLEET)
	pytest -q -m fleet tests/integration

molecule: host venv
	@test -n "$(MOLECULE_SCENARIOS)" || { echo "molecule: no scenario found"; exit 1; }
	@passed=0; for s in $(MOLECULE_SCENARIOS); do \
	  echo "== molecule test -s $$s"; t=$$(date +%s); molecule test -s $$s; passed=$$((passed+1)); \
	  echo "molecule: $$s passed in $$(( $$(date +%s) - t )) s"; \
	done; echo "molecule: $$passed passed, 0 failed"

# MLServer, the peer the LiteRT server is compared with, lives in a venv of its own.
BENCH_VENV := .lab/bench-venv
$(BENCH_VENV)/.installed: benchmarks/litert/requirements-mlserver.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON_FOR_VENV) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -r $<
	touch $@

# What the benchmarks themselves need (matplotlib for their plots) goes into the project venv.
$(VENV)/.bench-installed: benchmarks/requirements.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q --disable-pip-version-check -r $<
	touch $@

bench: host venv $(BENCH_VENV)/.installed $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run.py

# One tarball in the checkout (execution-environment.yml takes exactly one edgeai-fleet-*.tar.gz).
build: venv
	rm -f edgeai-fleet-*.tar.gz
	ansible-galaxy collection build --force --output-path .
