#!/usr/bin/env bash
# Regenerates pkg/providers/lambda/lambdaapi/client.gen.go from Lambda's
# published OpenAPI 3.1 spec. The spec is first rewritten into the 3.0 dialect
# oapi-codegen accepts (see hack/providers/openapi30) in a temporary file; the spec
# itself is never modified. Deterministic: running it twice gives identical
# output. Callable from any working directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
spec="${root}/hack/provider-specs/lambda/openapi-1.8.3.json"
oapi_codegen="github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

cd "${root}"
go run ./hack/providers/openapi30 "${spec}" "${tmp}/openapi-3.0.json"
mkdir -p pkg/providers/lambda/lambdaapi
# The config's output path is relative to the repository root (the cwd here).
go run "${oapi_codegen}" -config "${here}/oapi-codegen.yaml" "${tmp}/openapi-3.0.json"
