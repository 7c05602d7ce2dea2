# drlbox developer interface. `make test` and `make train` set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install train test test-fast protos bench bench-forward clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[dev,atari]'
	touch $(STAMP)

install: $(STAMP)

## Train A3C on CartPole-v1 with the built-in example (no cluster needed).
train: $(STAMP)
	$(PY) examples/cartpole_a3c.py

## The whole test suite: unit, integration (real gRPC servers on loopback) and learning tests.
test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

## Regenerate the gRPC/protobuf code under drlbox/rpc/generated from protos/.
protos: $(STAMP)
	$(PY) -m drlbox.rpc.protogen

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[bench]'
	touch $(BENCH_STAMP)

## drlbox vs Stable-Baselines3 side by side (throughput, time to solve CartPole, Pong).
## torch is pinned to 2.13.0, whose CPU wheel pip takes from a local wheel directory when one
## is configured (find-links); elsewhere add --extra-index-url for PyTorch's CPU wheels.
bench: $(BENCH_STAMP)
	$(PY) benchmarks/compare_sb3.py

bench-forward: $(STAMP)
	$(PY) benchmarks/bench_forward.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
