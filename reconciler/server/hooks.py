"""Hooks: ``hooks/post-receive`` of every mirrored repository is a short stub that
runs the replication hook of the server library installed once per server.

The stub names ``~/.reconciler/server/bin/post-receive`` (a stable path the library's
install rewrites, atomically, for each new version), so upgrading the hook is one op
per server, not one per repository. Gather reports each repository's hook (mode,
owner, digest, whether it carries the marker); execute installs a stub
(``install_hook``, only once the library it runs is in place) and keeps a foreign
hook it replaces beside it (``keep_file``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import stat
from typing import Any

from reconciler.server import library
from reconciler.server.common import OpError, atomic_write, fsync_dir, read_bytes, resolve
from reconciler.server.files import existing_repository_only, write_checked

# On the stub's second line, as on every hook the reconciler wrote before it.
HOOK_MARKER = "# reconciler replication hook (managed by reconcile apply; local edits are replaced)"
HOOK_MODE = 0o755
MANAGED = HOOK_MARKER.split(" (")[0].encode()
HOOK_NAME = "post-receive"
# Quorum mode: hooks/reference-transaction is a symlink to the stub, which runs the
# library's entry point of the same name (docs/quorum.md).
TRANSACTION_HOOK = "reference-transaction"
KEPT_HOOK_PREFIX = "post-receive.foreign-"  # apply's copies of the hooks it replaced

Op = dict[str, Any]


def stub(home: str) -> bytes:
    """The stub for a git user whose home is ``home`` (as gather reports it)."""
    entry = os.path.join(home, library.LIBRARY_DIR, "bin")
    return (
        "#!/bin/sh\n"
        f"{HOOK_MARKER}\n"
        "# Runs the replication hook of the server library reconcile apply installs once\n"
        "# per server (~/.reconciler/server); a new version there is one op per server.\n"
        "# Its entry point is the hook's name: reference-transaction links here.\n"
        f'exec {shlex.quote(entry)}/"${{0##*/}}" "$@"\n'
    ).encode()


class KnownContent:
    """The content the operator expects (the current hook), hashed once per run.

    A file equal to it byte for byte has its digest without hashing it again; any
    other file is hashed. Nothing is remembered between runs.
    """

    def __init__(self, data: bytes | None) -> None:
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest() if data is not None else None

    def digest(self, data: bytes) -> str | None:
        if self.data is not None and len(data) == len(self.data) and data == self.data:
            return self.sha256
        return hashlib.sha256(data).hexdigest()


NO_KNOWN_CONTENT = KnownContent(None)


def hook_facts(gitdir: str, known: KnownContent = NO_KNOWN_CONTENT) -> dict[str, object] | None:
    path = gitdir + "/hooks/post-receive"
    try:
        info = os.lstat(path)
    except OSError:
        return None
    facts: dict[str, object] = {
        "mode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "sha256": None,
        "managed": False,
    }
    if stat.S_ISLNK(info.st_mode):
        facts["symlink"] = True  # absent: false
    if stat.S_ISREG(info.st_mode):
        data = read_bytes(path, 4 << 20)
        if data is None:
            return facts
        facts["sha256"] = known.digest(data)
        facts["managed"] = MANAGED in data[:512]
    return facts


def transaction_hook_facts(gitdir: str) -> dict[str, str]:
    """Quorum mode's hooks/reference-transaction: absent (the common case) says
    nothing; otherwise where a symlink points, or "file" for anything else."""
    path = f"{gitdir}/hooks/{TRANSACTION_HOOK}"
    try:
        return {"transaction_hook": os.readlink(path)}
    except FileNotFoundError:
        return {}
    except OSError:
        return {"transaction_hook": "file"} if os.path.lexists(path) else {}


def op_install_hook(op: Op) -> None:
    """Write a stub, once the library it runs is installed: a stub in place before its
    library would leave every push to the repository unreplicated."""
    if not library.installed(op["library"]):
        raise OpError(
            f"the server library {op['library']} is not installed in ~/{library.LIBRARY_DIR}; "
            f"{op['path']} is left as it is"
        )
    write_checked(op["path"], op["content"].encode("utf-8"), HOOK_MODE, op.get("expect_sha256"))


def op_keep_file(op: Op) -> None:
    """Copy a file that is about to be replaced to ``to`` in the same directory, mode kept.

    A symlink is kept as a symlink to the same target. A copy already at ``to`` with
    the same content is left (a rerun); anything else there is refused.
    """
    source, target = resolve(op["path"]), resolve(op["to"])
    if os.path.dirname(source) != os.path.dirname(target) or source == target:
        raise OpError(f"refusing to keep {op['path']} as {op['to']}: not beside it")
    try:
        info = os.lstat(source)
    except FileNotFoundError:
        raise OpError(f"{op['path']} is gone since the plan was made; run plan again") from None
    if stat.S_ISLNK(info.st_mode):
        link = os.readlink(source)
        if os.path.lexists(target):
            if os.path.islink(target) and os.readlink(target) == link:
                return
            raise OpError(f"{op['to']} exists already; move it away and run again")
        directory = os.path.dirname(target)
        temp = os.path.join(directory, f".{os.path.basename(target)}.reconciler-tmp-link")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.symlink(link, temp)
        os.replace(temp, target)
        fsync_dir(directory)
        return
    if not stat.S_ISREG(info.st_mode):
        raise OpError(f"{op['path']} is not a file; move it away by hand")
    with open(source, "rb") as handle:
        data = handle.read()
    expect = op.get("expect_sha256")
    if expect is not None and hashlib.sha256(data).hexdigest() != expect:
        raise OpError(f"{op['path']} changed since the plan was made; run plan again")
    if os.path.lexists(target):
        if os.path.isfile(target) and not os.path.islink(target):
            with open(target, "rb") as handle:
                if handle.read() == data:
                    return
        raise OpError(f"{op['to']} exists already; move it away and run again")
    atomic_write(target, data, stat.S_IMODE(info.st_mode))


def op_symlink(op: Op) -> None:
    """Make ``path`` a symlink to ``target`` (a name in the same directory), atomically;
    with ``expect`` the path must be absent or already such a link."""
    full = resolve(op["path"])
    link = op["target"]
    if "/" in link or link in ("", ".", ".."):
        raise OpError(f"refusing link target {link!r}: not a name beside {op['path']}")
    existing_repository_only(os.path.dirname(full))
    if os.path.islink(full) and os.readlink(full) == link:
        return
    if os.path.lexists(full):
        raise OpError(f"{op['path']} exists and is not ours; run plan again")
    directory = os.path.dirname(full)
    temp = os.path.join(directory, f".{os.path.basename(full)}.{os.getpid()}.reconciler-tmp-link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.symlink(link, temp)
    os.replace(temp, full)
    fsync_dir(directory)


def op_remove_symlink(op: Op) -> None:
    """Remove ``path`` only while it is the symlink to ``target`` the reconciler made."""
    full = resolve(op["path"])
    if os.path.islink(full) and os.readlink(full) == op["target"]:
        os.unlink(full)
        fsync_dir(os.path.dirname(full))


OPS = {
    "install_hook": op_install_hook,
    "keep_file": op_keep_file,
    "symlink": op_symlink,
    "remove_symlink": op_remove_symlink,
}
