"""Replication integrity on real sshd servers: queue, repair, conflicts, cron, status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.testing.recipe import (
    Operator,
    cluster_yaml,
    commit,
    make_operator,
    server_ref,
    user_clone,
    user_git,
    write_cluster_d,
)

pytestmark = pytest.mark.e2e


def converged_cluster(factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    cluster = factory(3, names=["alpha", "beta", "gamma"])
    for server in cluster.servers:
        server.gitosis_init(cluster.admin.public_key)
    alice = cluster.new_identity("alice@desk")
    operator = make_operator(cluster, tmp_path, clone_from=cluster.servers[0])
    write_cluster_d(
        operator.checkout,
        cluster_yaml(
            cluster.servers,
            repositories={"product": {}},
            groups={
                "gitosis-admin": {"members": ["admin@operator"], "writable": ["gitosis-admin"]},
                "developers": {"members": ["alice@desk"], "writable": ["product"]},
            },
            users={"alice@desk": alice.public_key},
            replication={"timeout": 10},
        ),
    )
    operator.reconcile("apply", "--yes", check=True)
    return cluster, alice, operator


def refs_everywhere(cluster, repository: str = "product") -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    values = []
    for server in cluster.servers:
        out = server.run(
            [
                "git",
                "--git-dir",
                str(server.home / "repositories" / f"{repository}.git"),
                "for-each-ref",
                "--format=%(refname) %(objectname)",
            ]
        ).stdout
        values.append(dict(line.split(" ", 1)[::-1][::-1] for line in out.splitlines()))
    return values


def fsck_clean(cluster, repository: str = "product") -> None:  # type: ignore[no-untyped-def]
    for server in cluster.servers:
        gitdir = str(server.home / "repositories" / f"{repository}.git")
        done = server.run(["git", "--git-dir", gitdir, "fsck", "--no-progress"], check=False)
        assert done.returncode == 0, f"{server.name}: {done.stdout}{done.stderr}"


def assert_converged(operator: Operator) -> None:
    again = operator.reconcile("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    status = operator.reconcile("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.strip().count("\n") == 0, status.stdout  # one summary line


def test_peer_down_then_cron_repairs(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, alice, operator = converged_cluster(ssh_cluster_factory, tmp_path)
    alpha, beta, gamma = cluster.servers
    work = tmp_path / "work"
    user_clone(cluster, alice, alpha, "product", work)
    user_git(cluster, alice, work, "remote", "add", "beta", f"{beta.url}/product.git")
    base = commit(work, "base")
    user_git(cluster, alice, work, "push", "origin", "HEAD:refs/heads/main")
    # A branch that will be deleted while gamma is away.
    user_git(cluster, alice, work, "push", "origin", "HEAD:refs/heads/doomed")
    assert server_ref(gamma, "product", "refs/heads/doomed") == base

    gamma.stop()
    pushed: dict[str, str] = {}
    for i in range(20):
        remote = "origin" if i % 2 == 0 else "beta"
        user_git(cluster, alice, work, "fetch", "--quiet", remote)
        user_git(cluster, alice, work, "reset", "--quiet", "--hard", f"{remote}/main")
        sha = commit(work, f"change {i}")
        branch = "main" if i % 4 else f"topic-{i}"
        done = user_git(cluster, alice, work, "push", remote, f"HEAD:refs/heads/{branch}")
        assert "gamma unreachable: queued" in done.stderr, done.stderr
        pushed[branch] = sha
    user_git(cluster, alice, work, "push", "origin", ":refs/heads/doomed")
    assert server_ref(alpha, "product", "refs/heads/doomed") is None
    assert server_ref(beta, "product", "refs/heads/doomed") is None
    gamma.start()

    status = operator.reconcile("status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 2, status.stdout + status.stderr
    assert sum(s["queue_depth"] for s in report["servers"]) >= 21

    cron = operator.reconcile("apply", "--yes", "--cron")
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert "gamma" in cron.stdout  # one log line per change

    values = refs_everywhere(cluster)
    assert values[0] == values[1] == values[2]
    for branch, sha in pushed.items():
        for server in cluster.servers:
            assert server_ref(server, "product", f"refs/heads/{branch}") == sha, (
                server.name,
                branch,
            )
            assert (
                server.run(
                    [
                        "git",
                        "--git-dir",
                        str(server.home / "repositories/product.git"),
                        "cat-file",
                        "-e",
                        sha,
                    ]
                ).returncode
                == 0
            )
    # The deletion made while gamma was down reached gamma; nothing resurrected.
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/doomed") is None
    fsck_clean(cluster)

    quiet = operator.reconcile("apply", "--yes", "--cron")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", quiet
    assert_converged(operator)


def test_split_brain_is_reported_never_forced(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, alice, operator = converged_cluster(ssh_cluster_factory, tmp_path)
    alpha, beta, gamma = cluster.servers
    work_a = tmp_path / "a"
    user_clone(cluster, alice, alpha, "product", work_a)
    commit(work_a, "common")
    user_git(cluster, alice, work_a, "push", "origin", "HEAD:refs/heads/main")
    work_b = tmp_path / "b"
    user_clone(cluster, alice, beta, "product", work_b)
    user_git(cluster, alice, work_b, "checkout", "--quiet", "-B", "main", "origin/main")

    beta.stop()
    on_alpha = commit(work_a, "alpha's change")
    user_git(cluster, alice, work_a, "push", "origin", "HEAD:refs/heads/main")
    beta.start()
    on_beta = commit(work_b, "beta's change")
    pushed = user_git(cluster, alice, work_b, "push", "origin", "HEAD:refs/heads/main")
    assert "rejected refs/heads/main (diverged)" in pushed.stderr, pushed.stderr

    # Another branch pushed meanwhile replicates normally.
    other = commit(work_a, "other work")
    user_git(cluster, alice, work_a, "push", "origin", "HEAD:refs/heads/other")
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/other") == other

    status = operator.reconcile("status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert "diverged" in status.stdout and "product refs/heads/main" in status.stdout
    assert on_alpha[:12] in status.stdout and on_beta[:12] in status.stdout

    applied = operator.reconcile("apply", "--yes")
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert server_ref(alpha, "product", "refs/heads/main") == on_alpha
    assert server_ref(beta, "product", "refs/heads/main") == on_beta
    assert server_ref(gamma, "product", "refs/heads/main") == on_alpha
    again = operator.reconcile("apply", "--yes")
    assert again.returncode == 3
    fsck_clean(cluster)


def test_two_cron_runs_one_lock(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _cluster, _alice, operator = converged_cluster(ssh_cluster_factory, tmp_path)
    lock = operator.checkout / ".git" / "reconcile.lock"
    import fcntl

    with open(lock, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on test since now\n")
        held.flush()
        second = operator.reconcile("apply", "--yes", "--cron")
    assert second.returncode == 1
    assert "another reconcile apply is running" in second.stderr
    assert "pid 4242" in second.stderr
    # Two real runs started together: both finish, at most one did the work, nothing broke.
    env = operator.env()
    import sys

    argv = [
        sys.executable,
        "-m",
        "reconciler",
        "apply",
        "--yes",
        "--cron",
        "-C",
        str(operator.checkout),
    ]
    runs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (0, 1), results
    assert_converged(operator)
