# authgate: everyday commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Local runs read .env when there is one (cp .env.example .env).
ifneq (,$(wildcard .env))
include .env
export
endif

.DEFAULT_GOAL := help
.PHONY: help install run migrate create-admin import-users test test-reliability contract contract-deep lint lint-tools format \
	bench up down logs compose-check compose-migrate compose-create-admin clean

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> Creating the virtual environment in $(VENV) (first run takes a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)
	@echo "==> Installed"

install: $(STAMP) ## Create .venv and install the project with its test tools

run: $(STAMP) ## Run the stack locally (no Docker): migrate, then auth :8001 and gateway :8000
	@scripts/run_local.sh

# Compose: the `docker compose` plugin (v2), else a standalone `docker-compose` (v2, or v1
# >= 1.29). Override with COMPOSE="...". The project name is fixed so every target, and the
# "is the stack running?" check below, find the same containers.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
COMPOSE_PROJECT_NAME ?= authgate
export COMPOSE_PROJECT_NAME
# Where migrate/create-admin act: auto (the compose stack when its database container is
# running, else the local DATABASE_URL), compose, or local.
STACK ?= auto
stack_running = docker ps -q --filter "label=com.docker.compose.project=$(COMPOSE_PROJECT_NAME)" \
	--filter label=com.docker.compose.service=postgres --filter status=running 2>/dev/null | grep -q .
use_compose = { [ "$(STACK)" = compose ] || { [ "$(STACK)" = auto ] && $(stack_running); }; }
# The admin's email/password from make's environment reach the container too: by name
# only with Compose v2 (the value never appears on a command line); Compose v1 does not
# look a bare name up, so there the value is passed (briefly visible in the process list).
COMPOSE_V1 = $(shell $(COMPOSE) version --short 2>/dev/null | grep -q '^1\.' && echo yes)
pass_env = $(if $($(1)),-e $(1)$(if $(COMPOSE_V1),="$$$(1)"))
ADMIN_ENV = $(call pass_env,FIRST_SUPERUSER_EMAIL) $(call pass_env,FIRST_SUPERUSER_PASSWORD)

migrate: ## Apply migrations: in the compose stack when it runs, else locally (SQLite in var/)
	@if $(use_compose); then \
	  echo "==> make migrate: compose stack '$(COMPOSE_PROJECT_NAME)' (its PostgreSQL; STACK=local for the local database)"; \
	  $(MAKE) --no-print-directory compose-migrate; \
	else \
	  echo "==> make migrate: local database (DATABASE_URL, default SQLite under var/); no compose stack running"; \
	  $(MAKE) --no-print-directory install && $(BIN)/python -m auth_service.cli migrate; \
	fi

create-admin: ## Create the first superuser where migrate acts (FIRST_SUPERUSER_EMAIL; password from env or prompt)
	@if $(use_compose); then \
	  echo "==> make create-admin: compose stack '$(COMPOSE_PROJECT_NAME)' (STACK=local for the local database)"; \
	  $(MAKE) --no-print-directory compose-create-admin; \
	else \
	  echo "==> make create-admin: local database (DATABASE_URL, default SQLite under var/); no compose stack running"; \
	  $(MAKE) --no-print-directory install && $(BIN)/python -m auth_service.cli create-admin; \
	fi

import-users: $(STAMP) ## Import users from the monolith: make import-users FILE=users.csv [DRY_RUN=1]
	@test -n "$(FILE)" || { echo "usage: make import-users FILE=users.csv [DRY_RUN=1]" >&2; exit 2; }
	$(BIN)/python -m auth_service.cli import-users $(if $(DRY_RUN),--dry-run) "$(FILE)"

test: $(STAMP) ## Run every test (real PostgreSQL/Redis when reachable; CI=true makes skips fail)
	@scripts/run_tests.sh

test-reliability: $(STAMP) ## Fault drills under load on private PostgreSQL/Redis/gunicorn (prints the result table)
	$(BIN)/pytest tests/reliability

contract: $(STAMP) ## Contract tests against live auth + gateway (CI profile, 1-3 min)
	$(BIN)/pytest contract_tests

contract-deep: $(STAMP) ## Contract tests with many more examples and longer walks (long)
	CONTRACT_PROFILE=deep $(BIN)/pytest contract_tests --timeout=0

SPECTRAL := .tools/lint/node_modules/.bin/spectral

$(SPECTRAL):
	@echo "==> Installing the spec linter (Spectral) under .tools/lint"
	npm install --prefix .tools/lint --no-fund --no-audit --loglevel=error @stoplight/spectral-cli@6.16.3

lint-tools: $(SPECTRAL) ## Install the spec style linter under .tools/ (needs npm)

lint: $(STAMP) $(SPECTRAL) ## Lint the code (ruff, mypy) and the spec (Spectral, rules in .spectral.yaml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SPECTRAL) lint openapi/auth.yaml --ruleset .spectral.yaml --fail-severity=warn

format: $(STAMP) ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Print the performance ratios (validation, login with and without MFA vs bcrypt bound, reset timing)
	$(BIN)/python bench/validation_overhead.py
	$(BIN)/python bench/login_throughput.py
	$(BIN)/python bench/login_throughput.py --mfa
	$(BIN)/python bench/password_reset_timing.py

# The app containers read .env (env_file): a first `make up` starts from the example.
compose-check:
	@[ -n "$(COMPOSE)" ] || { echo "error: Docker Compose not found: install the docker compose plugin (see README), or set COMPOSE" >&2; exit 1; }
	@[ -f .env ] || { cp .env.example .env && echo "==> Created .env from .env.example (edit it, then make up again to apply)"; }

up: compose-check ## Start postgres, redis, auth and gateway with Docker Compose (gateway on :8000)
	$(COMPOSE) up --build -d
	@echo "Gateway: http://localhost:$${GATEWAY_PORT:-8000}/docs   (make logs to follow)"

down: compose-check ## Stop the compose stack (volumes stay: `docker compose down -v` drops them)
	$(COMPOSE) down

logs: compose-check ## Follow the compose stack's logs
	$(COMPOSE) logs -f

compose-migrate: compose-check ## Apply migrations inside the compose stack
	$(COMPOSE) run --rm migrate

compose-create-admin: compose-check ## Create the first superuser inside the compose stack
	@# -T without a terminal (CI, scripts): compose would otherwise ask for one.
	$(COMPOSE) exec $$([ -t 0 ] || echo -T) $(ADMIN_ENV) auth python -m auth_service.cli create-admin

clean: ## Remove the virtual environment and local state (var/)
	rm -rf $(VENV) var .pytest_cache .tools
