"""Properties of the pure planner on random desired states and facts (hypothesis).

1. It never plans a forced update: every ``push_refs`` update's expected value is
   the target's current value, a non-deletion only fast-forwards, a deletion is one
   a queue entry recorded, and no update touches a ref classified diverged.
2. Applying a plan's effects to the facts (a small pure simulator of the server-side
   operations), phase by phase as ``apply`` does, leaves a plan without actions, and
   queue entries only on refs the plan shows as conflicts.

The subjects that declare themselves (``reconciler.subjects``) are not named here:
their files start in one of ``FILE_STATES`` in a directory per server, the file
operations are carried out there, and their facts are what their server modules'
readers find (``reconciler.testing.subjects``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import subjects as registry
from reconciler.apply import MAX_ROUNDS, _key
from reconciler.desired import Desired, load
from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions, make_plan
from reconciler.planning.context import settings_text
from reconciler.planning.known_hosts import desired_lines
from reconciler.planning.model import Plan
from reconciler.refs import ZERO, RefReport, classify
from reconciler.server.hooks import HOOK_MODE, stub
from reconciler.server.ops import (
    CloneMirror,
    DrainQueue,
    EditLines,
    InitBare,
    InstallHook,
    InstallLibrary,
    InstallTemplate,
    KeepFile,
    Keygen,
    Op,
    PushRefs,
    RemoveFile,
    RemoveLeftovers,
    RemoveRemote,
    SetRemote,
    SetTemplateDir,
    SshConfigBlock,
    WriteFile,
)
from reconciler.server.ssh_config import BLOCK_BEGIN, BLOCK_END, split_block
from reconciler.server.template import template_digest
from reconciler.server_library import library_version
from reconciler.subjects import ManagedFile
from reconciler.testing.subjects import read_subject_facts, write_files
from tests.planning.test_planner import settled_checkout

OPTIONS = PlanOptions()
SERVERS = ["a", "b", "c"]
REPOSITORIES = ["product", "tools/x", "docs"]
REFS = ["refs/heads/main", "refs/heads/topic", "refs/tags/v1"]
HOST_KEYS = {
    "a": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO3JbSpG1m33B5Ps3NmmmpQDHjUcK+XYnRfjFhwkfgoh",
    "b": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICDkI9zhpVj92Ckyq+vvgnFb/jBQuUE3VOgdK5a6+/ey",
    "c": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHf3QMiW3/6ah4NlkiVbguIO9g4LWCSqJBKVJOG6lKhv",
}
ALICE = HOST_KEYS["c"] + " alice"
COMMITS = [hashlib.sha1(f"commit {i}".encode()).hexdigest() for i in range(8)]  # noqa: S324
_DESIRED: dict[tuple[int, int], Desired] = {}
STATS = {"examples": 0, "pushes": 0, "diverged": 0, "file_ops": 0}
# How a declared subject's files may be found, whatever the subject: as apply leaves
# them, missing, in another mode, edited by hand (mode 0600), as apply leaves them on
# another server (the reconciler's own, for another state of the cluster), or a
# directory where a file belongs.
FILE_STATES = ["converged", "absent", "another mode", "edited", "another server's", "not a file"]
Scenario = tuple[int, int, list[int], dict[str, dict[str, Any]], dict[str, dict[str, str]]]


def desired_for(servers: int, repositories: int, root: Path) -> Desired:
    """cluster.d/ loaded for the first ``servers`` servers and ``repositories`` repos."""
    key = (servers, repositories)
    if key not in _DESIRED:
        names = REPOSITORIES[:repositories]
        document = {
            # The simulator models the repair of sync and async modes; quorum mode's
            # majority rule is model-checked in tests/replication/test_quorum_protocol.py.
            "cluster": {"name": "p", "replication": {"mode": "sync"}},
            "servers": {
                s: {"url": f"ssh://git@{s}.example:{2200 + i}"}
                for i, s in enumerate(SERVERS[:servers])
            },
            "repositories": {name: {} for name in names},
            "groups": {
                "gitosis-admin": {"members": ["alice"], "writable": ["gitosis-admin"]},
                "devs": {"members": ["alice"], "writable": names},
            },
            "users": {"alice": ALICE},
        }
        directory = root / f"d{servers}{repositories}"
        (directory / "cluster.d").mkdir(parents=True)
        (directory / "cluster.d/cluster.yaml").write_text(json.dumps(document))
        _DESIRED[key] = load(directory)
    return _DESIRED[key]


# --- the commit graph ------------------------------------------------------------


def ancestors(parents: list[int]) -> dict[str, set[str]]:
    """commit -> itself and every commit it descends from."""
    found: dict[str, set[str]] = {}
    for i, sha in enumerate(COMMITS):
        chain = {sha}
        if i > 0:
            chain |= found[COMMITS[parents[i - 1] % i]]
        found[sha] = chain
    return found


# --- random facts ------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n_servers = draw(st.integers(2, 3))
    n_repos = draw(st.integers(1, 3))
    parents = draw(st.lists(st.integers(0, 7), min_size=7, max_size=7))
    servers = SERVERS[:n_servers]
    repos = REPOSITORIES[:n_repos]
    raw: dict[str, dict[str, Any]] = {}
    states: dict[str, dict[str, str]] = {}
    for name in servers:
        states[name] = {
            known.name: draw(st.sampled_from(FILE_STATES)) for known in registry.subjects()
        }
        peers = [p for p in servers if p != name]
        repositories: dict[str, Any] = {}
        for repo in [*repos, "gitosis-admin"]:
            if repo != "gitosis-admin" and draw(st.booleans()) and draw(st.booleans()):
                continue  # absent
            remotes: dict[str, Any] = {}
            for peer in peers:
                kind = draw(st.sampled_from(["absent", "right", "wrong-url", "extra-fetch"]))
                port = 2200 + SERVERS.index(peer)
                url = f"ssh://git@{peer}.example:{port}/{repo}.git"
                if kind == "right":
                    remotes[peer] = {"url": url, "fetch": [], "managed": True}
                elif kind == "wrong-url":
                    remotes[peer] = {"url": url + "x", "fetch": [], "managed": True}
                elif kind == "extra-fetch":
                    remotes[peer] = {"url": url, "fetch": ["+refs/*:refs/*"], "managed": True}
            if draw(st.booleans()):
                remotes["gone"] = {"url": "ssh://git@gone/x.git", "fetch": [], "managed": True}
            hook = draw(st.sampled_from(["none", "current", "old", "bad-mode"]))
            refs = {}
            if repo != "gitosis-admin":
                for ref in REFS:
                    value = draw(st.sampled_from([None, *COMMITS]))
                    if value is not None:
                        refs[ref] = value
            repositories[repo] = {
                "head": "ref: refs/heads/master",
                "bare": True,
                "remotes": remotes,
                "hook": None
                if hook == "none"
                else {
                    "mode": 0o644 if hook == "bad-mode" else 0o755,
                    "uid": 1000,
                    "sha256": "e" * 64
                    if hook == "old"
                    else hashlib.sha256(stub(f"/home/{name}")).hexdigest(),
                    "managed": True,
                },
                "refs": refs,
            }
        queue = []
        for i in range(draw(st.integers(0, 2))):
            queue.append(
                {
                    "repository": draw(st.sampled_from(repos)),
                    "ref": draw(st.sampled_from(REFS)),
                    "old": draw(st.sampled_from(COMMITS)),
                    "new": draw(st.sampled_from([ZERO, COMMITS[0]])),
                    "peer": draw(st.sampled_from(peers)),
                    "server": name,
                    "file": f"{name}-{i}.json",
                    "format_version": 1,
                    "reason": "unreachable",
                    "transient": True,
                    "time": 1.0,
                    "detail": "",
                }
            )
        raw[name] = {
            "format_version": 1,
            "home": f"/home/{name}",
            "uid": 1000,
            "user": "git",
            "server_key": draw(st.sampled_from([None, f"ssh-ed25519 AAAA git@{name}"])),
            "server_key_private": False,
            "ssh_dir_mode": 0o700,
            "known_hosts": draw(
                st.lists(
                    st.sampled_from(
                        [
                            f"[{p}.example]:{2200 + SERVERS.index(p)} {HOST_KEYS[p]} reconciler:{p}"
                            for p in peers
                        ]
                        + [f"gone.example {HOST_KEYS['a']} reconciler:gone", "other.example x y"]
                    ),
                    unique=True,
                )
            ),
            "authorized_keys": [],
            "ssh_config": draw(
                st.sampled_from(
                    [
                        None,
                        ["Host backup.example", "    User backup"],
                        [BLOCK_BEGIN, "Host gone.example", "    ControlMaster auto", BLOCK_END],
                    ]
                )
            ),
            "repositories_dir": f"/home/{name}/repositories",
            "repositories_exists": True,
            "settings": {},
            "settings_text": draw(st.sampled_from([None, "{}", "current"])),
            "queue": queue,
            "queue_errors": [],
            "repositories": repositories,
            "admin": {"exists": True, "branch": "master", "head": "1" * 40, "history": []},
            "library": draw(
                st.sampled_from([{"version": library_version(), "intact": True}, {"version": None}])
            ),
            "git_template": draw(
                st.sampled_from(
                    [
                        {"configured": None, "digest": None},
                        {"configured": f"/home/{name}/.reconciler/templates/0", "digest": None},
                    ]
                )
            ),
        }
    return n_servers, n_repos, parents, raw, states


def lay_out(desired: Desired, home: Path, server: str, states: dict[str, str]) -> None:
    """The declared subjects' files of ``server`` in ``home``, each as drawn."""
    for known in registry.subjects():
        state = states[known.name]
        owner = server
        if state == "another server's":
            owner = next(s for s in desired.servers if s != server)
        for path, wanted in known.converged(desired, owner).items():
            if state == "absent":
                continue
            if state == "not a file":
                (home / path).mkdir(parents=True)
                continue
            if state == "another mode":
                wanted = ManagedFile(wanted.content, 0o600 if wanted.mode != 0o600 else 0o644)
            elif state == "edited":
                wanted = ManagedFile(wanted.content + "edited by hand\n", 0o600)
            write_files(home, {path: wanted})


