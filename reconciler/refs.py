"""Refs across servers (DESIGN.md section 7): which refs differ, and how.

Only repositories whose ref digests differ between servers (or that have queue
entries) are read ref by ref; then each differing ref is classified: **behind**
(every other value is an ancestor of one tip: fast-forward them), **missing** on
some servers (create it there), or **diverged** (values on different lines of
history: report, never force). Ancestry is asked of the server that holds the
candidate tip, because only it surely has both commits.

Round trips: none when every digest agrees; otherwise one ``refs`` and at most
one ``ancestry`` program per server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.desired import Desired
from reconciler.facts import Facts
from reconciler.gather import ask_each, run_json_program
from reconciler.transport import Transport

ZERO = "0" * 40
Status = Literal["in sync", "behind", "missing", "diverged"]


@dataclass(frozen=True)
class RefState:
    repository: str
    ref: str
    values: dict[str, str | None]  # server -> value (None: the ref is absent there)
    tip: str | None  # the value all others descend into; None when diverged

    @property
    def status(self) -> Status:
        present = {v for v in self.values.values() if v is not None}
        if self.tip is None and len(present) > 1:
            return "diverged"
        if len(present) <= 1 and None not in self.values.values():
            return "in sync"
        if len(present) == 1:
            return "missing"
        return "behind"

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "ref": self.ref,
            "status": self.status,
            "tip": self.tip,
            "values": self.values,
        }


@dataclass(frozen=True)
class RefReport:
    states: tuple[RefState, ...] = ()  # only refs that are not in sync


def differing_repositories(desired: Desired, facts: Facts) -> list[str]:
    """Mirrored repositories whose digests differ, or that a queue mentions."""
    queued = {entry.repository for server in facts.servers.values() for entry in server.queue}
    held = [server.repositories for server in facts.servers.values()]
    names = []
    for repository in desired.mirrored_repositories():
        if repository == desired.cluster.admin_repository:
            continue  # its branch is the admin subject's: sent from the checkout with CAS
        # Compared with the first server holding it, without a set per repository.
        digests = [r.refs_digest for held_by in held if (r := held_by.get(repository)) is not None]
        if any(d != digests[0] for d in digests) or repository in queued:
            names.append(repository)
    return names


def classify(
    repository: str,
    ref: str,
    values: dict[str, str | None],
    ancestor: dict[tuple[str, str, str], bool],
) -> RefState:
    """``ancestor[(repository, a, b)]``: is ``a`` an ancestor of ``b`` (asked where ``b`` is)."""
    present = sorted({v for v in values.values() if v is not None})
    tip: str | None = None
    if len(present) == 1:
        tip = present[0]
    else:
        for candidate in present:
            if all(
                ancestor.get((repository, other, candidate), False)
                for other in present
                if other != candidate
            ):
                tip = candidate
                break
    return RefState(repository, ref, dict(values), tip)


def majority_value(state: RefState, declared: int) -> str | None:
    """The value a majority of the ``declared`` servers hold, if one does: in quorum
    mode the only value of the ref that can have been acknowledged."""
    counts = Counter(value for value in state.values.values() if value is not None)
    return next((v for v, n in counts.items() if n >= declared // 2 + 1), None)


def _run(transport: Transport, desired: Desired, payload: dict[str, Any]) -> Any:
    server = desired.servers[transport.server]
    return run_json_program(transport, "gather", {"repositories": server.repositories, **payload})


def gather_ref_report(
    desired: Desired, facts: Facts, transports: dict[str, Transport]
) -> RefReport:
    names = differing_repositories(desired, facts)
    if not names:
        return RefReport()
    holders = {
        server: [n for n in names if n in facts.servers[server].repositories]
        for server in facts.servers
    }
    holders = {server: repos for server, repos in holders.items() if repos}

    def refs_of(server: str) -> dict[str, dict[str, str]]:
        answer = _run(transports[server], desired, {"mode": "refs", "names": holders[server]})
        return dict(answer["refs"])

    # A server that fails keeps its refs unknown; the others are still examined.
    refs = ask_each(holders, refs_of)

    # Every (repository, ref) whose values differ between the servers holding it.
    values: dict[tuple[str, str], dict[str, str | None]] = {}
    for repository in names:
        servers = [s for s in refs if repository in refs[s]]
        all_refs = sorted({r for s in servers for r in refs[s][repository]})
        for ref in all_refs:
            seen = {s: refs[s][repository].get(ref) for s in servers}
            if len(set(seen.values())) > 1:
                values[(repository, ref)] = seen

    # Ancestry questions, each sent to a server holding the candidate tip.
    checks: dict[str, list[tuple[str, str, str]]] = {}
    for (repository, _ref), seen in values.items():
        present = sorted({v for v in seen.values() if v is not None})
        if len(present) < 2:
            continue
        for candidate in present:
            where = next(s for s, v in seen.items() if v == candidate)
            for other in present:
                if other != candidate:
                    checks.setdefault(where, []).append((repository, other, candidate))
    ancestor: dict[tuple[str, str, str], bool] = {}

    def ask(server: str) -> list[bool]:
        answer = _run(
            transports[server],
            desired,
            {"mode": "ancestry", "checks": [list(c) for c in checks[server]]},
        )
        return [bool(r) for r in answer["results"]]

    for server, verdicts in ask_each(checks, ask).items():
        for question, verdict in zip(checks[server], verdicts, strict=False):
            ancestor[question] = verdict

    states = tuple(
        classify(repository, ref, seen, ancestor)
        for (repository, ref), seen in sorted(values.items())
    )
    return RefReport(states=states)
