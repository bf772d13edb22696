"""description, owner, gitweb and daemon reach the repositories apply creates (issue 12, 2).

gitosis writes them only when the admin repository is pushed, and only for
repositories that exist then; apply sends the admin commit before it creates the
repositories. Three fresh servers, settings declared, applied twice; then changed
(a description, gitweb and daemon flags, an owner, a repository dropped) and
applied twice again. After each apply every server holds what gitosis itself
writes for the rendered gitosis.conf, byte for byte: running gitosis's own
post-update on a server afterwards changes nothing and the plan stays empty.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing.cluster import SshServer
from tests.e2e.scenario import Scenario, start_scenario

pytestmark = pytest.mark.e2e

GIT_DEFAULT_DESCRIPTION = (
    "Unnamed repository; edit this file 'description' to name the repository.\n"
)

FIRST: dict[str, dict[str, Any]] = {
    "product": {
        "description": "The product",
        "owner": "Alice Smith",
        "gitweb": True,
        "daemon": True,
    },
    "tools/build-scripts": {"description": "Scripts the build servers run", "gitweb": True},
    "docs": {"description": "Documentation", "gitweb": False, "daemon": False},
    "quiet": {},
}

# The description of product changes, product leaves gitweb and the daemon, docs
# joins both with an owner, tools/build-scripts is dropped from cluster.d/.
SECOND: dict[str, dict[str, Any]] = {
    "product": {"description": "The product, second edition", "owner": "Alice Smith"},
    "docs": {"description": "Documentation", "owner": "Bob", "gitweb": True, "daemon": True},
    "quiet": {},
}


def read(server: SshServer, relative: str) -> str | None:
    path = server.home / relative
    return path.read_text(encoding="utf-8") if path.exists() else None


def settings_on(server: SshServer) -> dict[str, Any]:
    repos = "repositories"
    names = ("product", "tools/build-scripts", "docs", "quiet")
    return {
        "descriptions": {n: read(server, f"{repos}/{n}.git/description") for n in names},
        "export_ok": sorted(
            n for n in names if (server.home / repos / f"{n}.git" / "git-daemon-export-ok").exists()
        ),
        "projects.list": read(server, "gitosis/projects.list"),
    }


def run_gitosis_post_update(scenario: Scenario, server: SshServer) -> None:
    """What gitosis does at the next push of the admin repository."""
    gitdir = server.home / "repositories" / "gitosis-admin.git"
    server.run(
        [scenario.cluster.runtime_bin / "gitosis-run-hook", "post-update"],
        env={"GIT_DIR": str(gitdir)},
        cwd=gitdir,
    )


def test_settings_reach_new_repositories_and_follow_changes(
    ssh_cluster_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["s0", "s1", "s2"])
    scenario = start_scenario(cluster, tmp_path, repositories=FIRST)

    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 2
    subjects = {(a["server"], a["subject"], a["target"]) for a in plan["actions"]}
    for server in cluster.servers:
        assert (server.name, "repository-settings", "product description") in subjects
        assert (server.name, "repository-settings", "product git-daemon-export-ok") in subjects
        assert (server.name, "repository-settings", "gitosis/projects.list") in subjects

    scenario.apply_twice()
    for server in cluster.servers:
        assert settings_on(server) == {
            "descriptions": {
                "product": "The product\n",
                "tools/build-scripts": "Scripts the build servers run\n",
                "docs": "Documentation\n",
                "quiet": GIT_DEFAULT_DESCRIPTION,
            },
            "export_ok": ["product"],
            "projects.list": "product.git Alice+Smith\ntools%2Fbuild-scripts.git\n",
        }, server.name
        for path in ("repositories/product.git/description", "gitosis/projects.list"):
            info = os.stat(server.home / path)
            assert (info.st_mode & 0o777, info.st_uid) == (0o644, server.uid), path
    # gitosis's own post-update, as at the next admin push, writes the same bytes.
    run_gitosis_post_update(scenario, cluster.servers[1])
    scenario.assert_converged()

    scenario.repositories = dict(SECOND)
    scenario.declare(cluster.servers)
    scenario.apply_twice()
    for server in cluster.servers:
        assert settings_on(server) == {
            "descriptions": {
                "product": "The product, second edition\n",
                # dropped from cluster.d/: gitosis leaves a description alone
                "tools/build-scripts": "Scripts the build servers run\n",
                "docs": "Documentation\n",
                "quiet": GIT_DEFAULT_DESCRIPTION,
            },
            "export_ok": ["docs"],
            "projects.list": "docs.git Bob\n",
        }, server.name
    run_gitosis_post_update(scenario, cluster.servers[2])
    scenario.assert_converged()
