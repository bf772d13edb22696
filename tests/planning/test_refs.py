"""Ref classification and the refs planner: repairs, deletions, conflicts, draining."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.desired import load
from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions
from reconciler.planning.context import settings_text
from reconciler.planning.refs import plan_refs
from reconciler.refs import RefReport, RefState, classify
from reconciler.server.ops import AdoptMajority, DrainQueue, PushRefs
from reconciler.status import as_repair_sees_it, ref_state_on
from tests.planning.test_planner import CLUSTER, base_facts, converged_server, settled_checkout
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


ZERO = "0" * 40


@pytest.fixture(scope="module")
def desired3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """CLUSTER with a third server: two servers can queue one deletion for a third."""
    root = tmp_path_factory.mktemp("admin3")
    (root / "cluster.d").mkdir()
    third = "  b:\n    url: ssh://git@b.example\n  c:\n    url: ssh://git@c.example\n"
    (root / "cluster.d" / "cluster.yaml").write_text(
        CLUSTER.replace("  b:\n    url: ssh://git@b.example\n", third)
    )
    return load(root)


def context3(desired: Any, state: RefState, queues: dict[str, list[dict[str, Any]]]) -> PlanContext:
    urls = {s: f"ssh://git@{s}.example/{{repo}}.git" for s in "abc"}
    servers = {
        name: converged_server(name, {p: u for p, u in urls.items() if p != name}) for name in "abc"
    }
    for name, data in servers.items():
        data["settings_text"] = settings_text(desired, name)
        data["queue"] = queues.get(name, [])
    facts = Facts(servers={n: parse_server_facts(n, d) for n, d in servers.items()})
    return PlanContext(
        desired, facts, settled_checkout(desired, facts), PlanOptions(), RefReport(states=(state,))
    )


def queued(server: str, peer: str, old: str, name: str) -> dict[str, Any]:
    return {**entry(server, peer, old, ZERO), "file": name}


@pytest.mark.parametrize(
    ("values", "queues", "pushes", "levels"),
    [
        pytest.param(
            {"a": None, "b": None, "c": A},
            {"a": [queued("a", "c", A, "1.json")], "b": [queued("b", "c", A, "2.json")]},
            [("a", "c", ((MAIN, "", A),))],
            [],
            id="two-origins-one-deletion-for-a-peer",
        ),
        pytest.param(
            {"a": None, "b": None, "c": A},
            {"a": [queued("a", "c", A, "1.json"), queued("a", "c", A, "2.json")]},
            [("a", "c", ((MAIN, "", A),))],
            [],
            id="one-origin-queued-it-twice",
        ),
        pytest.param(
            {"b": None, "c": A},
            {"a": [queued("a", "c", A, "1.json")], "b": [queued("b", "c", A, "2.json")]},
            [("b", "c", ((MAIN, "", A),))],
            [],
            id="an-origin-holding-the-repository-delivers",
        ),
        pytest.param(
            {"a": None, "b": None, "c": A},
            {"a": [queued("a", "c", A, "1.json")], "b": [queued("b", "c", B, "2.json")]},
            [],
            ["conflict"],
            id="one-entry-contradicted-nothing-deleted",
        ),
        pytest.param(
            {"a": None, "b": None, "c": A},
            {"b": [queued("b", "a", A, "1.json")]},
            [],
            ["conflict"],
            id="a-holder-no-entry-names-is-a-conflict-not-stuck",
        ),
        pytest.param(
            {"a": None, "b": A, "c": B},
            {"a": [queued("a", "b", A, "1.json"), queued("a", "c", A, "2.json")]},
            [],
            ["conflict"],
            id="contradicted-on-one-peer-kept-on-both",
        ),
    ],
)
def test_queued_deletions_table(
    desired3: Any,
    values: dict[str, str | None],
    queues: dict[str, list[dict[str, Any]]],
    pushes: list[tuple[str, str, tuple[tuple[str, str, str], ...]]],
    levels: list[str],
) -> None:
    """Each peer gets at most one update of a ref (a second one's lease would be
    stale), and a ref named in a conflict is deleted nowhere."""
    ctx = context3(desired3, classify("product", MAIN, values, {}), queues)
    actions, notes = plan_refs(ctx)
    planned = [
        (a.server, op.peer, op.updates)
        for a in actions
        if a.subject == "ref"
        for op in a.ops
        if isinstance(op, PushRefs)
    ]
    assert planned == pushes
    assert [n.level for n in notes] == levels


PRODUCT = "repositories/product.git"


@pytest.mark.parametrize(
    ("ancestry", "ops"),
    [
        pytest.param(
            {("product", A, B): True},
            [("a", PushRefs(PRODUCT, "c", ((MAIN, B, A),)))],
            id="made-again-on-top-of-the-deleted-value",
        ),
        pytest.param(
            {},
            [("c", AdoptMajority(PRODUCT, MAIN, new=B, old=A, peer="a"))],
            id="made-again-unrelated-to-the-deleted-value",
        ),
    ],
)
def test_a_deletion_its_origin_has_undone_follows_the_ordinary_rules(
    desired3: Any, ancestry: dict[Any, bool], ops: list[tuple[str, Any]]
) -> None:
    """a deleted main while c was away, then made it again (B), which reached b; c
    still holds the deleted A. The deletion is not delivered (a holds main), and the
    ref is not left as it is for ever either: B goes to c over A, compare-and-swap,
    where it descends from A; else (three servers: quorum mode) c follows the
    majority and keeps A aside."""
    values: dict[str, str | None] = {"a": B, "b": B, "c": A}
    state = classify("product", MAIN, values, ancestry)
    ctx = context3(desired3, state, {"a": [queued("a", "c", A, "1.json")]})
    actions, notes = plan_refs(ctx)
    assert [(a.server, op) for a in actions for op in a.ops] == ops
    assert notes == []


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


def test_status_names_the_minority_behind_in_quorum_mode(desired3: Any) -> None:
    """A killed proposer left b ahead of the majority on a value no majority took:
    status agrees with the plan (b follows a and c), instead of calling the
    majority behind and starring b's value as the tip."""
    state = classify("product", MAIN, {"a": A, "b": B, "c": A}, {("product", A, B): True})
    assert state.tip == B  # the newest descendant
    ctx = context3(desired3, state, {})
    [seen] = as_repair_sees_it(desired3, ctx.facts, RefReport(states=(state,))).states
    assert seen.tip == A
    assert [ref_state_on(seen, s) for s in "abc"] == ["in_sync", "behind", "in_sync"]
    [action] = plan_refs(ctx)[0]
    assert (action.server, type(action.ops[0])) == ("b", AdoptMajority)
    # Queued for the others, B was acknowledged (its takers are down): it stays the tip.
    queued = context3(desired3, state, {"b": [{**entry("b", "a", A, B), "file": "1.json"}]})
    [kept] = as_repair_sees_it(desired3, queued.facts, RefReport(states=(state,))).states
    assert kept.tip == B
