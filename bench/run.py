"""The benchmark runner: every row of issue 6, as median and ratio to its floor.

    python -m bench --size tiny      # seconds; what the test suite runs
    python -m bench --size full      # 3 x 1000 and 3 x 10,000 repositories, 200 x 50 commits

Floors and measurements are interleaved run by run, so a noisy moment hurts both.
Needs root (real sshd servers, one OS user each; see reconciler.testing.cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.fixture import (
    FLOOR_REPOSITORY,
    PUSH_REPOSITORY,
    Scenario,
    Timed,
    reconcile_argv,
    repository_names,
    run_parallel,
    run_timed,
    ssh_argv,
    start_scenario,
)
from reconciler.server.fact_cache import RACY_NS
from reconciler.testing.cluster import SYSTEM_PYTHON, SshCluster, SshServer
from reconciler.testing.recipe import commit, ref_count, user_clone

ROOT = Path(__file__).resolve().parent.parent
SSH_POLL_LIMIT = 20.0
MANY_POLL_LIMIT = 300.0  # P12: thousands of refs, before and after the fix


@dataclass(frozen=True)
class Size:
    name: str
    small: int  # P1, P3, P5-P7: repositories per server
    large: int  # P2
    add_repositories: int  # P4
    add_commits: int  # P4
    commits: int  # history of every other repository
    runs: int
    large_runs: int
    add_runs: int
    tags: int = 3000  # P12: tags pushed with one branch


SIZES = {
    "tiny": Size("tiny", 10, 40, 3, 3, 3, 2, 2, 1, tags=50),
    "full": Size("full", 1000, 10_000, 200, 50, 20, 5, 3, 3, tags=3000),
}
# P12 runs in these replication modes unless --modes says otherwise.
P12_MODES = ("sync", "async", "quorum")


@dataclass
class Row:
    id: str
    measurement: str
    median: float | None
    floor: float | None
    unit: str
    target: str
    met: bool | None
    samples: list[float] = field(default_factory=list)
    floor_samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.median is None or not self.floor:
            return None
        return self.median / self.floor


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def check(done: Timed, what: str, codes: tuple[int, ...] = (0,)) -> Timed:
    if done.returncode not in codes:
        raise RuntimeError(
            f"{what} exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return done


# -- floors ---------------------------------------------------------------------------

# The floor of a gather: one python3 per server reading every file the plan needs.
FLOOR_READER = r"""
import os
def size(path):
    try:
        with open(path, "rb") as handle:
            return len(handle.read())
    except OSError:
        return 0
base = os.path.expanduser("~/repositories")
repositories = total = 0
stack = [(base, 0)]
while stack:
    directory, depth = stack.pop()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        continue
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.endswith(".git"):
            repositories += 1
            for name in ("config", "HEAD", "packed-refs", "hooks/post-receive"):
                total += size(os.path.join(entry.path, name))
            for root, _dirs, files in os.walk(os.path.join(entry.path, "refs")):
                for name in files:
                    total += size(os.path.join(root, name))
        elif depth < 12:
            stack.append((entry.path, depth + 1))
