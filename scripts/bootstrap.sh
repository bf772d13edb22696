# Sourced by scripts/test.sh and scripts/demo.sh: make sure uv, the project's
# virtual environment and (for the end-to-end tests) OpenSSH's sshd exist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv
fi

# The servers in the end-to-end tests run as their own OS users; a venv made from
# the system's Python (not one under /root) keeps the runtime executable for them.
if [ -x /usr/bin/python3 ]; then
    export UV_PYTHON=/usr/bin/python3
fi
uv sync --quiet --frozen
