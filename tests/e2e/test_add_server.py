"""Adding a fourth server to a converged three-server cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import subjects as registry
from reconciler.desired import Desired, load
from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import refs_of, start_scenario

pytestmark = pytest.mark.e2e

NAMES = ["alpha", "beta", "gamma", "delta"]
# What a new server may change on the servers that were there before it; and the
# subjects that declare themselves whose files name the servers (rewritten_subjects).
OLD_SERVER_SUBJECTS = {"admin", "known_hosts", "settings", "remote"}


def rewritten_subjects(before: Desired, after: Desired, server: str) -> set[str]:
    """The declared subjects (reconciler.subjects) whose files on ``server`` differ
    between the two desired states."""
    return {
        known.name
        for known in registry.subjects()
        if known.converged(before, server) != known.converged(after, server)
    }


def test_fourth_server_gets_everything(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(4, names=NAMES)
    alpha, beta, gamma, delta = cluster.servers
    old = [alpha, beta, gamma]
    scenario = start_scenario(cluster, tmp_path, declared=old, initialise=old)
    scenario.apply_twice()
    alice = scenario.alice

    # History on the three: branches and a tag in both repositories.
    product = tmp_path / "alice-product"
    user_clone(cluster, alice, beta, "product", product)
    commit(product, "first")
    user_git(cluster, alice, product, "push", "origin", "HEAD:refs/heads/main")
    commit(product, "feature")
    user_git(cluster, alice, product, "push", "origin", "HEAD:refs/heads/feature")
    user_git(cluster, alice, product, "tag", "v1")
    user_git(cluster, alice, product, "push", "origin", "refs/tags/v1")
    tools = tmp_path / "alice-tools"
    user_clone(cluster, alice, gamma, "tools/build-scripts", tools)
    commit(tools, "build")
    user_git(cluster, alice, tools, "push", "origin", "HEAD:refs/heads/main")
    before = {name: refs_of(alpha, name) for name in ("product", "tools/build-scripts")}
    assert set(before["product"]) == {"refs/heads/main", "refs/heads/feature", "refs/tags/v1"}
    for server in (beta, gamma):
        for name, refs in before.items():
            assert refs_of(server, name) == refs
    scenario.assert_converged()

    # The fourth server is set up later with gitosis-init (its own single commit)
    # and joins cluster.d/.
    delta.gitosis_init(cluster.admin.public_key)
    before_delta = load(scenario.operator.checkout)
    scenario.declare(cluster.servers)
    with_delta = load(scenario.operator.checkout)
    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 2, plan
    actions = plan["actions"]
    assert not plan["summary"]["conflicts"] and not plan["summary"]["errors"], plan
    assert not [a for a in actions if a["kind"] == "remove"], actions
    for old in ("alpha", "beta", "gamma"):
        mine = [a for a in actions if a["server"] == old]
        rewritten = rewritten_subjects(before_delta, with_delta, old)
        assert {a["subject"] for a in mine} <= OLD_SERVER_SUBJECTS | rewritten, mine
        # Each such file is rewritten by one action on each old server.
        for name in rewritten:
            assert len([a for a in mine if a["subject"] == name]) == 1, mine
        # Each old server learns delta: its host key and a remote in every repository.
        assert any(a["subject"] == "known_hosts" for a in mine), mine
        remotes = {a["target"] for a in mine if a["subject"] == "remote"}
        # Not in gitosis-admin: it travels only from the admin checkout (issue 12).
        assert remotes == {f"{r} remote delta" for r in ("product", "tools/build-scripts")}, mine
    new = [a for a in actions if a["server"] == "delta"]
    new_subjects = {a["subject"] for a in new}
    adopt = [a for a in new if a["subject"] == "admin"]
    assert len(adopt) == 1 and "adopt" in adopt[0]["description"], adopt
    assert {"server-key", "admin", "known_hosts", "repository", "remote", "hook"} <= new_subjects
    assert {a["target"] for a in new if a["subject"] == "repository"} == {
        "product",
        "tools/build-scripts",
    }
    others = {a["server"] for a in actions} - {"alpha", "beta", "gamma", "delta"}
    assert others <= {"(admin checkout)"}, others

    scenario.apply_twice()

    # delta holds every repository with every ref, the same ids as the others.
    for name, refs in before.items():
        assert refs_of(delta, name) == refs, name
    admin_head = server_ref(alpha, "gitosis-admin", "refs/heads/master")
    assert server_ref(delta, "gitosis-admin", "refs/heads/master") == admin_head
    authorized = (alpha.home / ".ssh/authorized_keys").read_text()
    assert "gitosis-serve git@delta" in authorized

    # A push to the new server replicates to all.
    user_git(cluster, alice, product, "remote", "add", "delta", f"{delta.url}/product.git")
    latest = commit(product, "after delta joined")
    push = user_git(cluster, alice, product, "push", "delta", "HEAD:refs/heads/main")
    for peer in ("alpha", "beta", "gamma"):
        assert f"replicated to {peer}" in push.stderr, push.stderr
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/main") == latest, server.name
    scenario.assert_converged()
