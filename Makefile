# Set-up and entry points. `make test` and `make run` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are installed first and explicitly: pip then takes the build that matches this
# machine (override TORCH_SPEC for another CUDA or CPU build).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=

.PHONY: install test run bench clean browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(ARGS)

# The web UI's browser tests drive Debian's chromium through Playwright; it is installed here when
# missing (CI runs as root). Never `playwright install`: it downloads a browser, which fails offline.
# Without chromium the browser tests skip locally and fail under CI=true.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "warning: $(CHROMIUM) is missing and installing it needs root: browser tests will skip" >&2; exit 0; fi; \
	  echo "installing chromium for the browser tests"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

run: install
	$(BIN)/autolabel ui $(ARGS)

# Throughput against the plain transformers recipe (BENCHMARKS.md); e.g. make bench ARGS="--generate 2mp:64".
# `make test` already runs a smoke pass of it (tests/benchmarks/test_throughput.py).
bench: install
	$(BIN)/python benchmarks/throughput.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
