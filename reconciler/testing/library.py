"""Installing the server library into a directory acting as a git user's home, as
``reconcile apply`` does (its real execute program, run by the local transport), for
tests and benchmarks whose servers are plain directories."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.server.hooks import stub
from reconciler.server_library import install_library_op
from reconciler.transport import run_program
from reconciler.transport.local import LocalTransport


def install_server_library(
    home: Path, repositories: str = "repositories", python: str = "python3"
) -> bytes:
    """Install this version's library in ``home`` (its commands run by ``python``, as
    the commands apply installs run by the server's python3); returns the hook stub
    for that home."""
    transport = LocalTransport("local", home)
    payload = {"actions": [[install_library_op(runtime=False)]], "repositories": repositories}
    done = run_program(transport, "execute", [], payload, timeout=120, python=python)
    answer = json.loads(done.stdout or b"{}")
    if done.returncode != 0 or answer.get("results") != [{"ok": True, "error": ""}]:
        raise RuntimeError(f"installing the server library in {home} failed: {done!r}")
    return stub(str(home))
