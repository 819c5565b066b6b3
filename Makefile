# Two commands on a fresh machine:
#   make run   - the orchestrator with its local services (Ctrl-C stops everything)
#   make test  - lint, policy checks and the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: run test install lint policy-check checkov unit e2e test-distributed bench change-summary stop clean help

help:
	@echo "make run | make test | make lint | make policy-check | make checkov | make unit | make e2e | make bench | make stop | make clean"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

install: $(STAMP)

# checkov has a venv of its own: its dependencies conflict with Airflow's pins (requirements-checkov.txt).
$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	@touch $(CHECKOV_STAMP)

run: install
	PYTHONPATH=$(CURDIR) $(PY) -m devstack up --profile run

stop:
	PYTHONPATH=$(CURDIR) $(PY) -m devstack stop --profile run

lint: install
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

policy-check: install
	PYTHONPATH=$(CURDIR) $(PY) -m include.cli policy-check

# Static security scan of terraform/ (no Terraform binary on the development machines); any failed
# check fails the target. Skips live next to the resource as `#checkov:skip=CKV_...:reason`.
# --skip-download: no call to the Prisma Cloud API (the scan works offline, as in CI).
checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --directory terraform --framework terraform --quiet --compact --skip-download

unit: install
	$(PY) -m pytest tests/unit tests/dags tests/integration

e2e: install
	$(PY) -m pytest tests/e2e

# The distributed setup natively (issue 9): CeleryExecutor, Redis from Debian, two Celery workers,
# on ports and a folder of its own (.local/test-300). Its fault tests, plus the core of the e2e
# suite (the fast path, an approval workflow, ticket idempotency) on Celery.
DISTRIBUTED_TESTS := tests/e2e/test_distributed.py tests/e2e/test_support_triage.py \
	tests/e2e/test_soc_contain_host.py tests/e2e/test_ticketing_workflows.py
test-distributed: install
	ORCH_TEST_EXECUTOR=celery ORCH_TEST_PORT_OFFSET=300 $(PY) -m pytest $(DISTRIBUTED_TESTS)

# Fast tests first; the end-to-end stack (started once for the session) comes last, so the
# timing-sensitive integration tests do not share the machine with an idle Airflow.
test: install lint checkov
	$(PY) -m pytest tests/unit tests/dags tests/integration tests/e2e
	$(MAKE) test-distributed

bench: install
	PYTHONPATH=$(CURDIR) $(PY) -m bench.suite

change-summary: install
	PYTHONPATH=$(CURDIR) $(PY) -m include.cli change-summary --base main

clean:
	-PYTHONPATH=$(CURDIR) $(PY) -m devstack stop --profile run
	-PYTHONPATH=$(CURDIR) $(PY) -m devstack stop --profile test
	rm -rf .local .pytest_cache .ruff_cache .mypy_cache
