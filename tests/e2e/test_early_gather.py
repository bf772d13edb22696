"""``reconcile plan`` starts every server's gather as soon as cluster.d/'s servers are
known, before the rest of cluster.d/ is loaded and checked. When the rest turns out
invalid, the command still says why in one sentence and exits 1, and the servers are
left exactly as they were; when the servers themselves cannot be known (a YAML
error, a bad server entry), no connection is made at all."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ConfigErrors
from reconciler.server.common import PUSHES_PATH
from reconciler.testing.cluster import SshServer
from tests.e2e.scenario import home_snapshot, start_scenario

pytestmark = pytest.mark.e2e

BROKEN = "90-broken.yaml"


def dirty_push_records(server: SshServer) -> Path:
    """A push record file a gather compacts (its records left the window long ago):
    a write the gather makes only once it has its whole request."""
    path = server.home / "repositories" / PUSHES_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"peer": "beta", "time": 1_000_000 + i, "seconds": 0.5, "result": "ok"})
        for i in range(3)
    ]
    path.write_text("".join(line + "\n" for line in lines))
    os.chown(path.parent, server.uid, -1)
    os.chown(path, server.uid, -1)
    return path


def log_lines(server: SshServer) -> list[str]:
    return server.log_path.read_text(errors="replace").splitlines()


def programs_of(server: SshServer) -> str:
    done = subprocess.run(
        ["ps", "-u", server.user, "-o", "args="], capture_output=True, text=True, timeout=10
    )
    return done.stdout


def wait_for_programs(server: SshServer, running: bool, timeout: float = 60.0) -> None:
    """Until a python program of the server's user runs (or none does: an abandoned
    gather walks on until it finds its input ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ("python" in programs_of(server)) == running:
            return
        time.sleep(0.05)
    raise AssertionError(f"{server.user}: python running is not {running} after {timeout}s")


def test_a_mistake_after_the_servers_stops_the_started_gathers_unchanged(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ssh_cluster_factory(2, names=["alpha", "beta"])
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()
    servers = cluster.servers
    records = {server.name: dirty_push_records(server) for server in servers}
    before = {server.name: home_snapshot(server) for server in servers}
    broken = scenario.operator.checkout / "cluster.d" / BROKEN
    broken.write_text("repositories:\n  product2:\n    descripton: a typo\n")

    # The command line: one sentence naming the place, exit 1, nothing changed.
    done = scenario.reconcile("plan")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cluster.d/{BROKEN}:3" in lines[0], lines
    assert "unknown key 'descripton'" in lines[0]
    for server in servers:
        wait_for_programs(server, running=False)
        assert home_snapshot(server) == before[server.name]

    # The same, with the rest of cluster.d/ checked only once every server's gather
    # program runs (held up here; a large cluster.d/ takes that long by itself).
    import reconciler.desired
    from reconciler.commands.common import load_and_start_gather

    real_load = reconciler.desired.load

    def slow_load(directory: Path, servers_known: Any = None) -> Any:
        def known(*args: Any) -> None:
            servers_known(*args)
            for server in servers:
                wait_for_programs(server, running=True)

        return real_load(directory, known)

    for key, value in scenario.operator.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setattr(reconciler.desired, "load", slow_load)
    marks = {server.name: len(log_lines(server)) for server in servers}
    with pytest.raises(ConfigErrors, match="unknown key 'descripton'"):
        load_and_start_gather(scenario.operator.checkout, [], False)
    for server in servers:
        wait_for_programs(server, running=False)
        new = log_lines(server)[marks[server.name] :]
        assert any(line.startswith("Starting session:") for line in new), new
        assert home_snapshot(server) == before[server.name]
    monkeypatch.setattr(reconciler.desired, "load", real_load)

    # A gather that gets its whole request compacts the same records: the checks
    # above would have seen the write.
    broken.unlink()
    done = scenario.reconcile("plan", "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr
    for server in servers:
        relative = str(records[server.name].relative_to(server.home))
        assert records[server.name].read_bytes() != before[server.name][relative][2]
    scenario.apply_twice()


@pytest.mark.parametrize(
    "text",
    [
        "repositories:\n  - [unclosed\n",  # not YAML
        "servers:\n  extra:\n    url: ssh://git@127.0.0.1:notaport\n",  # a bad server
        "cluster:\n  admin_repository: ../outside\n",  # a bad cluster: entry
    ],
    ids=["yaml-error", "bad-server", "bad-cluster"],
)
def test_no_connection_while_the_servers_cannot_be_known(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path, text: str
) -> None:
    cluster = ssh_cluster_factory(2, names=["alpha", "beta"])
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()
    servers = cluster.servers
    before = {server.name: home_snapshot(server) for server in servers}
    marks = {server.name: len(log_lines(server)) for server in servers}
    broken = scenario.operator.checkout / "cluster.d" / BROKEN
    broken.write_text(text)

    done = scenario.reconcile("plan")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"cluster.d/{BROKEN}:" in done.stderr
    for server in servers:
        new = log_lines(server)[marks[server.name] :]
        assert not any("Connection from" in line for line in new), new
        assert home_snapshot(server) == before[server.name]
    broken.unlink()
    scenario.assert_converged()
