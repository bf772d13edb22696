"""Quorum mode's hook as a table: a repository's proc-receive link, its
receive.procReceiveRefs and an old reference-transaction link in, ops out."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.desired import load
from reconciler.planning import make_plan
from reconciler.server.ops import RemoveSymlink, SetConfig, Symlink
from tests.planning.test_planner import CLUSTER, build_context

REPO = "repositories/product.git"
REFS = ["refs/heads/", "refs/tags/", "refs/notes/"]
LINK = Symlink(f"{REPO}/hooks/proc-receive", "post-receive")
UNLINK = RemoveSymlink(LINK.path, LINK.target)
CONFIG = SetConfig(REPO, "receive.procReceiveRefs", tuple(REFS))
UNSET = SetConfig(REPO, "receive.procReceiveRefs", ())
OLD = RemoveSymlink(f"{REPO}/hooks/reference-transaction", "post-receive")


def product(**facts: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["repositories"]["product"].update(facts)

    return mutate


INSTALLED = {"proc_receive_hook": "post-receive", "proc_receive_refs": REFS}

# case: (mode, facts of product on a, expected (kind, description, ops) on a, or a note)
CASES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "quorum, nothing there: link, then config": (
        "quorum",
        {},
        ("create", "product: install the quorum hook (proc-receive)", (LINK, CONFIG)),
    ),
    "quorum, link without config": (
        "quorum",
        {"proc_receive_hook": "post-receive"},
        ("change", "product: set receive.procReceiveRefs for the quorum hook", (CONFIG,)),
    ),
    "quorum, config with other values": (
        "quorum",
        {"proc_receive_hook": "post-receive", "proc_receive_refs": ["refs/heads/"]},
        ("change", "product: set receive.procReceiveRefs for the quorum hook", (CONFIG,)),
    ),
    "quorum, installed": ("quorum", INSTALLED, None),
    "quorum, the release before: reference-transaction goes after proc-receive is in": (
        "quorum",
        {"transaction_hook": "post-receive"},
        ("create", "product: install the quorum hook (proc-receive)", (LINK, CONFIG, OLD)),
    ),
    "quorum, installed and an old link left": (
        "quorum",
        {**INSTALLED, "transaction_hook": "post-receive"},
        ("change", "product: remove the old quorum hook (reference-transaction)", (OLD,)),
    ),
    "quorum, a foreign proc-receive": ("quorum", {"proc_receive_hook": "file"}, "conflict"),
    "sync, installed: config first, then the link": (
        "sync",
        INSTALLED,
        ("remove", "product: remove the quorum hook (not quorum mode)", (UNSET, UNLINK)),
    ),
    "sync, a foreign proc-receive and its config are left alone": (
        "sync",
        {"proc_receive_hook": "file", "proc_receive_refs": ["refs/for/"]},
        None,
    ),
    "sync, nothing": ("sync", {}, None),
}


@pytest.fixture(scope="module")
def desired_by_mode(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    loaded = {}
    for mode in ("sync", "quorum"):
        root = tmp_path_factory.mktemp(mode)
        (root / "cluster.d").mkdir()
        text = CLUSTER.replace("  name: t\n", f"  name: t\n  replication:\n    mode: {mode}\n")
        (root / "cluster.d" / "cluster.yaml").write_text(text)
        loaded[mode] = load(root)
    return loaded


@pytest.mark.parametrize("case", list(CASES))
def test_quorum_hook_table(desired_by_mode: dict[str, Any], case: str) -> None:
    mode, facts, expected = CASES[case]
    # b has the hook installed as the mode wants it: only a's row varies.
    on_b = INSTALLED if mode == "quorum" else {}
    plan = make_plan(
        build_context(desired_by_mode[mode], {"a": product(**facts), "b": product(**on_b)}, {})
    )
    # The git template's own action (quorum mode's template differs) is its table's.
    actions = [
        (a.server, a.kind, a.description, a.ops) for a in plan.actions if a.subject == "hook"
    ]
    notes = [(n.server, n.level) for n in plan.notes if n.subject == "hook"]
    if expected is None:
        assert actions == [] and notes == []
    elif expected == "conflict":
        assert actions == [] and notes == [("a", "conflict")]
    else:
        assert actions == [("a", *expected)]


def test_quorum_mode_on_a_server_with_git_older_than_2_29_is_a_conflict(
    desired_by_mode: dict[str, Any],
) -> None:
    def old_git(data: dict[str, Any]) -> None:
        data["git_version"] = [2, 25, 1]

    plan = make_plan(
        build_context(desired_by_mode["quorum"], {"a": old_git, "b": product(**INSTALLED)}, {})
    )
    assert [a for a in plan.actions if a.server == "a" and a.subject == "hook"] == []
    assert [(n.server, n.level, n.message) for n in plan.notes if n.subject == "hook"] == [
        (
            "a",
            "conflict",
            "quorum mode needs git 2.29 or later on every server for its proc-receive hook; "
            "a has git 2.25.1: upgrade git there or choose replication mode sync",
        )
    ]
    assert plan.exit_code() == 3
