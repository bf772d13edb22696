"""R1, R2, R3, R5 and R9 on one converged three-server cluster (real sshd, real git).

The scenarios share the cluster and run in file order; each works in its own
repository so their refs do not mix.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reconciler.server.hooks import stub
from reconciler.testing.cluster import SshCluster
from reconciler.testing.recipe import Operator, commit, user_clone, user_git, write_cluster_d

from .scenario import (
    cluster_document,
    converge,
    fsck_problems,
    has_commit,
    queue_entries,
    refs_of,
    started_cluster,
)

pytestmark = pytest.mark.e2e

REPOSITORIES = ["load", "burst", "stall", "split"]
PEOPLE = ["alice@desk"]
WAIT_SECONDS = 90.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshCluster, Operator]]:
    from reconciler.testing.cluster import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with started_cluster(3, ["alpha", "beta", "gamma"]) as made:
        operator = converge(made, tmp_path_factory.mktemp("replication"), REPOSITORIES, PEOPLE)
        yield made, operator


def wait_until_everywhere(
    cluster: SshCluster, repository: str, expected: dict[str, str]
) -> tuple[float, list[str]]:
    """Poll (bounded) until every expected ref has its value on every server."""
    started = time.monotonic()
    missing: list[str] = []
    while time.monotonic() - started < WAIT_SECONDS:
        values = {server.name: refs_of(server, repository) for server in cluster.servers}
        missing = [
            f"{name} {ref}"
            for name, refs in values.items()
            for ref, sha in expected.items()
            if refs.get(ref) != sha
        ]
        if not missing:
            break
        time.sleep(0.5)
    return time.monotonic() - started, missing


def test_r9_modes_and_ownership(cluster: tuple[SshCluster, Operator], report: Any) -> None:
    """R9: ~/.ssh 0700, keys and authorized_keys 0600, hooks 0755 owned by the git user,
    and no private key read: the private key's access time does not move during a plan
    (the file is made older first, so relatime would record a read)."""
    made, operator = cluster
    checked = 0
    problems: list[str] = []

    def expect(path: Path, mode: int, uid: int) -> None:
        nonlocal checked
        info = path.lstat()
        checked += 1
        if (
            stat.S_IMODE(info.st_mode) != mode
            or info.st_uid != uid
            or (not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode))
        ):
            problems.append(f"{path}: mode {stat.S_IMODE(info.st_mode):o} uid {info.st_uid}")

    for server in made.servers:
        uid = server.uid
        expect(server.home / ".ssh", 0o700, uid)
        expect(server.home / ".ssh/id_ed25519", 0o600, uid)
        expect(server.home / ".ssh/authorized_keys", 0o600, uid)
        expect(server.home / ".ssh/known_hosts", 0o600, uid)
        for repository in [*REPOSITORIES, "gitosis-admin"]:
            hook = server.home / "repositories" / f"{repository}.git/hooks/post-receive"
            expect(hook, 0o755, uid)
            if hook.read_bytes() != stub(str(server.home)):
                problems.append(f"{hook}: not the replication hook")
        # Everything under the home belongs to the git user.
        for path in server.home.rglob("*"):
            if path.lstat().st_uid != uid:
                problems.append(f"{path}: owned by uid {path.lstat().st_uid}")
    # No private key read: push every private key's atime into the past, plan, compare.
    keys = [server.home / ".ssh/id_ed25519" for server in made.servers]
    past = time.time() - 3 * 86400
    for key in keys:
        os.utime(key, (past, key.stat().st_mtime))
    before = {key: key.stat().st_atime for key in keys}
    # The check can fail: a file read the same way shows a new access time.
    decoy = made.servers[0].home / ".ssh/decoy"
    decoy.write_text("decoy\n")
    os.utime(decoy, (past, decoy.stat().st_mtime))
    decoy_before = decoy.stat().st_atime
    made.servers[0].run(["cat", str(decoy)])
    assert decoy.stat().st_atime != decoy_before, "access times are not recorded here"
    decoy.unlink()
    plan = operator.reconcile("plan", "--detailed-exitcode")
    status = operator.reconcile("status")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert status.returncode == 0, status.stdout + status.stderr
    read = [str(key) for key in keys if key.stat().st_atime != before[key]]
    report(servers=len(made.servers), paths_checked=checked, bad=len(problems), keys_read=len(read))
    assert not problems, "\n".join(problems)
    assert not read, f"private keys read during plan/status: {read}"


def test_r1_sixty_concurrent_pushes(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    """R1: 60 pushes to distinct branches from 6 concurrent clients over 3 servers."""
    made, _operator = cluster
    alice = made.new_identity("alice@desk")
    clients, per_client = 6, 10
    works = []
    for c in range(clients):
        work = tmp_path / f"client{c}"
        user_clone(made, alice, made.servers[c % 3], "load", work)
        works.append(work)
    expected: dict[str, str] = {}
    failures: list[str] = []
    queued = 0
    durations: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        nonlocal queued
        for k in range(per_client):
            branch = f"refs/heads/c{c}-b{k}"
            sha = commit(works[c], f"client {c} push {k}", path=f"c{c}.txt")
            started = time.monotonic()
            done = user_git(made, alice, works[c], "push", "origin", f"HEAD:{branch}", check=False)
            with lock:
                durations.append(time.monotonic() - started)
                if done.returncode != 0:
                    failures.append(f"{branch}: {done.stderr.strip()}")
                    continue
                expected[branch] = sha
                queued += done.stderr.count("queued")

    wall = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client, c) for c in range(clients)]:
            future.result()
    wall = time.monotonic() - wall
    waited, missing = wait_until_everywhere(made, "load", expected)
    fsck = fsck_problems(made, "load")
    lost = sum(
        1 for sha in expected.values() for s in made.servers if not has_commit(s, "load", sha)
    )
    report(
        pushes=clients * per_client,
        acknowledged=len(expected),
        refused=len(failures),
        queued_lines=queued,
        push_wall_s=round(wall, 1),
        slowest_push_s=round(max(durations), 1),
        settle_wait_s=round(waited, 1),
        missing=len(missing),
        commits_lost=lost,
        fsck_problems=len(fsck),
    )
    assert not failures, "\n".join(failures)
    assert not missing, missing[:20]
    assert lost == 0
    assert not fsck, fsck


def test_r2_peer_killed_during_burst(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    """R2: gamma's sshd killed in the middle of a burst of pushes to all three
    servers, started again; apply --cron; every acknowledged push is everywhere."""
    made, operator = cluster
    _alpha, _beta, gamma = made.servers
    alice = made.new_identity("alice@desk")
    per_client = 12
    works = []
    for c, server in enumerate(made.servers):
        work = tmp_path / f"client{c}"
        user_clone(made, alice, server, "burst", work)
        works.append(work)
    acknowledged: dict[str, str] = {}
    refused: list[str] = []
    done_by = [0, 0, 0]
    changed = threading.Condition()

    def client(c: int) -> None:
        for k in range(per_client):
            branch = f"refs/heads/s{c}-p{k}"
            sha = commit(works[c], f"server {c} push {k}", path=f"s{c}.txt")
            done = user_git(made, alice, works[c], "push", "origin", f"HEAD:{branch}", check=False)
            with changed:
                if done.returncode == 0:
                    acknowledged[branch] = sha
                else:
                    refused.append(branch)
                done_by[c] += 1
                changed.notify_all()
            if done.returncode != 0:
                time.sleep(0.5)

    def wait_for(count: int) -> None:
        """Until the alpha and beta clients have each finished ``count`` pushes."""
        with changed:
            assert changed.wait_for(lambda: min(done_by[:2]) >= count, timeout=300)

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(client, c) for c in range(3)]
        wait_for(3)
        gamma.stop()  # sshd and every session it runs, killed
        down = time.monotonic()
        wait_for(7)
        queued = sum(len(queue_entries(s)) for s in made.servers)
        gamma.start()
        down = time.monotonic() - down
        for future in futures:
            future.result(timeout=600)
    cron = operator.reconcile("apply", "--yes", "--cron")
    assert cron.returncode == 0, cron.stdout + cron.stderr
    lost = [
        f"{server.name} {branch}"
        for branch, sha in acknowledged.items()
        for server in made.servers
        if refs_of(server, "burst").get(branch) != sha
    ]
    values = [refs_of(s, "burst") for s in made.servers]
    fsck = fsck_problems(made, "burst")
    again = operator.reconcile("plan", "--detailed-exitcode")
    report(
        pushes=3 * per_client,
        acknowledged=len(acknowledged),
        refused_while_down=len(refused),
        gamma_down_s=round(down, 1),
        queue_entries_while_down=queued,
        commits_lost=len(lost),
        fsck_problems=len(fsck),
    )
    assert queued > 0, "gamma was not down long enough for anything to queue"
    assert not lost, lost
    assert values[0] == values[1] == values[2]
    assert not fsck, fsck
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(not queue_entries(s) for s in made.servers)


def test_r3_peer_that_never_answers(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    """R3: gamma's sshd SIGSTOPped: the hook's push times out within the configured
    bound, the user's push returns, the update is queued; then repaired."""
    made, operator = cluster
    alpha, _beta, gamma = made.servers
    alice = made.new_identity("alice@desk")
    timeout = 4
    write_cluster_d(
        operator.checkout, cluster_document(made, REPOSITORIES, PEOPLE, timeout=timeout)
    )
    operator.reconcile("apply", "--yes", check=True)
    work = tmp_path / "stall"
    user_clone(made, alice, alpha, "stall", work)
    durations = []
    expected = {}
    gamma.pause()
    try:
        for k in range(3):
            sha = commit(work, f"while gamma hangs {k}")
            started = time.monotonic()
            done = user_git(made, alice, work, "push", "origin", f"HEAD:refs/heads/hang{k}")
            durations.append(time.monotonic() - started)
            expected[f"refs/heads/hang{k}"] = sha
            assert "gamma" in done.stderr and "queued" in done.stderr, done.stderr
            assert "replicated to beta" in done.stderr, done.stderr
    finally:
        gamma.resume()
    entries = [e for e in queue_entries(alpha) if e.get("repository") == "stall"]
    queued_refs = {e.get("ref") for e in entries if e.get("peer") == "gamma"}
    cron = operator.reconcile("apply", "--yes", "--cron")
    _waited, missing = wait_until_everywhere(made, "stall", expected)
    report(
        configured_timeout_s=timeout,
        pushes=len(durations),
        slowest_push_s=round(max(durations), 1),
        queued=len(queued_refs),
        missing_after_cron=len(missing),
        commits_lost=len(missing),
    )
    assert max(durations) < timeout + 8, durations
    assert queued_refs == set(expected), entries
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert not missing, missing


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(connection)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()
        self.sock.close()


