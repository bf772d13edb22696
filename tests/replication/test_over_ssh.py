"""The hook pushing to a peer over real ssh, as between gitosis servers.

The peer's sshd runs a forced command that does what ``gitosis-serve`` does for
this question: it sets ``GITOSIS_USER`` to the key's owner and runs git. Over ssh
``RECONCILER_REPLICA`` does not travel, so the peer's hook can only tell a
replicated push by ``GITOSIS_USER``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Cluster, build_cluster, git, remote_lines

SSHD = "/usr/sbin/sshd"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.geteuid() != 0 or not Path(SSHD).exists() or shutil.which("ssh") is None,
        reason="needs root, sshd and ssh",
    ),
]


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


class SshServer:
    def __init__(self, root: Path, pusher: str) -> None:
        self.root = root
        self.root.mkdir(parents=True)
        self.port = _free_port()
        self.client_key = root / "client_key"
        host_key = root / "host_key"
        for key in (self.client_key, host_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True,
                timeout=30,
            )
        serve = root / "serve"
        # What gitosis-serve does for the hook: name the pusher, then run git.
        serve.write_text(
            "#!/bin/sh\n"
            f"GITOSIS_USER={pusher}\n"
            "export GITOSIS_USER\n"
            'exec git-shell -c "$SSH_ORIGINAL_COMMAND"\n'
        )
        serve.chmod(0o755)
        public = (root / "client_key.pub").read_text().strip()
        (root / "authorized_keys").write_text(f'command="{serve}",no-pty {public}\n')
        config = root / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            "AllowUsers root\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
        )
        host_public = (root / "host_key.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(root / "sshd.log").open("wb"),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError((root / "sshd.log").read_text()) from None
                time.sleep(0.05)

    @property
    def ssh_command(self) -> str:
        return (
            f"ssh -i {self.client_key} -o UserKnownHostsFile={self.known_hosts} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes"
        )

    def url(self, path: Path) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def ssh_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, str]]:
    pusher: str = request.param
    cluster = build_cluster(tmp_path / "cluster", names=("master", "mirror"))
    server = SshServer(tmp_path / "sshd", pusher)
    try:
        master = cluster["master"].repository()
        cluster.set_remote("master", "mirror", server.url(cluster["mirror"].repository()))
        # The hook keeps a repository's own ssh command.
        git(master, "config", "core.sshCommand", server.ssh_command, env=cluster.env)
        # Were mirror to forward what it receives, this would leave an entry in its queue.
        cluster.set_remote("mirror", "master", str(tmp_path / "nowhere.git"))
        yield cluster, pusher
    finally:
        server.stop()


@pytest.mark.parametrize("ssh_cluster", ["git@master"], indirect=True)
def test_a_push_replicated_over_ssh_is_not_forwarded(ssh_cluster: tuple[Cluster, str]) -> None:
    cluster, _ = ssh_cluster
    commit = cluster.commit("one")
    result, _ = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror"]
    assert cluster.refs("mirror") == {"refs/heads/main": commit}
    assert cluster["mirror"].queue() == []
    assert cluster["master"].queue() == []


@pytest.mark.parametrize("ssh_cluster", ["alice@desk"], indirect=True)
def test_a_person_pushing_over_ssh_is_forwarded(ssh_cluster: tuple[Cluster, str]) -> None:
    # The control for the test above: the same setup, but the pusher is no peer.
    cluster, _ = ssh_cluster
    cluster.commit("one")
    cluster.push("master", "main")
    [entry] = cluster["mirror"].queue()
    assert (entry.peer, entry.server, entry.reason) == ("master", "mirror", "missing repository")
