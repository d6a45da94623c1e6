#!/usr/bin/env bash
# Regenerates pkg/providers/lambda/lambdaapi/client.gen.go from Lambda's
# published OpenAPI 3.1 spec, read in place from the shared provider-specs
# directory: ../shared/provider-specs/lambda relative to the repository root,
# or $PROVIDER_SPECS/lambda when PROVIDER_SPECS is set. The spec is first
# rewritten into the 3.0 dialect oapi-codegen accepts (see
# hack/providers/openapi30) in a temporary file; the spec itself is never
# modified. Deterministic: running it twice gives identical output. Callable
# from any working directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
specs="${PROVIDER_SPECS:-${root}/../shared/provider-specs}"
spec="${specs}/lambda/openapi-1.8.3.json"
if [[ ! -f "${spec}" ]]; then
	echo "gen.sh: ${spec} is missing; set PROVIDER_SPECS to the provider-specs directory" >&2
	exit 1
fi
oapi_codegen="github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

cd "${root}"
go run ./hack/providers/openapi30 "${spec}" "${tmp}/openapi-3.0.json"
mkdir -p pkg/providers/lambda/lambdaapi
# The config's output path is relative to the repository root (the cwd here).
go run "${oapi_codegen}" -config "${here}/oapi-codegen.yaml" "${tmp}/openapi-3.0.json"
