"""The manual recipe as one test: three fresh gitosis servers made one cluster by apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.testing.recipe import (
    cluster_yaml,
    commit,
    make_operator,
    server_ref,
    user_clone,
    user_git,
    write_cluster_d,
)

pytestmark = pytest.mark.e2e

REPOSITORIES = {"product": {"description": "The product"}, "tools/build-scripts": {}}


def groups() -> dict[str, dict[str, list[str]]]:
    return {
        "gitosis-admin": {"members": ["admin@operator"], "writable": ["gitosis-admin"]},
        "developers": {"members": ["alice@desk"], "writable": ["product", "tools/build-scripts"]},
    }


def apply_twice(operator, *extra: str) -> None:  # type: ignore[no-untyped-def]
    first = operator.reconcile("apply", "--yes", *extra)
    assert first.returncode == 0, first.stdout + first.stderr
    second = operator.reconcile("plan", "--detailed-exitcode")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "No changes" in second.stdout


def test_recipe_three_servers(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    alpha, beta, gamma = cluster.servers
    for server in cluster.servers:
        server.gitosis_init(cluster.admin.public_key)
    alice = cluster.new_identity("alice@desk")
    operator = make_operator(cluster, tmp_path, clone_from=alpha)
    write_cluster_d(
        operator.checkout,
        cluster_yaml(
            cluster.servers,
            repositories=REPOSITORIES,
            groups=groups(),
            users={"alice@desk": alice.public_key},
        ),
    )

    plan = operator.reconcile("plan", "--json", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    data = json.loads(plan.stdout)
    assert data["format_version"] == 1
    subjects = {(a["server"], a["subject"]) for a in data["actions"]}
    for server in ("alpha", "beta", "gamma"):
        assert (server, "server-key") in subjects
        assert (server, "repository") in subjects
        assert (server, "hook") in subjects

    apply_twice(operator)

    # Every step of the recipe is in place on every server.
    for server in cluster.servers:
        assert (server.home / ".ssh/id_ed25519").exists()
        authorized = (server.home / ".ssh/authorized_keys").read_text()
        for peer in cluster.servers:
            if peer is not server:
                assert f"gitosis-serve git@{peer.name}" in authorized
        known = (server.home / ".ssh/known_hosts").read_text()
        for peer in cluster.servers:
            if peer is not server:
                assert f"[127.0.0.1]:{peer.port} " in known
        for repository in ("product", "tools/build-scripts", "gitosis-admin"):
            gitdir = server.home / "repositories" / f"{repository}.git"
            hook = gitdir / "hooks/post-receive"
            assert hook.stat().st_mode & 0o777 == 0o755
            assert hook.stat().st_uid == server.uid
            remotes = server.run(["git", "--git-dir", str(gitdir), "remote"]).stdout.split()
            # gitosis-admin travels only from the admin checkout (issue 12): no peer remotes.
            peers = [] if repository == "gitosis-admin" else cluster.servers
            assert sorted(remotes) == sorted(p.name for p in peers if p is not server)

    # A user pushes to the second server: the commit is on all three.
    work = tmp_path / "alice-product"
    user_clone(cluster, alice, beta, "product", work)
    first = commit(work, "first")
    push = user_git(cluster, alice, work, "push", "origin", "HEAD:refs/heads/main")
    assert "replicated to alpha" in push.stderr and "replicated to gamma" in push.stderr
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/main") == first

    # A new branch pushed to the third server appears everywhere.
    user_git(cluster, alice, work, "remote", "add", "gamma", f"{gamma.url}/product.git")
    feature = commit(work, "feature")
    user_git(cluster, alice, work, "push", "gamma", "HEAD:refs/heads/feature")
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/feature") == feature

    # A deleted branch disappears everywhere.
    user_git(cluster, alice, work, "push", "origin", ":refs/heads/feature")
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/feature") is None

    # A force-push replicates when the peers were at the old value.
    user_git(cluster, alice, work, "reset", "--hard", first)
    rewritten = commit(work, "rewritten")
    user_git(cluster, alice, work, "push", "--force", "origin", "HEAD:refs/heads/main")
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/main") == rewritten

    # Nested repositories replicate too.
    tools = tmp_path / "alice-tools"
    user_clone(cluster, alice, alpha, "tools/build-scripts", tools)
    build = commit(tools, "build")
    user_git(cluster, alice, tools, "push", "origin", "HEAD:refs/heads/main")
    for server in cluster.servers:
        assert server_ref(server, "tools/build-scripts", "refs/heads/main") == build

    final = operator.reconcile("plan", "--detailed-exitcode")
    assert final.returncode == 0, final.stdout + final.stderr
