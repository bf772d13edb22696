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
from reconciler.server.fact_cache import Input, Remembered, current_digest, keepable, status
from reconciler.server.ops import CloneMirror, InitBare, handler
from reconciler.server.refs import read_refs, refs_digest

MAX_DEPTH = 12


# What ``repository_facts`` reads besides the refs, relative to the repository, and
# whether a symlink there is followed (``fact_cache`` compares their status; a test
# checks that nothing else is opened).
REPOSITORY_INPUTS = (
    ("HEAD", True),
    ("objects", True),
    ("config", True),
    ("packed-refs", True),
    ("git-daemon-export-ok", True),
    ("hooks/post-receive", False),
    ("hooks/proc-receive", False),
    ("hooks/reference-transaction", False),
)


def repository_facts(
    gitdir: str,
    want_refs: bool,
    known: hooks.KnownContent = hooks.NO_KNOWN_CONTENT,
    memo: dict[str, Any] | None = None,
    inputs: list[Input] | None = None,
) -> dict[str, Any]:
    """``inputs``: receives the status of everything read, each taken before it is read."""
    if inputs is not None:
        prefix = gitdir + "/"
        inputs.extend(
            (relative, follow, status(prefix + relative, follow))
            for relative, follow in REPOSITORY_INPUTS
        )
    config = parse_git_config(read_text(gitdir + "/config") or "", memo)
    locks: list[list[object]] = []
    aborted: list[str] = []
    refs = read_refs(gitdir, locks, aborted, inputs)
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


def walk(base: str, visit: Callable[[str, str], bool], leftovers: list[str] | None = None) -> None:
    """``visit(name, path)`` for every directory below ``base`` named ``*.git``; one it
    says is not a repository is walked into, as any other directory. The abandoned
    temporaries it passes (a repository being made when its run was killed) go into
    ``leftovers``."""
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
            if entry.name.endswith(".git") and visit(prefix + entry.name[:-4], entry.path):
                continue
            if depth < MAX_DEPTH:
                stack.append((entry.path, depth + 1, prefix + entry.name + "/"))


def walk_repositories(
    base: str,
    want_refs: bool,
    known: hooks.KnownContent = hooks.NO_KNOWN_CONTENT,
    leftovers: list[str] | None = None,
    *,
    remembered: Remembered | None = None,
    unchanged: list[str] | None = None,
    horizon_ns: int = 0,
) -> dict[str, Any]:
    """Every repository below ``base`` with its facts. With ``remembered``, one whose
    inputs stat as the operator's digest says goes into ``unchanged`` instead, unread;
    the facts of the others carry "cache": [digest, layout] when they may be kept (no
    input changed after ``horizon_ns``, no ref lock, whose age moves by itself)."""
    found = {}
    memo: dict[str, Any] = {}  # the config lines every repository shares, parsed once
    fixed = len(REPOSITORY_INPUTS)

    def visit(name: str, path: str) -> bool:
        if remembered is not None:
            entry = remembered.get(name)
            if entry is not None and current_digest(path, REPOSITORY_INPUTS, entry[1]) == entry[0]:
                # HEAD and objects among the inputs, as they were: still a repository.
                if unchanged is not None:
                    unchanged.append(name)
                return True
        if not is_repository(path):
            return False
        if remembered is None:
            found[name] = repository_facts(path, want_refs, known, memo)
            return True
        inputs: list[Input] = []
        facts = repository_facts(path, want_refs, known, memo, inputs)
        kept = None if "ref_locks" in facts else keepable(inputs, fixed, horizon_ns)
        if kept is not None:
            facts["cache"] = list(kept)
        found[name] = facts
        return True

    walk(base, visit, leftovers)
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
