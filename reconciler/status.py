"""Replication health: refs that differ, queues, hooks — as a value (no I/O here).

A report never claims more than was read: a server that could not be reached
has no queue, refs or hooks in it (``None`` in JSON, no series in metrics), and
the summary says which servers its counts are about.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from reconciler.desired import Desired
from reconciler.facts import Facts, PushStats
from reconciler.refs import RefReport, RefState
from reconciler.server.hooks import stub
from reconciler.server.queue import QueueEntry

STATUS_FORMAT_VERSION = 1
# Each ref's state on one server (metrics label values: no spaces).
REF_STATES = ("in_sync", "behind", "missing", "diverged", "aborted")
# Queue reasons that wait for a person, not for a peer to come back.
REVIEW_REASONS = ("diverged", "missing repository", "rejected")


@dataclass(frozen=True)
class PeerQueue:
    """The queue on one server of updates one peer has not taken."""

    entries: int = 0
    oldest: float | None = None  # unix time of the oldest entry
    needs_review: int = 0  # entries no retry will deliver (diverged, rejected, ...)


@dataclass(frozen=True)
class ServerHealth:
    server: str
    reachable: bool
    error: str = ""
    queue_depth: int = 0
    oldest_entry: float | None = None  # unix time
    queue_problems: int = 0
    stale_hooks: tuple[str, ...] = ()  # repositories whose hook is missing or not current
    missing_repositories: tuple[str, ...] = ()
    foreign_hooks: tuple[str, ...] = ()  # a post-receive the reconciler did not write
    queues: dict[str, PeerQueue] = field(default_factory=dict)  # peer -> its queue here
    refs: dict[str, int] = field(default_factory=dict)  # REF_STATES -> refs on this server
    pushes: dict[str, PushStats] = field(default_factory=dict)  # peer -> the hook's pushes
    # "repository ref" kept under refs/reconciler/aborted/ by quorum repair.
    aborted: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusReport:
    repositories: int
    refs: tuple[RefState, ...]
    servers: tuple[ServerHealth, ...]
    generated: float = field(default_factory=time.time)
    # Declared repositories missing on some server that was read.
    missing_somewhere: tuple[str, ...] = ()
    replication: str = ""  # the mode and what it tolerates, in one line

    def count(self, status: str) -> int:
        return sum(1 for state in self.refs if state.status == status)

    @property
    def out_of_sync_repositories(self) -> int:
        return len({state.repository for state in self.refs})

    @property
    def read(self) -> list[str]:
        return [s.server for s in self.servers if s.reachable]

    @property
    def unknown(self) -> list[str]:
        return [s.server for s in self.servers if not s.reachable]

    @property
    def complete(self) -> bool:
        return not self.unknown

    @property
    def in_sync_repositories(self) -> int:
        """In sync on every server read (all of them only when ``complete``)."""
        if not self.read:
            return 0
        differing = {state.repository for state in self.refs} | set(self.missing_somewhere)
        return max(0, self.repositories - len(differing))

    def exit_code(self) -> int:
        """1 error, 3 diverged, 2 something to repair, 0 all in sync."""
        if any(not s.reachable for s in self.servers):
            return 1
        if self.count("diverged"):
            return 3
        if self.refs or any(
            s.queue_depth or s.stale_hooks or s.missing_repositories for s in self.servers
        ):
            return 2
        return 0

    def summary(self) -> str:
        read, unknown = self.read, self.unknown
        if not read:
            return (
                f"{self.repositories} repositories; nothing is known: "
                f"{', '.join(unknown)} unreachable"
            )
        where = f" on {', '.join(read)}" if unknown else ""
        parts = [f"{self.repositories} repositories, {self.in_sync_repositories} in sync{where}"]
        if self.missing_somewhere:
            parts.append(f"{len(self.missing_somewhere)} missing on some server")
        for status in ("behind", "missing", "diverged"):
            if self.count(status):
                parts.append(f"{self.count(status)} ref(s) {status}")
        queued = sum(s.queue_depth for s in self.servers if s.reachable)
        parts.append(f"{queued} queued update{'s' if queued != 1 else ''}{where}")
        if unknown:
            parts.append(
                f"unknown: {', '.join(unknown)} (unreachable: its refs, queue and hooks "
                "were not read)"
            )
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": STATUS_FORMAT_VERSION,
            "summary": self.summary(),
            "replication": self.replication,
            "complete": self.complete,
            "servers_read": self.read,
            "servers_unknown": self.unknown,
            "repositories": self.repositories,
            "in_sync_repositories": self.in_sync_repositories,
            "refs": [state.to_json() for state in self.refs],
            "servers": [_server_json(s) for s in self.servers],
            "exit_code": self.exit_code(),
        }


def _server_json(s: ServerHealth) -> dict[str, Any]:
    if not s.reachable:
        # Unknown, not zero: nothing of this server was read.
        return {
            "server": s.server,
            "reachable": False,
            "error": s.error,
            **dict.fromkeys(
                (
                    "queue_depth",
                    "oldest_entry",
                    "queue_problems",
                    "stale_hooks",
                    "missing_repositories",
                    "foreign_hooks",
                    "queues",
                    "refs",
                    "pushes",
                )
            ),
        }
    return {
        "server": s.server,
        "reachable": True,
        "error": s.error,
        "queue_depth": s.queue_depth,
        "oldest_entry": s.oldest_entry,
        "queue_problems": s.queue_problems,
        "stale_hooks": list(s.stale_hooks),
        "missing_repositories": list(s.missing_repositories),
        "aborted": list(s.aborted),
        "foreign_hooks": list(s.foreign_hooks),
        "queues": {
            peer: {"entries": q.entries, "oldest": q.oldest, "needs_review": q.needs_review}
            for peer, q in s.queues.items()
        },
        "refs": dict(s.refs),
        "pushes": {
            peer: {"count": p.count, "sum": p.sum, "results": dict(p.results)}
            for peer, p in s.pushes.items()
        },
    }


def ref_state_on(state: RefState, server: str) -> str | None:
    """What ``state`` means for one server: one of REF_STATES, or None when that
    server's value was not read (it does not hold the repository, or was not reached)."""
    if server not in state.values:
        return None
    value = state.values[server]
    if state.status == "diverged":
        return "diverged"
    if value is None:
        return "missing"
    return "in_sync" if value == state.tip else "behind"


