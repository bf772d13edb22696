"""A gitosis-admin whose history the admin checkout does not know is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.testing.recipe import server_ref
from tests.e2e.scenario import start_scenario

pytestmark = pytest.mark.e2e

COMMITTER = {
    "GIT_AUTHOR_NAME": "someone",
    "GIT_AUTHOR_EMAIL": "someone@gamma",
    "GIT_COMMITTER_NAME": "someone",
    "GIT_COMMITTER_EMAIL": "someone@gamma",
}


def test_unrelated_admin_history_is_refused(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    alpha, beta, gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    # gamma's gitosis-admin holds someone's history of its own: a root commit. (A commit
    # on top of the checkout's commit is an admin change pushed to gamma by hand, which
    # apply now takes into the checkout and sends everywhere; gitosis-init's commits on
    # the servers are often one and the same commit, made in the same second.)
    admin = str(gamma.home / "repositories/gitosis-admin.git")
    init = server_ref(gamma, "gitosis-admin", "refs/heads/master")
    tip = gamma.run(
        [
            "git",
            "--git-dir",
            admin,
            "commit-tree",
            "-m",
            "local change",
            "HEAD^{tree}",
        ],
        env=COMMITTER,
    ).stdout.strip()
    gamma.run(["git", "--git-dir", admin, "update-ref", "refs/heads/master", tip, init or ""])
    assert tip != init

    for args in (("plan", "--detailed-exitcode"), ("apply", "--yes")):
        done = scenario.reconcile(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert any(
            "gamma" in line and "unrelated" in line and tip[:12] in line for line in errors
        ), done.stderr

    # gamma's admin history is untouched; the others run the checkout's commit.
    assert server_ref(gamma, "gitosis-admin", "refs/heads/master") == tip
    head = scenario.operator.git("rev-parse", "HEAD").strip()
    for server in (alpha, beta):
        assert server_ref(server, "gitosis-admin", "refs/heads/master") == head
    again = scenario.reconcile("plan", "--detailed-exitcode")
    assert again.returncode == 1, again.stdout + again.stderr
    assert server_ref(gamma, "gitosis-admin", "refs/heads/master") == tip
