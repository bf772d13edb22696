"""The git user's ~/.ssh/config: a block the reconciler manages, which keeps the
connections to the peers open (OpenSSH's ControlMaster), so that a replication push
pays for one ssh handshake per peer every few minutes instead of one per push.
Its lines (gather), and ``ssh_config_block`` (execute).

The block is the lines from ``BLOCK_BEGIN`` to ``BLOCK_END``; every other byte of
the file is a person's and stays as it is, in its place. A file with the first
marker but not the last is refused: where the block ends is then unknown, and
rewriting it could drop a person's lines.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from reconciler.server.common import (
    HOME,
    OpError,
    atomic_write,
    bounded,
    make_dirs,
    read_bytes,
    resolve,
)
from reconciler.server.ops import SshConfigBlock, handler

CONFIG_PATH = ".ssh/config"
BLOCK_BEGIN = (
    "# BEGIN reconciler: connections to the cluster's servers (managed by reconcile apply)"
)
BLOCK_END = "# END reconciler"
MAX_CONFIG_BYTES = 1 << 20
# The connection masters' sockets: ~/.ssh/cm-%C (reconciler.planning.ssh_config).
SOCKET_PREFIX = "cm-"
STOP_SECONDS = 10.0


def ssh_config_facts(home: str) -> dict[str, Any]:
    """The file's lines (None: no such file, or unreadable)."""
    data = read_bytes(os.path.join(home, CONFIG_PATH), MAX_CONFIG_BYTES)
    return {"ssh_config": None if data is None else data.decode("utf-8", "replace").splitlines()}


def split_block(lines: list[str]) -> tuple[list[str], list[str] | None, list[str]]:
    """(lines before the block, the block with its markers or None, lines after it)."""
    stripped = [line.strip() for line in lines]
    if BLOCK_BEGIN not in stripped:
        return lines, None, []
    begin = stripped.index(BLOCK_BEGIN)
    if BLOCK_END not in stripped[begin + 1 :]:
        raise OpError(
            f"~/{CONFIG_PATH} has the line {BLOCK_BEGIN!r} but no {BLOCK_END!r} after it; "
            "fix the file by hand (nothing in it was changed)"
        )
    end = stripped.index(BLOCK_END, begin + 1)
    return lines[:begin], lines[begin : end + 1], lines[end + 1 :]


def op_ssh_config_block(op: SshConfigBlock) -> None:
    """Put ``block`` (its lines, markers included; empty: none) in place of the
    managed block, or first in the file when it has none: OpenSSH takes the first
    value it reads for an option, and the block's last option line ("Host *")
    returns the lines after it to every host. A person's lines are kept byte for
    byte; nothing is written when nothing changes."""
    full = resolve(op.path)
    make_dirs(os.path.dirname(full), op.dir_mode)
    data = read_bytes(full, MAX_CONFIG_BYTES + 1)
    if data is None and os.path.lexists(full):
        raise OpError(f"~/{CONFIG_PATH} cannot be read; nothing in it was changed")
    if data is not None and len(data) > MAX_CONFIG_BYTES:
        raise OpError(f"~/{CONFIG_PATH} is larger than {MAX_CONFIG_BYTES} bytes; left as it is")
    # surrogateescape: bytes that are not UTF-8 go back out exactly as they came.
    text = "" if data is None else data.decode("utf-8", "surrogateescape")
    lines = text.splitlines(keepends=True)
    before, present, after = split_block(lines)
    block = [line + "\n" for line in op.block]
    new = [*block, *lines] if present is None else [*before, *block, *after]
    if (data is None and not block) or (present is not None and present == block):
        return
    atomic_write(full, "".join(new).encode("utf-8", "surrogateescape"), op.mode)


def stop_connections() -> None:
    """Ask every connection master of this user to stop taking new sessions (those
    running end as they would; the next push makes a new master).

    A master's sessions run the forced command of the authorized_keys line its peer
    let it in with, when it connected: after the admin repository changed (gitosis
    rewrote authorized_keys), a peer may let this server's key in as someone else,
    or not at all, and only a new connection is let in as the file says now.
    """
    directory = os.path.join(HOME, ".ssh")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in sorted(names):
        path = os.path.join(directory, name)
        try:
            is_socket = name.startswith(SOCKET_PREFIX) and stat.S_ISSOCK(os.lstat(path).st_mode)
        except OSError:
            continue
        if is_socket:
            argv = ["ssh", "-o", f"ControlPath={path}", "-O", "stop", "reconciler-peer"]
            try:
                bounded(argv, timeout=STOP_SECONDS)
            except OSError:
                return  # no ssh here: no master either


OPS = dict([handler(SshConfigBlock, op_ssh_config_block)])