print(repositories, total)
"""


def gather_floor(cluster: SshCluster, servers: Sequence[SshServer]) -> float:
    commands = [[*ssh_argv(cluster, s), "python3", "-"] for s in servers]
    results = run_parallel(commands, stdin=FLOOR_READER.encode())
    for done in results:
        check(done, "the floor reader")
    return results[0].seconds


def python_floor() -> float:
    return check(run_timed([sys.executable, "-c", "pass"]), "python -c pass").seconds


# -- measurements -------------------------------------------------------------------


def plan_time(scenario: Scenario, *, cold: bool = False, unread: bool = False) -> Timed:
    """``reconcile plan``; ``cold``: without the cluster.d/ parse cache (as the first
    plan after an edit of cluster.d/); ``unread``: without the operator's cache of the
    servers' repository facts (as the first plan from a new machine, or after an
    upgrade: every repository is read)."""
    extra = {}
    if cold:
        extra["RECONCILER_YAML_CACHE"] = "off"
    if unread:
        extra["RECONCILER_GATHER_CACHE"] = "off"
    done = scenario.must("plan", "--detailed-exitcode", extra_env=extra or None)
    if "No changes" not in done.stdout:
        raise RuntimeError(f"the cluster is not converged:\n{done.stdout[-2000:]}")
    return done


@dataclass
class PlanTimes:
    plans: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    colds: list[float] = field(default_factory=list)
    unread: list[float] = field(default_factory=list)


def measure_plan(scenario: Scenario, runs: int, row: str, count: int) -> PlanTimes:
    servers = scenario.cluster.servers
    times = PlanTimes()
    # A converged cluster is one that has been still for a while: the facts of files
    # changed within the racy margin are read again by every plan until it has passed
    # (reconciler.server.fact_cache), and the converge has just changed many.
    time.sleep(RACY_NS / 1e9)
    plan_time(scenario)  # warm the page cache and the operator's cache of facts
    for _ in range(runs):
        times.floors.append(gather_floor(scenario.cluster, servers))
        done = plan_time(scenario)
        times.plans.append(done.seconds)
        times.memory.append(done.max_rss_mb)
        times.colds.append(plan_time(scenario, cold=True).seconds)
        times.unread.append(plan_time(scenario, unread=True).seconds)
    log(
        f"{row}: plan {median(times.plans):.3f}s, floor {median(times.floors):.3f}s "
        f"at {count} repositories"
    )
    return times


def cold_row(id: str, count: int, times: PlanTimes) -> list[Row]:
    rows = [
        Row(
            id,
            f"plan at 3 x {count} right after cluster.d/ changed (parsed afresh: no YAML cache)",
            median(times.colds),
            median(times.floors),
            "s",
            "(for information)",
            None,
            times.colds,
            times.floors,
        ),
        Row(
            id,
            f"plan at 3 x {count} reading every repository (RECONCILER_GATHER_CACHE=off: "
            "a new operator machine, or the first plan after an upgrade)",
            median(times.unread),
            median(times.floors),
            "s",
            "(for information)",
            None,
            times.unread,
            times.floors,
        ),
    ]
    for row in rows:
        log(f"{id}: {row.measurement[:48]}... {row.median:.3f}s, {row.ratio:.2f}x")
    return rows


def measure_apply_noop(scenario: Scenario, runs: int) -> tuple[list[float], list[float]]:
    applies: list[float] = []
    plans: list[float] = []
    for _ in range(runs):
        plans.append(plan_time(scenario).seconds)
        done = scenario.must("apply", "--yes")
        if "No changes" not in done.stdout:
            raise RuntimeError(f"apply found something to do:\n{done.stdout[-2000:]}")
        applies.append(done.seconds)
    return applies, plans


def measure_status(scenario: Scenario, runs: int) -> tuple[list[float], list[float], str]:
    probe = scenario.reconcile("status")
    if "not implemented" in probe.stderr:
        return [], [], "reconcile status is not implemented on this branch yet"
    statuses: list[float] = []
    floors: list[float] = []
    for _ in range(runs):
        floors.append(gather_floor(scenario.cluster, scenario.cluster.servers))
        statuses.append(check(scenario.reconcile("status"), "reconcile status").seconds)
    return statuses, floors, ""


def measure_metrics(scenario: Scenario, runs: int) -> tuple[list[float], list[float], str]:
    """``status --format prometheus`` against ``status`` itself, interleaved; the
    exposition must pass ``promtool check metrics`` (when promtool is installed)."""
    from reconciler.testing.promtool import run_promtool, unavailable_reason

    exports: list[float] = []
    statuses: list[float] = []
    output = ""
    for _ in range(runs):
        statuses.append(check(scenario.reconcile("status"), "reconcile status").seconds)
        done = check(scenario.reconcile("status", "--format", "prometheus"), "status --format")
        exports.append(done.seconds)
        output = done.stdout
    why = unavailable_reason()
    if why is not None:
        return exports, statuses, f"not checked: {why}"
    checked = run_promtool("check", "metrics", stdin=output)
    if checked.returncode != 0:
        raise RuntimeError(f"promtool check metrics failed:\n{checked.stdout}{checked.stderr}")
    series = sum(1 for line in output.splitlines() if line and not line.startswith("#"))
    return exports, statuses, f"promtool check metrics passed; {series} series"


def measure_startup(workdir: Path, runs: int) -> tuple[list[float], list[float], list[float]]:
    """``reconcile --help`` and ``reconcile validate`` on the example cluster.d/."""
    example = workdir / "example"
    shutil.copytree(ROOT / "cluster.d", example / "cluster.d")
    check(run_timed([*reconcile_argv(), "render", "-C", str(example)]), "reconcile render")
    helps: list[float] = []
    validates: list[float] = []
    floors: list[float] = []
    for _ in range(runs):
        floors.append(python_floor())
        helps.append(check(run_timed([*reconcile_argv(), "--help"]), "reconcile --help").seconds)
        validates.append(
            check(
                run_timed([*reconcile_argv(), "validate", "-C", str(example)]), "reconcile validate"
            ).seconds
        )
    return helps, validates, floors


# -- replication --------------------------------------------------------------------


def read_ref(server: SshServer, repository: str, ref: str) -> str | None:
    """A ref's value read straight from the files (no process: this is polled)."""
    gitdir = server.home / "repositories" / f"{repository}.git"
    try:
        return (gitdir / ref).read_text().strip()
    except OSError:
        pass
    try:
        packed = (gitdir / "packed-refs").read_text()
    except OSError:
        return None
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    return None


