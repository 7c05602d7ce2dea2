#!/usr/bin/env bash
# Render the drlbox kustomizations and validate every rendered object against the Kubernetes
# OpenAPI schemas, strictly (unknown fields are errors).
#
#   bash k8s/validate.sh              # k8s/base and every k8s/overlays/*/
#   bash k8s/validate.sh DIR [DIR...] # just these kustomization directories
#
# Needs: kubectl (with built-in kustomize, 1.21+; Debian: apt-get install kubernetes-client)
#        kubernetes-validate (pip install kubernetes-validate; found on PATH or in .venv/bin)
# Schemas: Kubernetes $K8S_VERSION, default 1.32.0 (the kubectl client these manifests were
#          written with). The manifests use nothing newer than 1.27 (native gRPC probes are GA
#          there) and also validate against 1.27.0: K8S_VERSION=1.27.0 bash k8s/validate.sh
#
# Prints one line per kustomization (ok/FAIL) and exits non-zero if any fails. A rendering
# fails if kustomize errors or warns, if it is empty, or if kubernetes-validate reports an
# error or cannot find a schema for an object (e.g. a misspelt apiVersion or kind).
set -uo pipefail

k8s_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$k8s_dir")"
K8S_VERSION="${K8S_VERSION:-1.32.0}"

KUBECTL="${KUBECTL:-kubectl}"
if ! command -v "$KUBECTL" >/dev/null 2>&1; then
    echo "error: kubectl not found. Install it: 'apt-get install kubernetes-client' on Debian," >&2
    echo "       or see https://kubernetes.io/docs/tasks/tools/ (or set KUBECTL=/path/to/kubectl)." >&2
    exit 2
fi

if [[ -n "${KUBERNETES_VALIDATE:-}" ]]; then
    validator="$KUBERNETES_VALIDATE"
elif command -v kubernetes-validate >/dev/null 2>&1; then
    validator="$(command -v kubernetes-validate)"
elif [[ -x "$repo_dir/.venv/bin/kubernetes-validate" ]]; then
    validator="$repo_dir/.venv/bin/kubernetes-validate"
else
    echo "error: kubernetes-validate not found on PATH or in $repo_dir/.venv/bin." >&2
    echo "       Install it: .venv/bin/pip install kubernetes-validate  (PyPI package" >&2
    echo "       'kubernetes-validate'; or pip install -e '.[dev]')." >&2
    exit 2
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=("$k8s_dir/base")
    for d in "$k8s_dir"/overlays/*/; do
        [[ -f "$d/kustomization.yaml" || -f "$d/kustomization.yml" || -f "$d/Kustomization" ]] \
            && targets+=("${d%/}")
    done
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/drlbox-k8s-validate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "validating with $("$KUBECTL" version --client 2>/dev/null | head -n1 | sed 's/^Client Version: /kubectl /')," \
     "kubernetes-validate $("$validator" --version 2>&1), Kubernetes $K8S_VERSION schemas (--strict)"

# Make sure this kubernetes-validate ships schemas for $K8S_VERSION (it only ships recent ones).
printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: probe\n' >"$work/probe.yaml"
if ! probe_out="$("$validator" --strict --quiet -k "$K8S_VERSION" "$work/probe.yaml" 2>&1)" \
        || [[ -n "$probe_out" ]]; then
    echo "error: kubernetes-validate $("$validator" --version 2>&1) cannot validate against" \
         "Kubernetes $K8S_VERSION (no schemas for it?); pick another K8S_VERSION." >&2
    sed 's/^/    /' <<<"$probe_out" >&2
    exit 2
fi

failed=0
for target in "${targets[@]}"; do
    label="${target#"$repo_dir"/}"
    rendered="$work/rendered.yaml"
    if ! "$KUBECTL" kustomize "$target" >"$rendered" 2>"$work/kustomize.err"; then
        echo "FAIL $label: kubectl kustomize failed"
        sed 's/^/    /' "$work/kustomize.err"
        failed=1
        continue
    fi
    if [[ -s "$work/kustomize.err" ]]; then
        echo "FAIL $label: kubectl kustomize warned (fix the kustomization)"
        sed 's/^/    /' "$work/kustomize.err"
        failed=1
        continue
    fi
    count="$(grep -c '^kind:' "$rendered" || true)"
    if [[ "$count" -eq 0 ]]; then
        echo "FAIL $label: the rendering contains no objects"
        failed=1
        continue
    fi
    out="$("$validator" --strict --quiet -k "$K8S_VERSION" "$rendered" 2>&1)"
    rc=$?
    # With --quiet, kubernetes-validate prints nothing unless something is wrong; a WARN (no
    # schema for an object's apiVersion/kind) exits 0 but counts as a failure here.
    if [[ $rc -ne 0 || -n "$out" ]]; then
        echo "FAIL $label: kubernetes-validate rejected the rendering (exit $rc)"
        sed -e "s|$rendered|$label|g" -e 's/^/    /' <<<"$out"
        failed=1
        continue
    fi
    echo "ok   $label ($count objects valid)"
done

exit "$failed"
