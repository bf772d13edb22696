"""The git user's ~/.ssh/known_hosts (every peer's host key) and authorized_keys (read
for the access checks): their lines (gather), and ``edit_lines`` (execute)."""

from __future__ import annotations

import os

from reconciler.server.common import atomic_write, make_dirs, read_lines, resolve
from reconciler.server.ops import EditLines, handler


def known_hosts_host(host: str, port: int | None) -> str:
    """How known_hosts names ``host``: bare on port 22, else ``[host]:port``."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def ssh_lines(home: str) -> dict[str, list[str]]:
    ssh = os.path.join(home, ".ssh")
    return {
        "known_hosts": read_lines(os.path.join(ssh, "known_hosts")),
        "authorized_keys": read_lines(os.path.join(ssh, "authorized_keys")),
    }


def op_edit_lines(op: EditLines) -> None:
    full = resolve(op.path)
    make_dirs(os.path.dirname(full), op.dir_mode)
    try:
        with open(full, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = []
    remove = set(op.remove)
    kept = [line for line in lines if line.strip() not in remove]
    present = {line.strip() for line in kept}
    kept += [line for line in op.add if line not in present]
    atomic_write(full, ("\n".join(kept) + "\n").encode("utf-8") if kept else b"", op.mode)


OPS = dict(
    [
        handler(EditLines, op_edit_lines),
    ]
)
