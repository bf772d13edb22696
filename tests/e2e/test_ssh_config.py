"""Persistent connections between the servers (issue 11, item 5): the git user's
~/.ssh/config block, planned and applied like known_hosts, and the replication
pushes going through the connection it keeps open."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

import pytest

from reconciler.server.ssh_config import BLOCK_BEGIN, BLOCK_END
from reconciler.testing.cluster import SshServer
from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import start_scenario

pytestmark = pytest.mark.e2e

NAMES = ["alpha", "beta", "gamma"]
FOREIGN = "# beta's own settings\nHost backup.example\n    User backup\n    Port 2200\n"


def control_sockets(server: SshServer) -> list[Path]:
    return [p for p in (server.home / ".ssh").glob("cm-*") if stat.S_ISSOCK(p.lstat().st_mode)]


def effective(server: SshServer, host: str, port: int, user: str) -> dict[str, str]:
    """What the server's own ssh would use for that destination (``ssh -G``)."""
    out = server.run(["ssh", "-G", "-p", str(port), f"{user}@{host}"]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def logins_from(peer: SshServer, server: SshServer) -> int:
    """How many times ``server``'s git user logged in to ``peer`` (its sshd log)."""
    key = server.run(["ssh-keygen", "-l", "-f", str(server.home / ".ssh/id_ed25519.pub")])
    fingerprint = key.stdout.split()[1]
    pattern = re.compile(rf"Accepted publickey for {peer.user} .*{re.escape(fingerprint)}")
    return len(pattern.findall(peer.log_path.read_text(errors="replace")))


def test_connections_to_the_peers_stay_open(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=NAMES)
    alpha, beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    # A person's ~/.ssh/config on beta, mode 0644 as people leave it.
    beta.run(
        ["sh", "-c", "mkdir -p ~/.ssh && cat > ~/.ssh/config && chmod 644 ~/.ssh/config"],
        input=FOREIGN,
    )

    _code, plan = scenario.plan_json()
    planned = {
        (a["server"], a["kind"], a["description"])
        for a in plan["actions"]
        if a["subject"] == "ssh-config"
    }
    assert planned == {
        (s.name, "create", f"ssh config: keep the connections to {peers} open")
        for s, peers in ((alpha, "beta, gamma"), (beta, "alpha, gamma"), (gamma, "alpha, beta"))
    }, plan["actions"]
    scenario.apply_twice()

    for server in cluster.servers:
        config = server.home / ".ssh/config"
        text = config.read_text()
        assert text.startswith(BLOCK_BEGIN + "\n"), text
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert stat.S_IMODE((server.home / ".ssh").stat().st_mode) == 0o700
        assert config.stat().st_uid == server.uid
        for peer in cluster.servers:
            if peer is server:
                continue
            used = effective(server, "127.0.0.1", peer.port, peer.user)
            assert used["controlmaster"] == "auto", used
            assert used["controlpersist"] == "300", used
            assert used["controlpath"].startswith(f"{server.home}/.ssh/cm-"), used
    # beta's own lines are kept byte for byte, after the block, and still in force.
    text = (beta.home / ".ssh/config").read_text()
    assert text.endswith(f"{BLOCK_END}\n{FOREIGN}"), text
    out = beta.run(["ssh", "-G", "backup.example"]).stdout
    backup = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert (backup["user"], backup["port"], backup["controlmaster"]) == ("backup", "2200", "false")

    work = tmp_path / "alice-product"
    user_clone(cluster, scenario.alice, alpha, "product", work)
    before = {peer.name: logins_from(peer, alpha) for peer in (beta, gamma)}
    first = commit(work, "first")
    push = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
    assert "replicated to beta" in push.stderr and "replicated to gamma" in push.stderr, push.stderr
    assert server_ref(beta, "product", "refs/heads/main") == first
    # One master per peer, left open for the next push.
    assert len(control_sockets(alpha)) == 2, list((alpha.home / ".ssh").iterdir())
    assert len(alpha.control_masters()) == 2
    opened = {peer.name: logins_from(peer, alpha) for peer in (beta, gamma)}
    assert all(opened[name] <= before[name] + 1 for name in opened), (before, opened)

    # Three more pushes: no new login on either peer, every push replicated.
    for k in range(3):
        sha = commit(work, f"again {k}")
        push = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
        assert "replicated to beta" in push.stderr and "replicated to gamma" in push.stderr
        assert server_ref(gamma, "product", "refs/heads/main") == sha
    assert {peer.name: logins_from(peer, alpha) for peer in (beta, gamma)} == opened

    # A stopped peer does not look alive through its old connection, nor make the
    # push wait: its master ends with the peer's sshd, the next ssh is refused at once.
    beta.stop()
    later = commit(work, "while beta is down")
    started = time.monotonic()
    push = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
    elapsed = time.monotonic() - started
    assert "beta unreachable: queued" in push.stderr, push.stderr
    assert "replicated to gamma" in push.stderr, push.stderr
    assert elapsed < 10, elapsed  # the hook's timeout is 20 s
    assert len(control_sockets(alpha)) == 1
    beta.start()
    scenario.apply_twice()
    assert server_ref(beta, "product", "refs/heads/main") == later

    # A server that is stopped leaves no master of its own running.
    alpha.stop()
    assert alpha.control_masters() == []
