"""The ssh transport's command timeout holds against a real sshd."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.errors import ServerError
from reconciler.transport.ssh import SshTarget, SshTransport

pytestmark = pytest.mark.e2e


def test_command_that_hangs_times_out(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ssh_cluster_factory(1, names=["alpha"])
    (alpha,) = cluster.servers
    transport = SshTransport(
        "alpha",
        SshTarget(
            host="127.0.0.1",
            port=alpha.port,
            user=alpha.user,
            host_key=alpha.host_key,
            identity=str(cluster.operator.private_key),
        ),
    )
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine's user
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    try:
        assert transport.run(["echo", "hello"], timeout=10).stdout == b"hello\n"
        started = time.monotonic()
        with pytest.raises(ServerError, match=r"server alpha: sleep timed out after 2s"):
            transport.run(["sleep", "30"], timeout=2)
        assert time.monotonic() - started < 10
        # A command that prints and then hangs times out the same way.
        started = time.monotonic()
        with pytest.raises(ServerError, match="timed out"):
            transport.run(["sh", "-c", "echo started; exec sleep 30"], timeout=2)
        assert time.monotonic() - started < 10
    finally:
        transport.close()
