"""Installing the server library into a directory acting as a git user's home, as
``reconcile apply`` does (its real execute program, run by the local transport), for
tests and benchmarks whose servers are plain directories."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from reconciler.server.hooks import HOOK_MARKER, stub
from reconciler.server_library import entry_blob, install_library_op
from reconciler.transport import run_program
from reconciler.transport.local import LocalTransport


def install_server_library(
    home: Path, repositories: str = "repositories", python: str = "python3", runtime: bool = False
) -> bytes:
    """Install this version's library in ``home`` (its commands run by ``python``, as
    the commands apply installs run by the server's python3); returns the hook stub
    for that home."""
    transport = LocalTransport("local", home)
    op = install_library_op(runtime=runtime).to_json()
    payload = {"actions": [[op]], "repositories": repositories}
    done = run_program(transport, "execute", [], payload, timeout=120, python=python)
    answer = json.loads(done.stdout or b"{}")
    if done.returncode != 0 or answer.get("results") != [{"ok": True, "error": ""}]:
        raise RuntimeError(f"installing the server library in {home} failed: {done!r}")
    return stub(str(home))


def legacy_hook() -> bytes:
    """The hook as releases before the server library installed it: one whole file of
    tens of KB in every repository, marked as the reconciler's (its second line),
    running without anything installed beside it. Built from this version's modules
    (embedded in it), so that it replicates as they do, in sync mode (its drainer
    would need the library)."""
    blob = base64.b64encode(entry_blob("reconciler.server.replication:main")).decode()
    return (
        "#!/usr/bin/env python3\n"
        f"{HOOK_MARKER}\n"
        "import base64, json, zlib\n"
        f"b = json.loads(zlib.decompress(base64.b64decode({blob!r})))\n"
        "exec(b['loader'], {'b': b})\n"
    ).encode()
