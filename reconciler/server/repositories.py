"""Repositories: every bare repository below the base with what each subject reads in
it (gather), and making one whole: ``init_bare``, ``clone_mirror`` (execute)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from reconciler.server import hooks, remotes, repository_settings
from reconciler.server.common import (
    REPAIR_SSH,
    OpError,
    abandoned_temporary,
    drop_temporary,
    fsync_dir,
    is_repository,
    make_dirs,
    own_temporary,
    parse_git_config,
    place,
    read_text,
    remove_stale,
    resolve,
    run,
)
from reconciler.server.ops import CloneMirror, InitBare, handler
from reconciler.server.refs import read_refs, refs_digest

MAX_DEPTH = 12


def repository_facts(
    gitdir: str,
    want_refs: bool,
    known: hooks.KnownContent = hooks.NO_KNOWN_CONTENT,
    memo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = parse_git_config(read_text(gitdir + "/config") or "", memo)
    locks: list[list[object]] = []
    aborted: list[str] = []
    refs = read_refs(gitdir, locks, aborted)
    facts: dict[str, Any] = {
        "head": (read_text(gitdir + "/HEAD", 4096) or "").strip(),
        "bare": (config.get(("core", None), {}).get("bare") or ["true"])[-1] == "true",
        "remotes": remotes.remote_facts(config),
        "hook": hooks.hook_facts(gitdir, known),
        "refs_digest": refs_digest(refs),
        "ref_count": len(refs),
    }
    if locks:
        facts["ref_locks"] = locks
    if aborted:
        facts["aborted"] = aborted
    facts.update(hooks.linked_hook_facts(gitdir, config))
    facts.update(repository_settings.repository_flags(gitdir))
    if want_refs:
        facts["refs"] = refs
    return facts


def walk_repositories(
    base: str,
    want_refs: bool,
    known: hooks.KnownContent = hooks.NO_KNOWN_CONTENT,
    leftovers: list[str] | None = None,
) -> dict[str, Any]:
    """Every repository below ``base``; the abandoned temporaries it passes (a
    repository being made when its run was killed) go into ``leftovers``."""
    found = {}
    memo: dict[str, Any] = {}  # the config lines every repository shares, parsed once
    stack = [(base, 0, "")]
    while stack:
        directory, depth, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                if leftovers is not None and abandoned_temporary(entry.name):
                    leftovers.append(entry.path)
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.endswith(".git") and is_repository(entry.path):
                name = prefix + entry.name[: -len(".git")]
                found[name] = repository_facts(entry.path, want_refs, known, memo)
            elif depth < MAX_DEPTH:
                stack.append((entry.path, depth + 1, prefix + entry.name + "/"))
    return found


def temporary_sibling(full: str) -> str:
    parent = os.path.dirname(full)
    prefix = "." + os.path.basename(full) + ".tmp-"
    remove_stale(parent, prefix)
    temp = own_temporary(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    # mkdtemp's 0700 would stay on a repository that git init fills in place.
    os.chmod(temp, 0o755)  # noqa: S103 - a repository is as readable as a clone makes it
    return temp


def _create_repository(op: InitBare | CloneMirror, fill: Callable[[str], object]) -> None:
    full = resolve(op.path)
    if is_repository(full):
        return
    if os.path.lexists(full):
        raise OpError(f"{op.path} exists but is not a git repository; move it out of the way")
    make_dirs(os.path.dirname(full), 0o750)
    temp = temporary_sibling(full)
    try:
        fill(temp)
        if os.path.lexists(full):
            # Another program made it meanwhile (gitosis-serve on a user's push).
            raise OpError(f"{op.path} appeared while it was being created; run again")
        place(temp, full)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        drop_temporary(temp)
        raise
    fsync_dir(os.path.dirname(full))


def op_init_bare(op: InitBare) -> None:
    _create_repository(op, lambda temp: run(["git", "init", "--bare", "--quiet", temp]))


def op_clone_mirror(op: CloneMirror) -> None:
    def fill(temp: str) -> None:
        os.rmdir(temp)
        env = dict(os.environ)
        env.setdefault("GIT_SSH_COMMAND", REPAIR_SSH)
        run(
            ["git", "clone", "--mirror", "--quiet", op.url, temp],
            timeout=op.timeout,
            env=env,
            killable=True,
        )
        # The peer remotes are managed separately; `git remote remove` would delete
        # every ref that the mirror refspec maps, so only the section goes.
        run(["git", "--git-dir", temp, "config", "--remove-section", "remote.origin"])

    _create_repository(op, fill)


OPS = dict(
    [
        handler(InitBare, op_init_bare),
        handler(CloneMirror, op_clone_mirror),
    ]
)
