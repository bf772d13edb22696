"""The sshd test cluster itself: servers answer, run as their users, and vanish on stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.testing.cluster import SshCluster, cleanup_stale, pid_alive
from reconciler.testing.pytest_plugin import (
    STARTED,
    ClusterFactory,
    leftovers,
    requires_ssh_cluster,
)

pytestmark = [pytest.mark.e2e, requires_ssh_cluster]


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


def test_cli_up_show_env_down(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cli = [sys.executable, "-m", "reconciler.testing.cluster", "--state", str(state)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, timeout=120, check=False
        )

    up = run("up", "2", "--names", "alpha,beta", "--init")
    assert up.returncode == 0, up.stderr
    cluster = SshCluster.attach(json.loads(state.read_text()))
    STARTED.append(cluster)  # checked for leftovers at the end of the session
    try:
        assert [s.name for s in cluster] == ["alpha", "beta"]
        assert all(s.is_running() for s in cluster)
        assert run("up", "1").returncode == 1  # one cluster per state file
        env = run("env")
        assert env.stdout.startswith("export GIT_SSH_COMMAND=")
        # the cluster outlived the command; gitosis-init ran on every server
        clone = subprocess.run(
            ["git", "ls-remote", f"{cluster['beta'].url}/gitosis-admin.git"],
            env=cluster.git_env(cluster.admin),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert clone.returncode == 0, clone.stderr
        assert "refs/heads/master" in clone.stdout
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert leftovers([cluster]) == []


def test_cleanup_after_a_killed_run() -> None:
    script = (
        "import time\n"
        "from reconciler.testing.cluster import SshCluster\n"
        "c = SshCluster(1).start()\n"
        "print(c.workdir, c[0].user, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workdir, user = proc.stdout.readline().split()
    finally:
        proc.kill()  # no atexit, no cleanup: the sshd and the user stay behind
        proc.wait(timeout=10)
    cluster = SshCluster.attach(json.loads((Path(workdir) / "state.json").read_text()))
    STARTED.append(cluster)
    assert cluster[0].is_running()
    # only this test's cluster: other runs on this machine are none of its business
    assert cleanup_stale(only=Path(workdir)) == [user]
    assert leftovers([cluster]) == []


def test_start_moves_to_another_port_when_its_port_is_taken(ssh_cluster: SshCluster) -> None:
    server = ssh_cluster[0]
    server.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server.port = taken
        server._write_config()
        server.start()
        assert server.port != taken
        assert server.known_hosts_line in ssh_cluster.known_hosts.read_text()
        assert ssh(ssh_cluster, 0, "true").returncode == 0
