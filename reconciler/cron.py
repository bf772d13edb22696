"""Unattended runs: one apply at a time, and an admin checkout kept up to date
(from its upstream, and from whichever server holds a newer admin commit)."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import git
from reconciler.errors import ReconcilerError
from reconciler.server.common import LockBusy, take_lock

if TYPE_CHECKING:
    from reconciler.desired import Desired
    from reconciler.transport import Transport


class LockHeld(ReconcilerError):
    pass


@contextlib.contextmanager
def cron_lock(checkout: Path) -> Iterator[None]:
    """Hold ``reconcile.lock`` in the checkout's git directory; refuse if another run has it."""
    from reconciler.apply import lock_holder  # the server lock's holder line names it so

    git_dir = Path(git.run_git(checkout, "rev-parse", "--absolute-git-dir").strip())
    try:
        fd, _waited, _holder = take_lock(str(git_dir / "reconcile.lock"), 0, lock_holder(checkout))
    except LockBusy as busy:
        raise LockHeld(
            f"another reconcile apply is running on {checkout} ({busy.holder}); exiting"
        ) from None
    try:
        yield
    finally:
        os.close(fd)


def fast_forward_checkout(checkout: Path) -> tuple[list[str], list[str]]:
    """Bring the checkout up to its upstream, fast-forward only.

    Returns (log lines, warnings). An upstream that cannot be fetched (the server
    it was cloned from is down) is a warning, not the end of the run: every
    server holds the admin repository, and ``catch_up_from_servers`` takes the
    newest commit from whichever answers.
    """
    upstream = git.run_git(
        checkout, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}", check=False
    ).strip()
    if not upstream:
        return [], []
    remote = upstream.split("/", 1)[0]
    try:
        git.run_git(checkout, "fetch", "--quiet", remote)
    except git.GitError as exc:
        return [], [
            f"(admin checkout): cannot fetch {remote}, going on with the checkout as it is "
            f"and the servers' admin repositories: {exc}"
        ]
    before = git.head(checkout)
    behind = git.run_git(checkout, "rev-list", "--count", "HEAD..@{u}").strip()
    if behind == "0":
        return [], []
    if git.run_git(checkout, "rev-list", "--count", "@{u}..HEAD").strip() != "0":
        raise ReconcilerError(
            f"{checkout}: the admin checkout has diverged from {upstream} and cannot be "
            "fast-forwarded; merge or rebase it by hand"
        )
    git.run_git(checkout, "merge", "--ff-only", "--quiet", "@{u}")
    after = git.head(checkout)
    line = f"(admin checkout): fast-forwarded {str(before)[:12]}..{str(after)[:12]} from {upstream}"
    return [line], []


def catch_up_from_servers(
    desired: Desired, transports: dict[str, Transport]
) -> tuple[list[str], list[str]]:
    """Fast-forward the checkout to an admin commit pushed to a server by hand.

    The servers' keys cannot write the admin repository, so a commit someone
    pushed to one server directly stays there until it reaches the checkout;
    from the checkout apply sends it to every server. One round trip per server
    (the bundle only from servers holding a commit the checkout lacks). Only a
    fast-forward: servers ahead on different lines are left to the plan, which
    reports them. Returns (log lines, warnings).
    """
    from reconciler.gather import ask_each, run_json_program

    root = desired.root
    ours = git.head(root)

    def ask(name: str) -> dict[str, Any]:
        payload = {
            "mode": "admin_tip",
            "repositories": desired.servers[name].repositories,
            "admin": desired.cluster.admin_repository,
            "have": ours,
        }
        return dict(run_json_program(transports[name], "gather", payload))

    answers = ask_each(transports, ask)  # the gather that follows reports the others
    warnings: list[str] = []
    ahead: dict[str, str] = {}
    for name, answer in answers.items():
        head = answer.get("head")
        if not isinstance(head, str) or head == ours:
            continue
        if answer.get("error"):
            warnings.append(f"{name}: cannot bundle its admin repository: {answer['error']}")
            continue
        bundle = answer.get("bundle")
        if not isinstance(bundle, str):
            continue  # the checkout's commit already holds it
        try:
            git.fetch_bundle(root, base64.b64decode(bundle), f"refs/heads/{answer['branch']}")
        except git.GitError as exc:
            warnings.append(f"{name}: cannot fetch its admin commit {head[:12]}: {exc}")
            continue
        if ours is None or git.is_ancestor(root, ours, head):
            ahead[name] = head
    if not ahead:
        return [], warnings
    tips = set(ahead.values())
    tip = next((t for t in tips if all(git.is_ancestor(root, o, t) for o in tips)), None)
    if tip is None:
        shown = ", ".join(f"{n} {h[:12]}" for n, h in sorted(ahead.items()))
        warnings.append(
            f"(admin checkout): the servers hold admin commits on different lines ({shown}); "
            "not fast-forwarding the checkout, merge them by hand"
        )
        return [], warnings
    try:
        git.run_git(root, "merge", "--ff-only", "--quiet", tip)
    except git.GitError as exc:
        warnings.append(f"(admin checkout): cannot fast-forward to {tip[:12]}: {exc}")
        return [], warnings
    holders = ", ".join(sorted(n for n, h in ahead.items() if h == tip))
    return [
        f"(admin checkout): fast-forwarded {str(ours)[:12]}..{tip[:12]} "
        f"from {holders} (pushed there directly)"
    ], warnings
