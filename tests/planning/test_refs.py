"""Ref classification and the refs planner: repairs, deletions, conflicts, draining."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions
from reconciler.planning.refs import plan_refs
from reconciler.refs import RefReport, RefState, classify
from reconciler.server.ops import DrainQueue, PushRefs
from tests.planning.test_planner import base_facts, settled_checkout
from tests.planning.test_planner import desired as desired

A, B, C = "a" * 40, "b" * 40, "c" * 40
MAIN = "refs/heads/main"


@pytest.mark.parametrize(
    ("values", "ancestry", "status", "tip"),
    [
        ({"a": A, "b": A}, {}, "in sync", A),
        ({"a": A, "b": None}, {}, "missing", A),
        ({"a": A, "b": B}, {("p", B, A): True}, "behind", A),
        ({"a": A, "b": B}, {("p", A, B): True}, "behind", B),
        ({"a": A, "b": B}, {}, "diverged", None),
        ({"a": A, "b": B, "c": None}, {("p", B, A): True}, "behind", A),
        ({"a": A, "b": B, "c": C}, {("p", B, A): True, ("p", C, A): True}, "behind", A),
        ({"a": A, "b": B, "c": C}, {("p", B, A): True}, "diverged", None),
    ],
)
def test_classify(
    values: dict[str, str | None], ancestry: dict[Any, bool], status: str, tip: str | None
) -> None:
    state = classify("p", MAIN, values, ancestry)
    assert state.status == status
    assert state.tip == tip


def context(
    desired: Any, states: list[RefState], queues: dict[str, list[dict[str, Any]]]
) -> PlanContext:
    servers = base_facts(desired)
    for name, entries in queues.items():
        servers[name]["queue"] = entries
    facts = Facts(servers={n: parse_server_facts(n, d) for n, d in servers.items()})
    return PlanContext(
        desired,
        facts,
        settled_checkout(desired, facts),
        PlanOptions(),
        RefReport(states=tuple(states)),
    )


def descriptions(ctx: PlanContext) -> list[str]:
    actions, notes = plan_refs(ctx)
    return [f"{a.server}: {a.description}" for a in actions] + [
        f"{n.level}: {n.message}" for n in notes
    ]


def test_behind_is_pushed_from_the_tip_with_the_target_value_as_lease(desired: Any) -> None:
    ctx = context(desired, [RefState("product", MAIN, {"a": A, "b": B}, A)], {})
    actions, notes = plan_refs(ctx)
    assert not notes
    [action] = actions
    assert action.server == "a"
    # compare-and-swap on b's value
    assert action.ops == (PushRefs("repositories/product.git", "b", ((MAIN, A, B),)),)


def test_missing_is_created_with_an_empty_lease(desired: Any) -> None:
    ctx = context(desired, [RefState("product", MAIN, {"a": None, "b": B}, B)], {})
    [action], _ = plan_refs(ctx)
    assert action.server == "b"
    assert action.ops == (PushRefs("repositories/product.git", "a", ((MAIN, B, ""),)),)


def test_diverged_is_a_conflict_and_nothing_is_pushed(desired: Any) -> None:
    ctx = context(desired, [RefState("product", MAIN, {"a": A, "b": B}, None)], {})
    actions, notes = plan_refs(ctx)
    assert actions == []
    assert (
        notes[0].level == "conflict" and A[:12] in notes[0].message and B[:12] in notes[0].message
    )


def entry(server: str, peer: str, old: str, new: str) -> dict[str, Any]:
    """A queue entry as the gather program reports it (the queue format, and its file)."""
    return {
        "format_version": 1,
        "reason": "unreachable",
        "transient": True,
        "detail": "",
        "repository": "product",
        "ref": MAIN,
        "old": old,
        "new": new,
        "peer": peer,
        "server": server,
        "file": f"1-{peer}.json",
        "time": 1.0,
    }


def test_queued_deletion_is_delivered_while_the_peer_holds_the_old_value(desired: Any) -> None:
    ctx = context(
        desired,
        [RefState("product", MAIN, {"a": None, "b": A}, A)],
        {"a": [entry("a", "b", A, "0" * 40)]},
    )
    actions, notes = plan_refs(ctx)
    assert not notes
    [delete] = [a for a in actions if a.subject == "ref"]
    assert delete.server == "a"
    assert delete.ops == (PushRefs("repositories/product.git", "b", ((MAIN, "", A),)),)


def test_queued_deletion_never_deletes_a_moved_ref(desired: Any) -> None:
    ctx = context(
        desired,
        [RefState("product", MAIN, {"a": None, "b": B}, B)],
        {"a": [entry("a", "b", A, "0" * 40)]},
    )
    actions, notes = plan_refs(ctx)
    assert [a for a in actions if a.subject == "ref"] == []  # neither deleted nor resurrected
    assert notes[0].level == "conflict"


def test_entries_of_settled_refs_are_drained_and_others_kept(desired: Any) -> None:
    settled = {**entry("a", "b", A, B), "ref": "refs/heads/done", "file": "1-done.json"}
    open_entry = entry("a", "b", A, B)
    ctx = context(
        desired, [RefState("product", MAIN, {"a": B, "b": A}, B)], {"a": [settled, open_entry]}
    )
    drains = [a for a in plan_refs(ctx)[0] if a.subject == "queue"]
    assert [d.ops for d in drains] == [
        (DrainQueue("repositories", ("1-done.json",), ".reconciler/queue"),)
    ]
