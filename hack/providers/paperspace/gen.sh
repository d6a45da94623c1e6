#!/usr/bin/env bash
# Regenerates the Paperspace API client from the verbatim spec in
# hack/provider-specs/paperspace with a pinned oapi-codegen. Callable from any
# directory; the output is deterministic. The spec is first simplified
# (simplify.go: primitive anyOf unions become plain types) into a temporary
# file; the copy in hack/provider-specs is never touched.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
spec="${root}/hack/provider-specs/paperspace/openapi.json"
out="${root}/pkg/providers/paperspace/paperspaceapi/client.gen.go"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

cd "${root}"
go run "${here}/simplify.go" "${spec}" "${tmp}/openapi.json"
mkdir -p "$(dirname "${out}")"
go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 \
	-config "${here}/config.yaml" \
	-o "${out}" \
	"${tmp}/openapi.json"
