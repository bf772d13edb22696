"""A hand edit of gitosis.conf is kept and shown as a conflict, never overwritten
silently.

gitosis users edit gitosis.conf by habit and push it to a server. Before, a cron
run fetched that commit, rendered cluster.d/ over it, committed and sent the render
everywhere with exit 0: the edit vanished from every server, the one where it had
been live included (found by trying the original gitosis by hand). The render now
carries a digest of its lines; a gitosis.conf whose lines no longer match it was
edited by hand, and apply commits no render over it until the operator runs
``reconcile render`` (after moving the change into cluster.d/, or to discard it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.testing.cluster import SshServer
from reconciler.testing.recipe import user_clone, user_git
from tests.e2e.scenario import start_scenario

pytestmark = pytest.mark.e2e

HAND_GROUP = "[group hand]\nmembers = alice@desk\nwritable = handmade\n"


def served_conf(server: SshServer) -> str:
    """gitosis.conf as the server's admin repository holds it (what gitosis serves)."""
    return subprocess.run(
        [
            "git",
            "--git-dir",
            str(server.home / "repositories/gitosis-admin.git"),
            "show",
            "HEAD:gitosis.conf",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_a_hand_edit_pushed_to_a_server_is_kept_and_named(
    ssh_cluster_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(2, names=["h0", "h1"])
    h0, h1 = cluster.servers
    scenario = start_scenario(cluster, tmp_path)  # the checkout's origin is h0
    scenario.apply_twice()

    # An admin edits gitosis.conf in a clone of h1's and pushes it there.
    laptop = tmp_path / "laptop"
    user_clone(cluster, cluster.admin, h1, "gitosis-admin", laptop)
    conf = laptop / "gitosis.conf"
    conf.write_text(conf.read_text() + "\n" + HAND_GROUP)
    user_git(cluster, cluster.admin, laptop, "commit", "-q", "-am", "hand edit")
    hand = user_git(cluster, cluster.admin, laptop, "rev-parse", "HEAD").stdout.strip()
    user_git(cluster, cluster.admin, laptop, "push", "origin", "HEAD:master")
    assert HAND_GROUP in served_conf(h1)

    for _run in range(2):
        cron = scenario.reconcile("apply", "--yes", "--cron")
        output = cron.stdout + cron.stderr
        assert cron.returncode == 3, output  # a conflict that needs a person
        assert "Traceback" not in output
        assert f"gitosis.conf was edited by hand (committed in {hand[:7]}" in output, output
        assert "run 'reconcile render'" in output, output
        # The edit is kept where it was live, and the checkout's HEAD (h1's commit)
        # reached the other server as the remote line of the push promised.
        for server in (h0, h1):
            assert HAND_GROUP in served_conf(server), server.name
    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 3, plan
    assert plan["actions"] == [], plan["actions"]
    conflicts = [n["target"] for n in plan["notes"] if n["level"] == "conflict"]
    assert conflicts == ["gitosis.conf"], plan["notes"]
    validate = scenario.reconcile("validate")
    assert validate.returncode == 1
    assert "gitosis.conf" in validate.stdout + validate.stderr
    assert "was edited by hand" in validate.stdout + validate.stderr

    # The operator lets the edit go: render, then apply sends the render everywhere.
    rendered = scenario.reconcile("render")
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    scenario.apply_twice()
    for server in (h0, h1):
        assert HAND_GROUP not in served_conf(server), server.name

    # An edit in the checkout's working tree is kept too, and named as not committed.
    checkout_conf = scenario.operator.checkout / "gitosis.conf"
    edited = checkout_conf.read_text() + "\n" + HAND_GROUP
    checkout_conf.write_text(edited)
    applied = scenario.reconcile("apply", "--yes")
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert "gitosis.conf was edited by hand (not committed)" in applied.stdout + applied.stderr
    assert checkout_conf.read_text() == edited
    for server in (h0, h1):
        assert HAND_GROUP not in served_conf(server), server.name
    assert scenario.reconcile("render").returncode == 0
    scenario.apply_twice()
