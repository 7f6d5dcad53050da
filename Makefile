# Every target that runs something first makes sure the virtualenv exists and is up to date, so
# `make demo` and `make test` are each the only command a newcomer needs on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DDS stays on loopback for everything started from here (tests set it again in test/conftest.py).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/test/fastdds_loopback.xml
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp

.PHONY: setup demo test lint typecheck check bench model clean sim-suite

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[ros,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/robust-monitor demo

test: $(STAMP)
	$(BIN)/python -m pytest -q test

lint: $(STAMP)
	$(BIN)/ruff check robust_monitor test launch
	$(BIN)/ruff format --check robust_monitor test launch

typecheck: $(STAMP)
	$(BIN)/mypy robust_monitor

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/robust-monitor bench --json

sim-suite: $(STAMP)
	@status=0; for f in scenarios/*.yaml; do \
	  $(BIN)/robust-monitor sim $$f --out runs/sim_$$(basename $$f .yaml) --no-plot || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

model: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[train]'
	$(BIN)/python -m robust_monitor.tools.train --sigma 0.25 --out robust_monitor/assets/models/roadsigns_s025 --save-checkpoint build/roadsigns_s025.pt
	$(BIN)/python -m robust_monitor.tools.train --sigma 0.5 --out robust_monitor/assets/models/roadsigns_s050 --init-from build/roadsigns_s025.pt --max-lr 3e-3 --epochs 14 --clean-fraction 0.25
	$(BIN)/python -m robust_monitor.tools.sample_drive --force
	$(BIN)/robust-monitor model-card --model robust_monitor/assets/models/roadsigns_s025.onnx
	$(BIN)/robust-monitor model-card --model robust_monitor/assets/models/roadsigns_s050.onnx
