"""The sshd test cluster itself: servers answer, run as their users, and vanish on stop."""

from __future__ import annotations

import subprocess

import pytest

from reconciler.testing.cluster import SshCluster, pid_alive
from reconciler.testing.pytest_plugin import ClusterFactory, leftovers

pytestmark = pytest.mark.e2e


def ssh(cluster: SshCluster, index: int, command: str) -> subprocess.CompletedProcess[str]:
    server = cluster[index]
    return subprocess.run(
        [*cluster.ssh_command(), "-p", str(server.port), f"{server.user}@127.0.0.1", command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_servers_answer_as_their_own_users(ssh_cluster: SshCluster) -> None:
    a, b = ssh_cluster
    assert a.user != b.user and a.port != b.port
    assert a.url == f"ssh://{a.user}@127.0.0.1:{a.port}"
    assert a.known_hosts_line == f"[127.0.0.1]:{a.port} {a.host_key}"
    assert a.host_key.startswith("ssh-ed25519 AAAA")
    for index, server in enumerate(ssh_cluster):
        proc = ssh(ssh_cluster, index, 'id -un; echo "$HOME"; command -v gitosis-serve')
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [
            server.user,
            str(server.home),
            str(ssh_cluster.runtime_bin / "gitosis-serve"),
        ]
    assert a.run(["id", "-un"]).stdout.strip() == a.user
    assert a.run(["sh", "-c", 'echo "$HOME"']).stdout.strip() == str(a.home)


def test_unknown_host_key_is_refused(ssh_cluster: SshCluster) -> None:
    ssh_cluster.known_hosts.write_text(
        ssh_cluster[1].known_hosts_line.replace("[127", "[128") + "\n"
    )
    proc = ssh(ssh_cluster, 0, "true")
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_stop_start_pause_resume(ssh_cluster: SshCluster) -> None:
    server = ssh_cluster[0]
    old_pid = server.pid
    assert old_pid is not None
    server.stop()
    assert not pid_alive(old_pid)
    assert ssh(ssh_cluster, 0, "true").returncode == 255
    server.start()
    assert ssh(ssh_cluster, 0, "true").returncode == 0
    server.pause()
    try:
        # ssh takes the first value of an option: the short timeout goes first.
        argv = ["ssh", "-o", "ConnectTimeout=1", *ssh_cluster.ssh_command()[1:]]
        proc = subprocess.run(
            [*argv, "-p", str(server.port), f"{server.user}@127.0.0.1", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 255
    finally:
        server.resume()
    assert ssh(ssh_cluster, 0, "true").returncode == 0


def test_stop_removes_users_homes_and_processes(ssh_cluster_factory: ClusterFactory) -> None:
    cluster = ssh_cluster_factory(2)
    # A session that is still open when the cluster stops must not survive it.
    server = cluster[0]
    sleeper = subprocess.Popen(
        [*cluster.ssh_command(), "-p", str(server.port), f"{server.user}@127.0.0.1", "sleep 60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert leftovers([cluster]) != []
        cluster.stop()
        assert sleeper.wait(timeout=10) == 255
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    assert leftovers([cluster]) == []
    assert not cluster.runtime_root.exists()
    assert not cluster.workdir.exists()