def test_r3_peer_listener_that_never_speaks(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    """R3 (second form): gamma's peer_url points at a listener that accepts and never
    speaks: the hook's push to it times out within the bound and is queued; with the
    right peer_url back, apply --cron delivers it."""
    made, operator = cluster
    alpha, _beta, gamma = made.servers
    alice = made.new_identity("alice@desk")
    timeout = 4
    listener = SilentListener()
    try:
        document = json.loads(cluster_document(made, REPOSITORIES, PEOPLE, timeout=timeout))
        document["servers"]["gamma"]["peer_url"] = f"ssh://{gamma.user}@127.0.0.1:{listener.port}"
        write_cluster_d(operator.checkout, json.dumps(document, indent=2))
        operator.reconcile("apply", "--yes", check=True)
        work = tmp_path / "silent"
        user_clone(made, alice, alpha, "stall", work)
        sha = commit(work, "gamma's address says nothing")
        started = time.monotonic()
        done = user_git(made, alice, work, "push", "origin", "HEAD:refs/heads/silent")
        took = time.monotonic() - started
    finally:
        listener.close()
    queued = [
        e
        for e in queue_entries(alpha)
        if e.get("ref") == "refs/heads/silent" and e.get("peer") == "gamma"
    ]
    write_cluster_d(
        operator.checkout, cluster_document(made, REPOSITORIES, PEOPLE, timeout=timeout)
    )
    cron = operator.reconcile("apply", "--yes", "--cron")
    _waited, missing = wait_until_everywhere(made, "stall", {"refs/heads/silent": sha})
    report(
        configured_timeout_s=timeout,
        connections_held=len(listener.accepted),
        push_s=round(took, 1),
        queued=len(queued),
        commits_lost=len(missing),
    )
    assert "gamma" in done.stderr and "queued" in done.stderr, done.stderr
    assert took < timeout + 8, took
    assert listener.accepted, "the hook never reached the listener"
    assert queued, queue_entries(alpha)
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert not missing, missing


def test_r5_same_branch_two_servers(
    cluster: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    """R5: the same branch pushed to two servers with different commits, 10 times:
    no commit lost, each divergence reported by status, nothing forced."""
    made, operator = cluster
    alpha, beta, _gamma = made.servers
    alice = made.new_identity("alice@desk")
    work_a, work_b = tmp_path / "a", tmp_path / "b"
    user_clone(made, alice, alpha, "split", work_a)
    base = commit(work_a, "base")
    branches = [f"refs/heads/d{i}" for i in range(10)]
    user_git(made, alice, work_a, "push", "origin", *(f"HEAD:{b}" for b in branches))
    user_clone(made, alice, beta, "split", work_b)
    on_alpha: dict[str, str] = {}
    on_beta: dict[str, str] = {}
    # Half while beta is away (a true split brain), half as races with everyone up.
    beta.stop()
    for branch in branches[:5]:
        user_git(made, alice, work_a, "checkout", "--quiet", "-B", "w", base)
        on_alpha[branch] = commit(work_a, f"alpha {branch}")
        user_git(made, alice, work_a, "push", "origin", f"HEAD:{branch}")
    beta.start()
    for branch in branches[:5]:
        user_git(made, alice, work_b, "checkout", "--quiet", "-B", "w", base)
        on_beta[branch] = commit(work_b, f"beta {branch}")
        user_git(made, alice, work_b, "push", "origin", f"HEAD:{branch}")
    rejected_races = 0
    for branch in branches[5:]:
        user_git(made, alice, work_a, "checkout", "--quiet", "-B", "w", base)
        mine_a = commit(work_a, f"race alpha {branch}")
        user_git(made, alice, work_b, "checkout", "--quiet", "-B", "w", base)
        mine_b = commit(work_b, f"race beta {branch}")
        gate = threading.Barrier(2)

        def push(work: Path, gate: threading.Barrier = gate, branch: str = branch) -> int:
            gate.wait(timeout=30)
            return user_git(
                made, alice, work, "push", "origin", f"HEAD:{branch}", check=False
            ).returncode

        with ThreadPoolExecutor(max_workers=2) as pool:
            ra, rb = pool.submit(push, work_a), pool.submit(push, work_b)
            if ra.result() == 0:
                on_alpha[branch] = mine_a
            if rb.result() == 0:
                on_beta[branch] = mine_b
        rejected_races += (branch not in on_alpha) + (branch not in on_beta)

    status = operator.reconcile("status", "--json")
    data = json.loads(status.stdout)
    diverged = {
        r["ref"] for r in data["refs"] if r["repository"] == "split" and r["status"] == "diverged"
    }
    both = {b for b in branches if b in on_alpha and b in on_beta}
    before = [refs_of(s, "split") for s in made.servers]
    applied = operator.reconcile("apply", "--yes")
    after = [refs_of(s, "split") for s in made.servers]
    acknowledged = [*on_alpha.values(), *on_beta.values()]
    lost = [sha for sha in acknowledged if not any(sha in refs.values() for refs in after)]
    report(
        rounds=len(branches),
        acknowledged_pushes=len(acknowledged),
        rejected_in_races=rejected_races,
        diverged_refs=len(both),
        reported_by_status=len(diverged & both),
        commits_lost=len(lost),
        forced=sum(1 for b, a in zip(before, after, strict=True) for r in b if a.get(r) != b[r]),
    )
    assert status.returncode == 3, status.stdout + status.stderr
    assert both <= diverged, (both, diverged)
    assert len(both) >= 5
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert not lost
    # Nothing forced: every ref that existed keeps its value (the behind ones may advance
    # only by fast-forward, which for diverged refs means not at all).
    for b, a in zip(before, after, strict=True):
        for ref in both:
            assert a.get(ref) == b.get(ref)
    for branch in both:
        assert refs_of(alpha, "split")[branch] == on_alpha[branch]
        assert refs_of(beta, "split")[branch] == on_beta[branch]
    assert not fsck_problems(made, "split")
