"""Refs: the replicated refs of each repository (gather), and pushing them to a peer
with compare-and-swap (execute's ``push_refs``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from reconciler.server import lease_push
from reconciler.server.common import (
    FORMAT_VERSION,
    OBJECT_ID,
    REPAIR_SSH,
    OpError,
    command,
    fsync_dir,
    git_dir,
    is_repository,
    read_text,
    run,
)
from reconciler.server.fact_cache import Input, status
from reconciler.server.ops import AdoptMajority, PushRefs, RemoveStaleLock, handler
from reconciler.server.queue import RefUpdate

REPLICATED_PREFIXES = ("refs/heads/", "refs/tags/", "refs/notes/")
ABORTED_PREFIX = "refs/reconciler/aborted/"  # quorum repair's keeping of unacknowledged values
MAX_REF_DEPTH = 512  # only a guard against recursion; os.walk had none


def read_refs(
    gitdir: str,
    locks: list[list[object]] | None = None,
    aborted: list[str] | None = None,
    inputs: list[Input] | None = None,
) -> dict[str, str]:
    """The replicated refs; ``locks`` (a list) receives [ref, age in seconds] of each
    ``REF.lock`` that git left: a push killed while it held the ref's lock;
    ``aborted`` the refs quorum repair kept under refs/reconciler/aborted/;
    ``inputs`` each directory and loose ref read, with its status taken before the
    read (``fact_cache``; packed-refs is the caller's)."""
    refs: dict[str, str] = {}
    packed = read_text(gitdir + "/packed-refs", 256 << 20)
    if packed:
        for line in packed.splitlines():
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            refs[name.strip()] = sha
    read_loose_refs(gitdir + "/refs", "refs/", refs, 0, locks, inputs)
    if aborted is not None:
        aborted.extend(sorted(ref for ref in refs if ref.startswith(ABORTED_PREFIX)))
    return {ref: sha for ref, sha in refs.items() if ref.startswith(REPLICATED_PREFIXES)}


def read_loose_refs(
    directory: str,
    prefix: str,
    refs: dict[str, str],
    depth: int,
    locks: list[list[object]] | None = None,
    inputs: list[Input] | None = None,
) -> None:
    """Loose refs under ``directory`` into ``refs`` (as os.walk would find them:
    symlinked directories are not entered, unreadable ones are skipped)."""
    if inputs is not None:
        inputs.append((prefix[:-1], True, status(directory, True)))
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir():
            if depth < MAX_REF_DEPTH and not entry.is_symlink():
                read_loose_refs(
                    entry.path, prefix + entry.name + "/", refs, depth + 1, locks, inputs
                )
            elif inputs is not None:
                # Skipped because it points at a directory: were that directory replaced
                # by a file, it would be read as a ref, and the link itself would not
                # change. What it points at is an input.
                inputs.append((prefix + entry.name, True, status(entry.path, True)))
            continue
        if entry.name.endswith(".lock"):
            # No ref's name ends in .lock: git's lock of the ref while it is updated.
            if locks is not None:
                with contextlib.suppress(OSError):
                    age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                    locks.append([prefix + entry.name[: -len(".lock")], round(age, 1)])
            continue
        if inputs is not None:
            inputs.append((prefix + entry.name, True, status(entry.path, True)))
        text = read_text(entry.path, 4096)
        if text is None:
            continue
        text = text.strip()
        if len(text) in (40, 64) and not text.startswith("ref:"):
            refs[prefix + entry.name] = text


def refs_digest(refs: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for ref in sorted(refs):
        digest.update(f"{refs[ref]} {ref}\n".encode())
    return digest.hexdigest()


def answer_refs(base: str, names: list[str]) -> dict[str, Any]:
    """Mode "refs": every replicated ref of the named repositories."""
    refs = {}
    for name in names:
        gitdir = os.path.join(base, name + ".git")
        if is_repository(gitdir):
            refs[name] = read_refs(gitdir)
    return {"format_version": FORMAT_VERSION, "refs": refs}


def answer_ancestry(base: str, checks: list[list[str]]) -> dict[str, Any]:
    """Mode "ancestry": for each [repository, ancestor, descendant], is it an ancestor?

    Asked of the server holding ``descendant``; a missing ``ancestor`` object
    means it is not in that history (false).
    """
    results = []
    for name, ancestor, descendant in checks:
        done = command(
            [
                "git",
                "--git-dir",
                os.path.join(base, name + ".git"),
                "merge-base",
                "--is-ancestor",
                ancestor,
                descendant,
            ]
        )
        results.append(done.returncode == 0)
    return {"format_version": FORMAT_VERSION, "results": results}


def op_push_refs(op: PushRefs) -> None:
    """Push ref updates to a peer remote with compare-and-swap on each target value.

    ``updates``: [ref, new, expected]; an empty ``new`` deletes, an empty
    ``expected`` requires the ref to be absent on the peer. Never forced otherwise.
    One ``git push`` for any number of refs (``lease_push``: git's own handling of
    thousands of explicit refspecs and leases is quadratic); only thousands of
    deletions take several.
    """
    repo = git_dir(op.repo)
    updates = []
    for ref, new, expected in op.updates:
        width = len(new or expected) or 40
        updates.append(RefUpdate(old=expected or "0" * width, new=new or "0" * width, ref=ref))
    env = dict(os.environ)
    env.setdefault("GIT_SSH_COMMAND", REPAIR_SSH)
    # The peer's replication hook must not forward what the reconciler delivers.
    env["RECONCILER_REPLICA"] = "reconcile"
    config = command([*lease_push.REMOTE_CONFIG_ARGV], env={**env, "GIT_DIR": repo})
    remotes, ssh_command = lease_push.parse_remote_config(config.stdout.decode("utf-8", "replace"))
    if ssh_command and "GIT_SSH_COMMAND" not in os.environ:
        env.pop("GIT_SSH_COMMAND", None)  # the repository chose its own
    remote = remotes.get(op.peer, [])
    if not any(key == "url" for key, _ in remote):
        raise OpError(f"push to {op.peer} failed: no remote {op.peer!r} with a URL")
    rejected = []
    for chunk in lease_push.chunks(updates):
        with lease_push.workspace(Path(repo), remote, chunk) as directory:
            done = command(
                lease_push.push_argv(chunk),
                cwd=str(directory),
                env=lease_push.workspace_env(env, directory),
                timeout=op.timeout,
                killable=True,
            )
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[0] == "!":
                rejected.append(f"{parts[1].split(':')[-1]} {parts[2]}")
        if rejected:
            raise OpError(f"{op.peer} rejected " + "; ".join(rejected))
        if done.returncode != 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OpError(f"push to {op.peer} failed: {lines[-1] if lines else done.returncode}")


def _checked_ref(ref: str) -> str:
    if not re.fullmatch(r"refs/[A-Za-z0-9._/-]+", ref) or ".." in ref:
        raise OpError(f"refusing ref {ref!r}")
    return ref


def op_remove_stale_lock(op: RemoveStaleLock) -> None:
    """Remove ``REF.lock`` that a killed push left, only while it is still older than
    ``min_age`` seconds (a live push holds a ref's lock for a few seconds at most)."""
    repo = git_dir(op.repo)
    ref = _checked_ref(op.ref)
    path = os.path.join(repo, ref + ".lock")
    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return
    if age < float(op.min_age):
        raise OpError(f"{ref}.lock is only {age:.0f}s old: a push may still hold it")
    os.unlink(path)
    fsync_dir(os.path.dirname(path))


def op_adopt_majority(op: AdoptMajority) -> None:
    """Quorum mode's repair of a server holding a value a majority does not: fetch
    the majority's value from a peer holding it, keep this server's own value under
    ``refs/reconciler/aborted/`` (unless it is an ancestor of the majority's: then
    nothing is lost by moving on) and move the ref, all with compare-and-swap."""
    repo = git_dir(op.repo)
    ref, new, old, peer = _checked_ref(op.ref), op.new, op.old, op.peer
    if not OBJECT_ID.fullmatch(new):
        raise OpError(f"refusing object id {new!r}")
    env = dict(os.environ)
    env.setdefault("GIT_SSH_COMMAND", REPAIR_SSH)
    run(
        ["git", "--git-dir", repo, "fetch", "--quiet", "--no-tags", "--", peer, ref],
        env=env,
        timeout=op.timeout,
        killable=True,
    )
    fetched = run(["git", "--git-dir", repo, "rev-parse", "--verify", "FETCH_HEAD"]).strip()
    if fetched != new:
        raise OpError(f"{ref} on {peer} moved since the plan was made; run plan again")
    lines = []
    if old:
        ancestor = command(["git", "--git-dir", repo, "merge-base", "--is-ancestor", old, new])
        if ancestor.returncode != 0:
            kept = ABORTED_PREFIX + ref[len("refs/") :] + "/" + old
            lines.append(f"create {kept} {old}\n")
    lines.append(f"update {ref} {new} {old or '0' * len(new)}\n")
    stdin = ("start\n" + "".join(lines) + "prepare\ncommit\n").encode()
    run(
        ["git", "--git-dir", repo, "update-ref", "-m", "reconcile: follow the majority", "--stdin"],
        stdin=stdin,
    )


OPS = dict(
    [
        handler(PushRefs, op_push_refs),
        handler(AdoptMajority, op_adopt_majority),
        handler(RemoveStaleLock, op_remove_stale_lock),
    ]
)
