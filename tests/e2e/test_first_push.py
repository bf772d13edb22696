"""A repository gitosis creates on its first push is replicated from that push on
(issue 11, item 6), on real sshd servers with real git and gitosis-serve.

The admin declares a new repository (and a new developer for it) in cluster.d/,
renders gitosis.conf, commits and pushes gitosis-admin to the servers by hand, as
the manual recipe does, with no reconcile apply: gitosis-admin's post-update
regenerates authorized_keys there, and the new repository exists nowhere yet. The
developer's first push makes gitosis-serve create it (``git init``, which copies the
git user's template); its hooks replicate the push to the peers' URLs from the
replication settings, where gitosis-serve creates it for the mirror user in turn.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.server.hooks import stub
from reconciler.testing.cluster import SshCluster
from reconciler.testing.pytest_plugin import ClusterFactory, requires_ssh_cluster
from reconciler.testing.recipe import cluster_yaml, commit, server_ref, user_git, write_cluster_d
from tests.e2e.scenario import REPOSITORIES, Scenario, groups, start_scenario

pytestmark = [pytest.mark.e2e, requires_ssh_cluster]

NEW = "fresh"


def declare_new_repository(scenario: Scenario, mode: str) -> None:
    """cluster.d/ with the new repository and its developer, rendered and committed."""
    cluster = scenario.cluster
    carol = cluster.new_identity("carol@desk")
    team = groups(REPOSITORIES)
    team["newteam"] = {"members": ["carol@desk"], "writable": [NEW]}
    text = cluster_yaml(
        cluster.servers,
        repositories={**REPOSITORIES, NEW: {}},
        groups=team,
        users={"alice@desk": scenario.alice.public_key, "carol@desk": carol.public_key},
        replication={"mode": mode},
    )
    write_cluster_d(scenario.operator.checkout, text)
    scenario.operator.reconcile("render", check=True)
    scenario.operator.git("add", "-A")
    scenario.operator.git("commit", "-q", "-m", f"declare {NEW} for carol")


def push_admin(scenario: Scenario, servers: list[str]) -> list[str]:
    """Push the admin checkout's commit to these servers' gitosis-admin, as an admin
    does by hand; what each server's hooks said."""
    said = []
    for name in servers:
        server = scenario.cluster[name]
        done = subprocess.run(
            ["git", "push", f"{server.url}/gitosis-admin.git", "HEAD:master"],
            cwd=scenario.operator.checkout,
            env=scenario.operator.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        said.append(done.stderr)
    return said


def first_push(cluster: SshCluster, tmp_path: Path, to: str) -> tuple[str, str, float]:
    """carol's first commit pushed to the new repository on ``to``."""
    carol = cluster.new_identity("carol@desk")
    work = tmp_path / "carol"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, timeout=60)
    sha = commit(work, "first")
    started = time.monotonic()
    pushed = user_git(
        cluster, carol, work, "push", f"{cluster[to].url}/{NEW}.git", "HEAD:refs/heads/main"
    )
    return sha, pushed.stderr, time.monotonic() - started


def hooks_of(cluster: SshCluster, name: str) -> dict[str, str]:
    hooks = cluster[name].home / "repositories" / f"{NEW}.git" / "hooks"
    found = {}
    for path in sorted(hooks.iterdir()):
        found[path.name] = f"-> {path.readlink()}" if path.is_symlink() else path.read_text()
    return found


def plan_actions(scenario: Scenario) -> list[str]:
    done = scenario.reconcile("plan", "--json")
    assert done.stdout, done.stderr
    return sorted(
        f"{a['server']}: {a['subject']} {a['description']}"
        for a in json.loads(done.stdout)["actions"]
    )


