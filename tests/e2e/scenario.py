"""Shared set-up for the end-to-end scenarios: a converged cluster to start from."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.testing.cluster import Identity, SshCluster, SshServer
from reconciler.testing.recipe import Operator, cluster_yaml, make_operator, write_cluster_d

REPOSITORIES: dict[str, dict[str, Any]] = {
    "product": {"description": "The product"},
    "tools/build-scripts": {},
}


def groups(repositories: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    names = list(repositories if repositories is not None else REPOSITORIES)
    return {
        "gitosis-admin": {"members": ["admin@operator"], "writable": ["gitosis-admin"]},
        "developers": {"members": ["alice@desk"], "writable": names},
    }


@dataclass
class Scenario:
    cluster: SshCluster
    operator: Operator
    alice: Identity
    repositories: dict[str, dict[str, Any]]

    def declare(
        self,
        servers: list[SshServer],
        *,
        overrides: dict[str, dict[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        """Write cluster.d/ for ``servers`` and the scenario's repositories;
        ``overrides`` replaces settings of single servers (``{"gamma": {"host_key": ...}}``)."""
        text = cluster_yaml(
            servers,
            repositories=self.repositories,
            groups=groups(self.repositories),
            users={"alice@desk": self.alice.public_key},
            **options,
        )
        if overrides:
            document = json.loads(text)
            for name, settings in overrides.items():
                document["servers"][name].update(settings)
            text = json.dumps(document, indent=2) + "\n"
        write_cluster_d(self.operator.checkout, text)

    def reconcile(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.operator.reconcile(*args)

    def plan_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.reconcile("plan", "--json", *args)
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)

    def apply_twice(self, *extra: str) -> None:
        """Apply, then a plan must find nothing to do (DESIGN.md section 9)."""
        first = self.reconcile("apply", "--yes", *extra)
        assert first.returncode == 0, first.stdout + first.stderr
        self.assert_converged()

    def assert_converged(self) -> None:
        again = self.reconcile("plan", "--detailed-exitcode")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "No changes" in again.stdout


def start_scenario(
    cluster: SshCluster,
    workdir: Path,
    *,
    declared: list[SshServer] | None = None,
    repositories: dict[str, dict[str, Any]] | None = None,
    initialise: list[SshServer] | None = None,
) -> Scenario:
    """gitosis-init on the servers (default all), an admin checkout from the first,
    cluster.d/ written for ``declared`` (default all)."""
    for server in initialise if initialise is not None else cluster.servers:
        server.gitosis_init(cluster.admin.public_key)
    scenario = Scenario(
        cluster,
        make_operator(cluster, workdir, clone_from=cluster.servers[0]),
        cluster.new_identity("alice@desk"),
        dict(repositories if repositories is not None else REPOSITORIES),
    )
    scenario.declare(declared if declared is not None else cluster.servers)
    return scenario


def fingerprint(key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of ``TYPE BASE64``, computed here independently."""
    digest = hashlib.sha256(base64.b64decode(key_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def refs_of(server: SshServer, repository: str) -> dict[str, str]:
    """Every ref of a repository on a server (name -> id), read with real git."""
    gitdir = server.home / "repositories" / f"{repository}.git"
    out = server.run(
        ["git", "--git-dir", str(gitdir), "for-each-ref", "--format=%(refname) %(objectname)"]
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def home_snapshot(server: SshServer) -> dict[str, tuple[int, int, bytes]]:
    """Every file under a server's home: mode, size and content, to prove nothing changed."""
    snapshot = {}
    for path in sorted(server.home.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            snapshot[str(path.relative_to(server.home))] = (
                stat.st_mode,
                stat.st_size,
                path.read_bytes(),
            )
    return snapshot
