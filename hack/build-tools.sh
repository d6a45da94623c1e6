#!/usr/bin/env bash
# Builds the control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from Go
# modules into bin/, keyed by version so they are rebuilt only when a pin moves.
# Prints nothing but progress; idempotent and safe to call from every target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
mkdir -p "$bin"

# version <go.mod> <module>: the version a tools go.mod requires (block or one-line form).
version() { awk -v m="$2" '$1=="require"{$1=""; $0=$0} $1==m && $2 ~ /^v/ {print $2; exit}' "$1"; }
etcd_version=$(version "$root/hack/tools/etcd/go.mod" go.etcd.io/etcd/server/v3)
kube_version=$(version "$root/hack/tools/kube/go.mod" k8s.io/kubernetes)
[ -n "$etcd_version" ] && [ -n "$kube_version" ] || { echo "cannot read tool versions" >&2; exit 1; }

build() { # name version module-dir package
  local name=$1 version=$2 dir=$3 pkg=$4
  local out="$bin/$name-$version"
  if [ ! -x "$out" ]; then
    echo "building $name $version (first time only)" >&2
    (cd "$root/hack/tools/$dir" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
  fi
  ln -sfn "$name-$version" "$bin/$name"
}

build etcd "$etcd_version" etcd .
build kube-apiserver "$kube_version" kube k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager "$kube_version" kube k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl "$kube_version" kube ./kubectl
