"""Shared building blocks for the reliability scenarios (real sshd, real git)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reconciler.testing.cluster import SshCluster, SshServer
from reconciler.testing.pytest_plugin import STARTED
from reconciler.testing.recipe import Operator, cluster_yaml, make_operator, write_cluster_d

ADMIN_GROUP = {"members": ["admin@operator"], "writable": ["gitosis-admin"]}


@contextmanager
def started_cluster(n: int, names: Sequence[str]) -> Iterator[SshCluster]:
    """A cluster for a module-scoped fixture: stopped (users deleted) on exit."""
    cluster = SshCluster(n, names=list(names))
    STARTED.append(cluster)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def groups(repositories: Sequence[str], writers: Sequence[str]) -> dict[str, Any]:
    return {
        "gitosis-admin": ADMIN_GROUP,
        "developers": {"members": list(writers), "writable": list(repositories)},
    }


def cluster_document(
    cluster: SshCluster,
    repositories: Sequence[str],
    people: Sequence[str],
    *,
    servers: Sequence[SshServer] | None = None,
    timeout: float = 20,
    mode: str = "sync",
) -> str:
    users = {name: cluster.new_identity(name).public_key for name in people}
    return cluster_yaml(
        servers if servers is not None else cluster.servers,
        repositories={name: {} for name in repositories},
        groups=groups(repositories, people),
        users=users,
        replication={"mode": mode, "timeout": timeout},
    )


def converge(
    cluster: SshCluster,
    workdir: Path,
    repositories: Sequence[str],
    people: Sequence[str],
    *,
    timeout: float = 20,
    mode: str = "sync",
) -> Operator:
    """gitosis-init every server, write cluster.d/, apply, and check a second plan is empty."""
    for server in cluster.servers:
        server.gitosis_init(cluster.admin.public_key)
    operator = make_operator(cluster, workdir, clone_from=cluster.servers[0])
    write_cluster_d(
        operator.checkout,
        cluster_document(cluster, repositories, people, timeout=timeout, mode=mode),
    )
    operator.reconcile("apply", "--yes", check=True)
    again = operator.reconcile("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    return operator


def gitdir(server: SshServer, repository: str) -> str:
    return str(server.home / "repositories" / f"{repository}.git")


def refs_of(server: SshServer, repository: str) -> dict[str, str]:
    out = server.run(
        [
            "git",
            "--git-dir",
            gitdir(server, repository),
            "for-each-ref",
            "--format=%(refname) %(objectname)",
        ]
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())  # type: ignore[misc]


def has_commit(server: SshServer, repository: str, sha: str) -> bool:
    done = server.run(
        ["git", "--git-dir", gitdir(server, repository), "cat-file", "-e", f"{sha}^{{commit}}"],
        check=False,
    )
    return done.returncode == 0


def fsck_problems(cluster: SshCluster, repository: str) -> list[str]:
    problems = []
    for server in cluster.servers:
        done = server.run(
            ["git", "--git-dir", gitdir(server, repository), "fsck", "--no-progress", "--strict"],
            check=False,
        )
        if done.returncode != 0:
            problems.append(f"{server.name}: {done.stdout}{done.stderr}")
    return problems


def queue_entries(server: SshServer) -> list[dict[str, Any]]:
    directory = server.home / "repositories" / ".reconciler" / "queue"
    if not directory.is_dir():
        return []
    return [
        json.loads(path.read_text())
        for path in sorted(directory.iterdir())
        if path.suffix == ".json" and not path.name.startswith(".")
    ]


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root``: (mode, uid, sha256 of a file / target of a link / '')."""
    found: dict[str, tuple[int, int, str]] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                digest = "-> " + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                digest = ""
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, digest)
    return found


def snapshot_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    changed = [f"changed {p}" for p in sorted(before) if p in after and before[p] != after[p]]
    return (
        [f"removed {p}" for p in sorted(set(before) - set(after))]
        + [f"added {p}" for p in sorted(set(after) - set(before))]
        + changed
    )


def git_quiet(env: Mapping[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