# --- planning from the raw facts ---------------------------------------------------


def to_facts(raw: dict[str, dict[str, Any]], homes: dict[str, Path]) -> Facts:
    servers = {}
    for name, data in raw.items():
        data = copy.deepcopy(data)
        data.update(read_subject_facts(homes[name]))
        for repo in data["repositories"].values():
            refs = repo.pop("refs")
            repo["refs_digest"] = hashlib.sha256(
                json.dumps(refs, sort_keys=True).encode()
            ).hexdigest()
            repo["ref_count"] = len(refs)
        servers[name] = parse_server_facts(name, data, host_key=HOST_KEYS[name])
    return Facts(servers=servers)


def ref_report(
    desired: Desired, raw: dict[str, dict[str, Any]], graph: dict[str, set[str]]
) -> RefReport:
    states = []
    for repo in desired.mirrored_repositories():
        if repo == desired.cluster.admin_repository:
            continue
        holders = [s for s in raw if repo in raw[s]["repositories"]]
        all_refs = sorted({r for s in holders for r in raw[s]["repositories"][repo]["refs"]})
        for ref in all_refs:
            values = {s: raw[s]["repositories"][repo]["refs"].get(ref) for s in holders}
            if len(set(values.values())) > 1:
                present = {v for v in values.values() if v is not None}
                ancestor = {(repo, a, b): a in graph[b] for a in present for b in present if a != b}
                states.append(classify(repo, ref, values, ancestor))
    return RefReport(states=tuple(states))


