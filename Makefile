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
.PHONY: help install run migrate create-admin test contract contract-deep lint lint-tools format \
	bench up down logs compose-migrate compose-create-admin clean

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

migrate: $(STAMP) ## Apply database migrations (local DATABASE_URL, default SQLite in var/)
	$(BIN)/python -m auth_service.cli migrate

create-admin: $(STAMP) ## Create the first superuser (FIRST_SUPERUSER_EMAIL, password from env or prompt)
	$(BIN)/python -m auth_service.cli create-admin

test: $(STAMP) ## Run every test (real PostgreSQL/Redis when reachable; CI=true makes skips fail)
	@scripts/run_tests.sh

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

bench: $(STAMP) ## Print the performance ratios (validation overhead, login with and without MFA vs bcrypt bound)
	$(BIN)/python bench/validation_overhead.py
	$(BIN)/python bench/login_throughput.py
	$(BIN)/python bench/login_throughput.py --mfa

up: ## Start postgres, redis, auth and gateway with docker compose (gateway on :8000)
	docker compose up --build -d
	@echo "Gateway: http://localhost:$${GATEWAY_PORT:-8000}/docs   (make logs to follow)"

down: ## Stop the compose stack
	docker compose down

logs: ## Follow the compose stack's logs
	docker compose logs -f

compose-migrate: ## Apply migrations inside the compose stack
	docker compose run --rm migrate

compose-create-admin: ## Create the first superuser inside the compose stack
	docker compose exec auth python -m auth_service.cli create-admin

clean: ## Remove the virtual environment and local state (var/)
	rm -rf $(VENV) var .pytest_cache .tools
