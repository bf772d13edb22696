"""Refs: every replicated ref has the same value on every server (DESIGN.md section 7).

Behind or missing refs are pushed from the server holding the tip, with
compare-and-swap on the target's current value. Diverged refs are conflicts: both
values are shown and nothing is changed. A ref is deleted only where a queue
entry records that deletion and the target still holds the recorded old value.
Queue entries whose ref is consistent again are drained.
"""

from __future__ import annotations

from collections import defaultdict

from reconciler.facts import Facts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.refs import ZERO, RefState, majority_value
from reconciler.server.common import QUEUE_PATH
from reconciler.server.ops import AdoptMajority, DrainQueue, PushRefs, RemoveStaleLock
from reconciler.server.queue import QueueEntry, is_zero

CLUSTER = "(cluster)"


def _short(value: str | None) -> str:
    return value[:12] if value else "(absent)"


def _conflict(state: RefState, why: str) -> Note:
    """A ref a person must decide on: ``why`` follows the repository and ref."""
    target = f"{state.repository} {state.ref}"
    return Note(CLUSTER, "ref", target, "conflict", f"{target} {why}")


def _deletions(ctx: PlanContext) -> dict[tuple[str, str], list[QueueEntry]]:
    """Queued deletions by (repository, ref)."""
    found: dict[tuple[str, str], list[QueueEntry]] = defaultdict(list)
    for facts in ctx.facts.servers.values():
        for entry in facts.queue:
            if is_zero(entry.new):
                found[(entry.repository, entry.ref)].append(entry)
    return found


