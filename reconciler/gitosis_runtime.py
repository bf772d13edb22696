"""The gitosis-compatible runtime as the reconciler installs it on a server.

A server with no gitosis gets the stdlib-only package ``reconciler.gitosis`` sent
over the channel into ``~/.reconciler/gitosis/lib-VERSION`` and commands in
``~/.reconciler/gitosis/bin`` (no pip, no network). VERSION is a digest of the
files, so any change to the runtime is a new version and an upgrade is one op.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

# Relative to the git user's home.
RUNTIME_DIR = ".reconciler/gitosis"
RUNTIME_BIN = f"{RUNTIME_DIR}/bin"

# The console scripts of the runtime: name -> "module:function".
RUNTIME_COMMANDS: dict[str, str] = {
    "gitosis-init": "reconciler.gitosis.init:main",
    "gitosis-serve": "reconciler.gitosis.serve:main",
    "gitosis-run-hook": "reconciler.gitosis.run_hook:main",
}


@functools.cache
def runtime_files() -> dict[str, bytes]:
    """Path under the lib directory -> content, for the runtime's modules only."""
    files = {"reconciler/__init__.py": resources.files("reconciler").joinpath("__init__.py")}
    package = resources.files("reconciler.gitosis")
    for entry in package.iterdir():
        if entry.name.endswith(".py"):
            files[f"reconciler/gitosis/{entry.name}"] = entry
    return {path: files[path].read_bytes() for path in sorted(files)}


@functools.cache
def runtime_version() -> str:
    digest = hashlib.sha256()
    for path, content in runtime_files().items():
        digest.update(path.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def install_runtime_op() -> dict[str, object]:
    return {
        "op": "install_runtime",
        "dir": RUNTIME_DIR,
        "version": runtime_version(),
        "files": {
            path: base64.b64encode(content).decode() for path, content in runtime_files().items()
        },
        "commands": dict(RUNTIME_COMMANDS),
    }
