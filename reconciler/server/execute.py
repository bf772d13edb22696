"""Carry out a list of operations on one server, in one process.

Input (stdin, JSON): {"actions": [[op, op, ...], ...], "repositories": BASE,
"lock_wait": SECONDS, "holder": "who runs this"}. The operations of one action
run in order; after one fails the rest of that action is skipped, and the next
action goes on. Output (stdout, JSON): {"results": [{"ok": bool, "error": str}, ...],
"waited": SECONDS, "waited_for": LINE}, one result per action; or, when the server
lock stayed taken or cannot be made, {"results": [], "stop": SENTENCE} and nothing
was changed. Every
path is relative to the git user's home and may not leave it; every file is written
atomically (temporary file, fsync, rename, fsync of the directory); every command
is an argv list.

The server lock: every run of this program holds ``fcntl.flock`` on
``BASE/.reconciler/server.lock`` (``SERVER_LOCK_PATH``) for its whole life, and
writes ``pid N since TIME: WHO`` into it. The kernel lets go of it when the holder
is gone, however it ended; the lock's open file is inherited by the commands it
runs (git clone, ssh-keygen, gitosis's hook), so a command that outlives its
program still holds it. A second run waits for it at most ``lock_wait`` seconds,
then changes nothing and says who holds it. Temporary names carry their owner's
pid, and what is left under them is removed only by a holder of the lock, never
one of its own: the owner of any other is gone. The replication hook and its
drainer do not take this lock (a user's push must not wait for an apply); they
share the queue's drain lock (``DRAIN_LOCK_PATH``, the same ``pid N since TIME``
line) with ``drain_queue``.

The program stops when its channel closes (the operator's side died or gave up:
the read end of its stdout is gone, or SIGHUP/SIGTERM): it starts no more commands,
kills its clones and pushes, lets its short local commands end, removes its own
temporaries, and exits without moving anything else into place.

The handlers live with their subject (``reconciler.server.keys``, ``.admin``,
``.known_hosts``, ``.ssh_config``, ``.repositories``, ``.remotes``, ``.hooks``, ``.files``,
``.refs``, ``.queue``, ``.library``); the shared helpers in ``reconciler.server.common``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reconciler.server import (
    admin,
    common,
    files,
    hooks,
    keys,
    known_hosts,
    library,
    queue_ops,
    refs,
    remotes,
    repositories,
    ssh_config,
    template,
)
from reconciler.server.common import HOME, SERVER_LOCK_PATH, LockBusy, OpError, remove_path
from reconciler.server.ops import CloneMirror, InitBare, Op, decode
from reconciler.server.wire import WireError

# How long a closed channel's program lets its short commands finish.
SETTLE_SECONDS = 30.0

# Every op class a server carries out -> its handler (ops.LocalCommit is the operator's).
OPS: dict[type[Op], Callable[[Any], None]] = {
    **refs.OPS,
    **queue_ops.OPS,
    **files.OPS,
    **known_hosts.OPS,
    **ssh_config.OPS,
    **hooks.OPS,
    **keys.OPS,
    **repositories.OPS,
    **remotes.OPS,
    **admin.OPS,
    **library.OPS,
    **template.OPS,
}


def abandon() -> None:
    """The channel closed: start no more commands, kill the long ones, let the short
    ones end, remove our temporaries, exit."""
    # Past the bound they are left to end by themselves: they hold the server lock's
    # descriptor, so nobody else starts meanwhile.
    for path in common.abandon_children(SETTLE_SECONDS):
        remove_path(path)
    os._exit(1)


def watch_channel() -> None:
    """Abandon the run when the read end of stdout or stderr goes away (sshd, or the
    local operator, is gone), or on SIGHUP/SIGTERM."""
    import select

    def on_signal(_signum: int, _frame: object) -> None:
        # Not in the handler itself: the interrupted code may hold _STATE.
        threading.Thread(target=abandon).start()

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    poller = select.poll()
    for fd in (1, 2):
        # No events asked for: poll still reports POLLERR/POLLHUP, which a pipe's
        # write end shows once its reader is closed.
        poller.register(fd, 0)

    def watch() -> None:
        while True:
            for _fd, events in poller.poll():
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    abandon()

    threading.Thread(target=watch, daemon=True).start()


# Independent operations on distinct paths: a run of actions made only of these
# (one repository each, as the plan makes them) is carried out a few at a time.
# Cloning is mostly waiting for the peer; one after another, adding a server with
# hundreds of repositories took several times as long as the clones themselves.
PARALLEL_OPS = (CloneMirror, InitBare)
PARALLEL_WORKERS = 4


def decode_action(action: object) -> list[Op] | str:
    """An action's ops as their classes, or why it cannot be carried out: decoded
    whole before any of its ops runs, so a malformed one changes nothing."""
    if not isinstance(action, list):
        return f"an action must be a list of operations, not {action!r:.80}"
    try:
        ops = [decode(op) for op in action]
    except WireError as exc:
        return str(exc)
    for op in ops:
        if type(op) not in OPS:
            return f"operation {op.KIND!r} is not carried out on a server"
    return ops


def run_action(action: list[Op] | str) -> dict[str, Any]:
    if isinstance(action, str):
        return {"ok": False, "error": action}
    for op in action:
        try:
            OPS[type(op)](op)
        except (OpError, OSError, KeyError, ValueError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
    return {"ok": True, "error": ""}


def parallel(action: list[Op] | str) -> bool:
    return (
        not isinstance(action, str)
        and bool(action)
        and all(isinstance(op, PARALLEL_OPS) for op in action)
    )


def main() -> None:
    os.umask(0o022)
    request = json.loads(sys.stdin.read() or "{}")
    if request.get("lock") is False:
        # Run as root to create the git user: there is no git user's home (nor its
        # repositories directory) to hold the server lock in yet.
        json.dump({"results": run_actions(request.get("actions", [])), "waited": 0}, sys.stdout)
        return
    lock_path = SERVER_LOCK_PATH
    try:
        common.LOCK_WAIT = float(request.get("lock_wait", common.LOCK_WAIT))
        base = common.resolve(request.get("repositories") or "repositories")
        lock_path = os.path.join(base, SERVER_LOCK_PATH)
        common.LOCK_FD, waited, waited_for = common.take_lock(
            lock_path, common.LOCK_WAIT, str(request.get("holder", ""))
        )
    except LockBusy as exc:
        json.dump({"results": [], "stop": f"the server lock {exc}"}, sys.stdout)
        return
    except (OpError, ValueError, TypeError) as exc:
        json.dump({"results": [], "stop": str(exc)}, sys.stdout)
        return
    except OSError as exc:
        # Without the lock nothing is changed here, as when another run holds it.
        why = f"cannot take the server lock {os.path.relpath(lock_path, HOME)}"
        json.dump({"results": [], "stop": f"{why}: {exc.strerror or exc}"}, sys.stdout)
        return
    try:
        results = run_actions(request.get("actions", []))
    finally:
        os.close(common.LOCK_FD)
        common.LOCK_FD = None
    answer: dict[str, Any] = {"results": results, "waited": round(waited, 3)}
    if waited_for:
        answer["waited_for"] = waited_for
    json.dump(answer, sys.stdout)


def run_actions(raw: list[object]) -> list[dict[str, Any]]:
    actions = [decode_action(action) for action in raw]
    results: list[dict[str, Any]] = []
    start = 0
    while start < len(actions):
        end = start
        paths: set[Any] = set()
        while end < len(actions) and parallel(actions[end]):
            targets = {getattr(op, "path", None) for op in actions[end]}
            if paths & targets:
                break
            paths |= targets
            end += 1
        if end - start > 1:
            with ThreadPoolExecutor(max_workers=min(PARALLEL_WORKERS, end - start)) as pool:
                results += pool.map(run_action, actions[start:end])
            start = end
        else:
            results.append(run_action(actions[start]))
            start += 1
    return results


def run() -> None:
    watch_channel()
    main()


if __name__ == "__main__":
    run()
