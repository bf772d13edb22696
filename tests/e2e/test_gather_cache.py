"""The operator's cache of repository facts on real servers: a plan after the first
reads only what changed, changes nothing on any server, and still sees a hand edit
that leaves a file's size and modification time as they were."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.desired import load
from reconciler.gather import gather_facts, open_transports
from reconciler.gather_cache import cache_directory
from reconciler.server.fact_cache import RACY_NS
from tests.e2e.scenario import Scenario, home_snapshot, start_scenario

pytestmark = pytest.mark.e2e


def gather_in_process(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[int, int]]:
    """Each server's (repositories, of them answered unchanged), gathered as the
    operator's ``reconcile`` does (its HOME: its keys, known_hosts and cache)."""
    monkeypatch.setenv("HOME", str(scenario.operator.home))
    desired = load(scenario.operator.checkout)
    transports = open_transports(desired, desired.servers)
    try:
        facts = gather_facts(desired, transports)
    finally:
        for transport in transports.values():
            transport.close()
    assert not facts.errors, facts.errors
    return {
        name: (len(server.repositories), server.fact_cache_hits)
        for name, server in facts.servers.items()
    }


def edit_in_place(path: Path, old: bytes, new: bytes) -> None:
    """A hand edit that keeps the size and puts the modification time back."""
    before = path.stat()
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    with open(path, "r+b") as handle:
        handle.write(data.replace(old, new, 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_plans_read_only_what_changed_and_see_a_hand_edit(  # type: ignore[no-untyped-def]
    ssh_cluster_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ssh_cluster_factory(2, names=["c0", "c1"])
    _c0, c1 = cluster.servers
    scenario = start_scenario(cluster, tmp_path)
    scenario.apply_twice()
    # Facts are kept once their files have been still for the racy margin.
    time.sleep(RACY_NS / 1e9 + 0.2)
    before = {s.name: home_snapshot(s) for s in cluster.servers}
    scenario.assert_converged()  # reads everything, keeps it
    counts = gather_in_process(scenario, monkeypatch)
    assert counts == {"c0": (3, 3), "c1": (3, 3)}  # product, tools/build-scripts, gitosis-admin
    assert {s.name: home_snapshot(s) for s in cluster.servers} == before
    monkeypatch.setenv("HOME", str(scenario.operator.home))
    directory = cache_directory()
    assert directory is not None and len(list(directory.glob("*.marshal"))) == 2

    # A hand edit on c1: the peer remote's URL of product, size and mtime kept.
    config = c1.home / "repositories" / "product.git" / "config"
    edit_in_place(config, b"product.git", b"product.gix")
    done = scenario.reconcile("plan", "--detailed-exitcode")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "c1" in done.stdout and "product" in done.stdout, done.stdout
    off = scenario.operator.reconcile(
        "plan", "--detailed-exitcode", extra_env={"RECONCILER_GATHER_CACHE": "off"}
    )
    assert off.returncode == 2 and off.stdout == done.stdout, off.stdout + off.stderr
    scenario.apply_twice()
