"""The durable replication queue the hook leaves behind, as the reconciler reads it.

Where: ``<repositories>/.reconciler/queue/`` on each server (``QUEUE_PATH``
below the repositories base, the directory that holds
``.reconciler/replication.json``).

Files: one JSON object per (peer, ref update) the peer has not taken, or one
batch for the updates of one push to one peer, named
``<time_ns, 20 digits>-<pid>-<12 hex>.json`` so that names sort by time and
concurrent hooks never collide. A batch is
``{"format_version": 1, "entries": [<entry with "index": N>, ...]}``: a push of
3,000 tags is one file and two fsyncs, not 3,000 files and 6,000 fsyncs. The
entry at index N of batch FILE is named ``FILE#N``; its index never changes when
the batch is rewritten without some of its entries (delivered ones are dropped, a
batch left empty is removed), so a name a gather reported still means the same
entry when apply drains it. Files are written whole: a temporary
``.<name>.reconciler-tmp-<pid>-<random>`` in the same directory, flushed, fsynced,
renamed, then the directory fsynced. Readers skip names that start with ``.`` or do not end in
``.json``. An entry that is rewritten (a drainer recording why a push failed)
keeps its name and its ``time``.

Entry::

    {"format_version": 1,
     "repository": "tools/build-scripts",    # path below the base, one ".git" removed
     "ref": "refs/heads/main",
     "old": "<40 or 64 hex>", "new": "<40 or 64 hex>",   # all zeros: absent
     "peer": "mirror",                       # the server that should take the update
     "reason": "unreachable" | "timeout" | "pending" | "no remote"      # transient
             | "diverged" | "missing repository" | "rejected" | "denied", # permanent
     "transient": true | false,
     "time": 1764089000.25,                  # unix seconds of the push
     "server": "master",                     # the server that holds the queue
     "detail": "mirror has 4f1c..."}         # why, in a few words; may be ""

``pending`` entries are waiting for the hook's own drainer (async mode), are a
sync push still in flight (``detail`` "push in progress", for at most the timeout),
or were left by a hook that died or failed. A drainer that pushes one of them
while the hook still does finds the peer "up to date", which is fine.
``rejected`` is a peer refusing for another reason than divergence
(for example its own hook declined); ``detail`` names it. ``denied`` is the
peer's gitosis refusing this server's key the repository; ``detail`` is
gitosis's own sentence ("Repository read access denied").

Drain protocol: whoever delivers entries holds ``fcntl.flock`` on
``<base>/.reconciler/drain.lock`` (``DRAIN_LOCK_PATH``) while it does (and writes
``pid N since TIME: WHO`` into it, the line of the server lock
``<base>/.reconciler/server.lock`` that ``reconcile apply``'s programs hold; the
hook and its drainer never take that one, so a push never waits for an apply), pushes with
compare-and-swap on ``old`` (``reconciler/server/lease_push.py``: a lease, or no
force when ``old`` is zero), deletes
the entry when the peer took the update or already had it, and otherwise rewrites
it with the new reason. Entries of one (repository, peer, ref) are delivered
oldest first. Once a later value of a ref has reached a peer, that peer's older
transient entries for the ref are moot and may be deleted.

The installed hook is also the drainer, so a server can drain its own queue:
``<repository>.git/hooks/post-receive --drain <base> [--repository NAME] [--retry]``
(or ``~/.reconciler/server/bin/post-receive --drain ...``) delivers the ``pending``
entries (with ``--retry`` every entry, each tried once) and prints one JSON line
``{"format_version": 1, "delivered": N, "remaining": M, "locked": false}``;
``locked`` true means another drainer holds the lock and has the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.server.common import DRAIN_LOCK_PATH, QUEUE_PATH, drain_lock
from reconciler.server.queue import (
    PERMANENT_REASONS,
    REASONS,
    TRANSIENT_REASONS,
    QueueEntry,
    delete_entry,
    read_entries,
    write_entry,
)

__all__ = [
    "DRAIN_LOCK_PATH",
    "PERMANENT_REASONS",
    "QUEUE_PATH",
    "REASONS",
    "TRANSIENT_REASONS",
    "QueueEntry",
    "QueueProblem",
    "drain_lock",
    "queue_directory",
    "read_queue",
    "remove_entry",
    "scan_queue",
    "write_entry",
]


@dataclass(frozen=True)
class QueueProblem:
    """A file in the queue that could not be read as an entry."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def queue_directory(base: Path) -> Path:
    return base / QUEUE_PATH


def scan_queue(base: Path) -> tuple[list[QueueEntry], list[QueueProblem]]:
    """Every entry, oldest first, and every file that is not a valid entry."""
    entries, problems = read_entries(base)
    directory = queue_directory(base)
    return entries, [QueueProblem(directory / name, message) for name, message in problems]


def read_queue(
    base: Path, on_problem: Callable[[QueueProblem], None] | None = None
) -> list[QueueEntry]:
    """Every valid entry, oldest first; unreadable files go to ``on_problem``."""
    entries, problems = scan_queue(base)
    if on_problem is not None:
        for problem in problems:
            on_problem(problem)
    return entries


def remove_entry(base: Path, entry: QueueEntry | str) -> bool:
    """Delete an entry (or a file name); False when it was already gone."""
    name = entry if isinstance(entry, str) else entry.name
    return delete_entry(base, name)
