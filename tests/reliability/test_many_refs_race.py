"""Two pushes of the same 300 tag names, with different values, to two servers at the
same instant, in quorum mode, on three real sshd servers.

The one-push-per-peer proposals (lease_push) and the proposer taking its own locks
while it proposes are exercised under contention, ref by ref: never two acknowledged
values for one tag; each acknowledged value is on a majority when its push returns;
after a repair every server holds every acknowledged value.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing.cluster import SshCluster, SshServer
from reconciler.testing.recipe import Operator, commit, server_refs, user_clone

from .scenario import converge, started_cluster
from .test_many_refs import make_tags

pytestmark = pytest.mark.e2e

REPOSITORY = "releases"
PEOPLE = ["alice@desk"]
TAGS = 300
ROUNDS = 3
OK_FLAGS = " *+-="


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshCluster, Operator]]:
    from reconciler.testing.cluster import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with started_cluster(3, ["alpha", "beta", "gamma"]) as made:
        operator = converge(
            made, tmp_path_factory.mktemp("race"), [REPOSITORY], PEOPLE, timeout=60, mode="quorum"
        )
        yield made, operator


def tags_on(server: SshServer, prefix: str) -> dict[str, str]:
    return server_refs(server, REPOSITORY, f"refs/tags/{prefix}*")


def local_tags(work: Path, prefix: str) -> dict[str, str]:
    out = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", f"refs/tags/{prefix}*"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def acknowledged(porcelain: str) -> set[str]:
    """The refs a ``git push --porcelain`` reports as taken."""
    taken = set()
    for line in porcelain.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and len(parts[0]) == 1 and parts[0] in OK_FLAGS:
            taken.add(parts[1].rpartition(":")[2])
    return taken


def push_at_once(
    barrier: threading.Barrier,
    results: list[subprocess.CompletedProcess[str] | None],
    i: int,
    url: str,
    work: Path,
    prefix: str,
    env: dict[str, str],
) -> None:
    barrier.wait()
    results[i] = subprocess.run(
        [
            "git",
            "push",
            "--porcelain",
            f"{url}/{REPOSITORY}.git",
            f"refs/tags/{prefix}*:refs/tags/{prefix}*",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_two_pushes_of_the_same_300_tags_to_two_servers_at_once(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    made, operator = cluster
    alpha, beta, _gamma = made.servers
    identity = made.new_identity(PEOPLE[0])
    works = []
    for server in (alpha, beta):
        work = tmp_path / f"work-{server.name}"
        user_clone(made, identity, server, REPOSITORY, work)
        works.append(work)

    figures = {"acknowledged": 0, "refused": 0, "refused_by_both": 0, "two_values": 0}
    for round_ in range(ROUNDS):
        prefix = f"race{round_}-"
        for work in works:
            commit(work, f"{work.name} round {round_}")  # each side tags its own commit
            make_tags(work, prefix, TAGS)
        values = [local_tags(work, prefix) for work in works]
        barrier = threading.Barrier(2, timeout=60)
        results: list[subprocess.CompletedProcess[str] | None] = [None, None]
        env = made.git_env(identity)
        threads = [
            threading.Thread(
                target=push_at_once, args=(barrier, results, i, s.url, works[i], prefix, env)
            )
            for i, s in enumerate((alpha, beta))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=320)
        done = [r for r in results if r is not None]
        assert len(done) == 2, "a push did not return"
        taken = [acknowledged(r.stdout) for r in done]
        on_servers = [tags_on(s, prefix) for s in made.servers]

        both = taken[0] & taken[1]
        figures["two_values"] += len(both)
        figures["acknowledged"] += len(taken[0]) + len(taken[1])
        every = set(values[0])
        figures["refused"] += 2 * len(every) - len(taken[0]) - len(taken[1])
        figures["refused_by_both"] += len(every - taken[0] - taken[1])
        assert not both, f"round {round_}: acknowledged by both pushes: {sorted(both)[:5]}"
        for i, refs in enumerate(taken):
            for ref in refs:
                holders = sum(1 for held in on_servers if held.get(ref) == values[i][ref])
                assert holders >= 2, (round_, ref, holders, done[i].stderr[-2000:])

        repaired = operator.reconcile("apply", "--yes")
        assert repaired.returncode in (0, 3), repaired.stdout + repaired.stderr
        after = [tags_on(s, prefix) for s in made.servers]
        for i, refs in enumerate(taken):
            for ref in refs:
                assert all(held.get(ref) == values[i][ref] for held in after), (round_, ref)
        again = operator.reconcile("plan", "--detailed-exitcode")
        assert again.returncode in (0, 3), again.stdout + again.stderr

    report(rounds=ROUNDS, tags=TAGS, **figures)
    assert figures["acknowledged"] > 0
