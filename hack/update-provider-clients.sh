#!/usr/bin/env bash
# Regenerates the providers' HTTP clients from their published OpenAPI specs
# with oapi-codegen: one gen.sh per provider. The specs are not part of the
# project: each gen.sh reads them in place from ../shared/provider-specs
# (relative to the repository root; PROVIDER_SPECS overrides).
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
for gen in "${ROOT}"/hack/providers/*/gen.sh; do
  ROOT="${ROOT}" bash "${gen}"
done
