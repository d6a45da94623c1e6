#!/usr/bin/env bash
# Regenerates the providers' HTTP clients from their published OpenAPI specs
# (hack/provider-specs) with oapi-codegen: one gen.sh per provider.
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
for gen in "${ROOT}"/hack/providers/*/gen.sh; do
  ROOT="${ROOT}" bash "${gen}"
done
