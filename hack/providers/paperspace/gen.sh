#!/usr/bin/env bash
# Regenerates the Paperspace API client from the verbatim spec, read in place
# from the shared provider-specs directory (../shared/provider-specs/paperspace
# relative to the repository root, or $PROVIDER_SPECS/paperspace when
# PROVIDER_SPECS is set), with a pinned oapi-codegen. Callable from any
# directory; the output is deterministic. The spec is first simplified
# (simplify.go: primitive anyOf unions become plain types) into a temporary
# file; the spec itself is never touched.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
specs="${PROVIDER_SPECS:-${root}/../shared/provider-specs}"
spec="${specs}/paperspace/openapi.json"
if [[ ! -f "${spec}" ]]; then
	echo "gen.sh: ${spec} is missing; set PROVIDER_SPECS to the provider-specs directory" >&2
	exit 1
fi
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
