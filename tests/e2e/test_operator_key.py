"""The operator's key is a gitosis user's key: say so, and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.scenario import home_snapshot, start_scenario

pytestmark = pytest.mark.e2e


def test_operator_key_bound_to_gitosis_serve(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """sshd runs the forced command of the first matching line; when that is
    gitosis-serve, the reconciler's program is refused as gitosis's 'Unknown command
    denied'. The error names the server and both ways out, with no traceback."""
    cluster = ssh_cluster_factory(2, names=["alpha", "beta"], authorize_operator=False)
    alpha, beta = cluster.servers
    serve = cluster.runtime_bin / "gitosis-serve"
    alpha.authorize(cluster.operator.public_key)  # alpha: a plain line, as documented
    beta.authorize(
        cluster.operator.public_key,
        options=f'command="{serve} operator@reconciler",no-port-forwarding,no-pty',
    )
    scenario = start_scenario(cluster, tmp_path)
    before = home_snapshot(beta)

    for args in (("plan",), ("apply", "--yes")):
        done = scenario.reconcile(*args)
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "Traceback" not in output
        errors = [line for line in done.stderr.splitlines() if "beta" in line]
        assert errors, done.stderr
        assert "gitosis user's key" in done.stderr, done.stderr
        assert "Unknown command denied" in done.stderr, done.stderr
        assert "plain line" in done.stderr, done.stderr
        assert "alpha" not in " ".join(errors).split("beta", 1)[0], errors
    assert home_snapshot(beta) == before
