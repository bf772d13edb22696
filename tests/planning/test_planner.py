"""The pure planner, table-driven: desired state and facts in, plan lines out."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from reconciler.admin_checkout import CheckoutFacts
from reconciler.desired import load
from reconciler.errors import ServerError
from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions, make_plan
from reconciler.planning.context import settings_text
from reconciler.planning.model import Plan

ALICE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHf3QMiW3/6ah4NlkiVbguIO9g4LWCSqJBKVJOG6lKhv alice"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO3JbSpG1m33B5Ps3NmmmpQDHjUcK+XYnRfjFhwkfgoh git@a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICDkI9zhpVj92Ckyq+vvgnFb/jBQuUE3VOgdK5a6+/ey git@b"
HOST_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO3JbSpG1m33B5Ps3NmmmpQDHjUcK+XYnRfjFhwkfgoh"
HOST_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICDkI9zhpVj92Ckyq+vvgnFb/jBQuUE3VOgdK5a6+/ey"
HOOK = b"#!/usr/bin/env python3\n# reconciler replication hook (test)\n"
HOOK_SHA = hashlib.sha256(HOOK).hexdigest()
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
HEAD = "1" * 40

CLUSTER = f"""
cluster:
  name: t
servers:
  a:
    url: ssh://git@a.example:2222
  b:
    url: ssh://git@b.example
repositories:
  product: {{}}
groups:
  gitosis-admin:
    members: [alice]
    writable: [gitosis-admin]
  devs:
    members: [alice]
    writable: [product]
users:
  alice: {ALICE}
