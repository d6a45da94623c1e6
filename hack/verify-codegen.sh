#!/usr/bin/env bash
# Fails when generated code or CRDs differ from what hack/update-codegen.sh
# (and hack/update-provider-clients.sh) would write: regenerates into a
# temporary copy of the tree and diffs it against this one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT

# Copy the tree without build output or VCS data.
tar -C "${ROOT}" --exclude=./bin --exclude=./.git --exclude=./.demo -cf - . | tar -C "${tmp}" -xf -
mkdir -p "${tmp}/bin"
[ -d "${ROOT}/bin/codegen" ] && cp -r "${ROOT}/bin/codegen" "${tmp}/bin/"

# The provider specs live beside the repository, not in it: the copy in
# ${tmp} must read the ones beside this tree.
export PROVIDER_SPECS="${PROVIDER_SPECS:-${ROOT}/../shared/provider-specs}"
ROOT="${tmp}" "${tmp}/hack/update-codegen.sh" >/dev/null
ROOT="${tmp}" "${tmp}/hack/update-provider-clients.sh" >/dev/null

status=0
for path in pkg/apis pkg/generated manifests pkg/providers; do
  if ! diff -ruN "${ROOT}/${path}" "${tmp}/${path}"; then
    status=1
  fi
done
if [ "${status}" -ne 0 ]; then
  echo "generated files are out of date: run 'make generate'" >&2
  exit 1
fi
echo "generated files are up to date"
