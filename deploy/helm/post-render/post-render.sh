#!/usr/bin/env bash
# Helm post-renderer: Helm's rendered manifests on stdin, the patched ones on stdout
# (kustomization.yaml beside this script). Needs kubectl (its built-in kustomize).
#   Helm 3: helm upgrade ... --post-renderer deploy/helm/post-render/post-render.sh
#   Helm 4: helm plugin install deploy/helm/post-render, then --post-renderer ecosystem-dagster
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/rendered.yaml"
cp "$here/kustomization.yaml" "$work/kustomization.yaml"
kubectl kustomize "$work"