"""


def converged_server(name: str, peers: dict[str, str]) -> dict[str, Any]:
    """Gather-program output of a server that matches CLUSTER exactly."""

    def repository() -> dict[str, Any]:
        return {
            "head": "ref: refs/heads/master",
            "bare": True,
            "remotes": {
                peer: {"url": url.format(repo=r), "fetch": [], "managed": True}
                for peer, url in peers.items()
                for r in ["{repo}"]
            },
            "hook": {"mode": 0o755, "uid": 1000, "sha256": HOOK_SHA, "managed": True},
            "refs_digest": EMPTY_DIGEST,
            "ref_count": 0,
        }

    repos = {}
    for repo in ("gitosis-admin", "product"):
        facts = repository()
        for remote in facts["remotes"].values():
            remote["url"] = remote["url"].format(repo=repo)
        repos[repo] = facts
    known = {
        "a": f"[a.example]:2222 {HOST_A} reconciler:a",
        "b": f"b.example {HOST_B} reconciler:b",
    }
    return {
        "format_version": 1,
        "home": f"/home/{name}",
        "uid": 1000,
        "user": "git",
        "server_key": KEY_A if name == "a" else KEY_B,
        "server_key_private": True,
        "ssh_dir_mode": 0o700,
        "known_hosts": [line for peer, line in known.items() if peer != name],
        "authorized_keys": [],
        "repositories_dir": f"/home/{name}/repositories",
        "repositories_exists": True,
        "settings": {},
        "settings_text": None,  # filled in by the test from the desired state
        "queue": [],
        "queue_errors": [],
        "repositories": repos,
        "admin": {
            "exists": True,
            "branch": "master",
            "head": HEAD,
            "history": [{"sha": HEAD, "parents": ["2" * 40], "committer": "reconcile"}],
        },
    }


def base_facts(desired: Any) -> dict[str, dict[str, Any]]:
    servers = {
        "a": converged_server("a", {"b": "ssh://git@b.example/{repo}.git"}),
        "b": converged_server("b", {"a": "ssh://git@a.example:2222/{repo}.git"}),
    }
    for name, data in servers.items():
        data["settings_text"] = settings_text(desired, name)
    return servers


def fresh(data: dict[str, Any]) -> None:
    """A server just set up with gitosis-init and nothing else."""
    data.update(server_key=None, server_key_private=False, known_hosts=[], settings_text=None)
    data["repositories"] = {
        "gitosis-admin": {**data["repositories"]["gitosis-admin"], "remotes": {}, "hook": None}
    }
    data["admin"] = {
        "exists": True,
        "branch": "master",
        "head": "9" * 40,
        "history": [{"sha": "9" * 40, "parents": [], "committer": "Gitosis Admin"}],
    }


def foreign_hook(data: dict[str, Any]) -> None:
    data["repositories"]["product"]["hook"] = {
        "mode": 0o755,
        "uid": 1000,
        "sha256": "f" * 64,
        "managed": False,
    }


def old_hook(data: dict[str, Any]) -> None:
    data["repositories"]["product"]["hook"] = {
        "mode": 0o644,
        "uid": 1000,
        "sha256": "e" * 64,
        "managed": True,
    }


def foreign_remote(data: dict[str, Any]) -> None:
    data["repositories"]["product"]["remotes"]["b"] = {
        "url": "/elsewhere",
        "fetch": [],
        "managed": False,
    }


def manual_remote(data: dict[str, Any]) -> None:
    remote = data["repositories"]["product"]["remotes"]["b"]
    data["repositories"]["product"]["remotes"]["b"] = {
        **remote,
        "managed": False,
        "fetch": ["+refs/*:refs/*"],
    }


def dropped_server(data: dict[str, Any]) -> None:
    data["repositories"]["product"]["remotes"]["old"] = {
        "url": "ssh://old/product.git",
        "managed": True,
    }
    data["repositories"]["product"]["remotes"]["backup"] = {
        "url": "/backup/product.git",
        "managed": False,
    }
    data["known_hosts"].append(f"old.example {HOST_B} reconciler:old")
    data["known_hosts"].append(f"unrelated.example {HOST_B}")


def missing_repo(data: dict[str, Any]) -> None:
    del data["repositories"]["product"]


def unmanaged_repo(data: dict[str, Any]) -> None:
    data["repositories"]["scratch"] = copy.deepcopy(data["repositories"]["product"])


CASES: dict[str, tuple[dict[str, Any], dict[str, str], list[str], int]] = {
    # name: (mutations per server, checkout relations, expected lines, exit code)
    "converged": ({}, {}, ["Plan: 0 to create, 0 to change, 0 to remove, 0 conflicts"], 0),
    "fresh server b": (
        {"b": fresh},
        {"b": "unknown"},
        [
            "b: + generate the server key ~/.ssh/id_ed25519 (git@b)",
            "b: ~ adopt gitosis-admin: replace gitosis-init's single commit 999999999999",
            "b: + known_hosts: add a",
            "b: + replication settings repositories/.reconciler/replication.json",
            "b: + clone repository product from a",
            "b: + gitosis-admin: add remote a -> ssh://git@a.example:2222/gitosis-admin.git",
            "b: + product: add remote a -> ssh://git@a.example:2222/product.git",
            "b: + gitosis-admin: install the replication hook",
            "b: + product: install the replication hook",
            "Plan: 8 to create, 1 to change, 0 to remove, 0 conflicts",
        ],
        2,
    ),
    "foreign hook is a conflict": (
        {"a": foreign_hook},
        {},
        [
            "a: conflict: product: hooks/post-receive is not the replication hook; "
            "merge it by hand or apply with --replace-foreign",
            "Plan: 0 to create, 0 to change, 0 to remove, 1 conflict",
        ],
        3,
    ),
    "old hook of ours is updated": (
        {"a": old_hook},
        {},
        [
            "a: ~ product: update the replication hook (mode 755)",
            "Plan: 0 to create, 1 to change, 0 to remove, 0 conflicts",
        ],
        2,
    ),
    "foreign remote is a conflict": (
        {"a": foreign_remote},
        {},
        [
            "a: conflict: product: remote b points to /elsewhere, "
            "not ssh://git@b.example/product.git, and was not written by reconcile; "
            "fix it or apply with --replace-foreign",
            "Plan: 0 to create, 0 to change, 0 to remove, 1 conflict",
        ],
        3,
    ),
    "manual recipe remote with the right URL is adopted": (
        {"a": manual_remote},
        {},
        [
            "a: ~ product: adopt remote b -> ssh://git@b.example/product.git",
            "Plan: 0 to create, 1 to change, 0 to remove, 0 conflicts",
        ],
        2,
    ),
    "dropped server loses remotes and known_hosts, foreign ones stay": (
        {"a": dropped_server},
        {},
        [
            "a: ~ known_hosts: remove old",
            "a: - product: remove remote old (server left the cluster)",
            "a: warning: product: foreign remote backup (/backup/product.git) left alone; "
            "to remove it, run as the git user on a: "
            "git --git-dir /home/a/repositories/product.git remote remove backup",
            "Plan: 0 to create, 1 to change, 1 to remove, 0 conflicts",
        ],
        2,
    ),
    "repository missing on one server is cloned from the other": (
        {"b": missing_repo},
        {},
        [
            "b: + clone repository product from a",
            "b: + product: add remote a -> ssh://git@a.example:2222/product.git",
            "b: + product: install the replication hook",
            "Plan: 3 to create, 0 to change, 0 to remove, 0 conflicts",
        ],
        2,
    ),
    "repository missing everywhere is created empty": (
        {"a": missing_repo, "b": missing_repo},
        {},
        [
            "a: + create empty repository product",
            "a: + product: add remote b -> ssh://git@b.example/product.git",
            "a: + product: install the replication hook",
            "b: + create empty repository product",
            "b: + product: add remote a -> ssh://git@a.example:2222/product.git",
            "b: + product: install the replication hook",
            "Plan: 6 to create, 0 to change, 0 to remove, 0 conflicts",
        ],
        2,
    ),
    "unmanaged repository is listed, not touched": (
        {"a": unmanaged_repo},
        {},
        ["a: unmanaged: scratch", "Plan: 0 to create, 0 to change, 0 to remove, 0 conflicts"],
        0,
    ),
    "admin ahead of the checkout is an error": (
        {},
        {"a": "ahead"},
        [
            "a: error: gitosis-admin on a is ahead of the admin checkout (at 111111111111); "
            "pull it into the checkout and run again",
            "Plan: 0 to create, 0 to change, 0 to remove, 0 conflicts, 1 error",
        ],
        1,
    ),
    "admin with unrelated history is refused": (
        {},
        {"b": "unknown"},
        [
            "b: error: gitosis-admin on b holds history unrelated to the admin checkout "
            "(at 111111111111); refusing to overwrite it",
            "Plan: 0 to create, 0 to change, 0 to remove, 0 conflicts, 1 error",
        ],
        1,
    ),
    "admin behind is fast-forwarded": (
        {},
        {"b": "behind"},
        [
            "b: ~ fast-forward gitosis-admin from 111111111111",
            "Plan: 0 to create, 1 to change, 0 to remove, 0 conflicts",
        ],
        2,
    ),
}


def plan_lines(plan: Plan) -> list[str]:
    lines = [f"{a.server}: {a.symbol} {a.description}" for a in plan.actions]
    lines += [
        f"{n.server}: {n.level}: {n.message if n.level != 'unmanaged' else n.target}"
        for n in plan.notes
        if n.level != "info"
    ]
    return [*lines, f"Plan: {plan.summary()}"]


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("admin")
    (root / "cluster.d").mkdir()
    (root / "cluster.d" / "cluster.yaml").write_text(CLUSTER)
    return load(root)


def build_context(
    desired: Any, mutations: dict[str, Any], relations: dict[str, str]
) -> PlanContext:
    servers = base_facts(desired)
    for name, mutate in mutations.items():
        mutate(servers[name])
    host_keys = {"a": HOST_A, "b": HOST_B}
    facts = Facts(
        servers={n: parse_server_facts(n, d, host_key=host_keys[n]) for n, d in servers.items()}
    )
    checkout = CheckoutFacts(
        root=desired.root,
        branch="master",
        head=HEAD,
        files={},
        relations={"a": "same", "b": "same", **relations},  # type: ignore[dict-item]
    )
    return PlanContext(desired, facts, checkout, PlanOptions(hook_source=HOOK))


@pytest.mark.parametrize("case", list(CASES))
def test_plan(desired: Any, case: str) -> None:
    mutations, relations, expected, code = CASES[case]
    plan = make_plan(build_context(desired, mutations, relations))
    assert plan_lines(plan) == expected
    assert plan.exit_code() == code


def test_replace_foreign_flag_replaces(desired: Any) -> None:
    ctx = build_context(desired, {"a": foreign_hook}, {})
    options = PlanOptions(hook_source=HOOK, replace_foreign=True, stamp="20250102T030405")
    plan = make_plan(PlanContext(ctx.desired, ctx.facts, ctx.checkout, options))
    assert plan_lines(plan)[0] == (
        "a: ~ product: replace the foreign post-receive hook, "
        "keeping it as hooks/post-receive.foreign-20250102T030405"
    )
    # The copy is made first, of exactly the hook seen, and only that hook is replaced.
    keep, write = plan.actions[0].ops
    assert keep == {
        "op": "keep_file",
        "path": "repositories/product.git/hooks/post-receive",
        "to": "repositories/product.git/hooks/post-receive.foreign-20250102T030405",
        "expect_sha256": "f" * 64,
    }
    assert write["op"] == "write_file" and write["expect_sha256"] == "f" * 64


def test_unreachable_server_is_an_error_and_peers_still_planned(desired: Any) -> None:
    ctx = build_context(desired, {"a": missing_repo}, {})
    facts = Facts(
        servers={"a": ctx.facts.servers["a"]},
        errors={"b": ServerError("b", "cannot connect to git@b.example:22: Connection refused")},
    )
    plan = make_plan(PlanContext(desired, facts, ctx.checkout, ctx.options))
    lines = plan_lines(plan)
    assert "b: error: server b: cannot connect to git@b.example:22: Connection refused" in lines
    assert "a: + create empty repository product" in lines
    # a's known_hosts line for b stays; no warning about b's unknown key.
    assert not any("host key" in line for line in lines), lines
    assert plan.exit_code() == 1


def test_only_servers_limits_changes(desired: Any) -> None:
    ctx = build_context(desired, {"a": missing_repo, "b": missing_repo}, {})
    ctx = PlanContext(
        ctx.desired, ctx.facts, ctx.checkout, PlanOptions(hook_source=HOOK, only_servers=("b",))
    )
    assert {a.server for a in make_plan(ctx).actions} == {"b"}


def test_plan_json_is_data(desired: Any) -> None:
    plan = make_plan(build_context(desired, {"b": fresh}, {"b": "unknown"}))
    data = plan.to_json()
    assert data["format_version"] == 1
    assert data["summary"] == {"create": 8, "change": 1, "remove": 0, "conflicts": 0, "errors": 0}
    assert all(set(a) >= {"server", "subject", "kind", "description"} for a in data["actions"])


def test_prune_takes_only_our_hook_and_remotes_out_of_an_unmanaged_repository(desired: Any) -> None:
    def scratch_with_foreign_remote(data: dict[str, Any]) -> None:
        unmanaged_repo(data)
        data["repositories"]["scratch"]["remotes"]["backup"] = {"url": "/b", "managed": False}

    ctx = build_context(desired, {"a": scratch_with_foreign_remote}, {})
    without = make_plan(ctx)
    assert [a for a in without.actions if "scratch" in a.target] == []
    pruning = PlanContext(
        ctx.desired, ctx.facts, ctx.checkout, PlanOptions(hook_source=HOOK, prune=True)
    )
    lines = plan_lines(make_plan(pruning))
    assert lines[:2] == [
        "a: - scratch: remove remote b (not in cluster.d/)",
        "a: - scratch: remove the replication hook (not in cluster.d/)",
    ]
    assert not any("backup" in line and "remove" in line for line in lines)
