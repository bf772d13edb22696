"""A bare server joins a running cluster with one YAML entry and one apply.

The fourth server has only sshd, git and python3: no git user, no gitosis on its
PATH. The operator logs in as root (or as a sudoer) and names the git user with
``user:``; apply creates the user, installs the stdlib-only gitosis runtime in its
home, runs gitosis-init, then does everything it does for any server.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from reconciler.server.library import RUNTIME_BIN, RUNTIME_DIR
from reconciler.server_library import library_version as runtime_version
from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import refs_of, start_scenario

pytestmark = pytest.mark.e2e

NAMES = ["alpha", "beta", "gamma", "delta"]


@pytest.mark.parametrize("login", ["root", "sudo"])
def test_bare_server_joins(ssh_cluster_factory, tmp_path: Path, login: str) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(4, names=NAMES, admin_logins={"delta": login})
    alpha, beta, gamma, delta = cluster.servers
    old = [alpha, beta, gamma]
    scenario = start_scenario(cluster, tmp_path, declared=old, initialise=old)
    scenario.apply_twice()
    alice = scenario.alice
    product = tmp_path / "alice-product"
    user_clone(cluster, alice, alpha, "product", product)
    first = commit(product, "before delta")
    user_git(cluster, alice, product, "push", "origin", "HEAD:refs/heads/main")

    with pytest.raises(KeyError):
        pwd.getpwnam(delta.user)  # bare: no git user yet

    scenario.declare(cluster.servers)  # delta: url = the admin login, user = the git user
    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 2, plan
    mine = [a for a in plan["actions"] if a["server"] == "delta"]
    assert [(a["subject"], a["kind"], a["target"]) for a in mine] == [
        ("bootstrap", "create", delta.user)
    ], mine
    assert not plan["summary"]["errors"], plan
    text = scenario.reconcile("plan")
    assert f"+ create the git user {delta.user}" in text.stdout, text.stdout

    applied = scenario.reconcile("apply", "--yes")
    output = applied.stdout + applied.stderr
    assert applied.returncode == 0, output
    assert "Traceback" not in output
    assert "install the gitosis runtime" in output, output
    scenario.assert_converged()
    again = scenario.reconcile("apply", "--yes")
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr

    # The git user, as gitosis's recipe makes it; everything in its home is its own.
    entry = pwd.getpwnam(delta.user)
    assert entry.pw_dir == str(delta.home) and entry.pw_shell == "/bin/sh"
    foreign = [
        str(path)
        for path in delta.home.rglob("*")
        if not path.is_symlink() and path.lstat().st_uid != entry.pw_uid
    ]
    assert not foreign, foreign[:5]
    runtime = delta.home / RUNTIME_DIR
    assert (runtime / "VERSION").read_text().strip() == runtime_version()
    serve = delta.home / RUNTIME_BIN / "gitosis-serve"
    assert os.access(serve, os.X_OK)
    assert (delta.home / ".ssh").stat().st_mode & 0o777 == 0o700
    keys = (delta.home / ".ssh/authorized_keys").read_text()
    assert f'command="{serve} alice@desk"' in keys, keys
    assert (delta.home / ".ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
    hook = delta.home / "repositories/product.git/hooks/post-receive"
    assert hook.stat().st_mode & 0o777 == 0o755

    # It has the history, and a developer's push to it replicates both ways.
    assert server_ref(delta, "product", "refs/heads/main") == first
    second = commit(product, "pushed to delta")
    user_git(cluster, alice, product, "remote", "add", "delta", f"{delta.url}/product.git")
    pushed = user_git(cluster, alice, product, "push", "delta", "HEAD:refs/heads/main")
    for name in ("alpha", "beta", "gamma"):
        assert f"replicated to {name}" in pushed.stderr, pushed.stderr
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/main") == second, server.name
    third = commit(product, "pushed to beta")
    user_git(cluster, alice, product, "remote", "add", "beta", f"{beta.url}/product.git")
    user_git(cluster, alice, product, "push", "beta", "HEAD:refs/heads/main")
    assert server_ref(delta, "product", "refs/heads/main") == third
    assert refs_of(delta, "tools/build-scripts") == refs_of(alpha, "tools/build-scripts")
    scenario.assert_converged()
