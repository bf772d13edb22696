"""Access between the servers on real sshd (issue 12, defects 4-6): a renamed server
keeps replicating, a shared key is reported, cron repairs with its upstream down,
and no server's key can rewrite the admin repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.testing.cluster import SshServer
from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import Scenario, start_scenario

pytestmark = pytest.mark.e2e

CLUSTER_FILE = "cluster.d/cluster.yaml"


def _rename(scenario: Scenario, old: str, new: str) -> None:
    path = scenario.operator.checkout / CLUSTER_FILE
    document = json.loads(path.read_text())
    document["servers"] = {
        (new if name == old else name): spec for name, spec in document["servers"].items()
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def _tracked(scenario: Scenario, directory: str) -> list[str]:
    return scenario.operator.git("ls-files", directory).split()


def _gitosis_users(server: SshServer) -> list[str]:
    text = (server.home / ".ssh/authorized_keys").read_text()
    return [
        line.split('"')[1].split()[-1] for line in text.splitlines() if "gitosis-serve " in line
    ]


def test_a_renamed_server_keeps_replicating(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["t0", "t1", "t2"])
    t0, t1, t2 = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()
    key = (t2.home / ".ssh/id_ed25519.pub").read_text().strip()
    assert "keydir/git@t2.pub" in _tracked(scenario, "keydir")

    # Same URL, same host, same key: only its name in cluster.d/ changes.
    _rename(scenario, "t2", "t9")
    scenario.apply_twice()

    keydir = _tracked(scenario, "keydir")
    assert "keydir/git@t2.pub" not in keydir and "keydir/git@t9.pub" in keydir, keydir
    for server in cluster.servers:
        users = _gitosis_users(server)
        assert "git@t2" not in users and users.count("git@t9") == 1, (server.name, users)
        lines = (server.home / ".ssh/authorized_keys").read_text().splitlines()
        assert sum(key.split()[1] in line for line in lines) == 1, server.name
    # A push to the renamed server reaches the others as git@t9, a mirror group member.
    work = tmp_path / "work"
    user_clone(cluster, scenario.alice, t2, "product", work)
    sha = commit(work, "after the rename")
    pushed = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
    for peer in ("t0", "t1"):
        assert f"replicated to {peer}" in pushed.stderr, pushed.stderr
    for server in (t0, t1, t2):
        assert server_ref(server, "product", "refs/heads/main") == sha, server.name
    assert not list((t2.home / "repositories/.reconciler/queue").glob("*.json"))
    scenario.assert_converged()


def test_one_key_under_two_names_is_reported_and_a_denial_is_not_unreachable(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path
) -> None:
    cluster = ssh_cluster_factory(2, names=["s0", "s1"])
    s0, s1 = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()
    # Someone commits s1's key as a person's key file: "bob" sorts before "git@s1",
    # so every authorized_keys lets s1's key in as bob.
    key = (s1.home / ".ssh/id_ed25519.pub").read_text()
    checkout = scenario.operator.checkout
    (checkout / "keydir/bob.pub").write_text(key)
    scenario.operator.git("add", "keydir/bob.pub")
    scenario.operator.git("commit", "-q", "-m", "add bob")

    applied = scenario.reconcile("apply", "--yes")
    assert applied.returncode == 3, applied.stdout + applied.stderr
    plan = scenario.reconcile("plan", "--detailed-exitcode")
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert "keydir/bob.pub and keydir/git@s1.pub (server s1's key)" in plan.stdout, plan.stdout
    assert "s1 arrives on s0 as bob, not git@s1" in plan.stdout, plan.stdout
    assert "No changes" not in plan.stdout

    # s1's replication push is refused by s0's gitosis: said so, in gitosis's words.
    work = tmp_path / "work"
    user_clone(cluster, scenario.alice, s1, "product", work)
    sha = commit(work, "while s1 is bob")
    pushed = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
    assert (
        "s0 refused access: gitosis on s0 said 'Repository read access denied': "
        "queued for review" in pushed.stderr
    ), pushed.stderr
    assert "unreachable" not in pushed.stderr
    entries = [
        json.loads(p.read_text())
        for p in (s1.home / "repositories/.reconciler/queue").glob("*.json")
    ]
    assert [(e["reason"], e["transient"], e["detail"]) for e in entries] == [
        ("denied", False, "Repository read access denied")
    ]

    # Removing the stray file repairs it: s1 is itself again and the ref reaches s0.
    (checkout / "keydir/bob.pub").unlink()
    scenario.apply_twice()
    assert server_ref(s0, "product", "refs/heads/main") == sha
    assert not list((s1.home / "repositories/.reconciler/queue").glob("*.json"))


def test_cron_repairs_what_it_can_while_the_checkouts_upstream_is_down(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path
) -> None:
    cluster = ssh_cluster_factory(3, names=["c0", "c1", "c2"])
    c0, c1, c2 = cluster.servers
    scenario = start_scenario(cluster, tmp_path)  # the checkout's origin is c0
    scenario.apply_twice()
    work = tmp_path / "work"
    user_clone(cluster, scenario.alice, c1, "product", work)
    c2.stop()
    sha = commit(work, "while c2 is away")
    pushed = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/topic")
    assert "c2 unreachable: queued" in pushed.stderr, pushed.stderr
    c2.start()
    c0.stop()

    cron = scenario.reconcile("apply", "--yes", "--cron")
    assert cron.returncode == 1, cron.stdout + cron.stderr  # c0 is down: an error
    assert "Traceback" not in cron.stdout + cron.stderr
    # git's whole error, not its last line ("and the repository exists.").
    assert "cannot fetch origin, going on with the checkout as it is" in cron.stderr, cron.stderr
    assert "Connection refused" in cron.stderr, cron.stderr
    assert "server c0: cannot connect" in cron.stderr, cron.stderr
    assert server_ref(c2, "product", "refs/heads/topic") == sha

    c0.start()
    again = scenario.reconcile("apply", "--yes", "--cron")
    assert again.returncode == 0, again.stdout + again.stderr
    scenario.apply_twice()
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/topic") == sha, server.name


def test_no_server_key_can_push_the_admin_repository(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["a0", "a1", "a2"])
    a0, a1, a2 = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()

    # a0's own key, pushing a0's gitosis-admin to a1 through a1's gitosis: refused.
    refused = a0.run(
        [
            "git",
            "--git-dir",
            str(a0.home / "repositories/gitosis-admin.git"),
            "push",
            f"{a1.url}/gitosis-admin.git",
            "master:refs/heads/takeover",
        ],
        check=False,
    )
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "ERROR:gitosis.serve.main:Repository read access denied" in refused.stderr
    assert server_ref(a1, "gitosis-admin", "refs/heads/takeover") is None
    for server in cluster.servers:
        config = (server.home / "repositories/gitosis-admin.git/config").read_text()
        assert "remote " not in config, server.name  # no peer remotes in the admin repository

    # The admin pushes a change of cluster.d/ to a1 by hand, from another clone.
    laptop = tmp_path / "laptop"
    user_clone(cluster, cluster.admin, a1, "gitosis-admin", laptop)
    path = laptop / CLUSTER_FILE
    document = json.loads(path.read_text())
    document["repositories"]["docs"] = {}
    path.write_text(json.dumps(document, indent=2) + "\n")
    user_git(cluster, cluster.admin, laptop, "commit", "-q", "-am", "add docs")
    hand = user_git(cluster, cluster.admin, laptop, "rev-parse", "HEAD").stdout.strip()
    pushed = user_git(cluster, cluster.admin, laptop, "push", "origin", "HEAD:master")
    assert "gitosis-admin reaches the other servers at the next reconcile apply" in pushed.stderr
    assert "replicated to" not in pushed.stderr, pushed.stderr
    assert server_ref(a0, "gitosis-admin", "refs/heads/master") != hand

    # One cron run: the checkout picks the commit up from a1, and every server gets it.
    cron = scenario.reconcile("apply", "--yes", "--cron")
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert f"{hand[:12]} from a1 (pushed there directly)" in cron.stdout, cron.stdout
    head = scenario.operator.git("rev-parse", "HEAD").strip()
    assert scenario.operator.git("merge-base", "--is-ancestor", hand, head) == ""
    for server in (a0, a1, a2):
        assert server_ref(server, "gitosis-admin", "refs/heads/master") == head, server.name
        assert (server.home / "repositories/docs.git/HEAD").is_file(), server.name
    scenario.assert_converged()
    scenario.apply_twice()