def make(
    desired: Desired,
    raw: dict[str, dict[str, Any]],
    homes: dict[str, Path],
    graph: dict[str, set[str]],
) -> Plan:
    for name, data in raw.items():
        if data["settings_text"] == "current":
            data["settings_text"] = settings_text(desired, name)
    facts = to_facts(raw, homes)
    return make_plan(
        PlanContext(
            desired,
            facts,
            settled_checkout(desired, facts),
            OPTIONS,
            ref_report(desired, raw, graph),
        )
    )


# --- the simulator of the server-side operations ------------------------------------


def repository_of(desired: Desired, server: str, path: str) -> str:
    base = desired.servers[server].repositories + "/"
    assert path.startswith(base) and path.endswith(".git"), path
    return path[len(base) : -len(".git")]


def sha256_of(full: Path) -> str | None:
    return hashlib.sha256(full.read_bytes()).hexdigest() if full.exists() else None


def on_home(desired: Desired, home: Path, op: Op) -> None:
    """A file operation on the declared subjects' files, with the server's rules
    (``reconciler.server.files``, ``.hooks``): every write and copy over exactly what
    the plan saw, and only a file the reconciler did not write is kept."""
    STATS["file_ops"] += 1
    if isinstance(op, WriteFile):
        full = home / op.path
        seen = sha256_of(full)
        assert op.expect_sha256 == ("absent" if seen is None else seen), op
        write_files(home, {op.path: ManagedFile(op.content, op.mode)})
    elif isinstance(op, KeepFile):
        source, target = home / op.path, home / op.to
        assert source.parent == target.parent and source.is_file(), op
        assert op.expect_sha256 == sha256_of(source) and not target.exists(), op
        own = {
            wanted.content.encode()
            for server in desired.servers
            for known in registry.subjects()
            for path, wanted in known.converged(desired, server).items()
            if path == op.path
        }
        assert source.read_bytes() not in own, f"keeps the reconciler's own: {op}"
        shutil.copy2(source, target)
    elif isinstance(op, RemoveFile):
        full = home / op.path
        assert op.expect_sha256 in (None, sha256_of(full)), op
        full.unlink(missing_ok=True)
    elif isinstance(op, RemoveLeftovers):
        for path in op.paths:
            (home / path).unlink(missing_ok=True)


