#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 without any container registry, for
# machines that cannot pull python:3.11-slim-bookworm. Usage: images/build-base.sh [NAME]
# The host's CA bundle goes into the image so pip inside builds trusts the same certificates
# as pip on the host (needed behind an intercepting proxy; harmless elsewhere).
set -euo pipefail
name="${1:-drlbox/base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if docker image inspect "$name" >/dev/null 2>&1; then
    echo "base image $name already exists; remove it to rebuild"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

root="$(mktemp -d /tmp/drlbox-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror"
cp "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
# Keep the image small: package lists and caches are not needed at run time.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$name"
echo "built base image $name"
