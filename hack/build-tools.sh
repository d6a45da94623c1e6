#!/usr/bin/env bash
# Builds the control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from Go modules into bin/, keyed by
# version and go.sum so they are rebuilt only when a pin moves. Prints nothing but
# progress; idempotent and safe to call from every target.
#
# A first build is CPU-bound for minutes on two cores, so it does as little
# work as it can: the three Kubernetes binaries are one `go build` (one
# action graph, so one binary's links overlap the others' compiles), etcd
# builds beside it, nothing emits DWARF (only a debugger would read it), and
# the compiler collects garbage less often (GOGC=400; memory is not short).
# hack/tools/kube/go.mod resolves every module the operator shares with it
# to the operator's versions, and `make build` uses the same flags, so the
# operator's Kubernetes libraries then come from the build cache.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
mkdir -p "$bin"

# version <go.mod> <module>: the version a tools go.mod requires (block or one-line form).
version() { awk -v m="$2" '$1=="require"{$1=""; $0=$0} $1==m && $2 ~ /^v/ {print $2; exit}' "$1"; }
# key <module-dir> <version>: the version and a digest of the module's
# go.sum, so a moved dependency rebuilds too.
key() { echo "$2-$(sha256sum "$root/hack/tools/$1/go.sum" | cut -c1-8)"; }
etcd_version=$(version "$root/hack/tools/etcd/go.mod" go.etcd.io/etcd/server/v3)
kube_version=$(version "$root/hack/tools/kube/go.mod" k8s.io/kubernetes)
[ -n "$etcd_version" ] && [ -n "$kube_version" ] || { echo "cannot read tool versions" >&2; exit 1; }
etcd_version=$(key etcd "$etcd_version")
kube_version=$(key kube "$kube_version")

# build <module-dir> <version> <name=package>...: builds the binaries not in
# bin/ yet, in one go build, into bin/<name>-<version>, and points
# bin/<name> at each.
build() {
  local dir=$1 version=$2 pkgs=() names=() item
  shift 2
  for item in "$@"; do
    if [ ! -x "$bin/${item%%=*}-$version" ]; then
      names+=("${item%%=*}")
      pkgs+=("${item#*=}")
    fi
  done
  if [ ${#names[@]} -gt 0 ]; then
    local start=$SECONDS tmp
    echo "building ${names[*]} $version (first time only)" >&2
    tmp=$(mktemp -d "$bin/.build-XXXXXX")
    # Each package's binary is named after its last path element.
    (cd "$root/hack/tools/$dir" && CGO_ENABLED=0 GOGC=400 go build -trimpath -gcflags=all=-dwarf=false -ldflags=-w -o "$tmp/" "${pkgs[@]}")
    local i
    for i in "${!names[@]}"; do
      mv "$tmp/$(basename "${pkgs[$i]}")" "$bin/${names[$i]}-$version"
    done
    rmdir "$tmp"
    echo "built ${names[*]} $version in $((SECONDS - start))s" >&2
  fi
  for item in "$@"; do
    ln -sfn "${item%%=*}-$version" "$bin/${item%%=*}"
  done
}

build etcd "$etcd_version" etcd=github.com/solanyn/gpu-operator/hack/tools/etcd &
etcd=$!
build kube "$kube_version" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kubectl=./kubectl
wait "$etcd"
