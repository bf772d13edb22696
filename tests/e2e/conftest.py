"""End-to-end fixtures: real sshd servers (see reconciler.testing.cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.testing.pytest_plugin import (  # noqa: F401 - fixtures
    leftovers,
    ssh_cluster,
    ssh_cluster_factory,
)


@pytest.fixture(scope="session", autouse=True)
def _no_cluster_left_behind() -> Iterator[None]:
    """After the session no sshd of ours may run and every test user must be gone."""
    yield
    problems = leftovers()
    assert not problems, "\n".join(problems)