def simulate(
    desired: Desired,
    raw: dict[str, dict[str, Any]],
    homes: dict[str, Path],
    server: str,
    op: Op,
    graph: dict[str, set[str]],
    diverged: set[tuple[str, str]],
) -> None:
    """Carry out one operation on ``raw`` or ``homes`` (checking the no-force property
    on pushes)."""
    data = raw[server]
    if isinstance(op, Keygen):
        data["server_key"] = f"ssh-ed25519 AAAA git@{server}"
    elif isinstance(op, EditLines):
        assert op.path == ".ssh/known_hosts"
        kept = [line for line in data["known_hosts"] if line.strip() not in set(op.remove)]
        kept += [line for line in op.add if line not in kept]
        data["known_hosts"] = kept
    elif isinstance(op, SshConfigBlock):
        assert op.path == ".ssh/config"
        before, present, after = split_block(list(data.get("ssh_config") or []))
        at = len(before) if present is not None else 0
        data["ssh_config"] = [*before[:at], *op.block, *before[at:], *after]
    elif isinstance(op, InstallLibrary):
        data["library"] = {"version": op.version, "intact": True}
    elif isinstance(op, InstallHook):
        assert op.path.endswith("/hooks/post-receive") and op.library == library_version()
        repo = repository_of(desired, server, op.path[: -len("/hooks/post-receive")])
        existing = data["repositories"][repo]["hook"]
        expect = op.expect_sha256
        if expect == "absent":
            assert existing is None
        elif expect is not None:
            assert existing is not None and existing["sha256"] == expect
        digest = hashlib.sha256(op.content.encode()).hexdigest()
        data["repositories"][repo]["hook"] = {
            "mode": HOOK_MODE,
            "uid": 1000,
            "sha256": digest,
            "managed": True,
        }
    elif isinstance(op, WriteFile) and op.path.endswith("replication.json"):
        data["settings_text"] = op.content
    elif isinstance(op, WriteFile | KeepFile | RemoveFile | RemoveLeftovers):
        on_home(desired, homes[server], op)
    elif isinstance(op, InitBare | CloneMirror):
        repo = repository_of(desired, server, op.path)
        refs: dict[str, str] = {}
        if isinstance(op, CloneMirror):
            source = next(
                s for s in raw if s != server and op.url.startswith(f"ssh://git@{s}.example")
            )
            refs = dict(raw[source]["repositories"][repo]["refs"])
        data["repositories"][repo] = {
            "head": "ref: refs/heads/master",
            "bare": True,
            "remotes": {},
            "hook": None,
            "refs": refs,
        }
    elif isinstance(op, SetRemote):
        repo = repository_of(desired, server, op.repo)
        data["repositories"][repo]["remotes"][op.name] = {
            "url": op.url,
            "fetch": [],
            "managed": True,
        }
    elif isinstance(op, RemoveRemote):
        repo = repository_of(desired, server, op.repo)
        del data["repositories"][repo]["remotes"][op.name]
    elif isinstance(op, PushRefs):
        repo = repository_of(desired, server, op.repo)
        target = raw[op.peer]["repositories"][repo]["refs"]
        mine = data["repositories"][repo]["refs"]
        queued = {
            (e["repository"], e["ref"], e["old"], e["peer"])
            for s in raw
            for e in raw[s]["queue"]
            if e["new"].strip("0") == ""
        }
        for ref, new, expected in op.updates:
            assert (repo, ref) not in diverged, f"update of diverged {repo} {ref}"
            current = target.get(ref)
            assert (expected or None) == current, f"lease {expected!r} but {current!r}"
            if new:
                assert mine.get(ref) == new, "pushing a value the pusher does not hold"
                assert current is None or current in graph[new], "not a fast-forward"
                target[ref] = new
            else:
                assert (repo, ref, expected, op.peer) in queued, "deletion nobody queued"
                del target[ref]
    elif isinstance(op, InstallTemplate):
        assert op.library == library_version()
        assert template_digest(op.entries) == op.digest
        data.setdefault("templates", []).append(op.digest)
    elif isinstance(op, SetTemplateDir):
        assert data["git_template"]["configured"] == op.expect
        digest = posixpath.basename(op.value)
        assert digest in data.get("templates", []), "pointed at a template not installed"
        data["git_template"] = {"configured": op.value, "digest": digest}
    elif isinstance(op, DrainQueue):
        files = set(op.files)
        data["queue"] = [e for e in data["queue"] if e["file"] not in files]
    else:
        raise AssertionError(f"unexpected operation {op.KIND}")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_planner_never_forces_and_converges(scenario: Scenario, tmp_path: Path) -> None:
    n_servers, n_repos, parents, raw, states = scenario
    desired = desired_for(n_servers, n_repos, tmp_path)
    with tempfile.TemporaryDirectory(dir=tmp_path) as top:
        homes = {name: Path(top) / name for name in raw}
        for name, home in homes.items():
            home.mkdir()
            lay_out(desired, home, name, states[name])
        converge(desired, raw, homes, ancestors(parents))


