"""A cluster applied by a release before the server library (a whole copy of the hook
in every repository, nothing in ~/.reconciler/server) upgrades to the library and a
stub per repository with one ``reconcile apply``, replicating all along."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.server.library import LIBRARY_DIR
from reconciler.server_library import library_version
from reconciler.testing.cluster import SshServer
from reconciler.testing.library import legacy_hook
from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import REPOSITORIES, start_scenario

pytestmark = pytest.mark.e2e

EXTRA = {f"group/r{i:02d}": {} for i in range(24)}
MAX_PUSHES = 60


def hooks_of(server: SshServer, repositories: list[str]) -> list[Path]:
    return [server.home / "repositories" / f"{r}.git" / "hooks/post-receive" for r in repositories]


def make_old_release(server: SshServer, repositories: list[str]) -> None:
    """What the release before the library left: the hook copied into every repository,
    no library."""
    hook = legacy_hook()
    for path in hooks_of(server, repositories):
        path.write_bytes(hook)
        os.chown(path, server.uid, server.uid)
        path.chmod(0o755)
    server.run(["rm", "-rf", str(server.home / LIBRARY_DIR)])


def test_an_old_release_cluster_upgrades_with_one_apply(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path
) -> None:
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    alpha, beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path, repositories={**REPOSITORIES, **EXTRA})
    scenario.apply_twice()
    managed = [*scenario.repositories, "gitosis-admin"]
    for server in cluster.servers:
        make_old_release(server, managed)
    legacy = legacy_hook()
    assert len(legacy) > 20000  # a whole copy, as the old release installed it

    # The old release replicates.
    alice = scenario.alice
    work = tmp_path / "alice-product"
    user_clone(cluster, alice, alpha, "product", work)
    first = commit(work, "before the upgrade")
    pushed = user_git(cluster, alice, work, "push", "origin", "HEAD:refs/heads/main")
    assert "replicated to beta" in pushed.stderr and "replicated to gamma" in pushed.stderr

    # The plan: the library once per server, the stub in every repository.
    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 2, plan
    by_subject: dict[tuple[str, str, str], int] = {}
    for action in plan["actions"]:
        key = (action["server"], action["subject"], action["kind"])
        by_subject[key] = by_subject.get(key, 0) + 1
    expected = {}
    for name in ("alpha", "beta", "gamma"):
        expected[(name, "library", "create")] = 1
        expected[(name, "hook", "change")] = len(managed)
    assert by_subject == expected, plan["actions"]

    # One apply, with pushes to the three servers in turn all the while.
    for server in (beta, gamma):
        user_git(cluster, alice, work, "remote", "add", server.name, f"{server.url}/product.git")
    remotes = {"alpha": "origin", "beta": "beta", "gamma": "gamma"}
    applying = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "apply",
            "--yes",
            "-C",
            str(scenario.operator.checkout),
        ],
        env=scenario.operator.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[str, int] = {}
    pushes: list[tuple[str, str]] = []
    unreplicated: list[str] = []
    started = time.monotonic()
    while applying.poll() is None and len(pushes) < MAX_PUSHES:
        server = cluster.servers[len(pushes) % 3]
        hook = hooks_of(server, ["product"])[0].read_bytes()
        library = (server.home / LIBRARY_DIR / "VERSION").exists()
        state = ("whole hook" if hook == legacy else "stub") + (
            ", library installed" if library else ", no library"
        )
        seen[state] = seen.get(state, 0) + 1
        branch = f"refs/heads/during-{len(pushes):02d}"
        sha = commit(work, f"during the upgrade {len(pushes)}")
        done = user_git(cluster, alice, work, "push", remotes[server.name], f"HEAD:{branch}")
        peers = [p.name for p in cluster.servers if p is not server]
        if not all(f"replicated to {p}" in done.stderr for p in peers):
            unreplicated.append(f"{server.name} {branch} ({state}): {done.stderr}")
        pushes.append((branch, sha))
    out, err = applying.communicate(timeout=600)
    apply_seconds = time.monotonic() - started
    assert applying.returncode == 0, out + err
    assert not unreplicated, unreplicated
    scenario.assert_converged()
    again = scenario.reconcile("apply", "--yes")
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr

    # The new layout: one library per server, a stub in every repository.
    for server in cluster.servers:
        version = (server.home / LIBRARY_DIR / "VERSION").read_text().strip()
        assert version == library_version()
        for path in hooks_of(server, managed):
            data = path.read_bytes()
            assert data.startswith(b"#!/bin/sh\n") and len(data) < 400, path
            assert path.stat().st_mode & 0o777 == 0o755 and path.stat().st_uid == server.uid
    for branch, sha in pushes:
        for server in cluster.servers:
            assert server_ref(server, "product", branch) == sha, (server.name, branch)

    # And after it: a push to each server reaches the others.
    for server in cluster.servers:
        sha = commit(work, f"after the upgrade, to {server.name}")
        done = user_git(cluster, alice, work, "push", remotes[server.name], "HEAD:refs/heads/main")
        for peer in cluster.servers:
            if peer is not server:
                assert f"replicated to {peer.name}" in done.stderr, done.stderr
                assert server_ref(peer, "product", "refs/heads/main") == sha
    assert first != sha
    # The figures, for the record (pytest -s shows them).
    states = ", ".join(f"{state}: {n}" for state, n in sorted(seen.items()))
    print(
        f"upgrade figures: repositories={len(managed)} apply_s={apply_seconds:.1f} "
        f"pushes_during_apply={len(pushes)} ({states})"
    )
