"""Temporaries a killed run left are removed by the next apply, even where it has
nothing else to write.

A run killed between writing a temporary and renaming it leaves the temporary; the
next write of the same file removes it, but when that file needs no write (it was
already right, or gitosis's hook wrote it) nothing did, and it stayed for ever
(CI: ``.ssh/.authorized_keys.reconciler-tmp-PID-…`` after R4's kill point 18).
Temporaries whose maker still runs, and dot files that are not the reconciler's
temporaries, stay.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.scenario import start_scenario

pytestmark = pytest.mark.e2e


def dead_pid() -> int:
    """A pid no process has now: a child that has ended and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait(timeout=30)
    return child.pid


def make(path: Path, uid: int, directory: bool = False) -> None:
    if directory:
        path.mkdir()
        (path / "HEAD").write_text("ref: refs/heads/master\n")
        os.chown(path / "HEAD", uid, -1)
    else:
        path.write_text("half of a file\n")
    os.chown(path, uid, -1)


def test_apply_removes_the_temporaries_of_killed_runs_only(
    ssh_cluster_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cluster = ssh_cluster_factory(2, names=["s0", "s1"])
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()

    s0 = cluster.servers[0]
    gone = dead_pid()
    abandoned = [
        (".ssh", f".authorized_keys.reconciler-tmp-{gone}-k2f8xq", False),
        ("gitosis", f".projects.list.reconciler-tmp-{gone}-a9b8c7", False),
        ("repositories/.reconciler/queue", f".product.reconciler-tmp-{gone}-1", False),
        ("repositories", f".fresh.git.tmp-{gone}-zz", True),
        ("repositories/tools", f".nested.git.tmp-{gone}-qq", True),
        ("repositories/gitosis-admin.git", f".reconciler-bundle-{gone}-b1", False),
        (".ssh", f".reconciler-keygen-{gone}-0a1b2c3d", False),
    ]
    kept = [
        # Its maker runs (this test): a live writer's, e.g. gitosis's hook on a push.
        (".ssh", f".authorized_keys.reconciler-tmp-{os.getpid()}-live", False),
        # Not the reconciler's names: a person's own files.
        (".ssh", ".authorized_keys.tmp", False),
        ("repositories", ".mine.git.tmp-notapid", True),
        ("", f".bashrc.tmp-{gone}-x", False),
    ]
    for directory, name, is_dir in abandoned + kept:
        parent = s0.home / directory
        if not parent.exists():
            parent.mkdir(parents=True)
            os.chown(parent, s0.uid, -1)  # as the git user's own run makes it
        make(parent / name, s0.uid, is_dir)

    code, plan = scenario.plan_json("--detailed-exitcode")
    assert code == 2, plan
    found = [a for a in plan["actions"] if a["subject"] == "leftovers"]
    assert [(a["server"], a["kind"]) for a in found] == [("s0", "remove")], plan["actions"]
    assert "remove 7 temporaries a killed run left" in found[0]["description"]
    assert len(plan["actions"]) == 1, plan["actions"]

    scenario.apply_twice()
    for directory, name, _is_dir in abandoned:
        assert not os.path.lexists(s0.home / directory / name), (directory, name)
    for directory, name, _is_dir in kept:
        assert os.path.lexists(s0.home / directory / name), (directory, name)
    # The repository walk still finds the repositories, and nothing else moved.
    scenario.assert_converged()
