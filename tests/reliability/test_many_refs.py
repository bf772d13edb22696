"""A push of one branch and 3,000 tags on three real sshd servers, in sync, async and quorum
mode: every tag reaches both peers (in quorum mode, as the peers' votes: each is taken by
3 of 3 before it is written), and the replication costs a fixed number of git processes
whatever the number of refs (counted with git's own trace2 events on every server, not
with timings: a per-ref or per-chunk process shows as a count that grows with the refs).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing.cluster import SshCluster, SshServer
from reconciler.testing.recipe import Operator, commit, ref_count, user_clone, write_cluster_d

from .scenario import cluster_document, converge, queue_entries, started_cluster

pytestmark = pytest.mark.e2e

REPOSITORY = "releases"
PEOPLE = ["alice@desk"]
MANY = 3000
FEW = 10
WAIT_SECONDS = 180.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshCluster, Operator]]:
    from reconciler.testing.cluster import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with started_cluster(3, ["alpha", "beta", "gamma"]) as made:
        operator = converge(
            made, tmp_path_factory.mktemp("many"), [REPOSITORY], PEOPLE, timeout=120
        )
        for server in made.servers:
            # Every git process of the server's user appends its events here.
            server.run(["git", "config", "--global", "trace2.eventTarget", str(trace(server))])
        yield made, operator


def trace(server: SshServer) -> Path:
    return server.home / "trace2.json"


def started_gits(server: SshServer) -> list[list[str]]:
    """argv of every git process the server's user started since the last reset."""
    try:
        lines = trace(server).read_text().splitlines()
    except FileNotFoundError:
        return []
    events = [json.loads(line) for line in lines if '"event":"start"' in line]
    return [event["argv"] for event in events]


def reset_traces(made: SshCluster) -> None:
    for server in made.servers:
        with open(trace(server), "w"):
            pass  # emptied in place: the file stays the server user's


def make_tags(work: Path, prefix: str, count: int) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True
    ).stdout.strip()
    lines = []
    for i in range(count):
        message = f"release {prefix}{i}\n"
        lines += [
            f"tag {prefix}{i:05d}",
            f"from {head}",
            "tagger Tester <t@t> 1700000000 +0000",
            f"data {len(message)}",
            message,
        ]
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=work,
        input="\n".join(lines).encode(),
        check=True,
        timeout=120,
    )


def push_tags(made: SshCluster, work: Path, prefix: str, count: int) -> tuple[str, float]:
    commit(work, f"release batch {prefix}")
    make_tags(work, prefix, count)
    started = time.monotonic()
    done = subprocess.run(
        [
            "git",
            "push",
            f"{made.servers[0].url}/{REPOSITORY}.git",
            "HEAD:refs/heads/main",
            f"refs/tags/{prefix}*:refs/tags/{prefix}*",
        ],
        cwd=work,
        env=made.git_env(made.new_identity(PEOPLE[0])),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr, time.monotonic() - started


def wait_replicated(made: SshCluster, prefix: str, count: int) -> tuple[dict[str, int], float]:
    """Poll (bounded) until every server holds the batch's tags; tags per server."""
    started = time.monotonic()
    counts: dict[str, int] = {}
    while time.monotonic() - started < WAIT_SECONDS:
        counts = {s.name: tag_count(s, prefix) for s in made.servers}
        idle = not queue_entries(made.servers[0]) and not _drainer_running(made.servers[0])
        if all(n == count for n in counts.values()) and idle:
            break
        time.sleep(0.5)
    return counts, time.monotonic() - started


def tag_count(server: SshServer, prefix: str) -> int:
    """The batch's tags on ``server``, read without adding to its trace."""
    return ref_count(server, REPOSITORY, f"refs/tags/{prefix}*", {"GIT_TRACE2_EVENT": "0"})


def _shown(argvs: list[list[str]]) -> list[str]:
    return sorted(" ".join(a)[:200] for a in argvs)


def _subcommand(argv: list[str]) -> str:
    """git's command in ``argv`` ("push" for ``git -c k=v push ...``)."""
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in ("-c", "-C") else rest[1:]
    return rest[0] if rest else ""


def _drainer_running(server: SshServer) -> bool:
    done = subprocess.run(
        ["pgrep", "-u", str(server.uid), "-f", "--drain"], capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.mark.parametrize("mode", ["sync", "async", "quorum"])
def test_a_push_of_3000_tags_replicates_every_tag_with_a_fixed_number_of_gits(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, mode: str, report: Any
) -> None:
    made, operator = cluster
    write_cluster_d(
        operator.checkout, cluster_document(made, [REPOSITORY], PEOPLE, timeout=120, mode=mode)
    )
    operator.reconcile("apply", "--yes", check=True)
    work = tmp_path / "work"
    user_clone(made, made.new_identity(PEOPLE[0]), made.servers[0], REPOSITORY, work)
    # Go on from the branch an earlier mode pushed, if any.
    subprocess.run(["git", "checkout", "-q", "-B", "main", "origin/main"], cwd=work, check=False)

    gits: dict[int, dict[str, list[list[str]]]] = {}
    seconds: dict[int, float] = {}
    for count in (FEW, MANY):
        prefix = f"{mode}-{count}-"
        reset_traces(made)
        said, took = push_tags(made, work, prefix, count)
        if mode == "sync":
            assert "replicated to beta" in said and "replicated to gamma" in said, said
        if mode == "quorum":
            assert f"refs/tags/{prefix}00000: taken by 3 of 3 servers" in said, said
            if count > 20:
                more = f"and {count + 1 - 20} more refs, each taken by 3 or more servers"
                assert more in said, said
            assert "did not take" not in said and "refused" not in said, said
        tags, waited = wait_replicated(made, prefix, count)
        assert tags == {s.name: count for s in made.servers}, tags
        seconds[count] = took + (waited if mode == "async" else 0.0)
        gits[count] = {s.name: started_gits(s) for s in made.servers}

    assert not queue_entries(made.servers[0])
    report(
        mode=mode,
        tags=MANY,
        seconds_few=round(seconds[FEW], 2),
        seconds_many=round(seconds[MANY], 2),
        gits_few={name: len(argvs) for name, argvs in gits[FEW].items()},
        gits_many={name: len(argvs) for name, argvs in gits[MANY].items()},
    )
    for server in made.servers:
        few, many = gits[FEW][server.name], gits[MANY][server.name]
        # The same processes for 3,000 refs as for 10: nothing runs per ref or per chunk.
        assert len(many) == len(few), (server.name, _shown(few), _shown(many))
        pushes = [a for a in many if _subcommand(a) == "push"]
        # One push per peer, from the pushed-to server only: in quorum mode its
        # proposals (nothing is put back or queued: every peer takes every ref).
        assert len(pushes) <= 2, pushes
        # And none names the refs one by one: git 2.39 matches every explicit refspec
        # and lease against every ref, seconds of CPU for thousands of them.
        assert all(len(a) <= 16 for a in pushes), [len(a) for a in pushes]
