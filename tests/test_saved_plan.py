"""The saved-plan file (``reconcile plan -out``): its format, refusals, fingerprints."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import stat
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from reconciler import subjects
from reconciler.admin_checkout import CheckoutFacts
from reconciler.desired import Desired, load
from reconciler.errors import ReconcilerError
from reconciler.facts import Facts, RepositoryFacts, ServerFacts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions, make_plan
from reconciler.planning.model import Plan
from reconciler.refs import RefReport
from reconciler.saved_plan import (
    NOT_PLANNED,
    REPOSITORY_PARTS,
    SERVER_PARTS,
    DesiredIdentity,
    SavedOptions,
    SavedPlan,
    check_unchanged,
    desired_files,
    fingerprint_facts,
    read_saved_plan,
    server_changes,
    write_saved_plan,
)
from reconciler.server.ops import AdminUpdate, InstallLibrary
from reconciler.server.queue import QueueEntry
from reconciler.server_library import library_files, library_version
from tests.planning.test_planner import (
    ALICE,
    HEAD,
    HOST_A,
    HOST_B,
    base_facts,
    build_context,
    fresh,
    missing_repo,
)
from tests.planning.test_planner import desired as desired


def saved_plan(ctx: PlanContext) -> SavedPlan:
    plan = make_plan(ctx)
    return SavedPlan(
        plan=plan,
        options=SavedOptions(("b",), True, False, "20250102T030405", "ab" * 32),
        desired=DesiredIdentity(str(ctx.desired.root), "master", HEAD, {"cluster.d/c": "1"}, "d"),
        servers=fingerprint_facts(ctx.facts, ctx.desired.servers),
        version="0.1.0",
        created="2025-01-02T03:04:05Z",
    )


def action_values(plan: Plan) -> list[tuple[Any, ...]]:
    return [
        (
            a.server,
            a.subject,
            a.kind,
            a.target,
            a.description,
            a.phase,
            [o.to_json() for o in a.ops],
        )
        for a in plan.actions
    ]


def test_round_trip_keeps_every_action_with_its_ops(desired: Any, tmp_path: Path) -> None:
    ctx = build_context(desired, {"b": fresh, "a": missing_repo}, {"b": "unknown"})
    saved = saved_plan(ctx)
    assert any(a.subject == "admin" for a in saved.plan.actions)
    assert any(a.subject == "hook" for a in saved.plan.actions)
    path = tmp_path / "p.plan"
    write_saved_plan(path, saved)
    back = read_saved_plan(path)
    assert back == saved
    assert action_values(back.plan) == action_values(saved.plan)
    assert back.plan.notes == saved.plan.notes and back.plan.servers == saved.plan.servers
    # The admin commit's placeholders stay placeholders: apply fills them.
    update = next(a for a in back.plan.actions if a.subject == "admin" and a.server == "b")
    last = update.ops[-1]
    assert isinstance(last, AdminUpdate)
    assert last.new == "@HEAD" and last.bundle == "@BUNDLE"


def no_library(data: dict[str, Any]) -> None:
    data.pop("library", None)


def test_long_strings_are_written_once(desired: Any, tmp_path: Path) -> None:
    ctx = build_context(desired, {"a": no_library, "b": no_library}, {})
    saved = saved_plan(ctx)
    installs = [op for a in saved.plan.actions for op in a.ops if isinstance(op, InstallLibrary)]
    assert len(installs) == 2  # the same library, in its long files, for each server
    big = sum(len(content) * 4 // 3 for content in library_files().values())
    path = tmp_path / "p.plan"
    size = write_saved_plan(path, saved)
    assert size < big * 1.5, size  # one copy of the library, not one per server
    back = read_saved_plan(path)
    files = [op.files for a in back.plan.actions for op in a.ops if isinstance(op, InstallLibrary)]
    longest = max(library_files(), key=lambda name: len(library_files()[name]))
    assert len({id(f[longest]) for f in files}) == 1  # and read back as one string
    assert back.plan.actions == saved.plan.actions


def test_the_file_is_mode_0600_whatever_the_umask_and_replaced_atomically(
    desired: Any, tmp_path: Path
) -> None:
    saved = saved_plan(build_context(desired, {"b": fresh}, {"b": "unknown"}))
    path = tmp_path / "p.plan"
    path.write_text("old")
    path.chmod(0o644)
    old = os.umask(0)
    try:
        write_saved_plan(path, saved)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.plan"]  # no temporary left
    assert read_saved_plan(path) == saved


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not a plan file of reconcile plan -out (not JSON"),
        (b'{"format_version": 1, "kind": "reconcile saved plan", "pl', "(not JSON"),
        (b"\xff\xfe garbage", "(not JSON"),
        (b"[1, 2]", "is not a plan file of reconcile plan -out; make the plan again"),
        (b'{"format_version": 1}', "is not a plan file of reconcile plan -out"),
        (b'{"format_version": 1, "kind": "reconcile saved plan"}', "is a damaged plan file"),
    ],
)
def test_a_corrupt_file_is_refused_with_one_sentence(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "p.plan"
    path.write_bytes(content)
    with pytest.raises(ReconcilerError) as error:
        read_saved_plan(path)
    message = str(error.value)
    assert expected in message and str(path) in message
    assert "\n" not in message


def test_a_damaged_action_is_refused(desired: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.plan"
    write_saved_plan(path, saved_plan(build_context(desired, {"b": fresh}, {"b": "unknown"})))
    for damage in (
        lambda d: d["plan"]["actions"][0].update(kind="explode"),
        lambda d: d["plan"]["actions"][0].pop("ops"),
        lambda d: d["plan"]["actions"][0].update(phase=99),
        lambda d: d["plan"]["actions"][0]["ops"][0].update(op={"@blob": "0" * 64}),
        # A field this reconcile's op does not have (renamed), or of the wrong type.
        lambda d: d["plan"]["actions"][0]["ops"][0].update(renamed="x"),
        lambda d: d["plan"]["actions"][0]["ops"][0].update(op="no_such_op"),
        lambda d: d["plan"]["actions"][0]["ops"][0].update(comment=["git@b"]),
        lambda d: d["options"].update(prune="yes"),
        lambda d: d["servers"]["a"].pop("digest"),
    ):
        data = json.loads(path.read_text())
        damage(data)
        broken = tmp_path / "broken.plan"
        broken.write_text(json.dumps(data))
        with pytest.raises(ReconcilerError, match="is a damaged plan file"):
            read_saved_plan(broken)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_another_format_version_is_refused(desired: Any, tmp_path: Path, version: Any) -> None:
    path = tmp_path / "p.plan"
    write_saved_plan(path, saved_plan(build_context(desired, {"b": fresh}, {"b": "unknown"})))
    data = json.loads(path.read_text())
    data["format_version"] = version
    path.write_text(json.dumps(data))
    with pytest.raises(ReconcilerError) as error:
        read_saved_plan(path)
    assert str(error.value) == (
        f"{path} is a plan file of format version {version!r}, and this reconcile reads only "
        "version 1; make the plan again with this reconcile"
    )


def test_no_secrets_in_a_saved_plan(desired: Any, tmp_path: Path) -> None:
    """Every kind of op the planner makes for a fresh server: keygen, gitosis-init, the
    admin commit, the runtime, hooks, remotes. Private keys exist only on the servers."""

    def bare(data: dict[str, Any]) -> None:
        fresh(data)
        data["admin"] = {"exists": False}
        data["gitosis"] = {"runtime": None, "on_path": False}

    ctx = build_context(desired, {"b": bare}, {"b": "unknown"})
    checkout = dataclasses.replace(ctx.checkout, files={"gitosis.conf": "[gitosis]\n"})
    ctx = dataclasses.replace(ctx, checkout=checkout)
    path = tmp_path / "p.plan"
    write_saved_plan(path, saved_plan(ctx))
    text = path.read_text()
    ops = {op.KIND for a in read_saved_plan(path).plan.actions for op in a.ops}
    assert ops >= {"keygen", "gitosis_init", "install_library", "local_commit", "write_file"}
    for secret in ("PRIVATE KEY", "BEGIN OPENSSH", "BEGIN RSA", "PuTTY-User-Key"):
        assert secret not in text


# --- fingerprints -------------------------------------------------------------------


def test_every_fact_the_planner_reads_is_in_a_part() -> None:
    """A fact added to ServerFacts without a part would not be fingerprinted; those
    of the subjects that declare them (``subjects``) each name their part."""
    covered = {f for names in SERVER_PARTS.values() for f in names}
    assert covered | NOT_PLANNED | {"repositories", "subjects"} == {
        f.name for f in fields(ServerFacts)
    }
    registered = {fact.key: fact.part for fact in subjects.facts()}
    assert registered["leftovers"] == "leftover temporaries"
    assert all(registered.values()) and not set(registered.values()) & set(SERVER_PARTS)
    covered = {f for names in REPOSITORY_PARTS.values() for f in names}
    assert covered | {"name"} == {f.name for f in fields(RepositoryFacts)}


def facts_of(desired: Any, mutate: Any = None) -> Facts:
    servers = base_facts(desired)
    if mutate is not None:
        mutate(servers)
    keys = {"a": HOST_A, "b": HOST_B}
    return Facts(
        servers={n: parse_server_facts(n, d, host_key=keys[n]) for n, d in servers.items()}
    )


def changes(desired: Any, mutate: Any) -> dict[str, str | None]:
    then = fingerprint_facts(facts_of(desired), desired.servers)
    now = fingerprint_facts(facts_of(desired, mutate), desired.servers)
    return {name: server_changes(then[name], now[name]) for name in then}


def _push(servers: dict[str, Any]) -> None:
    servers["b"]["repositories"]["product"]["refs_digest"] = "f" * 64
    servers["b"]["repositories"]["product"]["ref_count"] = 1


def _hook_gone(servers: dict[str, Any]) -> None:
    servers["b"]["repositories"]["product"]["hook"] = None


def _several(servers: dict[str, Any]) -> None:
    _push(servers)
    servers["b"]["repositories"]["gitosis-admin"]["remotes"]["x"] = {"url": "/x"}
    servers["b"]["known_hosts"] = []
    entry = QueueEntry(
        "product", "refs/heads/main", "0" * 40, "1" * 40, "a", "pending", True, 1.0, "b"
    )
    servers["b"]["queue"] = [{**entry.to_json(), "file": "e.json"}]
    servers["a"]["repositories"]["scratch"] = copy.deepcopy(servers["a"]["repositories"]["product"])
    del servers["a"]["repositories"]["product"]


def _leftover(servers: dict[str, Any]) -> None:
    servers["a"]["leftovers"] = [".ssh/.known_hosts.reconciler-tmp-7-x"]


def _noise(servers: dict[str, Any]) -> None:
    """What changes at every gather without the planner reading it."""
    servers["a"]["seconds"] = 12.5
    servers["b"]["pushes"] = {"a": {"count": 3, "sum": 1.0, "results": {"ok": 3}, "recent": []}}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_noise, {"a": None, "b": None}),
        (_push, {"a": None, "b": "repositories product (refs)"}),
        (_hook_gone, {"a": None, "b": "repositories product (hook)"}),
        # A fact of a subject that declares its facts (reconciler.subjects).
        (_leftover, {"a": "leftover temporaries", "b": None}),
        (
            _several,
            {
                "a": "repositories product (gone), scratch (appeared)",
                "b": "repositories gitosis-admin (remotes), product (refs); known_hosts; "
                "replication queue",
            },
        ),
    ],
)
def test_a_change_is_named_by_server_and_part(
    desired: Any, mutate: Any, expected: dict[str, str | None]
) -> None:
    assert changes(desired, mutate) == expected


def test_unreachable_then_and_now(desired: Any) -> None:
    from reconciler.errors import ServerError

    read = fingerprint_facts(facts_of(desired), desired.servers)
    down = Facts(
        servers={"a": facts_of(desired).servers["a"]},
        errors={"b": ServerError("b", "Connection refused")},
    )
    other_error = Facts(servers=down.servers, errors={"b": ServerError("b", "timed out")})
    now = fingerprint_facts(down, desired.servers)
    assert server_changes(read["b"], now["b"]) == (
        "it was read when the plan was made, and is unreachable now"
    )
    assert server_changes(now["b"], fingerprint_facts(other_error, desired.servers)["b"]) is None


def test_desired_state_changes_are_refused(desired: Desired, tmp_path: Path) -> None:
    root = tmp_path / "admin"
    (root / "cluster.d").mkdir(parents=True)
    (root / "cluster.d" / "cluster.yaml").write_text("x: 1\n")
    files = desired_files(root)
    ctx = build_context(desired, {}, {})
    saved = saved_plan(ctx)
    then = dataclasses.replace(saved.desired, root=str(root), files=files)
    saved = dataclasses.replace(saved, desired=then)
    servers = saved.servers
    check_unchanged(saved, then, servers, path=Path("p.plan"))  # nothing changed
    (root / "keydir").mkdir()
    (root / "keydir" / "bob.pub").write_text("ssh-ed25519 AAAA bob\n")
    cases = {
        "files": dataclasses.replace(then, files=desired_files(root)),
        "head": dataclasses.replace(then, head="2" * 40),
        "root": dataclasses.replace(then, root="/elsewhere"),
        "checkout": dataclasses.replace(then, checkout="other"),
    }
    expected = {
        "files": f"cluster.d/ or keydir/ in {root} changed since the plan was made "
        "(keydir/bob.pub); run plan again",
        "head": f"the admin checkout {root} moved since the plan was made (from master at "
        "111111111111 to master at 222222222222); run plan again",
        "root": f"the plan was made in the admin checkout {root}, not /elsewhere",
        "checkout": f"the admin checkout {root} changed since the plan was made",
    }
    for case, now in cases.items():
        with pytest.raises(ReconcilerError) as error:
            check_unchanged(saved, now, servers, path=Path("p.plan"))
        assert expected[case] in str(error.value), case
        assert str(error.value).endswith("nothing was changed on any server")


# --- size and speed at 3 x 1,000 repositories ---------------------------------------


def big_cluster(tmp_path: Path, n: int) -> tuple[Desired, Facts]:
    servers = {name: {"url": f"ssh://git@{name}.example"} for name in ("a", "b", "c")}
    repositories = {f"group{i % 10}/repo{i:04d}": {} for i in range(n)}
    document = {
        "cluster": {"name": "big"},
        "servers": servers,
        "repositories": repositories,
        "groups": {"gitosis-admin": {"members": ["alice"], "writable": ["gitosis-admin"]}},
        "users": {"alice": ALICE},
    }
    (tmp_path / "cluster.d").mkdir()
    (tmp_path / "cluster.d" / "cluster.yaml").write_text(json.dumps(document))
    desired = load(tmp_path)
    base = base_facts(desired)["a"]
    facts = {}
    for name in servers:
        data = copy.deepcopy(base)
        data["server_key"] = f"ssh-ed25519 AAAA{name} git@{name}"
        data["repositories"] = {"gitosis-admin": data["repositories"]["gitosis-admin"]}
        facts[name] = parse_server_facts(name, data, host_key=f"ssh-ed25519 HOST{name}")
    return desired, Facts(servers=facts)


def test_a_plan_for_3_x_1000_repositories_is_small_and_fast(tmp_path: Path) -> None:
    desired, facts = big_cluster(tmp_path, 1000)
    checkout = CheckoutFacts(tmp_path, "master", HEAD, {}, dict.fromkeys(facts.servers, "same"))
    options = PlanOptions()
    plan = make_plan(PlanContext(desired, facts, checkout, options, RefReport()))
    assert len(plan.actions) >= 3 * 1000 * 3  # create, remotes, hook per repository
    saved = SavedPlan(
        plan,
        SavedOptions((), False, False, options.stamp, library_version()),
        DesiredIdentity(str(tmp_path), "master", HEAD, desired_files(tmp_path), "x"),
        fingerprint_facts(facts, desired.servers),
        "0.1.0",
    )
    path = tmp_path / "big.plan"
    started = time.perf_counter()
    size = write_saved_plan(path, saved)
    written = time.perf_counter() - started
    started = time.perf_counter()
    back = read_saved_plan(path)
    read = time.perf_counter() - started
    assert back.plan.actions == plan.actions
    print(
        f"\nsaved plan 3 x 1,000 repositories: {len(plan.actions)} actions, "
        f"{size / 1e6:.2f} MB, written in {written:.2f} s, read in {read:.2f} s"
    )
    assert size < 10e6
    assert written < 5 and read < 5


def test_fingerprints_of_3_x_1000_converged_repositories_are_small_and_fast(
    tmp_path: Path,
) -> None:
    desired, facts = big_cluster(tmp_path, 1000)
    product = base_facts(desired)["a"]["repositories"]["product"]
    servers = {}
    for name, server in facts.servers.items():
        typed = parse_server_facts(
            name,
            {
                **base_facts(desired)["a"],
                "repositories": {
                    repository: product for repository in desired.mirrored_repositories()
                },
            },
        )
        servers[name] = dataclasses.replace(typed, host_key=server.host_key)
    started = time.perf_counter()
    prints = fingerprint_facts(Facts(servers=servers), desired.servers)
    seconds = time.perf_counter() - started
    size = len(json.dumps({n: f.to_json() for n, f in prints.items()}))
    print(f"\nfingerprints of 3 x 1,001 repositories: {size / 1e3:.0f} kB in {seconds:.2f} s")
    assert all(len(f.repositories) == 1001 for f in prints.values())
    assert size < 1e6 and seconds < 5
