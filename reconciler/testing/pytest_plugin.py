"""pytest fixtures for the sshd test cluster.

Import them into a ``conftest.py`` (as ``tests/e2e/conftest.py`` does)::

    from reconciler.testing.pytest_plugin import ssh_cluster, ssh_cluster_factory  # noqa: F401

Tests using them are skipped with the reason when the machine cannot run a
cluster (not root, no sshd); CI runs as root with sshd installed.
"""

from __future__ import annotations

import contextlib
import pwd
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.testing.cluster import (
    SshCluster,
    all_pids,
    pid_alive,
    process_cmdline,
    unavailable_reason,
)

# Every cluster started through these fixtures in this session, for leak checks.
STARTED: list[SshCluster] = []

ClusterFactory = Callable[..., SshCluster]

# For tests that start clusters without the fixtures (subprocesses, the CLI).
requires_ssh_cluster = pytest.mark.skipif(
    unavailable_reason() is not None, reason=unavailable_reason() or ""
)


@contextlib.contextmanager
def started_cluster(n: int = 2, **kwargs: Any) -> Iterator[SshCluster]:
    """A started cluster for fixtures of any scope; skips the test when none can run."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = SshCluster(n, **kwargs)
    STARTED.append(cluster)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def ssh_cluster_factory() -> Iterator[ClusterFactory]:
    """``make(n, **kwargs) -> SshCluster``: started clusters, all stopped after the test."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    made: list[SshCluster] = []

    def make(n: int = 2, **kwargs: Any) -> SshCluster:
        cluster = SshCluster(n, **kwargs)
        made.append(cluster)
        STARTED.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def ssh_cluster(ssh_cluster_factory: ClusterFactory) -> SshCluster:
    """Two started servers, ``s1`` and ``s2``."""
    return ssh_cluster_factory(2)


def leftovers(clusters: list[SshCluster] | None = None) -> list[str]:
    """What the given clusters (default: all started here) left behind, as sentences."""
    problems = []
    for cluster in STARTED if clusters is None else clusters:
        for server in cluster.servers:
            try:
                pwd.getpwnam(server.user)
                problems.append(f"user {server.user} of {server.name} still exists")
            except KeyError:
                pass
            if server.home.exists():
                problems.append(f"home {server.home} still exists")
        marker = str(cluster.workdir)
        for pid in all_pids():
            if pid_alive(pid) and any(marker in arg for arg in process_cmdline(pid)):
                problems.append(f"process {pid} ({' '.join(process_cmdline(pid))}) still runs")
    return problems