def _queues(entries: tuple[QueueEntry, ...], peers: list[str]) -> dict[str, PeerQueue]:
    counts: dict[str, list[Any]] = {peer: [0, None, 0] for peer in peers}
    for entry in entries:
        item = counts.setdefault(entry.peer, [0, None, 0])
        item[0] += 1
        item[1] = entry.time if item[1] is None else min(item[1], entry.time)
        if entry.reason in REVIEW_REASONS or not entry.transient:
            item[2] += 1
    return {
        peer: PeerQueue(n, None if o is None else float(o), r) for peer, (n, o, r) in counts.items()
    }


def as_repair_sees_it(desired: Desired, facts: Facts, refs: RefReport) -> RefReport:
    """In quorum mode a ref's reference value is the majority's (what the plan makes
    every server hold), not the newest descendant: a minority's value that no
    majority took is the one behind."""
    if desired.cluster.replication.mode != "quorum":
        return refs
    from reconciler.planning.refs import queued_values, quorum_value

    queued = queued_values(facts)
    declared = len(desired.servers)
    states = []
    for state in refs.states:
        winner = quorum_value(state, declared, queued)
        states.append(dataclasses.replace(state, tip=winner) if winner else state)
    return dataclasses.replace(refs, states=tuple(states))


def build_status(desired: Desired, facts: Facts, refs: RefReport) -> StatusReport:
    refs = as_repair_sees_it(desired, facts, refs)
    mirrored = desired.mirrored_repositories()
    admin = desired.cluster.admin_repository
    servers = []
    missing_anywhere: set[str] = set()
    for name in desired.servers:
        if name in facts.errors or name not in facts.servers:
            error = str(facts.errors.get(name, "not gathered"))
            if name in facts.missing_git_users:
                error = (
                    f"the git user {facts.missing_git_users[name]} does not exist yet; "
                    "reconcile apply creates it"
                )
            servers.append(ServerHealth(name, reachable=False, error=error))
            continue
        server = facts.servers[name]
        times = [e.time for e in server.queue]
        present = [r for r in mirrored if r in server.repositories]
        hook_digest = hashlib.sha256(stub(server.home)).hexdigest()
        stale = tuple(
            r
            for r in present
            if server.repositories[r].hook is None
            or server.repositories[r].hook.sha256 != hook_digest  # type: ignore[union-attr]
        )
        foreign = tuple(
            r
            for r in present
            if (hook := server.repositories[r].hook) is not None and not hook.managed
        )
        missing = tuple(r for r in mirrored if r not in server.repositories)
        missing_anywhere.update(missing)
        # Refs differ only in the repositories the ref report examined; every other ref
        # this server holds is the same on every server that holds its repository.
        counts = dict.fromkeys(REF_STATES, 0)
        held = sum(server.repositories[r].ref_count for r in present if r != admin)
        for state in refs.states:
            where = ref_state_on(state, name)
            if where is None or where == "in_sync":
                continue
            counts[where] += 1
            if state.values.get(name) is not None:
                held -= 1
        counts["in_sync"] = max(0, held)
        aborted = tuple(f"{r} {ref}" for r in present for ref in server.repositories[r].aborted)
        counts["aborted"] = len(aborted)
        servers.append(
            ServerHealth(
                name,
                reachable=True,
                queue_depth=len(server.queue),
                oldest_entry=min(times) if times else None,
                queue_problems=len(server.queue_errors),
                stale_hooks=stale,
                missing_repositories=missing,
                foreign_hooks=foreign,
                aborted=aborted,
                queues=_queues(server.queue, [p for p in desired.servers if p != name]),
                refs=counts,
                pushes=dict(server.pushes),
            )
        )
    return StatusReport(
        replication=desired.quorum_summary(),
        repositories=len(mirrored),
        refs=refs.states,
        servers=tuple(servers),
        missing_somewhere=tuple(sorted(missing_anywhere)),
    )
