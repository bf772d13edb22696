"""R1, R2, R3, R5 and R9 on one converged three-server cluster (real sshd, real git).

The scenarios share the cluster and run in file order; each works in its own
repository so their refs do not mix. The module runs twice: on a cluster in sync
mode (replication after the write, in post-receive) and on one in quorum mode
(the default for three servers: proc-receive acknowledges a push only once a
majority of the servers holds it, docs/quorum.md). Where the guarantee differs, a
scenario says what it asserts in quorum mode; the quorum runs use a smaller load
where the figures stay meaningful.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
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
# "REF: taken by N of 3 servers": the quorum hook's line for an acknowledged ref.
FETCH_AND_RETRY = "fetch and retry"
TAKEN = re.compile(r"(refs/\S+): taken by (\d) of 3 servers")

Cluster = tuple[SshCluster, Operator, str]


@pytest.fixture(scope="module", params=["sync", "quorum"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    from reconciler.testing.cluster import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    mode: str = request.param
    with started_cluster(3, ["alpha", "beta", "gamma"]) as made:
        operator = converge(
            made, tmp_path_factory.mktemp(f"replication-{mode}"), REPOSITORIES, PEOPLE, mode=mode
        )
        yield made, operator, mode


def holders(made: SshCluster, repository: str, ref: str, sha: str) -> int:
    """Servers whose ``ref`` is at ``sha`` now."""
    return sum(1 for s in made.servers if refs_of(s, repository).get(ref) == sha)


def taken_by(stderr: str) -> dict[str, int]:
    """Per ref, how many servers the quorum hook said took it."""
    return {ref: int(n) for ref, n in TAKEN.findall(stderr)}


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


def test_r9_modes_and_ownership(cluster: Cluster, report: Any) -> None:
    """R9: ~/.ssh 0700, keys and authorized_keys 0600, hooks 0755 owned by the git user,
    and no private key read: the private key's access time does not move during a plan
    (the file is made older first, so relatime would record a read).

    Quorum mode also: every mirrored repository's hooks/proc-receive is the git user's
    symlink to the 0755 stub (git runs it through the link), and the admin repository,
    which never votes, has none."""
    made, operator, mode = cluster
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
            link = hook.with_name("proc-receive")
            if mode == "quorum" and repository != "gitosis-admin":
                checked += 1
                if not link.is_symlink() or os.readlink(link) != "post-receive":
                    problems.append(f"{link}: not a link to post-receive")
                elif link.lstat().st_uid != uid:
                    problems.append(f"{link}: owned by uid {link.lstat().st_uid}")
            elif link.exists() or link.is_symlink():
                problems.append(f"{link}: present in {mode} mode")
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
    report(
        mode=mode,
        servers=len(made.servers),
        paths_checked=checked,
        bad=len(problems),
        keys_read=len(read),
    )
    assert not problems, "\n".join(problems)
    assert not read, f"private keys read during plan/status: {read}"


def test_r1_sixty_concurrent_pushes(cluster: Cluster, tmp_path: Path, report: Any) -> None:
    """R1: 60 pushes to distinct branches from 6 concurrent clients over 3 servers.

    Quorum mode: 30 pushes (6 clients x 5; each is a vote, not a push after the
    write), every one acknowledged with "taken by N of 3 servers", N >= 2, and the
    value on at least 2 servers the moment the push returns."""
    made, _operator, mode = cluster
    alice = made.new_identity("alice@desk")
    clients, per_client = (6, 10) if mode == "sync" else (6, 5)
    works = []
    for c in range(clients):
        work = tmp_path / f"client{c}"
        user_clone(made, alice, made.servers[c % 3], "load", work)
        works.append(work)
    expected: dict[str, str] = {}
    failures: list[str] = []
    queued = 0
    durations: list[float] = []
    taken: dict[str, int] = {}
    on_return: dict[str, int] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        nonlocal queued
        for k in range(per_client):
            branch = f"refs/heads/c{c}-b{k}"
            sha = commit(works[c], f"client {c} push {k}", path=f"c{c}.txt")
            started = time.monotonic()
            done = user_git(made, alice, works[c], "push", "origin", f"HEAD:{branch}", check=False)
            took = time.monotonic() - started
            held = holders(made, "load", branch, sha) if mode == "quorum" else 0
            with lock:
                durations.append(took)
                if done.returncode != 0:
                    failures.append(f"{branch}: {done.stderr.strip()}")
                    continue
                expected[branch] = sha
                queued += done.stderr.count("queued")
                taken.update(taken_by(done.stderr))
                on_return[branch] = held

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
    quorum_figures: dict[str, object] = {}
    if mode == "quorum":
        quorum_figures = {
            "taken_by_3": sum(1 for n in taken.values() if n == 3),
            "taken_by_2": sum(1 for n in taken.values() if n == 2),
            "fewest_holders_on_return": min(on_return.values(), default=0),
        }
    report(
        mode=mode,
        pushes=clients * per_client,
        acknowledged=len(expected),
        refused=len(failures),
        queued_lines=queued,
        **quorum_figures,
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
    if mode == "quorum":
        # The guarantee: acknowledged only once a majority (2 of 3) holds it.
        assert set(taken) == set(expected), sorted(set(expected) - set(taken))[:10]
        assert all(n >= 2 for n in taken.values()), taken
        assert all(n >= 2 for n in on_return.values()), on_return


def test_r2_peer_killed_during_burst(cluster: Cluster, tmp_path: Path, report: Any) -> None:
    """R2: gamma's sshd killed in the middle of a burst of pushes to all three
    servers, started again; apply --cron; every acknowledged push is everywhere.

    Quorum mode (8 pushes per client): with one of three down the pushes to alpha and
    beta are still acknowledged, by 2 of 3 (none of theirs refused), each on at least
    2 servers when it returns; only the pushes to gamma itself fail while it is down."""
    made, operator, mode = cluster
    _alpha, _beta, gamma = made.servers
    alice = made.new_identity("alice@desk")
    per_client, stop_after, start_after = (12, 3, 7) if mode == "sync" else (8, 2, 5)
    works = []
    for c, server in enumerate(made.servers):
        work = tmp_path / f"client{c}"
        user_clone(made, alice, server, "burst", work)
        works.append(work)
    acknowledged: dict[str, str] = {}
    refused: list[str] = []
    taken: dict[str, int] = {}
    on_return: dict[str, int] = {}
    done_by = [0, 0, 0]
    changed = threading.Condition()

    def client(c: int) -> None:
        for k in range(per_client):
            branch = f"refs/heads/s{c}-p{k}"
            sha = commit(works[c], f"server {c} push {k}", path=f"s{c}.txt")
            done = user_git(made, alice, works[c], "push", "origin", f"HEAD:{branch}", check=False)
            ok = done.returncode == 0
            held = holders(made, "burst", branch, sha) if mode == "quorum" and ok else 0
            with changed:
                if ok:
                    acknowledged[branch] = sha
                    taken.update(taken_by(done.stderr))
                    on_return[branch] = held
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
        wait_for(stop_after)
        gamma.stop()  # sshd and every session it runs, killed
        down = time.monotonic()
        wait_for(start_after)
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
    quorum_figures: dict[str, object] = {}
    if mode == "quorum":
        quorum_figures = {
            "taken_by_2_of_3": sum(1 for n in taken.values() if n == 2),
            "alpha_beta_refused": sum(1 for b in refused if not b.startswith("refs/heads/s2-")),
            "fewest_holders_on_return": min(on_return.values(), default=0),
        }
    report(
        mode=mode,
        pushes=3 * per_client,
        acknowledged=len(acknowledged),
        refused_while_down=len(refused),
        **quorum_figures,
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
    if mode == "quorum":
        assert all(b.startswith("refs/heads/s2-") for b in refused), refused
        assert set(taken) == set(acknowledged), sorted(set(acknowledged) - set(taken))
        assert all(n >= 2 for n in taken.values()), taken
        assert all(n >= 2 for n in on_return.values()), on_return
        assert quorum_figures["taken_by_2_of_3"], "no push was decided while gamma was down"


def test_r3_peer_that_never_answers(cluster: Cluster, tmp_path: Path, report: Any) -> None:
    """R3: gamma's sshd SIGSTOPped: the hook's push times out within the configured
    bound, the user's push returns, the update is queued; then repaired.

    Quorum mode: the vote waits for gamma no longer than the timeout, the pushes are
    acknowledged by alpha and beta (2 of 3) and queued for gamma. Then, with beta
    stopped as well, a push is refused (1 of 3) within the same bound, alpha's ref
    unchanged and nothing queued for it."""
    made, operator, mode = cluster
    alpha, beta, gamma = made.servers
    alice = made.new_identity("alice@desk")
    timeout = 4
    write_cluster_d(
        operator.checkout,
        cluster_document(made, REPOSITORIES, PEOPLE, timeout=timeout, mode=mode),
    )
    operator.reconcile("apply", "--yes", check=True)
    work = tmp_path / "stall"
    user_clone(made, alice, alpha, "stall", work)
    durations = []
    expected = {}
    refused_s = 0.0
    gamma.pause()
    try:
        for k in range(3):
            sha = commit(work, f"while gamma hangs {k}")
            started = time.monotonic()
            done = user_git(made, alice, work, "push", "origin", f"HEAD:refs/heads/hang{k}")
            durations.append(time.monotonic() - started)
            expected[f"refs/heads/hang{k}"] = sha
            assert "gamma" in done.stderr and "queued" in done.stderr, done.stderr
            if mode == "sync":
                assert "replicated to beta" in done.stderr, done.stderr
            else:
                assert taken_by(done.stderr) == {f"refs/heads/hang{k}": 2}, done.stderr
        if mode == "quorum":
            before = refs_of(alpha, "stall")
            commit(work, "while gamma hangs and beta is down")
            beta.stop()
            try:
                started = time.monotonic()
                done = user_git(
                    made,
                    alice,
                    work,
                    "push",
                    "origin",
                    "HEAD:refs/heads/hang-nomajority",
                    check=False,
                )
                refused_s = time.monotonic() - started
            finally:
                beta.start()
            assert done.returncode != 0, done.stderr
            assert (
                "refs/heads/hang-nomajority refused: 1 of 3 servers could take it "
                "(beta unreachable, gamma timeout); nothing changed"
            ) in done.stderr, done.stderr
            assert refs_of(alpha, "stall") == before
            assert refused_s < timeout + 8, refused_s
            # Refused: nothing queued as if it had been accepted.
            assert not [
                e for e in queue_entries(alpha) if e.get("ref") == "refs/heads/hang-nomajority"
            ]
    finally:
        gamma.resume()
    entries = [e for e in queue_entries(alpha) if e.get("repository") == "stall"]
    queued_refs = {e.get("ref") for e in entries if e.get("peer") == "gamma"}
    cron = operator.reconcile("apply", "--yes", "--cron")
    _waited, missing = wait_until_everywhere(made, "stall", expected)
    quorum_figures = {"refused_with_two_down_s": round(refused_s, 1)} if mode == "quorum" else {}
    report(
        mode=mode,
        configured_timeout_s=timeout,
        pushes=len(durations),
        slowest_push_s=round(max(durations), 1),
        **quorum_figures,
        queued=len(queued_refs),
        missing_after_cron=len(missing),
        commits_lost=len(missing),
    )
    assert max(durations) < timeout + 8, durations
    assert queued_refs == set(expected), entries
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert not missing, missing
    assert all("refs/heads/hang-nomajority" not in refs_of(s, "stall") for s in made.servers)


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


def test_r3_peer_listener_that_never_speaks(cluster: Cluster, tmp_path: Path, report: Any) -> None:
    """R3 (second form): gamma's peer_url points at a listener that accepts and never
    speaks: the hook's push to it times out within the bound and is queued; with the
    right peer_url back, apply --cron delivers it.

    Quorum mode: the vote gives up on gamma within the bound and the push is
    acknowledged by alpha and beta (2 of 3)."""
    made, operator, mode = cluster
    alpha, _beta, gamma = made.servers
    alice = made.new_identity("alice@desk")
    timeout = 4
    listener = SilentListener()
    try:
        document = json.loads(
            cluster_document(made, REPOSITORIES, PEOPLE, timeout=timeout, mode=mode)
        )
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
        operator.checkout,
        cluster_document(made, REPOSITORIES, PEOPLE, timeout=timeout, mode=mode),
    )
    cron = operator.reconcile("apply", "--yes", "--cron")
    _waited, missing = wait_until_everywhere(made, "stall", {"refs/heads/silent": sha})
    report(
        mode=mode,
        configured_timeout_s=timeout,
        connections_held=len(listener.accepted),
        push_s=round(took, 1),
        queued=len(queued),
        commits_lost=len(missing),
    )
    assert "gamma" in done.stderr and "queued" in done.stderr, done.stderr
    if mode == "quorum":
        assert taken_by(done.stderr) == {"refs/heads/silent": 2}, done.stderr
    assert took < timeout + 8, took
    assert listener.accepted, "the hook never reached the listener"
    assert queued, queue_entries(alpha)
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert not missing, missing


def test_r5_same_branch_two_servers(cluster: Cluster, tmp_path: Path, report: Any) -> None:
    """R5: the same branch pushed to two servers with different commits, 10 times:
    no commit lost, each divergence reported by status, nothing forced.

    Quorum mode: no divergence can be made. While beta is away alpha's pushes are
    acknowledged by alpha and gamma; beta, back and behind on those branches, refuses
    its client's pushes of them ("this server is behind on it ... fetch and retry").
    In the races at most one of the two pushes is acknowledged, with the value on 2
    servers when it returns; the other is refused with "fetch and retry". Status finds
    nothing diverged, apply converges every branch to its acknowledged value, and
    every refused commit is still in its client."""
    made, operator, mode = cluster
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
    refused: list[tuple[Path, str, str]] = []  # (client, commit, what the push said)
    # Half while beta is away (a true split brain), half as races with everyone up.
    beta.stop()
    for branch in branches[:5]:
        user_git(made, alice, work_a, "checkout", "--quiet", "-B", "w", base)
        on_alpha[branch] = commit(work_a, f"alpha {branch}")
        user_git(made, alice, work_a, "push", "origin", f"HEAD:{branch}")
    beta.start()
    for branch in branches[:5]:
        user_git(made, alice, work_b, "checkout", "--quiet", "-B", "w", base)
        mine = commit(work_b, f"beta {branch}")
        pushed = user_git(
            made, alice, work_b, "push", "origin", f"HEAD:{branch}", check=mode == "sync"
        )
        if pushed.returncode == 0:
            on_beta[branch] = mine
        else:
            refused.append((work_b, mine, pushed.stderr))
    behind_refusals = sum(1 for _w, _c, said in refused if "this server is behind on it" in said)
    beta_behind_refused = len(refused)
    rejected_races = 0
    acked_on_return: list[int] = []
    for branch in branches[5:]:
        user_git(made, alice, work_a, "checkout", "--quiet", "-B", "w", base)
        mine_a = commit(work_a, f"race alpha {branch}")
        user_git(made, alice, work_b, "checkout", "--quiet", "-B", "w", base)
        mine_b = commit(work_b, f"race beta {branch}")
        gate = threading.Barrier(2)

        def push(
            work: Path, gate: threading.Barrier = gate, branch: str = branch
        ) -> subprocess.CompletedProcess[str]:
            gate.wait(timeout=30)
            return user_git(made, alice, work, "push", "origin", f"HEAD:{branch}", check=False)

        with ThreadPoolExecutor(max_workers=2) as pool:
            ra, rb = pool.submit(push, work_a), pool.submit(push, work_b)
            for result, work, mine, acked in (
                (ra, work_a, mine_a, on_alpha),
                (rb, work_b, mine_b, on_beta),
            ):
                done = result.result()
                if done.returncode == 0:
                    acked[branch] = mine
                    if mode == "quorum":
                        acked_on_return.append(holders(made, "split", branch, mine))
                else:
                    refused.append((work, mine, done.stderr))
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
    # A refused commit is not lost while its client still has it.
    refused_lost = [
        sha
        for work, sha, _said in refused
        if subprocess.run(
            ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=work, check=False, timeout=60
        ).returncode
        != 0
    ]
    moved = sum(1 for b, a in zip(before, after, strict=True) for r in b if a.get(r) != b[r])
    quorum_figures: dict[str, object] = {}
    if mode == "quorum":
        quorum_figures = {
            "beta_behind_refused": beta_behind_refused,
            "refused_by_vote_behind": behind_refusals,
            "refused_saying_fetch_and_retry": sum(
                1 for _w, _c, said in refused if FETCH_AND_RETRY in said
            ),
            "refused_by_client_fetch_first": sum(
                1 for _w, _c, said in refused if "(fetch first)" in said
            ),
            "fewest_holders_on_return": min(acked_on_return, default=0),
            "refused_commits_lost": len(refused_lost),
        }
    report(
        mode=mode,
        rounds=len(branches),
        acknowledged_pushes=len(acknowledged),
        rejected_in_races=rejected_races,
        diverged_refs=len(both),
        reported_by_status=len(diverged & both),
        **quorum_figures,
        commits_lost=len(lost),
        **({"forced": moved} if mode == "sync" else {"moved_by_apply": moved}),
    )
    assert not lost
    assert not fsck_problems(made, "split")
    if mode == "quorum":
        _r5_quorum(made, branches, on_alpha, on_beta, refused, acked_on_return, after)
        assert status.returncode in (0, 2), status.stdout + status.stderr
        assert not diverged, diverged
        # Beta's first push after it came back found it behind (later ones may find it
        # caught up already, and then the client's own git says to fetch first).
        assert beta_behind_refused == 5 and behind_refusals >= 1, refused
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert not refused_lost, refused_lost
        return
    assert status.returncode == 3, status.stdout + status.stderr
    assert both <= diverged, (both, diverged)
    assert len(both) >= 5
    assert applied.returncode == 3, applied.stdout + applied.stderr
    # Nothing forced: every ref that existed keeps its value (the behind ones may advance
    # only by fast-forward, which for diverged refs means not at all).
    for b, a in zip(before, after, strict=True):
        for ref in both:
            assert a.get(ref) == b.get(ref)
    for branch in both:
        assert refs_of(alpha, "split")[branch] == on_alpha[branch]
        assert refs_of(beta, "split")[branch] == on_beta[branch]


def _r5_quorum(
    made: SshCluster,
    branches: list[str],
    on_alpha: dict[str, str],
    on_beta: dict[str, str],
    refused: list[tuple[Path, str, str]],
    acked_on_return: list[int],
    after: list[dict[str, str]],
) -> None:
    """R5's quorum guarantees: never two values acknowledged for one branch, each
    acknowledged value on a majority when its push returned and everywhere after apply,
    every refusal a sentence that says to fetch and retry."""
    assert not set(on_alpha) & set(on_beta), (on_alpha, on_beta)
    assert all(n >= 2 for n in acked_on_return), acked_on_return
    for _work, _sha, said in refused:
        # Refused by the hook (the vote's sentence, or git's own line when the other
        # value moved the ref on that server first), or, the other value already written
        # there when the client connected, by the client's git, which says to fetch first.
        assert FETCH_AND_RETRY in said or "(fetch first)" in said, said
    for branch in branches:
        value = on_alpha.get(branch) or on_beta.get(branch)
        if value is not None:
            assert [refs.get(branch) for refs in after] == [value] * len(after), branch
        else:  # neither push of that race was acknowledged: all still hold one value
            assert len({refs.get(branch) for refs in after}) == 1, branch
    assert made
