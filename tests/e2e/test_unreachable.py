"""One server unreachable: it is reported, the others are still reconciled."""

from __future__ import annotations

import time
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


def test_server_that_never_answers(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A server that accepts the connection but never speaks SSH (its sshd stopped
    with SIGSTOP): one clear sentence after the connect timeout, no traceback, and
    apply does not wait for it again in every phase."""
    from reconciler.transport.ssh import CONNECT_TIMEOUT

    cluster = ssh_cluster_factory(2, names=["alpha", "beta"])
    alpha, beta = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    beta.pause()
    try:
        plan = scenario.reconcile("plan")
        started = time.monotonic()
        applied = scenario.reconcile("apply", "--yes")
        elapsed = time.monotonic() - started
    finally:
        beta.resume()
    for done in (plan, applied):
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors and all("server beta" in line for line in errors), done.stderr
        assert any(f"no answer within {CONNECT_TIMEOUT:.0f}s" in line for line in errors)
    # apply gathers after each of its phases; waiting for beta each time took 4 x 15 s.
    assert elapsed < 3 * CONNECT_TIMEOUT, elapsed
    assert (alpha.home / ".ssh/id_ed25519").exists()
    assert not (beta.home / ".ssh/id_ed25519").exists()

    scenario.apply_twice()
    assert (beta.home / ".ssh/id_ed25519").exists()
