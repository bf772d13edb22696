#!/usr/bin/env bash
# The demo on the top-level cluster.d/: local-directory servers under .cluster/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec uv run --frozen python -m reconciler.demo "$@"
