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


def test_command_that_ends_without_reading_its_input(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command may end before it has read its stdin: an admin login's session for
    a git user that does not exist yet answers NO_GIT_USER_STATUS at once, while the
    gather program is still on its way. Its status and output are the answer, not a
    "Socket is closed" from the write (test_bootstrap's sudo case failed so)."""
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
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    # More than sshd's channel window (2 MB): the write must wait for the command,
    # which has ended, every time.
    stdin = b"x" * (8 << 20)
    try:
        for _ in range(3):
            done = transport.run(["sh", "-c", "echo gone >&2; exit 7"], stdin=stdin, timeout=30)
            assert (done.returncode, done.stdout, done.stderr) == (7, b"", b"gone\n")
        # The connection stays usable, and a command that reads it all still gets it.
        done = transport.run(["wc", "-c"], stdin=stdin, timeout=30)
        assert done.stdout.split() == [str(len(stdin)).encode()]
    finally:
        transport.close()
