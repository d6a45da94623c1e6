#!/usr/bin/env bash
# Regenerates pkg/providers/vastai/vastaiapi/client.gen.go, Vast.ai's client,
# with oapi-codegen (pinned below), restricted to the operations the adapter
# and the simulator use (see oapi-codegen.yaml).
#
# The spec is read in place from the shared provider-specs directory:
# $PROVIDER_SPECS/vastai/openapi.yaml, PROVIDER_SPECS defaulting to
# ../shared/provider-specs relative to the repository root. It is OpenAPI 3.1
# written as YAML, so it is first converted to JSON (yaml2json.go) and then
# rewritten into the 3.0 dialect oapi-codegen accepts by
# hack/providers/openapi30, both into temporary files; the spec itself is
# never modified. Deterministic: running it twice gives identical output.
# Callable from any working directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
specs="${PROVIDER_SPECS:-${root}/../shared/provider-specs}"
spec="${specs}/vastai/openapi.yaml"
oapi_codegen="github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"

if [[ ! -f "${spec}" ]]; then
  echo "vastai/gen.sh: Vast.ai's spec is missing: ${spec}" >&2
  echo "vastai/gen.sh: set PROVIDER_SPECS to the provider-specs directory (it holds vastai/openapi.yaml)" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# The config's output path is relative to the repository root (the cwd here).
cd "${root}"
go run "${here}/yaml2json.go" "${spec}" "${tmp}/openapi-3.1.json"
go run ./hack/providers/openapi30 "${tmp}/openapi-3.1.json" "${tmp}/openapi-3.0.json"
mkdir -p pkg/providers/vastai/vastaiapi
go run "${oapi_codegen}" -config "${here}/oapi-codegen.yaml" "${tmp}/openapi-3.0.json"
