# `make repro`: the whole pipeline (REPRO_FLAGS=--keep-going to run all that can run);
# `make test`: the test suite. Both create .venv and install requirements.txt first when needed;
# `make test` also installs requirements-test.txt (DVC's S3 remote, a local S3 server).
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test bench

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-test.txt
	$(BIN)/python -m pip install -r requirements-test.txt
	touch $@

repro: $(BIN)/.installed
	dvc repro $(REPRO_FLAGS)

test: $(BIN)/.installed-test
	python -m pytest

bench: $(BIN)/.installed
	python benchmarks/conv_weight_grad.py
	python benchmarks/epoch_speed.py
