"""``reconcile plan`` costs one SSH connection and a fixed number of commands per
server, whatever the number of repositories (DESIGN.md section 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.testing.cluster import SshServer
from tests.e2e.scenario import Scenario, start_scenario

pytestmark = pytest.mark.e2e

# One commit with the same id on every server, written into every repository
# without a push per repository (the cost under test is the plan's, not this).
SEED = r"""
set -e
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
export GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
for dir in "$@"; do
  blob=$(printf 'seed\n' | git --git-dir "$dir" hash-object -w --stdin)
  tree=$(printf '100644 blob %s\tREADME\n' "$blob" | git --git-dir "$dir" mktree)
  commit=$(git --git-dir "$dir" commit-tree -m seed "$tree")
  git --git-dir "$dir" update-ref refs/heads/main "$commit"
  git --git-dir "$dir" update-ref refs/tags/v1 "$commit"
done
"""


def repositories(n: int) -> dict[str, dict[str, str]]:
    return {f"group{i % 4}/repo{i:03d}": {} for i in range(n)}


def seed(server: SshServer, names: list[str]) -> None:
    dirs = [str(server.home / "repositories" / f"{name}.git") for name in names]
    server.run(["sh", "-c", SEED, "sh", *dirs], timeout=120)


def sshd_counts(server: SshServer, since: int) -> tuple[int, int]:
    """Connections authenticated and sessions (commands) started, from sshd's log."""
    lines = server.log_path.read_text(errors="replace").splitlines()[since:]
    accepted = sum(1 for line in lines if line.startswith("Accepted publickey"))
    sessions = sum(1 for line in lines if line.startswith("Starting session:"))
    return accepted, sessions


def log_length(server: SshServer) -> int:
    return len(server.log_path.read_text(errors="replace").splitlines())


def measure(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What one plan costs on each server: counted by sshd and by the transports."""
    servers = scenario.cluster.servers
    marks = {server.name: log_length(server) for server in servers}
    done = scenario.reconcile("plan", "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr
    by_sshd = {server.name: sshd_counts(server, marks[server.name]) for server in servers}

    from reconciler.commands.common import plan_options
    from reconciler.desired import load
    from reconciler.gather import open_transports
    from reconciler.pipeline import plan_cluster

    with monkeypatch.context() as patch:
        patch.setenv("HOME", str(scenario.operator.home))
        patch.delenv("SSH_AUTH_SOCK", raising=False)
        desired = load(scenario.operator.checkout)
        transports = open_transports(desired, desired.servers)
        try:
            plan, observed = plan_cluster(desired, transports, plan_options([]))
        finally:
            for transport in transports.values():
                transport.close()
    assert not plan.actions and not plan.errors, plan
    facts = observed.facts
    for name in desired.servers:
        found = facts.servers[name].repositories
        assert len(found) == len(scenario.repositories) + 1  # and gitosis-admin
        assert all(found[r].ref_count == 2 for r in scenario.repositories), found
    by_transport = {
        name: (t.stats.connections, t.stats.commands, tuple(t.stats.programs))
        for name, t in transports.items()
    }
    return {"sshd": by_sshd, "transport": by_transport}


def test_plan_round_trips_do_not_grow_with_repositories(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ssh_cluster_factory(2, names=["alpha", "beta"])
    scenario = start_scenario(cluster, tmp_path, repositories=repositories(2))
    scenario.apply_twice()
    for server in cluster.servers:
        seed(server, list(scenario.repositories))
    small = measure(scenario, monkeypatch)

    scenario.repositories = repositories(40)
    scenario.declare(cluster.servers)
    scenario.apply_twice()
    for server in cluster.servers:
        seed(server, list(scenario.repositories))
    large = measure(scenario, monkeypatch)

    assert small == large, (small, large)
    for name, (connections, sessions) in large["sshd"].items():  # type: ignore[attr-defined]
        assert connections == 1, (name, large)
        assert sessions <= 2, (name, large)
    for name, (connections, commands, _programs) in large["transport"].items():  # type: ignore[attr-defined]
        assert connections == 1 and commands <= 2, (name, large)