def plan_refs(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    report = ctx.refs
    planned = set(ctx.planned_servers())
    deletions = _deletions(ctx)
    quorum = ctx.desired.cluster.replication.mode == "quorum"
    queued = queued_values(ctx.facts) if quorum else set()
    # (pusher, repository, target) -> list of [ref, new, expected old]
    pushes: dict[tuple[str, str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for state in report.states:
        key = (state.repository, state.ref)
        if key in deletions and _plan_deletion(state, deletions[key], pushes, notes):
            continue
        # Quorum mode: a majority's value that is not the tip (a minority is ahead on
        # a value no majority took, or diverged) is followed; the tip's is below.
        if quorum and _follow_majority(ctx, state, planned, pushes, actions, queued):
            continue
        if state.status == "diverged":
            shown = ", ".join(f"{s} {_short(v)}" for s, v in state.values.items())
            notes.append(
                _conflict(
                    state,
                    f"diverged: {shown}; nothing forced, merge or reset it by hand on one server",
                )
            )
            continue
        tip = state.tip
        if tip is None:
            continue
        pusher = next(s for s in ctx.desired.servers if state.values.get(s) == tip)
        for target, value in state.values.items():
            if value != tip and target in planned:
                pushes[(pusher, state.repository, target)].append((state.ref, tip, value or ""))
    for (pusher, repository, target), updates in sorted(pushes.items()):
        refs = ", ".join(u[0] if u[1] else f"{u[0]} (delete)" for u in updates)
        verb = "delete" if all(not u[1] for u in updates) else "push"
        actions.append(
            Action(
                pusher,
                "ref",
                "remove" if verb == "delete" else "change",
                f"{repository} -> {target}",
                f"{repository}: {verb} {refs} on {target} (from {pusher})",
                Phase.REFS,
                (PushRefs(ctx.repository_path(pusher, repository), target, tuple(updates)),),
            )
        )
    actions += _drain_queues(ctx, report.states)
    locks, lock_notes = plan_stale_locks(ctx)
    return actions + locks, notes + lock_notes


def stale_lock_age(ctx: PlanContext) -> float:
    """After how long a ref's lock file can only be a killed push's: the quorum hook
    holds a ref's lock for a proposal and a put-back, each bounded by the timeout."""
    return 3.0 * ctx.desired.cluster.replication.timeout + 15.0


def plan_stale_locks(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    """A ``REF.lock`` left by a push killed while it held the lock blocks every later
    update of that ref (git never removes it by itself): removed once it is older
    than any live push could hold it."""
    actions: list[Action] = []
    notes: list[Note] = []
    limit = stale_lock_age(ctx)
    for name, facts in ctx.reachable().items():
        # Only repositories with locks, sorted: not all 10,000 of them on every server.
        locked = sorted((r, repo) for r, repo in facts.repositories.items() if repo.ref_locks)
        for repository, repo in locked:
            for ref, age in repo.ref_locks:
                target = f"{repository} {ref}.lock"
                if age < limit:
                    notes.append(
                        Note(
                            name,
                            "ref",
                            target,
                            "warning",
                            f"{repository}: {ref} is locked ({ref}.lock, {age:.0f}s old); if no "
                            f"push is running it is removed once it is {limit:.0f}s old",
                        )
                    )
                    continue
                actions.append(
                    Action(
                        name,
                        "ref",
                        "remove",
                        target,
                        f"{repository}: remove {ref}.lock, left {age:.0f}s ago by a push that "
                        "was killed (it blocks every update of the ref)",
                        Phase.CONFIGURATION,
                        (RemoveStaleLock(ctx.repository_path(name, repository), ref, limit),),
                    )
                )
    return actions, notes


def _follow_majority(
    ctx: PlanContext,
    state: RefState,
    planned: set[str],
    pushes: dict[tuple[str, str, str], list[tuple[str, str, str]]],
    actions: list[Action],
    queued: set[tuple[str, str, str]],
) -> bool:
    """Quorum mode: a value held by a majority of the declared servers is the ref's
    value (only such a value can have been acknowledged); the others follow it, and
    a value of their own that never reached a majority is kept under
    refs/reconciler/aborted/. False when no value has a majority (a conflict)."""
    winner = quorum_value(state, len(ctx.desired.servers), queued)
    if winner is None or winner == state.tip:
        return False
    source = min(s for s, v in state.values.items() if v == winner)
    for target, value in sorted(state.values.items()):
        if value == winner or target not in planned:
            continue
        if value is None:
            pushes[(source, state.repository, target)].append((state.ref, winner, ""))
            continue
        kept = f"refs/reconciler/aborted/{state.ref[len('refs/') :]}/{value}"
        actions.append(
            Action(
                target,
                "ref",
                "change",
                f"{state.repository} {state.ref}",
                f"{state.repository}: {state.ref} follows the majority's {_short(winner)} "
                f"(from {source}); its own {_short(value)}, which no majority took, is kept as "
                f"{kept} unless it is already in that history",
                Phase.REFS,
                (
                    AdoptMajority(
                        ctx.repository_path(target, state.repository),
                        state.ref,
                        new=winner,
                        old=value,
                        peer=source,
                    ),
                ),
            )
        )
    return True


def queued_values(facts: Facts) -> set[tuple[str, str, str]]:
    """(repository, ref, new) of every queued update on every server."""
    return {(e.repository, e.ref, e.new) for f in facts.servers.values() for e in f.queue}


def quorum_value(state: RefState, declared: int, queued: set[tuple[str, str, str]]) -> str | None:
    """The value quorum repair makes the ref's everywhere: the majority's, unless the
    tip is an update some server acknowledged and queued for the others (sync or async
    mode before a switch to quorum, or a quorum write whose takers are down), which is
    delivered as ever, not moved aside. None: the tip's, or no majority (a conflict)."""
    winner = majority_value(state, declared)
    if winner is None or winner == state.tip:
        return None
    if state.tip is not None and (state.repository, state.ref, state.tip) in queued:
        return None
    return winner


def _plan_deletion(
    state: RefState,
    entries: list[QueueEntry],
    pushes: dict[tuple[str, str, str], list[tuple[str, str, str]]],
    notes: list[Note],
) -> bool:
    """Deliver a queued deletion to peers still holding the deleted value.

    Several entries may record the deletion for one peer (each server that deleted
    it queues its own): the peer gets one update, since after the first its lease
    could no longer match. An entry the peer contradicts (it holds another value)
    makes the whole ref a conflict, and then nothing deletes it anywhere.

    False when every origin has made the ref again since: the deletion is history,
    and the ref follows the ordinary rules (its new value reaches the peers over the
    deleted one where it descends from it, else it is a conflict); once the ref is
    the same everywhere the entries drain."""
    live = [entry for entry in entries if state.values.get(entry.server) is None]
    if not live:
        return False
    deliveries: dict[str, tuple[str, str]] = {}  # peer -> (origin, old)
    conflicts: list[Note] = []
    # An origin holding the repository can push now; one lacking it only after its clone.
    for entry in sorted(live, key=lambda e: (e.server not in state.values, e.server)):
        origin, peer, old = entry.server, entry.peer, entry.old
        held = state.values.get(peer)
        if held == old:
            deliveries.setdefault(peer, (origin, old))
        elif held is not None:
            conflicts.append(
                _conflict(
                    state,
                    f"was deleted on {origin} (at {_short(old)}) while {peer} was away, but "
                    f"{peer} now holds {_short(held)}; nothing deleted, decide by hand",
                )
            )
    # A server holding the ref that no delivery covers (no entry names it): it kept
    # the value through the deletion, or took it again since. Deleting it there could
    # drop commits, pushing it back would undo the deletion: a person decides.
    kept = sorted(s for s, v in state.values.items() if v is not None and s not in deliveries)
    if kept and not conflicts:
        origins = ", ".join(sorted({e.server for e in live}))
        held = ", ".join(f"{s} holds {_short(state.values[s])}" for s in kept)
        conflicts.append(
            _conflict(
                state,
                f"was deleted on {origins}, but {held} with no deletion queued for it; "
                "nothing deleted or pushed, delete it there or push it again by hand",
            )
        )
    if conflicts:
        notes.extend(conflicts)
        return True
    for peer, (origin, old) in sorted(deliveries.items()):
        pushes[(origin, state.repository, peer)].append((state.ref, "", old))
    return True


def _drain_queues(ctx: PlanContext, states: tuple[RefState, ...]) -> list[Action]:
    """Remove queue entries whose ref is now the same everywhere."""
    unsettled = {(s.repository, s.ref) for s in states}
    actions: list[Action] = []
    for name, facts in ctx.reachable().items():
        done = [
            entry
            for entry in facts.queue
            if (entry.repository, entry.ref) not in unsettled and entry.name
        ]
        if not done:
            continue
        base = ctx.desired.servers[name].repositories
        actions.append(
            Action(
                name,
                "queue",
                "remove",
                "replication queue",
                f"drain {len(done)} delivered replication queue "
                f"entr{'y' if len(done) == 1 else 'ies'}",
                Phase.REFS,
                (DrainQueue(base, tuple(sorted(e.name for e in done)), QUEUE_PATH),),
            )
        )
    return actions


__all__ = ["ZERO", "plan_refs"]
