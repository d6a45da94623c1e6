#!/usr/bin/env bash
# Regenerates everything derived from pkg/apis: deepcopy and register code,
# the typed clientset (with watch and apply configurations), listers and
# informers under pkg/generated, and the CRD YAML in manifests/.
#
#   hack/update-codegen.sh            write into this tree
#   ROOT=/tmp/copy hack/update-codegen.sh   write into a copy (verify-codegen.sh)
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "${ROOT}"
MODULE=github.com/solanyn/gpu-operator
CONTROLLER_TOOLS_VERSION=v0.23.0

# Generators are installed into the repository's bin/ (git-ignored).
export GOBIN="${ROOT}/bin/codegen"
mkdir -p "${GOBIN}"

# On a fresh machine the module is not in the cache yet, and `go list -m`
# then prints an empty Dir: download it first (a no-op when cached).
go mod download k8s.io/code-generator
CODEGEN_PKG=$(go list -m -f '{{.Dir}}' k8s.io/code-generator)
if [ ! -f "${CODEGEN_PKG}/kube_codegen.sh" ]; then
  echo "k8s.io/code-generator not found in the module cache (${CODEGEN_PKG:-empty})" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "${CODEGEN_PKG}/kube_codegen.sh"

kube::codegen::gen_helpers --boilerplate hack/boilerplate.go.txt pkg/apis
kube::codegen::gen_register --boilerplate hack/boilerplate.go.txt pkg/apis
kube::codegen::gen_client \
  --with-watch \
  --with-applyconfig \
  --output-dir pkg/generated \
  --output-pkg "${MODULE}/pkg/generated" \
  --boilerplate hack/boilerplate.go.txt \
  pkg/apis

# CRDs from the kubebuilder markers on the Go types. allowDangerousTypes
# permits float64: prices are plain JSON numbers in the user's YAML.
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
GOFLAGS=-mod=mod go run "sigs.k8s.io/controller-tools/cmd/controller-gen@${CONTROLLER_TOOLS_VERSION}" \
  crd:allowDangerousTypes=true paths=./pkg/apis/... output:crd:dir="${tmp}"
# One manifest per CRD; a kind added to pkg/apis must be given its file here.
crds=(
  "tgp.solanyn.com_gpurequests.yaml:manifests/10-crd-gpurequests.yaml"
  "tgp.solanyn.com_gpubudgets.yaml:manifests/11-crd-gpubudgets.yaml"
)
for pair in "${crds[@]}"; do
  mv "${tmp}/${pair%%:*}" "${pair#*:}"
done
if left=$(ls -A "${tmp}") && [ -n "${left}" ]; then
  echo "controller-gen wrote CRDs with no manifest file in hack/update-codegen.sh: ${left}" >&2
  exit 1
fi
