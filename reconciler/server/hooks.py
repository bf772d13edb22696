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

import hashlib
import os
import re
import shlex
import stat

from reconciler.server import library
from reconciler.server.common import (
    OpError,
    atomic_symlink,
    atomic_write,
    command,
    fsync_dir,
    git_dir,
    read_bytes,
    resolve,
    run,
)
from reconciler.server.files import existing_repository_only, write_checked
from reconciler.server.ops import (
    InstallHook,
    KeepFile,
    RemoveSymlink,
    SetConfig,
    Symlink,
    handler,
)

# On the stub's second line, as on every hook the reconciler wrote before it.
HOOK_MARKER = "# reconciler replication hook (managed by reconcile apply; local edits are replaced)"
HOOK_MODE = 0o755
MANAGED = HOOK_MARKER.split(" (")[0].encode()
HOOK_NAME = "post-receive"
# Quorum mode: hooks/proc-receive is a symlink to the stub, which runs the library's
# entry point of the same name, and receive.procReceiveRefs hands it the replicated
# refs of every push (docs/quorum.md).
PROC_RECEIVE_HOOK = "proc-receive"
PROC_RECEIVE_KEY = "receive.procReceiveRefs"
# The release before proc-receive linked hooks/reference-transaction the same way;
# apply removes such a link.
TRANSACTION_HOOK = "reference-transaction"


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


# receive.procReceiveRefs and hooks/proc-receive came with git 2.29; an older git
# ignores them and writes every ref itself, with nobody voting.
PROC_RECEIVE_GIT = (2, 29)


def git_version() -> dict[str, object]:
    """The server's git version as numbers (``git version 2.39.5`` -> [2, 39, 5])."""
    done = command(["git", "--version"], timeout=30)
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout.decode("ascii", "replace"))
    if done.returncode != 0 or match is None:
        return {}
    return {"git_version": [int(part) for part in match.groups() if part is not None]}


def _link(path: str) -> str | None:
    """Absent: None; a symlink: where it points; anything else: "file"."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return None
    except OSError:
        return "file" if os.path.lexists(path) else None


def linked_hook_facts(
    gitdir: str, config: dict[tuple[str, str | None], dict[str, list[str]]]
) -> dict[str, object]:
    """Quorum mode's hooks/proc-receive and receive.procReceiveRefs, and an old
    hooks/reference-transaction link; absent (the common case) says nothing."""
    facts: dict[str, object] = {}
    for key, name in (
        ("proc_receive_hook", PROC_RECEIVE_HOOK),
        ("transaction_hook", TRANSACTION_HOOK),
    ):
        link = _link(f"{gitdir}/hooks/{name}")
        if link is not None:
            facts[key] = link
    values = config.get(("receive", None), {}).get(PROC_RECEIVE_KEY.split(".")[1].lower())
    if values:
        facts["proc_receive_refs"] = list(values)
    return facts


def op_install_hook(op: InstallHook) -> None:
    """Write a stub, once the library it runs is installed: a stub in place before its
    library would leave every push to the repository unreplicated."""
    if not library.installed(op.library):
        raise OpError(
            f"the server library {op.library} is not installed in ~/{library.LIBRARY_DIR}; "
            f"{op.path} is left as it is"
        )
    write_checked(op.path, op.content.encode("utf-8"), HOOK_MODE, op.expect_sha256)


def op_keep_file(op: KeepFile) -> None:
    """Copy a file that is about to be replaced to ``to`` in the same directory, mode kept.

    A symlink is kept as a symlink to the same target. A copy already at ``to`` with
    the same content is left (a rerun); anything else there is refused.
    """
    source, target = resolve(op.path), resolve(op.to)
    if os.path.dirname(source) != os.path.dirname(target) or source == target:
        raise OpError(f"refusing to keep {op.path} as {op.to}: not beside it")
    try:
        info = os.lstat(source)
    except FileNotFoundError:
        raise OpError(f"{op.path} is gone since the plan was made; run plan again") from None
    if stat.S_ISLNK(info.st_mode):
        link = os.readlink(source)
        if os.path.lexists(target):
            if os.path.islink(target) and os.readlink(target) == link:
                return
            raise OpError(f"{op.to} exists already; move it away and run again")
        atomic_symlink(link, target)
        return
    if not stat.S_ISREG(info.st_mode):
        raise OpError(f"{op.path} is not a file; move it away by hand")
    with open(source, "rb") as handle:
        data = handle.read()
    expect = op.expect_sha256
    if expect is not None and hashlib.sha256(data).hexdigest() != expect:
        raise OpError(f"{op.path} changed since the plan was made; run plan again")
    if os.path.lexists(target):
        if os.path.isfile(target) and not os.path.islink(target):
            with open(target, "rb") as handle:
                if handle.read() == data:
                    return
        raise OpError(f"{op.to} exists already; move it away and run again")
    atomic_write(target, data, stat.S_IMODE(info.st_mode))


def op_symlink(op: Symlink) -> None:
    """Make ``path`` a symlink to ``target`` (a name in the same directory), atomically;
    with ``expect`` the path must be absent or already such a link."""
    full = resolve(op.path)
    link = op.target
    if "/" in link or link in ("", ".", ".."):
        raise OpError(f"refusing link target {link!r}: not a name beside {op.path}")
    existing_repository_only(os.path.dirname(full))
    if os.path.islink(full) and os.readlink(full) == link:
        return
    if os.path.lexists(full):
        raise OpError(f"{op.path} exists and is not ours; run plan again")
    atomic_symlink(link, full)


def op_remove_symlink(op: RemoveSymlink) -> None:
    """Remove ``path`` only while it is the symlink to ``target`` the reconciler made."""
    full = resolve(op.path)
    if os.path.islink(full) and os.readlink(full) == op.target:
        os.unlink(full)
        fsync_dir(os.path.dirname(full))


def op_set_config(op: SetConfig) -> None:
    """Make the repository's ``key`` exactly ``values`` (none: unset), in its own config."""
    repo = git_dir(op.repo)
    base = ["git", "--git-dir", repo, "config", "--local"]
    done = command([*base, "--get-all", op.key])
    if done.returncode == 0 and done.stdout.decode().splitlines() == list(op.values):
        return
    if done.returncode == 0:
        run([*base, "--unset-all", op.key])
    for value in op.values:
        run([*base, "--add", op.key, value])


OPS = dict(
    [
        handler(InstallHook, op_install_hook),
        handler(KeepFile, op_keep_file),
        handler(Symlink, op_symlink),
        handler(RemoveSymlink, op_remove_symlink),
        handler(SetConfig, op_set_config),
    ]
)
