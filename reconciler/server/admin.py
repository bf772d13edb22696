"""The admin repository (gitosis-admin): its branch, recent history and whether
gitosis's post-update hook is owed (gather, and mode "admin_tip" for the operator's
checkout); ``admin_update`` and ``gitosis_init`` (execute)."""

from __future__ import annotations

import base64
import os
import tempfile
from typing import Any

from reconciler.server.common import (
    FORMAT_VERSION,
    HOME,
    OpError,
    command,
    drop_temporary,
    fsync_dir,
    git_dir,
    is_repository,
    own_temporary,
    read_text,
    remove_stale,
    resolve,
    run,
)
from reconciler.server.ops import INIT_COMMIT, AdminUpdate, GitosisInit, handler
from reconciler.server.refs import read_refs
from reconciler.server.ssh_config import stop_connections

# In the admin repository while gitosis's post-update hook is owed: set by
# admin_update before it moves the branch, removed once the hook has run.
POST_UPDATE_PENDING = "reconciler-post-update-pending"
BUNDLE_PREFIX = ".reconciler-bundle-"


def admin_facts(base: str, admin: str) -> dict[str, Any]:
    gitdir = os.path.join(base, admin + ".git")
    if not is_repository(gitdir):
        return {"exists": False}
    head = (read_text(os.path.join(gitdir, "HEAD"), 4096) or "").strip()
    branch = head[len("ref: refs/heads/") :] if head.startswith("ref: refs/heads/") else "master"
    refs = read_refs(gitdir)
    sha = refs.get("refs/heads/" + branch)
    history = []
    if sha:
        done = command(["git", "--git-dir", gitdir, "log", "-2", "--format=%H%x09%P%x09%cn", sha])
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                history.append(
                    {"sha": parts[0], "parents": parts[1].split(), "committer": parts[2]}
                )
    hook = os.path.join(gitdir, "hooks", "post-update")
    return {
        "exists": True,
        "branch": branch,
        "head": sha,
        "history": history,
        "post_update_hook": os.access(hook, os.X_OK),
        # Left by an apply killed before gitosis's post-update hook finished.
        "post_update_pending": os.path.exists(os.path.join(gitdir, POST_UPDATE_PENDING)),
    }


def answer_admin_tip(base: str, admin: str, have: str | None) -> dict[str, Any]:
    """Mode "admin_tip": the admin branch's commit, and a bundle of its history
    (base64) unless the operator's commit ``have`` already holds it.

    The operator's checkout learns commits pushed to a server by hand from this,
    over the connection it already trusts, whichever server is reachable.
    """
    facts = admin_facts(base, admin)
    answer = {"format_version": FORMAT_VERSION, "exists": facts["exists"]}
    head = facts.get("head")
    if not head:
        return answer
    answer.update(branch=facts["branch"], head=head)
    gitdir = os.path.join(base, admin + ".git")
    if (
        have
        and command(
            ["git", "--git-dir", gitdir, "merge-base", "--is-ancestor", head, have]
        ).returncode
        == 0
    ):
        return answer  # the operator's commit already descends from ours
    done = command(
        [
            "git",
            "--git-dir",
            gitdir,
            "bundle",
            "create",
            "--quiet",
            "-",
            "refs/heads/" + facts["branch"],
        ]
    )
    if done.returncode != 0:
        answer["error"] = done.stderr.decode("utf-8", "replace").strip()
    else:
        answer["bundle"] = base64.b64encode(done.stdout).decode("ascii")
    return answer


def op_gitosis_init(op: GitosisInit) -> None:
    # The runtime the reconciler installed, by its absolute path (its gitosis-init
    # then writes absolute paths into authorized_keys and the post-update hook), or
    # whichever gitosis-init the server has on its PATH.
    command = resolve(op.command) if op.command else "gitosis-init"
    run([command], cwd=HOME, stdin=op.pubkey.encode() + b"\n")


def op_admin_update(op: AdminUpdate) -> None:
    """Bring the admin repository's branch to ``new`` with compare-and-swap on ``old``."""
    repo = git_dir(op.repo)
    ref = "refs/heads/" + op.branch
    # Set until gitosis's post-update hook has run for the new commit: a run killed
    # between moving the branch and the hook's end (authorized_keys, gitosis.conf)
    # is seen by the next gather and the hook is run again.
    pending = os.path.join(repo, POST_UPDATE_PENDING)
    with open(pending, "w", encoding="utf-8") as marker:
        marker.write(op.new + "\n")
    fsync_dir(repo)
    remove_stale(repo, BUNDLE_PREFIX)
    fd, bundle = tempfile.mkstemp(prefix=f"{BUNDLE_PREFIX}{os.getpid()}-", dir=repo)
    own_temporary(bundle)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64decode(op.bundle))
        run(["git", "--git-dir", repo, "bundle", "unbundle", bundle])
    finally:
        os.unlink(bundle)
        drop_temporary(bundle)
    expected = op.old or "0" * 40
    if expected == INIT_COMMIT:
        # Just made by gitosis-init: the branch must hold exactly its single commit.
        expected = run(["git", "--git-dir", repo, "rev-parse", "--verify", ref]).strip()
        count = run(["git", "--git-dir", repo, "rev-list", "--count", ref]).strip()
        if count != "1":
            raise OpError(f"{op.repo} holds more than gitosis-init's commit")
    current = command(["git", "--git-dir", repo, "rev-parse", "--verify", "--quiet", ref])
    if current.stdout.decode().strip() != op.new:
        # Not there yet (another run may have sent the same commit meanwhile).
        update = ["git", "--git-dir", repo, "update-ref", "-m", "reconcile apply"]
        run([*update, ref, op.new, expected])
    if op.pubkey and not os.path.lexists(os.path.join(HOME, ".gitosis.conf")):
        # gitosis-init makes ~/.gitosis.conf last: without it an earlier init was
        # cut short, and gitosis's hook cannot run. gitosis-init finishes what it
        # started; the branch holds our commit now, so it commits nothing.
        op_gitosis_init(GitosisInit(pubkey=op.pubkey, command=op.init_command))
    hook = os.path.join(repo, "hooks", "post-update")
    if os.access(hook, os.X_OK):
        env = dict(os.environ)
        env["GIT_DIR"] = repo
        run([hook, ref], cwd=repo, env=env)
    else:
        run(["git", "--git-dir", repo, "update-server-info"])
    os.unlink(pending)
    fsync_dir(repo)
    # The peers take the same commit in this phase: who they let this server's key in
    # as may have changed, and a connection kept open would still be let in as before.
    stop_connections()


OPS = dict(
    [
        handler(AdminUpdate, op_admin_update),
        handler(GitosisInit, op_gitosis_init),
    ]
)
