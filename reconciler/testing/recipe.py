"""Building blocks for end-to-end scenarios: an operator, an admin checkout, cluster.d/.

Used by the end-to-end tests and the benchmarks on top of ``SshCluster``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.testing.cluster import Identity, SshCluster, SshServer

RECONCILE_TIMEOUT = 600.0


@dataclass
class Operator:
    """The person running ``reconcile``: a HOME with ~/.ssh and an admin checkout."""

    home: Path
    checkout: Path
    cluster: SshCluster

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = self.cluster.git_env(self.cluster.admin)
        env["HOME"] = str(self.home)
        env.pop("SSH_AUTH_SOCK", None)  # only the identities given here
        env.update(extra or {})
        return env

    def reconcile(
        self, *args: str, check: bool = False, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real command line, as a user would, in the admin checkout."""
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", *args, "-C", str(self.checkout)],
            capture_output=True,
            text=True,
            env=self.env(extra_env),
            timeout=RECONCILE_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"reconcile {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd or self.checkout,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
            check=True,
        )
        return done.stdout


def make_operator(cluster: SshCluster, workdir: Path, *, clone_from: SshServer) -> Operator:
    """An operator HOME (operator key as ~/.ssh/id_ed25519, known_hosts of the cluster)
    and an admin checkout cloned from ``clone_from``'s gitosis-admin."""
    home = workdir / "operator-home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    shutil.copy(cluster.operator.private_key, ssh / "id_ed25519")
    (ssh / "id_ed25519").chmod(0o600)
    shutil.copy(cluster.known_hosts, ssh / "known_hosts")
    checkout = workdir / "gitosis-admin"
    operator = Operator(home, checkout, cluster)
    subprocess.run(
        ["git", "clone", "--quiet", f"{clone_from.url}/gitosis-admin.git", str(checkout)],
        env=operator.env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return operator


def cluster_yaml(
    servers: Sequence[SshServer],
    *,
    repositories: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]],
    users: Mapping[str, str],
    identity: Path | None = None,
    replication: Mapping[str, Any] | None = None,
    pin_host_keys: bool = False,
) -> str:
    """cluster.d/ YAML for these servers (JSON is YAML; exact and easy to build)."""
    server_map: dict[str, dict[str, Any]] = {}
    for server in servers:
        entry: dict[str, Any] = {"url": server.url}
        if server.admin_login is not None:
            # Logged in to as root or a sudoer, acting as (and creating) the git user.
            entry = {"url": server.admin_url, "user": server.user}
        if identity is not None:
            entry["identity"] = str(identity)
        if pin_host_keys:
            entry["host_key"] = server.host_key
        server_map[server.name] = entry
    document: dict[str, Any] = {
        # sync unless the test says otherwise: the scenarios written before quorum mode
        # (the default for three servers) assert what sync mode does.
        "cluster": {
            "name": "test",
            "replication": {"mode": "sync", "timeout": 20, **dict(replication or {})},
        },
        "servers": server_map,
        "repositories": {name: dict(spec) for name, spec in repositories.items()},
        "groups": {name: dict(spec) for name, spec in groups.items()},
        "users": dict(users),
    }
    return json.dumps(document, indent=2) + "\n"


def write_cluster_d(checkout: Path, text: str, name: str = "cluster.yaml") -> None:
    directory = checkout / "cluster.d"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)


def server_ref(server: SshServer, repository: str, ref: str) -> str | None:
    """A ref's value on a server, read as the server's user; None if absent."""
    done = server.run(
        [
            "git",
            "--git-dir",
            str(server.home / "repositories" / f"{repository}.git"),
            "rev-parse",
            "--verify",
            "--quiet",
            ref,
        ],
        check=False,
    )
    return done.stdout.strip() or None


def server_refs(
    server: SshServer, repository: str, pattern: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The refs matching ``pattern`` (for-each-ref's) a repository holds on a server,
    with their values."""
    done = server.run(
        [
            "git",
            "--git-dir",
            str(server.home / "repositories" / f"{repository}.git"),
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            pattern,
        ],
        env=env,
    )
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def ref_count(
    server: SshServer, repository: str, pattern: str, env: Mapping[str, str] | None = None
) -> int:
    """How many refs matching ``pattern`` a repository holds on a server."""
    return len(server_refs(server, repository, pattern, env))


def user_clone(
    cluster: SshCluster, who: Identity, server: SshServer, repository: str, dest: Path
) -> None:
    subprocess.run(
        ["git", "clone", "--quiet", f"{server.url}/{repository}.git", str(dest)],
        env=cluster.git_env(who),
        check=True,
        capture_output=True,
        timeout=120,
    )


def user_git(
    cluster: SshCluster, who: Identity, repo: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env=cluster.git_env(who),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def commit(repo: Path, message: str, path: str = "file.txt") -> str:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(message + "\n")
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    subprocess.run(["git", "add", path], cwd=repo, check=True, env=env, timeout=60)
    subprocess.run(
        ["git", "commit", "--quiet", "-m", message], cwd=repo, check=True, env=env, timeout=60
    )
    return subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
