#!/usr/bin/env bash
# Build the drlbox role images from images/Dockerfile:
#   drlbox/replay            (no TensorFlow)
#   drlbox/parameter-server
#   drlbox/worker            (also runs the evaluator)
#
# Usage: images/build.sh [--if-missing] [--no-check] [IMAGE...]
#   IMAGE         any of replay, parameter-server, worker (default: all three, in that order)
#   --if-missing  build only images whose tag does not exist yet (what `make up` uses)
#   --no-check    skip the smoke tests after building
#
# Environment:
#   BASE_IMAGE    base image; when unset, python:3.11-slim-bookworm if it is present or can be
#                 pulled, else drlbox/base:bookworm (built with images/build-base.sh if missing)
#   TAG           tag for the images (default: latest); they are also tagged with the version
#   EXTRAS        setup.py extras for the TensorFlow images (default: atari; EXTRAS= drops it)
#   IMAGE_PREFIX  repository prefix (default: drlbox)
#   DOCKER_BUILD_ARGS  extra arguments for `docker build` (word-split), e.g. "--no-cache"
set -euo pipefail
cd "$(dirname "$0")/.."

all_images=(replay parameter-server worker)
if_missing=0
check=1
images=()
for arg in "$@"; do
    case "$arg" in
        --if-missing) if_missing=1 ;;
        --no-check) check=0 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        replay|parameter-server|worker) images+=("$arg") ;;
        *) echo "build.sh: unknown argument '$arg' (images: ${all_images[*]})" >&2; exit 2 ;;
    esac
done
[ ${#images[@]} -gt 0 ] || images=("${all_images[@]}")

prefix="${IMAGE_PREFIX:-drlbox}"
tag="${TAG:-latest}"
extras="${EXTRAS-atari}"
version="$(sed -n 's/^[[:space:]]*version="\([^"]*\)".*/\1/p' setup.py | head -n1)"
version="${version:-dev}"
vcs_ref="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- setup.py pyproject.toml drlbox 2>/dev/null)" ]; then
    vcs_ref="${vcs_ref}-dirty"
fi

docker info >/dev/null 2>&1 || {
    echo "build.sh: cannot talk to the Docker daemon; run 'make docker-setup' (or start dockerd)" >&2
    exit 1
}

# Which images still need building?
todo=()
for name in "${images[@]}"; do
    if [ "$if_missing" = 1 ] && docker image inspect "$prefix/$name:$tag" >/dev/null 2>&1; then
        echo "==> $prefix/$name:$tag exists; not rebuilding (run 'make images' to rebuild)"
    else
        todo+=("$name")
    fi
done
if [ ${#todo[@]} -eq 0 ]; then
    exit 0
fi

# The base image. No registry may be reachable: fall back to the debootstrap-made local base.
default_base="python:3.11-slim-bookworm"
local_base="drlbox/base:bookworm"
if [ -n "${BASE_IMAGE:-}" ]; then
    base="$BASE_IMAGE"
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        echo "==> pulling base image $base"
        docker pull "$base"
    fi
elif docker image inspect "$default_base" >/dev/null 2>&1; then
    base="$default_base"
elif timeout 120 docker pull "$default_base" >/dev/null 2>&1; then
    base="$default_base"
else
    echo "==> $default_base is not present and cannot be pulled; using $local_base"
    base="$local_base"
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        echo "==> building $base with images/build-base.sh (debootstrap; a few minutes)"
        bash images/build-base.sh "$base"
    fi
fi

# Docker clients from 23 on use BuildKit through the buildx plugin; without the plugin, ask for
# the classic builder explicitly (the Dockerfile works with both).
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

echo "==> building ${todo[*]} from base $base (version $version, revision $vcs_ref, extras '${extras}')"
declare -A seconds
for name in "${todo[@]}"; do
    echo
    echo "==> docker build --target $name -t $prefix/$name:$tag"
    start=$(date +%s)
    # shellcheck disable=SC2086  # DOCKER_BUILD_ARGS is meant to be word-split
    docker build \
        --file images/Dockerfile \
        --target "$name" \
        --build-arg "BASE_IMAGE=$base" \
        --build-arg "EXTRAS=$extras" \
        --build-arg "DRLBOX_VERSION=$version" \
        --build-arg "VCS_REF=$vcs_ref" \
        --tag "$prefix/$name:$tag" \
        --tag "$prefix/$name:$version" \
        ${DOCKER_BUILD_ARGS:-} \
        .
    seconds[$name]=$(( $(date +%s) - start ))
    echo "==> built $prefix/$name:$tag in ${seconds[$name]}s"
done

failed=0
if [ "$check" = 1 ]; then
    echo
    for name in "${todo[@]}"; do
        image="$prefix/$name:$tag"
        uid="$(docker run --rm --entrypoint id "$image" -u)"
        if [ "$uid" != 10001 ]; then
            echo "check FAILED: $image runs as uid $uid, not 10001" >&2; failed=1
        fi
        if [ "$name" = replay ] && docker run --rm --entrypoint python3 "$image" -c 'import tensorflow' >/dev/null 2>&1; then
            echo "check FAILED: $image can import tensorflow" >&2; failed=1
        fi
        if docker run --rm --entrypoint test "$image" -x /opt/venv/bin/drlbox; then
            if docker run --rm "$image" --help >/dev/null; then
                echo "check ok: $image runs as uid $uid; 'drlbox --help' works"
            else
                echo "check FAILED: 'docker run --rm $image --help' exits non-zero" >&2; failed=1
            fi
        else
            echo "check WARNING: $image has no 'drlbox' command yet (setup.py needs" \
                 "entry_points={'console_scripts': ['drlbox=drlbox.cli:main']})" >&2
        fi
    done
fi

echo
printf '%-34s %10s %10s\n' IMAGE "BUILD TIME" SIZE
for name in "${todo[@]}"; do
    image="$prefix/$name:$tag"
    size="$(docker image ls --format '{{.Size}}' "$image" | head -n1)"
    printf '%-34s %9ss %10s\n' "$image" "${seconds[$name]}" "$size"
done
exit "$failed"
