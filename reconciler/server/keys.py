"""The server's key pair: the git user's keys in ~/.ssh (gather: public halves only,
the private key's existence checked, never opened) and ``keygen`` (execute)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import stat
from typing import Any

from reconciler.server.common import (
    drop_temporary,
    fsync_dir,
    make_dirs,
    own_temporary,
    place,
    read_text,
    remove_stale,
    resolve,
    run,
)
from reconciler.server.ops import Keygen, handler
from reconciler.server.wire import Record

MAX_KEY_FILES = 256  # files looked at in ~/.ssh for key pairs
KEYGEN_PREFIX = ".reconciler-keygen-"


def key_facts(home: str) -> dict[str, Any]:
    ssh = os.path.join(home, ".ssh")
    public = read_text(os.path.join(ssh, "id_ed25519.pub"), 16384)
    mode = None
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(ssh).st_mode)
    return {
        "ssh_dir_mode": mode,
        "server_key": public.strip() if public else None,
        "server_key_private": os.path.isfile(os.path.join(ssh, "id_ed25519")),
        "key_pairs": key_pairs(ssh),
    }


@dataclasses.dataclass(frozen=True)
class KeyPair(Record):
    """A key pair in the git user's ~/.ssh: its path (relative to the home) and public line."""

    path: str
    public: str


def key_pairs(ssh: str) -> list[dict[str, Any]]:
    """The public halves of the key pairs in ~/.ssh: NAME.pub beside a file NAME.

    Only the private key's existence is checked; it is never opened.
    """
    pairs: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(ssh))[:MAX_KEY_FILES]
    except OSError:
        return pairs
    for name in names:
        if name.startswith(".") or not name.endswith(".pub") or len(name) <= len(".pub"):
            continue
        if not os.path.isfile(os.path.join(ssh, name[: -len(".pub")])):
            continue
        text = read_text(os.path.join(ssh, name), 16384)
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if len(lines) == 1:
            pairs.append(KeyPair(".ssh/" + name[: -len(".pub")], lines[0]).to_json())
    return pairs


def op_keygen(op: Keygen) -> None:
    directory = resolve(".ssh")
    make_dirs(directory, 0o700)
    os.chmod(directory, 0o700)
    key = os.path.join(directory, "id_ed25519")
    if os.path.exists(key):
        return
    # Made under a temporary name and moved in, private key first, public key last:
    # a run killed while ssh-keygen writes leaves no half a key pair under the real
    # names, and once both are moved nothing is left to clean up.
    remove_stale(directory, KEYGEN_PREFIX)
    made = os.path.join(directory, f"{KEYGEN_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
    own_temporary(made)
    own_temporary(made + ".pub")
    try:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", op.comment, "-f", made])
        place(made, key)
        place(made + ".pub", key + ".pub")
    except BaseException:
        for leftover in (made, made + ".pub"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
            drop_temporary(leftover)
        raise
    fsync_dir(directory)


OPS = dict(
    [
        handler(Keygen, op_keygen),
    ]
)
