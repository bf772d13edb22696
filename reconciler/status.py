"""Replication health: refs that differ, queues, hooks — as a value (no I/O here)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from reconciler.desired import Desired
from reconciler.facts import Facts
from reconciler.refs import RefReport, RefState

STATUS_FORMAT_VERSION = 1


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


@dataclass(frozen=True)
class StatusReport:
    repositories: int
    refs: tuple[RefState, ...]
    servers: tuple[ServerHealth, ...]
    generated: float = field(default_factory=time.time)

    def count(self, status: str) -> int:
        return sum(1 for state in self.refs if state.status == status)

    @property
    def out_of_sync_repositories(self) -> int:
        return len({state.repository for state in self.refs})

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
        in_sync = self.repositories - self.out_of_sync_repositories
        parts = [f"{self.repositories} repositories, {in_sync} in sync"]
        for status in ("behind", "missing", "diverged"):
            if self.count(status):
                parts.append(f"{self.count(status)} ref(s) {status}")
        queued = sum(s.queue_depth for s in self.servers)
        parts.append(f"{queued} queued update{'s' if queued != 1 else ''}")
        down = [s.server for s in self.servers if not s.reachable]
        if down:
            parts.append(f"unreachable: {', '.join(down)}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": STATUS_FORMAT_VERSION,
            "summary": self.summary(),
            "repositories": self.repositories,
            "refs": [state.to_json() for state in self.refs],
            "servers": [
                {
                    "server": s.server,
                    "reachable": s.reachable,
                    "error": s.error,
                    "queue_depth": s.queue_depth,
                    "oldest_entry": s.oldest_entry,
                    "queue_problems": s.queue_problems,
                    "stale_hooks": list(s.stale_hooks),
                    "missing_repositories": list(s.missing_repositories),
                }
                for s in self.servers
            ],
            "exit_code": self.exit_code(),
        }


def build_status(desired: Desired, facts: Facts, refs: RefReport, hook_digest: str) -> StatusReport:
    mirrored = desired.mirrored_repositories()
    servers = []
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
        times = [float(e["time"]) for e in server.queue if isinstance(e.get("time"), int | float)]
        stale = tuple(
            r
            for r in mirrored
            if r in server.repositories
            and (
                server.repositories[r].hook is None
                or server.repositories[r].hook.sha256 != hook_digest  # type: ignore[union-attr]
            )
        )
        servers.append(
            ServerHealth(
                name,
                reachable=True,
                queue_depth=len(server.queue),
                oldest_entry=min(times) if times else None,
                queue_problems=len(server.queue_errors),
                stale_hooks=stale,
                missing_repositories=tuple(r for r in mirrored if r not in server.repositories),
            )
        )
    return StatusReport(repositories=len(mirrored), refs=refs.states, servers=tuple(servers))
