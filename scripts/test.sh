#!/usr/bin/env bash
# The whole test suite: lint, types, unit and end-to-end tests.
# Extra arguments go to pytest (for example: scripts/test.sh -k serve).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

# What the end-to-end tests run besides git and python3, from Debian's packages:
# sshd for the test servers, sudo for a server reached through a sudoer, promtool.
missing=()
{ command -v sshd || [ -x /usr/sbin/sshd ]; } >/dev/null 2>&1 || missing+=(openssh-server)
command -v sudo >/dev/null 2>&1 || missing+=(sudo)
# awk for the replication hook's shell gate (Debian's mawk is "required": nearly always there).
command -v awk >/dev/null 2>&1 || missing+=(mawk)
# promtool (Debian's prometheus package) checks the metrics and the sample alert rules.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
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