def wait_visible(
    servers: Sequence[SshServer], repository: str, ref: str, sha: str, limit: float = SSH_POLL_LIMIT
) -> float:
    """Poll (bounded) until every server has ``ref`` at ``sha``; the time it was seen."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if all(read_ref(s, repository, ref) == sha for s in servers):
            return time.perf_counter()
        time.sleep(0.002)
    raise RuntimeError(f"{sha[:12]} did not reach {ref} of {repository} on every peer")


@dataclass
class Pusher:
    scenario: Scenario
    work: Path
    counter: int = 0

    def new_commit(self) -> str:
        self.counter += 1
        return commit(self.work, f"bench change {self.counter}")

    def push(self, *urls: str) -> Timed:
        env = self.scenario.cluster.git_env(self.scenario.alice)
        results = run_parallel(
            [["git", "push", "--quiet", url, "HEAD:refs/heads/master"] for url in urls],
            env=env,
            cwd=self.work,
        )
        for done in results:
            check(done, "git push")
        return results[0]


def remove_floor_hooks(scenario: Scenario) -> None:
    """The floor repository must take a push without running anything (apply puts the
    hook back, so this follows every apply)."""
    for server in scenario.cluster.servers:
        hooks = server.home / "repositories" / f"{FLOOR_REPOSITORY}.git" / "hooks"
        names = ("post-receive", "proc-receive", "reference-transaction")
        server.run(["rm", "-f", *(str(hooks / name) for name in names)])
        # Without its hook, a repository that hands pushes to proc-receive refuses them.
        config = ["git", "--git-dir", str(hooks.parent), "config", "--unset-all"]
        server.run([*config, "receive.procReceiveRefs"], check=False)


def prepare_pushers(scenario: Scenario) -> tuple[Pusher, Pusher]:
    cluster = scenario.cluster
    first = cluster.servers[0]
    remove_floor_hooks(scenario)
    pushers = []
    for repository in (PUSH_REPOSITORY, FLOOR_REPOSITORY):
        work = scenario.workdir / f"alice-{repository}"
        user_clone(cluster, scenario.alice, first, repository, work)
        pushers.append(Pusher(scenario, work))
    return pushers[0], pushers[1]


def measure_sync(
    scenario: Scenario, hooked: Pusher, floor: Pusher, runs: int
) -> tuple[list[float], list[float]]:
    cluster = scenario.cluster
    first, *peers = cluster.servers
    replicated: list[float] = []
    floors: list[float] = []
    for _ in range(runs):
        floor.new_commit()
        floors.append(
            floor.push(*(f"{s.url}/{FLOOR_REPOSITORY}.git" for s in cluster.servers)).seconds
        )
        sha = hooked.new_commit()
        started = time.perf_counter()
        done = hooked.push(f"{first.url}/{PUSH_REPOSITORY}.git")
        seen = wait_visible(peers, PUSH_REPOSITORY, "refs/heads/master", sha)
        if "queued" in done.stderr or "failed" in done.stderr:
            raise RuntimeError(f"sync replication did not go through:\n{done.stderr}")
        replicated.append(seen - started)
    return replicated, floors


# The second part of P11's floor: the same update pushed from the first server to its
# peers in parallel, as its git user, over the ssh command and connections the
# replication hook uses (``replication.push_environment``, the managed ControlMaster),
# into the floor repository that has no hooks there either. Timed on the server.
PEER_ROUND = r"""
import os, subprocess, sys, time
git_dir, remotes = sys.argv[1], sys.argv[2:]
env = dict(os.environ, GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=31")
started = time.perf_counter()
pushes = [
    subprocess.Popen(["git", "--git-dir", git_dir, "push", "--quiet", remote,
                      "refs/heads/master:refs/heads/master"], env=env)
    for remote in remotes
]
codes = [push.wait(timeout=120) for push in pushes]
print(f"{time.perf_counter() - started:.6f}")
sys.exit(max(codes))
"""


def peer_round(server: SshServer, repository: str, peers: Sequence[SshServer]) -> float:
    """Seconds the first server takes to push ``repository``'s master to ``peers`` at
    once (its remotes are named after them)."""
    git_dir = server.home / "repositories" / f"{repository}.git"
    done = server.run(
        ["python3", "-c", PEER_ROUND, str(git_dir), *(p.name for p in peers)], check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the floor's push to the peers failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def measure_quorum(
    scenario: Scenario, hooked: Pusher, floor: Pusher, runs: int
) -> tuple[list[float], list[float], list[float]]:
    """From the start of a user's push to its acknowledgement (the new value is then on
    a majority), against the floor issue 11 names: the same push to a repository
    without hooks, plus the same update pushed to the peers in parallel (from the
    first server, as the hook does). Also, for information, the stricter floor the
    row used before: three plain pushes from the client at once (the peers' copies
    made at the same time as the first, which no replication can do, since the
    proposal can only start once the first server has the objects)."""
    cluster = scenario.cluster
    first, *peers = cluster.servers
    pushes: list[float] = []
    floors: list[float] = []
    strict: list[float] = []
    for _ in range(runs):
        floor.new_commit()
        strict.append(
            floor.push(*(f"{s.url}/{FLOOR_REPOSITORY}.git" for s in cluster.servers)).seconds
        )
        floor.new_commit()
        user = floor.push(f"{first.url}/{FLOOR_REPOSITORY}.git").seconds
        floors.append(user + peer_round(first, FLOOR_REPOSITORY, peers))
        hooked.new_commit()
        done = hooked.push(f"{first.url}/{PUSH_REPOSITORY}.git")
        if "taken by 3 of 3" not in done.stderr:
            raise RuntimeError(f"the quorum push was not taken by every server:\n{done.stderr}")
        pushes.append(done.seconds)
    return pushes, floors, strict


def measure_async(
    scenario: Scenario, hooked: Pusher, floor: Pusher, runs: int
) -> tuple[list[float], list[float]]:
    cluster = scenario.cluster
    first, *peers = cluster.servers
    pushes: list[float] = []
    floors: list[float] = []
    for _ in range(runs):
        floor.new_commit()
        floors.append(floor.push(f"{first.url}/{FLOOR_REPOSITORY}.git").seconds)
        sha = hooked.new_commit()
        pushes.append(hooked.push(f"{first.url}/{PUSH_REPOSITORY}.git").seconds)
        # Let the drainer finish before the next run, so runs do not overlap.
        try:
            wait_visible(peers, PUSH_REPOSITORY, "refs/heads/master", sha)
        except RuntimeError as exc:
            queue = first.home / "repositories" / ".reconciler" / "queue"
            entries = [p.read_text() for p in sorted(queue.glob("*.json"))][:4]
            raise RuntimeError(f"{exc}; queue on {first.name}: {entries}") from exc
    return pushes, floors


# -- many refs in one push ------------------------------------------------------------


@dataclass
class TagPusher:
    """A clone that pushes one new commit on master and ``count`` new annotated tags."""

    scenario: Scenario
    work: Path
    count: int
    counter: int = 0

    def new_refs(self) -> tuple[str, str, str]:
        """Make the next commit and its tags; (the commit, the last tag's ref, its value)."""
        self.counter += 1
        sha = commit(self.work, f"many refs {self.counter}")
        lines = []
        for i in range(self.count):
            message = f"release {self.counter}.{i}\n"
            lines += [
                f"tag m{self.counter:03d}-{i:05d}",
                f"from {sha}",
                "tagger Bench <bench@localhost> 1700000000 +0000",
                f"data {len(message)}",
                message,
            ]
        subprocess.run(
            ["git", "fast-import", "--quiet"],
            cwd=self.work,
            input="\n".join(lines).encode(),
            check=True,
            timeout=120,
        )
        last = f"refs/tags/m{self.counter:03d}-{self.count - 1:05d}"
        value = subprocess.run(
            ["git", "rev-parse", last],
            cwd=self.work,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        return sha, last, value

    def push(self, *urls: str) -> Timed:
        env = self.scenario.cluster.git_env(self.scenario.alice)
        tags = f"refs/tags/m{self.counter:03d}-*"
        refspecs = ["HEAD:refs/heads/master", f"{tags}:{tags}"]
        results = run_parallel(
            [["git", "push", "--quiet", url, *refspecs] for url in urls], env=env, cwd=self.work
        )
        for done in results:
            check(done, "git push")
        return results[0]


def prepare_tag_pushers(scenario: Scenario, count: int) -> tuple[TagPusher, TagPusher]:
    cluster = scenario.cluster
    first = cluster.servers[0]
    pushers = []
    for repository in (PUSH_REPOSITORY, FLOOR_REPOSITORY):
        work = scenario.workdir / f"alice-tags-{repository}"
        if not work.exists():
            user_clone(cluster, scenario.alice, first, repository, work)
        pushers.append(TagPusher(scenario, work, count))
    return pushers[0], pushers[1]


def measure_many_refs(
    scenario: Scenario, hooked: TagPusher, floor: TagPusher, runs: int, mode: str
) -> tuple[list[float], list[float]]:
    """From the start of a user's push of one branch and ``count`` tags to every ref
    being on every server, against the same push to a repository without hooks plus
    the same refs pushed to the peers in parallel."""
    cluster = scenario.cluster
    first, *peers = cluster.servers
    measured: list[float] = []
    floors: list[float] = []
    for _ in range(runs):
        floor.new_refs()
        floors.append(
            floor.push(*(f"{s.url}/{FLOOR_REPOSITORY}.git" for s in cluster.servers)).seconds
        )
        sha, last, value = hooked.new_refs()
        started = time.perf_counter()
        done = hooked.push(f"{first.url}/{PUSH_REPOSITORY}.git")
        if mode == "sync" and ("queued" in done.stderr or "failed" in done.stderr):
            raise RuntimeError(f"sync replication did not go through:\n{done.stderr}")
        wait_visible(peers, PUSH_REPOSITORY, "refs/heads/master", sha, MANY_POLL_LIMIT)
        # One push carries every tag, in order: the last one there means all are.
        seen = wait_visible(peers, PUSH_REPOSITORY, last, value, MANY_POLL_LIMIT)
        measured.append(seen - started)
        prefix = f"refs/tags/m{hooked.counter:03d}-*"
        counts = [ref_count(s, PUSH_REPOSITORY, prefix) for s in cluster.servers]
        if counts != [hooked.count] * len(counts):
            raise RuntimeError(f"{mode}: tags on the servers after the push: {counts}")
    return measured, floors


# -- adding a server ----------------------------------------------------------------

_CLONE_FLOOR = r"""
import json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
request = json.load(sys.stdin)
target = os.path.expanduser("~/bench-floor")
os.makedirs(target, exist_ok=True)
env = dict(os.environ)
env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15")
def one(item):
    name, url = item
    return subprocess.run(["git", "clone", "--mirror", "--quiet", url,
                           os.path.join(target, name.replace("/", "_") + ".git")],
                          env=env, capture_output=True, timeout=600).returncode
with ThreadPoolExecutor(request["workers"]) as pool:
    codes = list(pool.map(one, request["clones"]))
print(sum(1 for c in codes if c))
"""


def clone_floor(server: SshServer, clones: list[tuple[str, str]], workers: int) -> float:
    payload = json.dumps({"clones": clones, "workers": workers})
    started = time.perf_counter()
    done = server.run([str(SYSTEM_PYTHON), "-c", _CLONE_FLOOR], input=payload, timeout=1800)
    seconds = time.perf_counter() - started
    if done.stdout.strip() != "0":
        raise RuntimeError(f"{done.stdout.strip()} floor clones failed: {done.stderr[-2000:]}")
    server.run(["rm", "-rf", str(server.home / "bench-floor")])
    return seconds


def snapshot(paths: Sequence[Path], store: Path) -> None:
    for index, path in enumerate(paths):
        subprocess.run(["cp", "-a", str(path), str(store / str(index))], check=True, timeout=600)


def restore(paths: Sequence[Path], store: Path) -> None:
    for index, path in enumerate(paths):
        subprocess.run(["rm", "-rf", str(path)], check=True, timeout=600)
        subprocess.run(["cp", "-a", str(store / str(index)), str(path)], check=True, timeout=600)


def measure_add_server(size: Size, workdir: Path) -> tuple[list[float], list[float], int]:
    workers = max(4, 2 * (os.cpu_count() or 1))
    cluster = SshCluster(3, names=["alpha", "beta", "gamma"])
    try:
        cluster.start()
        scenario = start_scenario(cluster, workdir, size.add_commits)
        alpha, beta, gamma = cluster.servers
        names = repository_names(size.add_repositories)
        scenario.converge([alpha, beta], names)
        store = workdir / "snapshot"
        store.mkdir()
        paths = [alpha.home, beta.home, gamma.home, scenario.operator.checkout]
        snapshot(paths, store)
        applies: list[float] = []
        floors: list[float] = []
        # gitosis-admin is not cloned from a peer: it comes from the admin checkout, and the
        # mirror group has no access to it.
        mirrored = sorted({*names, PUSH_REPOSITORY, FLOOR_REPOSITORY})
        clones = [(name, f"{alpha.url}/{name}.git") for name in mirrored]
        for index in range(size.add_runs):
            if index:
                restore(paths, store)
            scenario.write_cluster_d(
                [alpha, beta, gamma], [*names, PUSH_REPOSITORY, FLOOR_REPOSITORY]
            )
            applies.append(scenario.must("apply", "--yes").seconds)
            plan_time(scenario)
            floors.append(clone_floor(gamma, clones, workers))
        log(f"P4: apply {median(applies):.2f}s, floor {median(floors):.2f}s")
        return applies, floors, workers
    finally:
        cluster.stop()


# -- installing the hook ------------------------------------------------------------


def sent_for_plan(scenario: Scenario) -> dict[str, tuple[int, int, int]]:
    """Per server: the bytes ``reconcile apply`` sends it for the plan made now (the
    execute program and its JSON payload, once per phase), of which the hooks' ops,
    and the number of hook actions. Planned here, in this process, from the same
    facts the apply that follows reads."""
    from reconciler.apply import SERVER_LOCK_WAIT, lock_holder
    from reconciler.commands.common import plan_options
    from reconciler.desired import load
    from reconciler.gather import open_transports
    from reconciler.pipeline import plan_cluster
    from reconciler.transport import program_source

    saved = dict(os.environ)
    os.environ.update(scenario.operator.env())
    os.environ.pop("SSH_AUTH_SOCK", None)
    try:
        desired = load(scenario.operator.checkout)
        transports = open_transports(desired, desired.servers)
        try:
            plan, _observed = plan_cluster(desired, transports, plan_options([]))
        finally:
            for transport in transports.values():
                transport.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    program = len(program_source("execute"))
    sent: dict[str, tuple[int, int, int]] = {}
    for server in desired.servers:
        mine = [a for a in plan.actions if a.server == server]
        total = 0
        for phase in sorted({a.phase for a in mine}):
            payload = {
                "actions": [[op.to_json() for op in a.ops] for a in mine if a.phase == phase],
                "repositories": desired.servers[server].repositories,
                "lock_wait": SERVER_LOCK_WAIT,
                "holder": lock_holder(desired.root),
                "lock": True,
            }
            total += program + len(json.dumps(payload))
        hooks = [a for a in mine if a.subject == "hook"]
        hook_bytes = sum(len(json.dumps([op.to_json() for op in a.ops])) for a in hooks)
        sent[server] = (total, hook_bytes, len(hooks))
    return sent


def measure_hook_install(scenario: Scenario, count: int) -> list[Row]:
    """``reconcile apply`` installing the hook in every repository of every server, as
    on a cluster applied before there was a hook (and the library) at all."""
    servers = scenario.cluster.servers
    for server in servers:
        server.run(
            [
                "sh",
                "-c",
                'rm -rf "$HOME/.reconciler/server" && find "$HOME/repositories" '
                "-path '*.git/hooks/post-receive' -delete",
            ],
            timeout=600,
        )
    floor = scenario.must("plan", "--detailed-exitcode", codes=(2,))
    sent = sent_for_plan(scenario)
    done = scenario.must("apply", "--yes")
    scenario.must("plan", "--detailed-exitcode")
    hooks = min(n for _total, _hook, n in sent.values())
    per_repository = max(hook / max(n, 1) for _total, hook, n in sent.values())
    fixed = max(total - hook for total, hook, _n in sent.values())
    log(
        f"P10: apply {done.seconds:.2f}s, peak {done.max_rss_mb:.0f} MB, per server "
        f"{fixed} B + {per_repository:.0f} B x {hooks} repositories"
    )
    return [
        Row(
            "P10",
            f"reconcile apply installing the hook, 3 x {count} (floor: reconcile plan)",
            done.seconds,
            floor.seconds,
            "s",
            "(for information)",
            None,
            [done.seconds],
            [floor.seconds],
        ),
        Row(
            "P10",
            f"peak memory of reconcile apply installing the hook at 3 x {count}",
            done.max_rss_mb,
            None,
            "MB",
            "<= 150 MB",
            done.max_rss_mb <= 150,
            [done.max_rss_mb],
        ),
        Row(
            "P10",
            "bytes sent to a server for it, per repository",
            per_repository,
            None,
            "B",
            "only the per-repository ops grow",
            per_repository < 1024,
            note=f"plus {fixed} B once per server: the library and the programs",
        ),
    ]


# -- profiles -----------------------------------------------------------------------


# Runs the gather program as the transport does, under cProfile (report on stderr).
def _profiled_gather() -> str:
    """The transport's bootstrap, under cProfile."""
    from reconciler.transport import BOOTSTRAP

    return (
        "import cProfile,pstats,sys\np=cProfile.Profile();p.enable()\ntry:\n"
        f" exec({BOOTSTRAP!r})\nexcept SystemExit:\n pass\np.disable()\n"
        "pstats.Stats(p,stream=sys.stderr).sort_stats('cumulative').print_stats(25)\n"
    )


def write_profiles(scenario: Scenario, directory: Path, label: str) -> None:
    """pyinstrument of one ``reconcile plan``; cProfile of the gather program on a server."""
    from reconciler.transport import program_source

    directory.mkdir(parents=True, exist_ok=True)
    plan_report = directory / f"plan-{label}.txt"
    check(
        run_timed(
            [
                sys.executable,
                "-m",
                "pyinstrument",
                "-r",
                "text",
                "-o",
                str(plan_report),
                "-m",
                "reconciler",
                "plan",
                "-C",
                str(scenario.operator.checkout),
            ],
            env=scenario.operator.env(),
        ),
        "pyinstrument reconcile plan",
    )
    source = program_source("gather")
    request = json.dumps({"repositories": "repositories", "admin": "gitosis-admin"}).encode()
    server = scenario.cluster.servers[0]
    done = check(
        run_timed(
            [
                *ssh_argv(scenario.cluster, server),
                "python3",
                "-c",
                shlex.quote(_profiled_gather()),
                str(len(source)),
            ],
            stdin=source + request,
        ),
        "profiled gather",
    )
    (directory / f"gather-{label}.txt").write_text(
        f"answer: about {len(done.stdout)} bytes (zlib-compressed JSON)\n{done.stderr}"
    )
    log(f"profiles at {label} written to {directory}")


# -- the whole run ------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ratio_row(
    id: str, measurement: str, values: list[float], floors: list[float], target: str, limit: float
) -> Row:
    row = Row(id, measurement, median(values), median(floors), "s", target, None, values, floors)
    row.met = (row.ratio or float("inf")) <= limit
    log(f"{id}: {measurement}: {row.median:.3f}s, floor {row.floor:.3f}s, {row.ratio:.2f}x")
    return row


ALL_ROWS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "P12")


