#!/usr/bin/env bash
# Make this machine able to build and run the drlbox images (what `make docker-setup` runs; CI
# calls it before the e2e tests). Idempotent; every step is skipped when already done:
#   1. apt-get install docker.io, docker-compose and debootstrap if a command is missing
#   2. start dockerd in the background if `docker info` fails, and wait until it answers
#   3. make sure a base image exists: python:3.11-slim-bookworm if present or pullable, else
#      drlbox/base:bookworm built with images/build-base.sh (no registry needed)
# Environment: DOCKERD_LOG (default /tmp/dockerd.log), DOCKERD_WAIT seconds (default 60),
#              BASE_IMAGE (skip step 3's choice: this image must exist or be pullable).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); fi
fi

# 1. Packages.
packages=()
# The engine (a docker client alone, e.g. in /usr/local/bin, cannot run containers).
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    packages+=(docker-compose)
fi
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
if [ ${#packages[@]} -gt 0 ]; then
    echo "==> installing ${packages[*]} with apt-get"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        "${packages[@]}"
else
    echo "==> docker, compose and debootstrap are installed"
fi

# 2. The daemon.
if docker info >/dev/null 2>&1; then
    echo "==> dockerd is running"
else
    log="${DOCKERD_LOG:-/tmp/dockerd.log}"
    echo "==> starting dockerd in the background (log: $log)"
    # setsid + nohup: the daemon outlives this script and the make/CI shell that ran it.
    "${sudo_cmd[@]}" setsid nohup dockerd >"$log" 2>&1 </dev/null &
    wait_s="${DOCKERD_WAIT:-60}"
    for _ in $(seq "$wait_s"); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "ensure-docker: dockerd did not answer within ${wait_s}s; last lines of $log:" >&2
        tail -n 30 "$log" >&2 || true
        exit 1
    fi
    echo "==> dockerd is up"
fi

# 3. A base image for images/Dockerfile.
if [ -n "${BASE_IMAGE:-}" ]; then
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || docker pull "$BASE_IMAGE"
    echo "==> base image: $BASE_IMAGE"
elif docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1 \
        || timeout 120 docker pull python:3.11-slim-bookworm >/dev/null 2>&1; then
    echo "==> base image: python:3.11-slim-bookworm"
else
    echo "==> python:3.11-slim-bookworm cannot be pulled; using drlbox/base:bookworm"
    bash images/build-base.sh drlbox/base:bookworm
fi
