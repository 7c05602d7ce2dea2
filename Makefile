# drlbox developer interface. `make test` and `make train` set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.installed-bench
PLOT_STAMP := $(VENV)/.installed-plot

.PHONY: install train test test-fast protos bench bench-forward bench-scale bench-startup chaos clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[dev,atari]'
	touch $(STAMP)

install: $(STAMP)

## Train A3C on CartPole-v1 until solved, then play the saved model (no cluster needed).
train: $(STAMP)
	$(PY) examples/train_cartpole.py

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

## The parameter server against 1..32 simulated workers: updates/s, push latency, server CPU per
## update, staleness, for the CartPole MLP and the Nature CNN, 1 and 2 shards (a few minutes).
## BENCH_SCALE_ARGS=... passes options (see benchmarks/bench_scale.py --help).
$(PLOT_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[plot]'
	touch $(PLOT_STAMP)

bench-scale: $(PLOT_STAMP)
	$(PY) benchmarks/bench_scale.py $(BENCH_SCALE_ARGS)

## Seconds from make_trainer(...).run() to the first env step, 2 workers (fresh interpreters),
## then whole processes of 60k CartPole steps: drlbox A3C (original defaults) vs SB3 A2C.
STARTUP_ARGS ?= --vs-sb3 60000
bench-startup: $(BENCH_STAMP)
	$(PY) benchmarks/startup.py $(STARTUP_ARGS)

## Faults and poisonous calls against real roles (kills, floods, bad inputs, CartPole learning
## under faults), then >= 10,000 generated calls per RPC method; prints both tables (~30 min).
## CHAOS_ARGS=... / FUZZ_ARGS=... pass options (see benchmarks/chaos.py and chaos_fuzz.py --help).
chaos: $(STAMP)
	$(PY) benchmarks/chaos.py $(CHAOS_ARGS); held=$$?; \
	$(PY) benchmarks/chaos_fuzz.py $(FUZZ_ARGS) && exit $$held

clean:
	rm -rf build dist *.egg-info .pytest_cache

# =============================================================================================
# Cluster: container images and the docker-compose deployment (images/, deploy/).
#
#   make docker-setup        install docker.io/docker-compose/debootstrap, start dockerd, base image
#   make images              build drlbox/replay, drlbox/parameter-server, drlbox/worker
#                            (BASE_IMAGE=, TAG=, EXTRAS= are passed to images/build.sh)
#   make up [WORKERS=2] [PS_SHARDS=1]
#                            write deploy/.env (random token) if missing, build missing images,
#                            start the cluster (the parameter server cutting each job's weights
#                            into PS_SHARDS slices, PS_SHARDS-1 ps-shard containers) and wait
#                            until every container is healthy
#   make scale WORKERS=N     change the number of workers
#   make ps | logs [SERVICE=worker] [FOLLOW=1] | token
#   make tensorboard [PORT=6006]
#                            TensorBoard over every job's scalars on http://127.0.0.1:PORT, from
#                            the parameter-server image with the data volume read-only (Ctrl-C
#                            stops it)
#   make down [VOLUMES=1]    remove containers and network (VOLUMES=1 also deletes checkpoints)
#   make clean-cluster       down and delete the checkpoint volume
#   make k8s-validate        render k8s/ with kustomize and validate it strictly
#
# COMPOSE is `docker compose` when that works, else `docker-compose`; override with
# COMPOSE=... . The SDK reaches the parameter server on 127.0.0.1:$(DRLBOX_SDK_PORT, default 50051)
# with the token `make -s token` prints.
# =============================================================================================
ifeq ($(origin COMPOSE),undefined)
COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
                   else echo docker-compose; fi)
endif
CLUSTER_PROJECT ?= drlbox
CLUSTER_FILE := deploy/docker-compose.yml
CLUSTER_ENV := deploy/.env
WORKERS ?= 2
PS_SHARDS ?= 1
UP_TIMEOUT ?= 600
TAIL ?= 200
DC_BASE = $(COMPOSE) -p $(CLUSTER_PROJECT) -f $(CLUSTER_FILE)
# TAG=... picks the image tag for both `make images` (images/build.sh) and compose (DRLBOX_TAG).
DC = $(if $(TAG),DRLBOX_TAG=$(TAG) )DRLBOX_PS_SHARDS=$(PS_SHARDS) $(DC_BASE)
# Commands that create no containers work without deploy/.env (the compose file requires a token).
DC_NOTOKEN = $(if $(wildcard $(CLUSTER_ENV)),,DRLBOX_TOKEN=not-needed )$(DC)
# No container to wait for from tensorboard either: only `make tensorboard` runs it (a profile),
# but docker-compose 1.29 lists it in `config --services` all the same.
WAIT_HEALTHY = COMPOSE_CMD="$(DC_BASE)" SCALED_TO_ZERO="tensorboard $(if $(filter 1,$(PS_SHARDS)),ps-shard)" \
	bash deploy/wait-healthy.sh