def run_all(
    size: Size,
    workdir: Path,
    profiles: Path | None = None,
    want: Sequence[str] = ALL_ROWS,
    modes: Sequence[str] = P12_MODES,
) -> list[Row]:
    rows: list[Row] = []
    cluster = SshCluster(3, names=["alpha", "beta", "gamma"])
    plans: list[float] = []
    try:
        cluster.start()
        log(f"cluster up: {', '.join(s.url for s in cluster.servers)}")
        scenario = start_scenario(cluster, workdir / "main", size.commits)
        servers = cluster.servers
        scenario.converge(servers, repository_names(size.small))
        log(f"converged at {size.small} repositories")
        if profiles:
            write_profiles(scenario, profiles, str(size.small))

        if "P1" in want or "P2" in want:
            small_times = measure_plan(scenario, size.runs, "P1", size.small)
            plans = small_times.plans
            p1 = ratio_row(
                "P1",
                f"reconcile plan, converged, 3 x {size.small}",
                plans,
                small_times.floors,
                "<= 3x floor, < 1.2 s",
                3,
            )
            p1.met = bool(p1.met) and median(plans) < 1.2
            rows.append(p1)
            rows += cold_row("P1", size.small, small_times)

        if "P3" in want:
            applies, plan_floor = measure_apply_noop(scenario, size.runs)
            rows.append(
                ratio_row(
                    "P3", "reconcile apply, nothing to do", applies, plan_floor, "<= 1.1x plan", 1.1
                )
            )

        if "P7" in want:
            statuses, status_floors, why = measure_status(scenario, size.runs)
            if statuses:
                rows.append(
                    ratio_row(
                        "P7",
                        f"reconcile status, converged, 3 x {size.small}",
                        statuses,
                        status_floors,
                        "<= 3x floor",
                        3,
                    )
                )
            else:
                rows.append(
                    Row("P7", "reconcile status", None, None, "s", "<= 3x floor", None, note=why)
                )

        if "P9" in want:
            exports, export_floors, note = measure_metrics(scenario, size.runs)
            p9 = ratio_row(
                "P9",
                f"reconcile status --format prometheus, converged, 3 x {size.small} "
                "(floor: reconcile status)",
                exports,
                export_floors,
                "<= 1.1x status",
                1.1,
            )
            p9.note = note
            rows.append(p9)

        if "P8" in want:
            helps, validates, py_floors = measure_startup(workdir, size.runs)
            for label, values in (("reconcile --help", helps), ("reconcile validate", validates)):
                rows.append(
                    Row(
                        "P8",
                        f"{label} (floor: python -c pass)",
                        median(values),
                        median(py_floors),
                        "s",
                        "< 0.3 s wall",
                        median(values) < 0.3,
                        values,
                        py_floors,
                    )
                )

        if "P10" in want:
            rows += measure_hook_install(scenario, size.small)

        if "P2" in want:
            scenario.converge(servers, repository_names(size.large))
            log(f"converged at {size.large} repositories")
            if profiles:
                write_profiles(scenario, profiles, str(size.large))
            large_times = measure_plan(scenario, size.large_runs, "P2", size.large)
            large, large_floors, memory = (
                large_times.plans,
                large_times.floors,
                large_times.memory,
            )
            rows += cold_row("P2", size.large, large_times)
            rows.append(
                ratio_row(
                    "P2",
                    f"reconcile plan, converged, 3 x {size.large}",
                    large,
                    large_floors,
                    "<= 1.5x floor",
                    1.5,
                )
            )
            scale = median(large) / median(plans)
            rows.append(
                Row(
                    "P2",
                    f"time({size.large}) / time({size.small})",
                    scale,
                    None,
                    "x",
                    "<= 10",
                    scale <= 10,
                    note=f"{size.large // size.small}x the repositories",
                )
            )
            rows.append(
                Row(
                    "P2",
                    f"peak memory of reconcile plan at 3 x {size.large}",
                    max(memory),
                    None,
                    "MB",
                    "<= 250 MB",
                    max(memory) <= 250,
                    memory,
                )
            )
        names = repository_names(size.large if "P2" in want else size.small)

        if "P5" in want or "P6" in want:
            hooked, floor = prepare_pushers(scenario)
        if "P5" in want:
            synced, sync_floors = measure_sync(scenario, hooked, floor, size.runs)
            rows.append(
                ratio_row(
                    "P5",
                    "sync replication: push until visible on both peers",
                    synced,
                    sync_floors,
                    "<= 1.3x floor",
                    1.3,
                )
            )
        if "P6" in want:
            scenario.write_cluster_d(
                servers, [*names, PUSH_REPOSITORY, FLOOR_REPOSITORY], mode="async"
            )
            scenario.must("apply", "--yes")
            remove_floor_hooks(scenario)
            pushes, push_floors = measure_async(scenario, hooked, floor, size.runs)
            rows.append(
                ratio_row(
                    "P6",
                    "async replication: the user's push",
                    pushes,
                    push_floors,
                    "<= 1.15x floor",
                    1.15,
                )
            )
        if "P11" in want:
            if "P5" not in want and "P6" not in want:
                hooked, floor = prepare_pushers(scenario)
            scenario.write_cluster_d(
                servers, [*names, PUSH_REPOSITORY, FLOOR_REPOSITORY], mode="quorum"
            )
            scenario.must("apply", "--yes")
            remove_floor_hooks(scenario)
            quorum, quorum_floors, strict = measure_quorum(scenario, hooked, floor, size.runs)
            rows.append(
                ratio_row(
                    "P11",
                    "quorum replication: the user's push until acknowledged (on a majority)",
                    quorum,
                    quorum_floors,
                    "<= 1.3x floor",
                    1.3,
                )
            )
            info = ratio_row(
                "P11",
                "the same against three plain pushes from the client at once",
                quorum,
                strict,
                "(for information)",
                float("inf"),
            )
            info.met = None
            rows.append(info)
        if "P12" in want:
            tagged, tag_floor = prepare_tag_pushers(scenario, size.tags)
            for mode in modes:
                scenario.write_cluster_d(
                    servers, [*names, PUSH_REPOSITORY, FLOOR_REPOSITORY], mode=mode
                )
                scenario.must("apply", "--yes")
                remove_floor_hooks(scenario)
                many, many_floors = measure_many_refs(scenario, tagged, tag_floor, size.runs, mode)
                rows.append(
                    ratio_row(
                        "P12",
                        f"{mode}: push of 1 branch + {size.tags:,} tags until on every server",
                        many,
                        many_floors,
                        "<= 1.5x floor",
                        1.5,
                    )
                )
    finally:
        cluster.stop()

    if "P4" in want:
        applies4, clone_floors, workers = measure_add_server(size, workdir / "add")
        p4 = ratio_row(
            "P4",
            f"apply adding a server, {size.add_repositories} x {size.add_commits} commits",
            applies4,
            clone_floors,
            "<= 1.3x floor",
            1.3,
        )
        p4.note = f"floor: the same clones, {workers} at a time"
        rows.append(p4)
    return sorted(rows, key=lambda r: r.id)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = "? GiB"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    git = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {git.stdout.strip()}, {ssh}"
    )