def converge(
    desired: Desired,
    raw: dict[str, dict[str, Any]],
    homes: dict[str, Path],
    graph: dict[str, set[str]],
) -> None:
    raw = copy.deepcopy(raw)
    plan = make(desired, raw, homes, graph)
    STATS["examples"] += 1
    STATS["diverged"] += sum(1 for n in plan.conflicts if n.subject == "ref")
    attempted: set[Any] = set()
    for _round in range(MAX_ROUNDS):
        pending = [a for a in plan.actions if _key(a) not in attempted]
        if not pending:
            break
        diverged = {tuple(n.target.split(" ", 1)) for n in plan.conflicts if n.subject == "ref"}
        phase = min(a.phase for a in pending)
        STATS["pushes"] += sum(1 for a in pending if a.phase == phase and a.subject == "ref")
        for action in [a for a in pending if a.phase == phase]:
            attempted.add(_key(action))
            for op in action.ops:
                simulate(desired, raw, homes, action.server, op, graph, diverged)
        plan = make(desired, raw, homes, graph)
    leftover = [f"{a.server}: {a.description}" for a in plan.actions]
    assert not leftover, leftover
    # A queue entry outlives the repair only on a ref shown as a conflict: one left on
    # a ref with no conflict and no action would stay for ever (a deletion its origin
    # undid once froze its ref that way).
    conflicts = {n.target for n in plan.conflicts if n.subject == "ref"}
    stuck = [
        f"{e['server']}: {e['repository']} {e['ref']} -> {e['peer']}"
        for data in raw.values()
        for e in data["queue"]
        if f"{e['repository']} {e['ref']}" not in conflicts
    ]
    assert not stuck, stuck
    # Nothing that diverged was touched, and no commit any server held is gone.
    for name, data in raw.items():
        for repo, facts in data["repositories"].items():
            for ref, value in facts.get("refs", {}).items():
                assert value in COMMITS, (name, repo, ref)


def test_generator_matches_the_planner(tmp_path: Path) -> None:
    """The generator's 'right' known_hosts lines and remote URLs are the planner's own,
    so converged servers are among the random facts (else little would be tested)."""
    desired = desired_for(3, 1, tmp_path)
    raw = {name: {"known_hosts": [], "host_key": HOST_KEYS[name]} for name in SERVERS}
    facts = Facts(servers={})
    lines, _notes = desired_lines(
        PlanContext(desired, facts, settled_checkout(desired, facts), OPTIONS, RefReport()), "a"
    )
    del raw
    assert lines == {}  # without facts or pins no line can be written
    from reconciler.planning.context import repository_url

    assert repository_url(desired.servers["b"], "product") == "ssh://git@b.example:2201/product.git"


def test_report_property_figures(report: Any) -> None:
    """Runs after the property: how much it exercised."""
    report(**STATS)
    assert STATS["examples"] == 0 or STATS["pushes"] > 0
