"""A post-receive hook or a remote the reconciler did not write is reported, never
replaced without --replace-foreign (DESIGN.md section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.server.hooks import stub
from reconciler.testing.recipe import commit, server_ref, user_clone, user_git
from tests.e2e.scenario import start_scenario

pytestmark = pytest.mark.e2e

FOREIGN_HOOK = "#!/bin/sh\n# the team's own notification hook\nexec logger pushed\n"


def git_dir(server, repository: str) -> Path:  # type: ignore[no-untyped-def]
    return server.home / "repositories" / f"{repository}.git"


def remote_url(server, repository: str, name: str) -> str | None:  # type: ignore[no-untyped-def]
    done = server.run(
        ["git", "--git-dir", str(git_dir(server, repository)), "config", f"remote.{name}.url"],
        check=False,
    )
    return done.stdout.strip() or None


def test_foreign_hook_and_remote(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(3, names=["alpha", "beta", "gamma"])
    alpha, beta, _gamma = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()
    # The replication hook is a stub naming its server's library: beta's, once replaced.
    assert (git_dir(alpha, "product") / "hooks/post-receive").read_bytes() == stub(str(alpha.home))
    ours = stub(str(beta.home))
    gamma_url = remote_url(beta, "product", "gamma")
    assert gamma_url is not None

    # Someone replaces beta's hook in product, and rewires a remote in tools/build-scripts.
    hook = git_dir(beta, "product") / "hooks/post-receive"
    beta.run(["sh", "-c", 'cat > "$1" && chmod 755 "$1"', "sh", str(hook)], input=FOREIGN_HOOK)
    tools = str(git_dir(beta, "tools/build-scripts"))
    beta.run(["git", "--git-dir", tools, "remote", "remove", "gamma"])
    beta.run(["git", "--git-dir", tools, "remote", "add", "gamma", "/srv/elsewhere.git"])
    beta.run(["git", "--git-dir", tools, "remote", "add", "backup", "/srv/backup.git"])

    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 3, plan
    assert plan["summary"]["conflicts"] == 2, plan
    conflicts = {
        (n["server"], n["subject"], n["target"]) for n in plan["notes"] if n["level"] == "conflict"
    }
    assert conflicts == {
        ("beta", "hook", "product post-receive"),
        ("beta", "remote", "tools/build-scripts remote gamma"),
    }
    warnings = [n for n in plan["notes"] if n["level"] == "warning" and n["server"] == "beta"]
    assert any("backup" in n["message"] for n in warnings), plan["notes"]
    assert not plan["actions"], plan["actions"]
    human = scenario.reconcile("plan")
    assert human.returncode == 3
    assert "product: hooks/post-receive is not the replication hook" in human.stdout

    applied = scenario.reconcile("apply", "--yes")
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stdout + applied.stderr
    assert hook.read_text() == FOREIGN_HOOK
    assert remote_url(beta, "tools/build-scripts", "gamma") == "/srv/elsewhere.git"
    again = scenario.reconcile("plan", "--detailed-exitcode")
    assert again.returncode == 3, again.stdout + again.stderr

    replaced = scenario.reconcile("apply", "--yes", "--replace-foreign")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert hook.read_bytes() == ours
    assert hook.stat().st_mode & 0o777 == 0o755 and hook.stat().st_uid == beta.uid
    expected = gamma_url.replace("/product.git", "/tools/build-scripts.git")
    assert remote_url(beta, "tools/build-scripts", "gamma") == expected
    # A remote with no peer's name is not the reconciler's to replace or remove.
    assert remote_url(beta, "tools/build-scripts", "backup") == "/srv/backup.git"
    scenario.assert_converged()

    # beta replicates again through the hook that replaced the foreign one.
    work = tmp_path / "alice-product"
    user_clone(cluster, scenario.alice, beta, "product", work)
    pushed = commit(work, "after the hook was replaced")
    push = user_git(cluster, scenario.alice, work, "push", "origin", "HEAD:refs/heads/main")
    assert "replicated to alpha" in push.stderr, push.stderr
    for server in cluster.servers:
        assert server_ref(server, "product", "refs/heads/main") == pushed, server.name
