"""Host keys: a wrong pin, an unknown host, a changed key (DESIGN.md section 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import fingerprint, home_snapshot, start_scenario

pytestmark = pytest.mark.e2e

NAMES = ["alpha", "beta", "gamma"]


def test_wrong_pinned_host_key_is_refused(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=NAMES)
    alpha, beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    # gamma is pinned to alpha's host key: whoever answers on gamma's port is not gamma.
    scenario.declare(
        cluster.servers, pin_host_keys=True, overrides={"gamma": {"host_key": alpha.host_key}}
    )
    before = home_snapshot(gamma)
    seen = fingerprint(gamma.host_key)

    for args in (("plan",), ("plan", "--trust-new-host-keys"), ("apply", "--yes")):
        done = scenario.reconcile(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert any("gamma" in line and seen in line and "pinned" in line for line in errors), (
            done.stderr
        )

    assert home_snapshot(gamma) == before
    assert not (gamma.home / ".ssh/id_ed25519").exists()
    # A server that may be impersonated stops the whole run: nothing changed anywhere.
    for server in (alpha, beta):
        assert not (server.home / ".ssh/id_ed25519").exists()
        assert not (server.home / "repositories/product.git").exists()

    # The right pin: gamma joins, and the peers reach it (their known_hosts is right).
    scenario.declare(cluster.servers, pin_host_keys=True)
    scenario.apply_twice()
    assert (gamma.home / ".ssh/id_ed25519").exists()
    for server in (alpha, beta):
        known = (server.home / ".ssh/known_hosts").read_text().splitlines()
        for_gamma = [line for line in known if line.startswith(f"[127.0.0.1]:{gamma.port} ")]
        assert len(for_gamma) == 1 and for_gamma[0].startswith(gamma.known_hosts_line), known
    work = tmp_path / "alice-product"
    user_clone(cluster, scenario.alice, alpha, "product", work)
    pushed = commit(work, "first")
    push = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
    assert "replicated to gamma" in push.stderr, push.stderr
    assert server_ref(gamma, "product", "refs/heads/main") == pushed


def test_unknown_host_needs_trust(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=NAMES)
    _alpha, _beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    known_hosts = scenario.operator.home / ".ssh/known_hosts"
    without_gamma = "".join(
        line + "\n"
        for line in known_hosts.read_text().splitlines()
        if not line.startswith(f"[127.0.0.1]:{gamma.port} ")
    )
    known_hosts.write_text(without_gamma)
    before = home_snapshot(gamma)
    seen = fingerprint(gamma.host_key)

    for args in (("plan",), ("apply", "--yes")):
        done = scenario.reconcile(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert any("gamma" in line and seen in line for line in errors), done.stderr
    assert home_snapshot(gamma) == before
    assert known_hosts.read_text() == without_gamma

    trusted = scenario.reconcile("plan", "--trust-new-host-keys", "--detailed-exitcode")
    assert trusted.returncode == 2, trusted.stdout + trusted.stderr
    recorded = known_hosts.read_text()
    assert recorded.startswith(without_gamma)
    assert recorded[len(without_gamma) :] == gamma.known_hosts_line + "\n"
    # Recorded once: from now on gamma is known without the flag.
    scenario.apply_twice()
    assert known_hosts.read_text() == recorded
    assert (gamma.home / ".ssh/id_ed25519").exists()


def test_changed_host_key_is_never_accepted(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=NAMES)
    alpha, _beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    known_hosts = scenario.operator.home / ".ssh/known_hosts"
    # The operator's known_hosts holds another key for gamma's host and port.
    lines = [
        f"[127.0.0.1]:{gamma.port} {alpha.host_key}" if line == gamma.known_hosts_line else line
        for line in known_hosts.read_text().splitlines()
    ]
    assert lines != known_hosts.read_text().splitlines()
    known_hosts.write_text("".join(line + "\n" for line in lines))
    recorded = known_hosts.read_text()
    before = home_snapshot(gamma)
    seen = fingerprint(gamma.host_key)

    for args in (
        ("plan", "--trust-new-host-keys"),
        ("apply", "--yes", "--trust-new-host-keys"),
    ):
        done = scenario.reconcile(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert any("gamma" in line and seen in line and "CHANGED" in line for line in errors), (
            done.stderr
        )
    assert known_hosts.read_text() == recorded
    assert home_snapshot(gamma) == before


def test_known_hosts_markers(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An operator's known_hosts with ``@cert-authority`` and ``@revoked`` lines (as
    organisations keep them): the first is skipped, the second refuses that key even
    with --trust-new-host-keys; the other servers work normally."""
    cluster = ssh_cluster_factory(2, names=["alpha", "beta"])
    _alpha, beta = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    known_hosts = scenario.operator.home / ".ssh/known_hosts"
    text = known_hosts.read_text()
    known_hosts.write_text(
        f"@cert-authority *.example.com {beta.host_key}\n"
        "# a comment, and a line that is no entry at all\n"
        "garbage-without-a-key\n"
        f"{text}@revoked [127.0.0.1]:{beta.port} {beta.host_key}\n"
    )
    recorded = known_hosts.read_text()
    before = home_snapshot(beta)
    seen = fingerprint(beta.host_key)

    for args in (("plan",), ("apply", "--yes", "--trust-new-host-keys")):
        done = scenario.reconcile(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors and all("server beta" in line for line in errors), done.stderr
        assert any(seen in line and "revoked" in line for line in errors), done.stderr
    assert known_hosts.read_text() == recorded
    assert home_snapshot(beta) == before
    # A refused host key stops the run before anything changes on any server.
    assert not (cluster.servers[0].home / ".ssh/id_ed25519").exists()