@pytest.mark.parametrize("mode", ["sync", "quorum"])
def test_the_first_push_to_a_repository_gitosis_creates_reaches_every_server(
    ssh_cluster_factory: ClusterFactory, tmp_path: Path, mode: str
) -> None:
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    scenario = start_scenario(cluster, tmp_path)
    scenario.declare(cluster.servers, replication={"mode": mode})
    scenario.apply_twice()

    declare_new_repository(scenario, mode)
    push_admin(scenario, ["alpha", "beta", "gamma"])
    # gitosis-admin's own post-update ran on each (it let carol in), and no server
    # has the new repository yet.
    for server in cluster.servers:
        keys = (server.home / ".ssh/authorized_keys").read_text()
        assert ' carol@desk",' in keys or "gitosis-serve carol@desk" in keys, server.name
        assert not (server.home / "repositories" / f"{NEW}.git").exists(), server.name

    sha, stderr, seconds = first_push(cluster, tmp_path, "alpha")
    if mode == "sync":
        assert "remote: replicated to beta" in stderr, stderr
        assert "remote: replicated to gamma" in stderr, stderr
    else:
        assert "refs/heads/main: taken by 3 of 3 servers" in stderr, stderr
    # On every server when the push returns; nothing waits in a queue.
    held = {s.name: server_ref(s, NEW, "refs/heads/main") for s in cluster.servers}
    assert held == dict.fromkeys(["alpha", "beta", "gamma"], sha), stderr
    for server in cluster.servers:
        queue = server.home / "repositories/.reconciler/queue"
        assert not list(queue.glob("*.json")), server.name
    # gitosis made it on every server (alpha for carol, the others for alpha's key),
    # each time from the template: the hooks apply would install.
    wanted = {"post-receive": stub(str(cluster["alpha"].home)).decode()}
    if mode == "quorum":
        wanted["proc-receive"] = "-> post-receive"
    for server in cluster.servers:
        wanted["post-receive"] = stub(str(server.home)).decode()
        assert hooks_of(cluster, server.name) == wanted, server.name
        if mode == "quorum":
            # The template's config: receive-pack hands the pushes to proc-receive.
            config = server.run(
                [
                    "git",
                    "--git-dir",
                    str(server.home / f"repositories/{NEW}.git"),
                    "config",
                    "--get-all",
                    "receive.procReceiveRefs",
                ]
            )
            assert config.stdout.split() == ["refs/heads/", "refs/tags/", "refs/notes/"]

    # The next apply only adds the new repository's remotes; then nothing is left.
    first_plan = plan_actions(scenario)
    assert first_plan and all(f"remote {NEW}: add remote" in a for a in first_plan), first_plan
    scenario.apply_twice()
    print(
        f"first-push figures ({mode}): push {seconds:.2f}s, held by "
        f"{sum(v == sha for v in held.values())} of 3 when it returned, "
        f"actions of the next apply {len(first_plan)} (remotes only), after it 0"
    )


def test_an_admin_change_on_one_server_reaches_the_others_with_the_next_apply(
    ssh_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """The admin pushes gitosis-admin to one server only: the peers' gitosis does not
    know the repository yet and refuses the mirror's push, so the push is queued on
    the server pushed to (hook there from the first push), never lost; the next apply
    sends gitosis-admin everywhere, clones the repository and empties the queue."""
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    scenario = start_scenario(cluster, tmp_path)
    scenario.declare(cluster.servers, replication={"mode": "sync"})
    scenario.apply_twice()
    declare_new_repository(scenario, "sync")
    said = push_admin(scenario, ["alpha"])
    assert "gitosis-admin reaches the other servers at the next reconcile apply" in said[0]

    sha, stderr, _seconds = first_push(cluster, tmp_path, "alpha")
    for peer in ("beta", "gamma"):
        assert (
            f"{peer} refused access: gitosis on {peer} said 'Repository read access denied': "
            "queued for review" in stderr
        ), stderr
    entries = [
        json.loads(p.read_text())
        for p in (cluster["alpha"].home / "repositories/.reconciler/queue").glob("*.json")
    ]
    assert sorted((e["repository"], e["peer"], e["new"]) for e in entries) == [
        (NEW, "beta", sha),
        (NEW, "gamma", sha),
    ]

    scenario.apply_twice()
    for server in cluster.servers:
        assert server_ref(server, NEW, "refs/heads/main") == sha, server.name
        assert not list((server.home / "repositories/.reconciler/queue").glob("*.json"))
