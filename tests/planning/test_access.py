"""Access between servers: keys of departed servers go, a shared key is a conflict,
and a peer's authorized_keys that cannot let a server in as itself is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.admin_checkout import departed_key_files, with_server_keys
from reconciler.desired import load
from reconciler.desired.render import render_admin_files
from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, make_plan
from tests.planning.test_planner import (
    CLUSTER,
    GITOSIS_OPTIONS,
    KEY_A,
    KEY_B,
    base_facts,
    build_context,
    plan_lines,
)

OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXip77Y+SxnmGhW6RK9mvENOBOzbsfqenfxssDcwZb7 someone"


def _checkout(tmp_path: Path, cluster: str = CLUSTER, keydir: dict[str, str] | None = None) -> Path:
    (tmp_path / "cluster.d").mkdir(parents=True)
    (tmp_path / "cluster.d" / "cluster.yaml").write_text(cluster)
    for name, key in (keydir or {}).items():
        (tmp_path / "keydir").mkdir(exist_ok=True)
        (tmp_path / "keydir" / f"{name}.pub").write_text(key + "\n")
    return tmp_path


def _facts(desired: Any) -> Facts:
    return Facts(servers={n: parse_server_facts(n, d) for n, d in base_facts(desired).items()})


def test_a_renamed_servers_key_file_is_departed_when_gitosis_conf_recorded_it(
    tmp_path: Path,
) -> None:
    """Rendered with server b, then b renamed to c in cluster.d/ (same key)."""
    root = _checkout(tmp_path, keydir={"git@a": KEY_A, "git@b": KEY_B})
    conf = render_admin_files(load(root))["gitosis.conf"]
    assert "# server key: keydir/git@a.pub\n" in conf and "# server key: keydir/git@b.pub\n" in conf
    (root / "gitosis.conf").write_text(conf)
    (root / "cluster.d" / "cluster.yaml").write_text(CLUSTER.replace("  b:\n", "  c:\n"))
    desired = load(root)
    assert desired.orphaned_key_files == ("keydir/git@b.pub",)
    assert "git@b" not in desired.users


def test_a_renamed_servers_key_file_is_recognised_by_its_key_without_the_record(
    tmp_path: Path,
) -> None:
    """A checkout rendered before server keys were recorded: git@b.pub holds the key
    server c (formerly b) has; a person's file and a git@ file with another key stay."""
    cluster = CLUSTER.replace("  b:\n", "  c:\n")
    root = _checkout(
        tmp_path,
        cluster,
        keydir={"git@a": KEY_A, "git@b": KEY_B, "bob": OTHER, "git@laptop": OTHER},
    )
    desired = load(root)
    facts = base_facts(desired)
    facts["c"] = facts.pop("b")
    typed = Facts(servers={n: parse_server_facts(n, d) for n, d in facts.items()})
    assert departed_key_files(desired, typed) == ["keydir/git@b.pub"]
    assert set(with_server_keys(desired, typed).users) == {
        "alice",
        "bob",
        "git@laptop",
        "git@a",
        "git@c",
    }


def test_one_key_under_two_names_is_a_conflict_naming_both_files(tmp_path: Path) -> None:
    root = _checkout(tmp_path, keydir={"git@a": KEY_A, "carol": KEY_B})
    desired = load(root)
    ctx = build_context(desired, {}, {})
    plan = make_plan(PlanContext(desired, _facts(desired), ctx.checkout, ctx.options, ctx.refs))
    conflicts = [n for n in plan.conflicts if n.subject == "access"]
    assert len(conflicts) == 1, plan_lines(plan)
    message = conflicts[0].message
    assert "keydir/carol.pub and keydir/git@b.pub (server b's key)" in message, message
    assert plan.exit_code() == 3


def _shadowed(data: dict[str, Any]) -> None:
    """b's authorized_keys lists a's key for another user before git@a's line."""
    data["authorized_keys"].insert(2, f'command="gitosis-serve git@old",{GITOSIS_OPTIONS} {KEY_A}')


def _missing(data: dict[str, Any]) -> None:
    data["authorized_keys"] = [line for line in data["authorized_keys"] if KEY_A not in line]


def _shell(data: dict[str, Any]) -> None:
    data["authorized_keys"].insert(0, KEY_A)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _shadowed,
            "line 3 of b's ~/.ssh/authorized_keys gives a's key to git@old, and sshd takes the "
            "first line for a key: a arrives on b as git@old, not git@a, who is not in the "
            "mirror group, so gitosis refuses its replication pushes",
        ),
        (_missing, "a's key is not in b's ~/.ssh/authorized_keys"),
        (_shell, "line 1 of b's ~/.ssh/authorized_keys holds a's key without gitosis's forced"),
    ],
    ids=["shadowed", "missing", "shell"],
)
def test_a_peer_that_cannot_let_a_server_in_as_itself_is_a_conflict(
    desired: Any, mutate: Any, expected: str
) -> None:
    converged = make_plan(build_context(desired, {}, {}))
    assert converged.exit_code() == 0, plan_lines(converged)
    plan = make_plan(build_context(desired, {"b": mutate}, {}))
    lines = plan_lines(plan)
    assert any(line.startswith("b: conflict: " + expected) for line in lines), lines
    assert plan.exit_code() == 3


def test_authorized_keys_are_not_judged_while_the_admin_commit_is_still_to_be_sent(
    desired: Any,
) -> None:
    """Before b has the checkout's commit its authorized_keys are about to change."""
    plan = make_plan(build_context(desired, {"b": _missing}, {"b": "behind"}))
    assert not [n for n in plan.notes if n.subject == "access"], plan_lines(plan)


def test_admin_repository_remotes_of_the_reconciler_are_removed(desired: Any) -> None:
    def with_admin_remote(data: dict[str, Any]) -> None:
        data["repositories"]["gitosis-admin"]["remotes"] = {
            "b": {"url": "ssh://git@b.example/gitosis-admin.git", "managed": True}
        }

    lines = plan_lines(make_plan(build_context(desired, {"a": with_admin_remote}, {})))
    assert lines == [
        "a: - gitosis-admin: remove remote b (the admin repository reaches it only through "
        "reconcile apply)",
        "Plan: 0 to create, 0 to change, 1 to remove, 0 conflicts",
    ]


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load(_checkout(tmp_path_factory.mktemp("admin")))