.PHONY: docker-setup images up scale down clean-cluster logs ps token tensorboard k8s-validate

docker-setup:
	@echo "==> docker-setup: packages, dockerd and a base image (images/ensure-docker.sh)"
	bash images/ensure-docker.sh

images:
	@echo "==> images: building drlbox/replay, drlbox/parameter-server, drlbox/worker"
	bash images/build.sh

$(CLUSTER_ENV):
	@echo "==> writing $@ with a new random DRLBOX_TOKEN (gitignored; 'make token' prints it)"
	@umask 077 && $(PYTHON) -c 'import secrets; print("DRLBOX_TOKEN=" + secrets.token_urlsafe(24))' > $@

up: $(CLUSTER_ENV)
	@echo "==> up: images (building only missing ones; 'make images' rebuilds)"
	bash images/build.sh --if-missing
	@echo "==> up: starting parameter-server ($(PS_SHARDS) shard(s)), replay, evaluator and $(WORKERS) worker(s) with $(COMPOSE)"
	$(DC) up -d --remove-orphans --scale worker=$(WORKERS) --scale ps-shard=$$(( $(PS_SHARDS) - 1 )) \
		|| { $(WAIT_HEALTHY) --report; exit 1; }
	@echo "==> up: waiting until every container is healthy (at most $(UP_TIMEOUT)s)"
	$(WAIT_HEALTHY) $(UP_TIMEOUT)
	@$(DC) ps
	@echo "==> cluster is up; SDK address $$($(DC_BASE) port parameter-server 50051), token: make -s token"

scale: $(CLUSTER_ENV)
	@echo "==> scale: $(WORKERS) worker(s)"
	$(DC) up -d --no-recreate --scale worker=$(WORKERS) worker || { $(WAIT_HEALTHY) --report; exit 1; }
	$(WAIT_HEALTHY) $(UP_TIMEOUT) worker

DOWN_VOLUMES = $(filter 1 yes true,$(VOLUMES))
down:
ifneq ($(DOWN_VOLUMES),)
	@echo "==> down: removing the cluster's containers, network AND volume (checkpoints)"
else
	@echo "==> down: removing the cluster's containers and network (checkpoint volume kept; VOLUMES=1 deletes it)"
endif
	$(DC_NOTOKEN) down --remove-orphans $(if $(DOWN_VOLUMES),-v)

clean-cluster:
	@echo "==> clean-cluster: removing containers, network and the checkpoint volume"
	$(DC_NOTOKEN) down --remove-orphans -v

logs:
	$(DC_NOTOKEN) logs --tail=$(TAIL) $(if $(filter 1 yes true,$(FOLLOW)),--follow) $(SERVICE)

ps:
	$(DC_NOTOKEN) ps

token:
	@test -f $(CLUSTER_ENV) || { echo "no $(CLUSTER_ENV) yet: 'make up' writes one" >&2; exit 1; }
	@sed -n 's/^DRLBOX_TOKEN=//p' $(CLUSTER_ENV)

# PORT from the command line only (`make tensorboard PORT=6007`): an inherited PORT is not ours.
TENSORBOARD_PORT = $(if $(filter command line,$(origin PORT)),$(PORT),6006)
tensorboard:
	@echo "==> tensorboard: the parameter-server image (built only if missing)"
	bash images/build.sh --if-missing parameter-server
	@echo "==> tensorboard: every job's scalars on http://127.0.0.1:$(TENSORBOARD_PORT) (Ctrl-C stops it)"
	DRLBOX_TENSORBOARD_PORT=$(TENSORBOARD_PORT) $(DC_NOTOKEN) run --rm --service-ports tensorboard

k8s-validate: $(STAMP)
	@echo "==> k8s-validate: kustomize build + kubernetes-validate --strict (k8s/validate.sh)"
	PATH="$(abspath $(VENV))/bin:$$PATH" bash k8s/validate.sh
