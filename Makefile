# The two commands: `make demo` and `make test`. Both create .venv and install on their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck unit install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/strangler demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy proxy

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy proxy
	$(BIN)/strangler check -c config/routes.yaml --tests config/routes.tests.yaml
	$(BIN)/strangler check -c config/routes.example.yaml
	$(BIN)/hadolint Dockerfile
	$(BIN)/pytest

# Not part of `make test`: a full run takes about thirteen minutes and its figures are only
# meaningful on a quiet machine. BENCH_ARGS passes options (e.g. --duration 5 --runs 1).
bench: $(STAMP)
	@command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { \
	  echo "installing nginx and wrk (Debian packages)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx wrk; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
