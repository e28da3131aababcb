# The two user commands: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# onnxruntime-gpu where an NVIDIA GPU answers, onnxruntime otherwise (never both).
ORT_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP  := $(VENV)/.installed-$(ORT_EXTRA)

.PHONY: demo test lint unit integration reliability container-test kafka clean

demo: $(STAMP) kafka
	$(BIN)/recq demo

test: $(STAMP) kafka lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not container"

integration: $(STAMP) kafka
	$(BIN)/pytest -m "integration and not container"

# Every fault scenario (those marked extended run only here; the rest also in `make test`).
reliability: $(STAMP) kafka
	$(BIN)/pytest -m reliability

# Build the CPU image and run its stages against the embedded broker (podman or docker;
# skips with a message without one). RECQ_TEST_BASE_IMAGE names a local Python 3.11 base
# where Docker Hub cannot be reached.
container-test: $(STAMP) kafka
	$(BIN)/pytest -m container -s tests/deploy/test_container.py

# Resolve the pinned Apache Kafka release from Maven Central into ~/.cache/recq (idempotent).
kafka: $(STAMP)
	$(BIN)/recq kafka fetch

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "recq needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(ORT_EXTRA),dev]'
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
