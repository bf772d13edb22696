"""Unattended runs: one apply at a time, and an admin checkout kept up to date."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from reconciler import git
from reconciler.errors import ReconcilerError


class LockHeld(ReconcilerError):
    pass


@contextlib.contextmanager
def cron_lock(checkout: Path) -> Iterator[None]:
    """Hold ``reconcile.lock`` in the checkout's git directory; refuse if another run has it."""
    git_dir = Path(git.run_git(checkout, "rev-parse", "--absolute-git-dir").strip())
    path = git_dir / "reconcile.lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LockHeld(
                f"another reconcile apply is running on {checkout} ({holder}); exiting"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def fast_forward_checkout(checkout: Path) -> str | None:
    """Bring the checkout up to its upstream, fast-forward only. Returns a log line or None."""
    upstream = git.run_git(
        checkout, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}", check=False
    ).strip()
    if not upstream:
        return None
    remote = upstream.split("/", 1)[0]
    git.run_git(checkout, "fetch", "--quiet", remote)
    before = git.head(checkout)
    behind = git.run_git(checkout, "rev-list", "--count", "HEAD..@{u}").strip()
    if behind == "0":
        return None
    if git.run_git(checkout, "rev-list", "--count", "@{u}..HEAD").strip() != "0":
        raise ReconcilerError(
            f"{checkout}: the admin checkout has diverged from {upstream} and cannot be "
            "fast-forwarded; merge or rebase it by hand"
        )
    git.run_git(checkout, "merge", "--ff-only", "--quiet", "@{u}")
    after = git.head(checkout)
    return f"(admin checkout): fast-forwarded {str(before)[:12]}..{str(after)[:12]} from {upstream}"
