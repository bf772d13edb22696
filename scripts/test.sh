#!/usr/bin/env bash
# The whole test suite: lint, types, unit and end-to-end tests.
# Extra arguments go to pytest (for example: scripts/test.sh -k serve).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if [ "$(id -u)" = 0 ] && ! command -v promtool >/dev/null 2>&1; then
    # As root the metrics tests must run, not skip.
    echo "promtool is missing and could not be installed (apt-get install prometheus)" >&2
    exit 1
fi

uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
uv run --frozen pytest "$@"
