#!/usr/bin/env bash
# Regenerates pkg/providers/runpod/runpodv2/client.gen.go, RunPod's REST v2
# client (api.runpod.io/v2; REST v1 was retired on 2026-11-15 and is not
# generated), with oapi-codegen (pinned below), restricted to the operations
# the adapter and the simulator use (see oapi-codegen.yaml).
#
# The spec is read in place from the shared provider-specs directory:
# $PROVIDER_SPECS/runpod/rest-v2-openapi.json, PROVIDER_SPECS defaulting to
# ../shared/provider-specs relative to the repository root. It is OpenAPI
# 3.1, so it is first rewritten into the 3.0 dialect oapi-codegen accepts by
# hack/providers/openapi30, into a temporary file; the spec itself is never
# modified. Deterministic: running it twice gives identical output. Callable
# from any working directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
specs="${PROVIDER_SPECS:-${root}/../shared/provider-specs}"
spec="${specs}/runpod/rest-v2-openapi.json"
oapi_codegen="github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"

if [[ ! -f "${spec}" ]]; then
  echo "runpod/gen.sh: RunPod's REST v2 spec is missing: ${spec}" >&2
  echo "runpod/gen.sh: set PROVIDER_SPECS to the provider-specs directory (it holds runpod/rest-v2-openapi.json)" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# The config's output path is relative to the repository root (the cwd here).
cd "${root}"
go run ./hack/providers/openapi30 "${spec}" "${tmp}/rest-v2-openapi-3.0.json"
mkdir -p pkg/providers/runpod/runpodv2
go run "${oapi_codegen}" -config "${here}/oapi-codegen.yaml" "${tmp}/rest-v2-openapi-3.0.json"
