"""One server unreachable: it is reported, the others are still reconciled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.scenario import REPOSITORIES, start_scenario

pytestmark = pytest.mark.e2e


def test_unreachable_server(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    alpha, beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()

    gamma.stop()
    scenario.repositories = {**REPOSITORIES, "docs": {}}
    scenario.declare(cluster.servers)
    for args in (("plan",), ("plan", "--detailed-exitcode"), ("plan", "--json")):
        plan = scenario.reconcile(*args)
        assert plan.returncode == 1, plan.stdout + plan.stderr
        assert "error: server gamma: cannot connect" in plan.stderr, plan.stderr
        assert "Traceback" not in plan.stdout + plan.stderr

    applied = scenario.reconcile("apply", "--yes")
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert "error: server gamma: cannot connect" in applied.stderr, applied.stderr
    assert "Traceback" not in applied.stdout + applied.stderr
    docs = "repositories/docs.git"
    for server in (alpha, beta):
        assert (server.home / docs / "HEAD").is_file(), server.name
        assert (server.home / docs / "hooks/post-receive").is_file(), server.name
    assert not (gamma.home / docs).exists()

    # The reachable servers are reconciled: only gamma's error is left.
    rest = scenario.reconcile(
        "plan", "--server", "alpha", "--server", "beta", "--detailed-exitcode"
    )
    assert rest.returncode == 0, rest.stdout + rest.stderr
    # Nothing left to do but gamma: apply again reports it and changes nothing else.
    again = scenario.reconcile("apply", "--yes")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "error: server gamma: cannot connect" in again.stderr, again.stderr

    gamma.start()
    scenario.apply_twice()
    assert (gamma.home / docs / "HEAD").is_file()