def format_table(rows: list[Row]) -> str:
    lines = [
        "| # | measurement | median | floor | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        med = "n/a" if row.median is None else f"{row.median:.3f} {row.unit}"
        flo = "" if row.floor is None else f"{row.floor:.3f} s"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        met = "n/a" if row.met is None else ("yes" if row.met else "**no**")
        measurement = row.measurement + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.id} | {measurement} | {med} | {flo} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def prepare_bytecode() -> None:
    """Measure an installed reconcile as it runs for an operator: with bytecode caches.

    pip compiles on install; uv does with --compile-bytecode. An environment with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import reconciler

    paths = [str(Path(reconciler.__file__).parent), *sorted(set(sys.path[1:]) - {""})]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", *[p for p in paths if Path(p).is_dir()]],
        capture_output=True,
        check=False,
        timeout=600,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--runs", type=int, help="runs per measurement (default: by size)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--rows", default=",".join(ALL_ROWS), help="only these rows (comma-separated: P1,P2...)"
    )
    parser.add_argument(
        "--profile", type=Path, help="write pyinstrument/cProfile reports of plan and gather here"
    )
    parser.add_argument(
        "--modes",
        default=",".join(P12_MODES),
        help="replication modes P12 runs in (comma-separated: sync,async,quorum)",
    )
    parser.add_argument("--tags", type=int, help="tags per push in P12 (default: by size)")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    if args.runs:
        size = Size(**{**asdict(size), "runs": args.runs, "large_runs": args.runs})
    if args.tags:
        size = Size(**{**asdict(size), "tags": args.tags})
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("sync", "async", "quorum") for m in modes):
        print(f"--modes: unknown mode in {args.modes!r}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("the benchmarks need root (they start sshd servers)", file=sys.stderr)
        return 1

    # SIGTERM (and SIGINT, which a background job ignores) end the run through its
    # finally blocks, which stop the clusters and delete their users.
    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    prepare_bytecode()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="rcl-bench-"))
    workdir.chmod(0o755)
    try:
        rows = run_all(size, workdir, args.profile, args.rows.split(","), modes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"size: {size.name}; runs: {size.runs} ({size.large_runs} at {size.large}); medians")
    print(format_table(rows))
    print(f"total bench time: {time.perf_counter() - started:.0f} s")
    if args.json:
        data = [{**asdict(r), "ratio": r.ratio} for r in rows]
        args.json.write_text(json.dumps({"size": size.name, "rows": data}, indent=2) + "\n")
    return 0
