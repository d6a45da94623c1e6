#!/usr/bin/env bash
# Regenerates RunPod's HTTP clients with oapi-codegen (pinned below):
#   - pkg/providers/runpod/runpodv1/client.gen.go from REST v1 (OpenAPI 3.0.3,
#     used as is): create, list, get and delete pods;
#   - pkg/providers/runpod/runpodv2/client.gen.go from REST v2 (OpenAPI 3.1):
#     the GPU catalog only. The v2 spec is first rewritten into the 3.0
#     dialect oapi-codegen accepts (see hack/providers/openapi30) in a temporary
#     file; the spec itself is never modified.
# Deterministic: running it twice gives identical output. Callable from any
# working directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
specs="${root}/hack/provider-specs/runpod"
oapi_codegen="github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# The configs' output paths are relative to the repository root (the cwd here).
cd "${root}"
mkdir -p pkg/providers/runpod/runpodv1 pkg/providers/runpod/runpodv2

go run "${oapi_codegen}" -config "${here}/oapi-codegen-v1.yaml" "${specs}/rest-v1-openapi.json"

go run ./hack/providers/openapi30 "${specs}/rest-v2-openapi.json" "${tmp}/rest-v2-openapi-3.0.json"
go run "${oapi_codegen}" -config "${here}/oapi-codegen-v2.yaml" "${tmp}/rest-v2-openapi-3.0.json"
