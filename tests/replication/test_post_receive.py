"""The replication hook, run by real git pushes into bare repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from reconciler.replication.queue import read_queue, remove_entry
from reconciler.server import lease_push, pushes
from reconciler.server import replication as post_receive
from reconciler.server.common import atomic_write, drain_lock
from reconciler.server.queue import PERMANENT_REASONS, QueueEntry, write_entry
from reconciler.server.replication import drain, parse_porcelain, supersede
from reconciler.testing.library import install_server_library

from .conftest import (
    Cluster,
    build_cluster,
    git,
    live_processes,
    remote_lines,
    wait_until,
)

ZERO = "0" * 40


def run_hook_file(
    cluster: Cluster, server: str, stdin: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """Run the installed hook directly, as git would after a push."""
    repository = cluster[server].repository()
    env = {**cluster.env, "GIT_DIR": ".", **extra_env}
    return subprocess.run(
        [str(repository / "hooks" / "post-receive")],
        cwd=repository,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_create_update_delete_of_branches_and_tags_reach_every_peer(cluster: Cluster) -> None:
    first = cluster.commit("one")
    result, _ = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror", "replicated to third"]

    second = cluster.commit("two")
    git(cluster.work, "tag", "-a", "-m", "release", "v1", env=cluster.env)
    git(cluster.work, "branch", "topic", first, env=cluster.env)
    result, _ = cluster.push("mirror", "main", "v1", "topic")
    assert remote_lines(result.stderr) == ["replicated to master", "replicated to third"]
    tag = git(cluster.work, "rev-parse", "v1", env=cluster.env).stdout.strip()
    expected = {"refs/heads/main": second, "refs/heads/topic": first, "refs/tags/v1": tag}
    for name in ("master", "mirror", "third"):
        assert cluster.refs(name) == expected, name

    result, _ = cluster.push("third", "--delete", "topic", "v1")
    assert remote_lines(result.stderr) == ["replicated to master", "replicated to mirror"]
    for name in ("master", "mirror", "third"):
        assert cluster.refs(name) == {"refs/heads/main": second}, name
        assert cluster[name].queue() == []


def test_a_nested_repository_is_replicated_under_its_own_name(cluster: Cluster) -> None:
    commit = cluster.commit("one")
    result, _ = cluster.push("third", "main", repository="tools/build-scripts")
    assert remote_lines(result.stderr) == ["replicated to master", "replicated to mirror"]
    for name in ("master", "mirror"):
        assert cluster.refs(name, "tools/build-scripts") == {"refs/heads/main": commit}
        assert cluster.refs(name) == {}


def test_branch_tag_and_deletion_in_one_push(cluster: Cluster) -> None:
    base = cluster.commit("one")
    git(cluster.work, "branch", "old", env=cluster.env)
    cluster.push("master", "main", "old")
    tip = cluster.commit("two", branch="feature")
    git(cluster.work, "tag", "v2", env=cluster.env)
    result, _ = cluster.push("master", "feature", "v2", ":old")
    assert remote_lines(result.stderr) == ["replicated to mirror", "replicated to third"]
    expected = {"refs/heads/main": base, "refs/heads/feature": tip, "refs/tags/v2": tip}
    for name in ("master", "mirror", "third"):
        assert cluster.refs(name) == expected, name


def test_a_push_from_a_peer_is_not_forwarded(cluster: Cluster) -> None:
    # Were mirror or third to forward what master sends them, their pushes to these
    # broken remotes would leave entries in their queues.
    for name in ("mirror", "third"):
        for peer in ("master", "mirror", "third"):
            if peer != name:
                cluster.set_remote(name, peer, str(cluster.root / "nowhere.git"))
    commit = cluster.commit("one")
    result, _ = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror", "replicated to third"]
    for name in ("mirror", "third"):
        assert cluster.refs(name) == {"refs/heads/main": commit}
        assert cluster[name].queue() == []


@pytest.mark.parametrize(
    "extra_env",
    [{"GITOSIS_USER": "git@mirror"}, {"RECONCILER_REPLICA": "mirror"}],
    ids=["gitosis-user", "replica-marker"],
)
def test_the_hook_stays_quiet_for_a_peer(cluster: Cluster, extra_env: dict[str, str]) -> None:
    commit = cluster.commit("one")
    cluster.push("master", "main", RECONCILER_REPLICA="test")  # lands on master only
    result = run_hook_file(cluster, "master", f"{ZERO} {commit} refs/heads/main\n", **extra_env)
    assert result.stdout == ""
    assert result.stderr == ""
    assert cluster.refs("mirror") == {}
    assert cluster["master"].queue() == []


def test_a_person_pushing_through_gitosis_is_replicated(cluster: Cluster) -> None:
    commit = cluster.commit("one")
    cluster.push("master", "main", RECONCILER_REPLICA="test")
    result = run_hook_file(
        cluster, "master", f"{ZERO} {commit} refs/heads/main\n", GITOSIS_USER="alice@desk"
    )
    assert result.stdout.splitlines() == ["replicated to mirror", "replicated to third"]
    assert cluster.refs("third") == {"refs/heads/main": commit}


def test_a_peer_that_moved_elsewhere_is_diverged_and_nothing_is_forced(
    cluster: Cluster,
) -> None:
    first = cluster.commit("one")
    cluster.push("master", "main")
    theirs = cluster.commit("theirs")
    cluster.push("mirror", "main", RECONCILER_REPLICA="test")  # only mirror moves
    git(cluster.work, "reset", "-q", "--hard", first, env=cluster.env)
    ours = cluster.commit("ours")

    result, _ = cluster.push("master", "main")
    assert remote_lines(result.stderr) == [
        "mirror rejected refs/heads/main (diverged): queued for review",
        "replicated to third",
    ]
    assert cluster.refs("mirror") == {"refs/heads/main": theirs}
    assert cluster.refs("master") == {"refs/heads/main": ours}
    assert cluster.refs("third") == {"refs/heads/main": ours}
    git(cluster["master"].repository(), "cat-file", "-e", ours, env=cluster.env)
    git(cluster["mirror"].repository(), "cat-file", "-e", theirs, env=cluster.env)
    [entry] = cluster["master"].queue()
    assert (entry.repository, entry.ref, entry.old, entry.new) == (
        "product",
        "refs/heads/main",
        first,
        ours,
    )
    assert (entry.peer, entry.server, entry.reason, entry.transient) == (
        "mirror",
        "master",
        "diverged",
        False,
    )
    assert entry.detail == f"mirror has {theirs}"


def test_creating_a_ref_a_peer_already_has_elsewhere_is_diverged(cluster: Cluster) -> None:
    theirs = cluster.commit("theirs", branch="topic")
    cluster.push("third", "topic", RECONCILER_REPLICA="test")
    git(cluster.work, "checkout", "-q", "--orphan", "other", env=cluster.env)
    ours = cluster.commit("ours", branch="other")
    result, _ = cluster.push("master", "other:topic")
    assert remote_lines(result.stderr) == [
        "replicated to mirror",
        "third rejected refs/heads/topic (diverged): queued for review",
    ]
    assert cluster.refs("third") == {"refs/heads/topic": theirs}
    [entry] = cluster["master"].queue()
    assert (entry.old, entry.new, entry.reason) == (ZERO, ours, "diverged")


def test_unreachable_missing_and_unconfigured_peers_are_queued(
    tmp_path: Path, closed_port: int
) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror", "third", "fourth"))
    cluster.set_remote("master", "mirror", f"ssh://127.0.0.1:{closed_port}/product.git")
    cluster.set_remote("master", "third", str(tmp_path / "does-not-exist.git"))
    git(cluster["master"].repository(), "remote", "remove", "fourth", env=cluster.env)
    commit = cluster.commit("one")

    result, _ = cluster.push("master", "main")

    assert remote_lines(result.stderr) == [
        "mirror unreachable: queued",
        "third does not have the repository: queued for review",
        "fourth has no remote configured: queued",
    ]
    entries = {e.peer: e for e in cluster["master"].queue()}
    assert {p: (e.reason, e.transient) for p, e in entries.items()} == {
        "mirror": ("unreachable", True),
        "third": ("missing repository", False),
        "fourth": ("no remote", True),
    }
    assert "Connection refused" in entries["mirror"].detail
    for entry in entries.values():
        assert (entry.old, entry.new, entry.ref) == (ZERO, commit, "refs/heads/main")


@pytest.mark.parametrize(
    "ssh_command",
    ["", "ssh -o BatchMode=yes"],
    ids=["hook-ssh-options", "ssh-without-connect-timeout"],
)
def test_a_silent_peer_times_out_and_leaves_no_process(
    tmp_path: Path, silent_listener: int, ssh_command: str
) -> None:
    cluster = build_cluster(tmp_path, timeout=2)
    cluster.set_remote("master", "mirror", f"ssh://127.0.0.1:{silent_listener}/product.git")
    cluster.commit("one")
    extra_env = {"GIT_SSH_COMMAND": ssh_command} if ssh_command else {}

    result, elapsed = cluster.push("master", "main", **extra_env)

    assert remote_lines(result.stderr) == [
        "mirror timed out after 2s: queued",
        "replicated to third",
    ]
    assert 2 <= elapsed < 8
    [entry] = cluster["master"].queue()
    assert (entry.peer, entry.reason, entry.transient) == ("mirror", "timeout", True)
    assert live_processes("ssh", str(silent_listener)) == []


def test_without_settings_the_push_succeeds_with_one_line(cluster: Cluster) -> None:
    (cluster["master"].base / ".reconciler" / "replication.json").unlink()
    cluster.commit("one")
    result, _ = cluster.push("master", "main")
    [line] = remote_lines(result.stderr)
    assert line.startswith("replication is not configured")
    assert cluster.refs("mirror") == {}


def test_broken_settings_give_one_error_line(cluster: Cluster) -> None:
    (cluster["master"].base / ".reconciler" / "replication.json").write_text('{"server": 1}')
    cluster.commit("one")
    result, _ = cluster.push("master", "main")
    [line] = remote_lines(result.stderr)
    assert line.startswith("replication hook error: ")
    assert "format_version" in line


def test_concurrent_hooks_write_distinct_entries(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror"))
    cluster.set_remote("master", "mirror", str(tmp_path / "gone.git"))
    commits = [cluster.commit(f"c{i}", branch=f"b{i}") for i in range(20)]
    cluster.push("master", "--all", RECONCILER_REPLICA="test")
    outputs: list[str] = []

    def one(i: int) -> None:
        result = run_hook_file(cluster, "master", f"{ZERO} {commits[i]} refs/heads/b{i}\n")
        outputs.append(result.stdout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert outputs == ["mirror does not have the repository: queued for review\n"] * 20
    entries = cluster["master"].queue()
    assert sorted(e.ref for e in entries) == sorted(f"refs/heads/b{i}" for i in range(20))
    assert len({e.name for e in entries}) == 20
    queue_files = sorted(p.name for p in (cluster["master"].base / ".reconciler/queue").iterdir())
    assert queue_files == sorted(e.name for e in entries)  # no temporary files left


def test_async_mode_queues_returns_and_the_drainer_delivers(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, mode="async")
    commit = cluster.commit("one")
    result, elapsed = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["mirror: queued", "third: queued"]
    assert elapsed < 5

    def delivered() -> bool:
        return (
            cluster.refs("mirror") == {"refs/heads/main": commit}
            and cluster.refs("third") == {"refs/heads/main": commit}
            and cluster["master"].queue() == []
        )

    wait_until(delivered, what="the drainer to deliver")
    wait_until(lambda: not live_processes("--drain", str(tmp_path)), what="the drainer to exit")
    for name in ("mirror", "third"):
        assert cluster[name].queue() == []


def test_async_mode_does_not_wait_for_a_silent_peer(tmp_path: Path, silent_listener: int) -> None:
    cluster = build_cluster(tmp_path, mode="async", timeout=6)
    cluster.set_remote("master", "mirror", f"ssh://127.0.0.1:{silent_listener}/product.git")
    commit = cluster.commit("one")
    result, elapsed = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["mirror: queued", "third: queued"]
    assert elapsed < 5  # the peer's push alone takes 6

    def settled() -> bool:
        return [e.reason for e in cluster["master"].queue()] == ["timeout"]

    wait_until(settled, what="the drainer to record the timeout")
    assert cluster.refs("third") == {"refs/heads/main": commit}
    wait_until(lambda: not live_processes("--drain", str(tmp_path)), what="the drainer to exit")
    assert live_processes("ssh", str(silent_listener)) == []


def test_the_drainer_leaves_the_queue_to_whoever_holds_the_lock(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, mode="async")
    base = cluster["master"].base
    with drain_lock(base) as held:
        assert held
        # The hook's own drainer finds the lock taken and leaves at once.
        commit = cluster.commit("one")
        cluster.push("master", "main")
        wait_until(
            lambda: not live_processes("--drain", str(tmp_path)), what="the drainer to give up"
        )
        assert {e.reason for e in read_queue(base)} == {"pending"}
        assert drain(base, environ=cluster.env) == post_receive.DrainResult(0, 2, locked=True)
        assert cluster.refs("mirror") == {}
    assert drain(base, "product", environ=cluster.env).delivered == 2
    assert read_queue(base) == []
    assert cluster.refs("mirror") == {"refs/heads/main": commit}


def test_the_drainer_delivers_updates_of_one_ref_in_order(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror"), mode="async")
    base = cluster["master"].base
    with drain_lock(base):
        first = cluster.commit("one")
        cluster.push("master", "main")
        second = cluster.commit("two")
        cluster.push("master", "main")
        cluster.push("master", "main:gone")
        cluster.push("master", ":gone")
        assert len(read_queue(base)) == 4
    assert drain(base, environ=cluster.env).delivered == 4
    assert read_queue(base) == []
    assert cluster.refs("mirror") == {"refs/heads/main": second}
    assert first != second


def test_a_queued_deletion_the_peer_already_made_is_done(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror"), mode="async")
    base = cluster["master"].base
    cluster.commit("one")
    cluster.push("master", "main", "main:topic", RECONCILER_REPLICA="test")
    with drain_lock(base):
        cluster.push("master", ":topic")
    [entry] = read_queue(base)
    assert entry.reason == "pending"
    assert drain(base, environ=cluster.env).delivered == 1
    assert read_queue(base) == []


def test_the_drainer_records_why_a_peer_did_not_take_an_update(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror"), mode="async")
    base = cluster["master"].base
    first = cluster.commit("one")
    cluster.push("master", "main", RECONCILER_REPLICA="test")
    cluster.push("mirror", "main", RECONCILER_REPLICA="test")
    theirs = cluster.commit("theirs")
    cluster.push("mirror", "main", RECONCILER_REPLICA="test")
    git(cluster.work, "reset", "-q", "--hard", first, env=cluster.env)
    cluster.commit("ours")
    with drain_lock(base):
        cluster.push("master", "main")
    assert drain(base, environ=cluster.env).delivered == 0
    [entry] = read_queue(base)
    assert (entry.reason, entry.transient) == ("diverged", False)
    assert entry.detail == f"mirror has {theirs}"
    assert cluster.refs("mirror") == {"refs/heads/main": theirs}


def test_the_hook_file_runs_on_its_own(tmp_path: Path) -> None:
    # The stub runs the installed library, with a bare interpreter and no project on the path.
    hook = tmp_path / "post-receive"
    hook.write_bytes(install_server_library(tmp_path))
    hook.chmod(0o755)
    result = subprocess.run(
        [str(hook), "--drain"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: post-receive --drain BASE")
    assert result.stdout == ""


def test_porcelain_statuses_are_parsed_per_destination_ref() -> None:
    out = (
        "To ../b.git\n"
        "=\tabc:refs/heads/main\t[up to date]\n"
        "!\t(delete):refs/heads/gone\t[rejected] (stale info)\n"
        "!\tdef:refs/tags/v1\t[remote rejected] (hook declined)\n"
        "Done\n"
    )
    assert parse_porcelain(out) == {
        "refs/heads/main": ("=", "[up to date]"),
        "refs/heads/gone": ("!", "[rejected] (stale info)"),
        "refs/tags/v1": ("!", "[remote rejected] (hook declined)"),
    }


def test_a_peer_hook_declining_is_rejected_for_review(cluster: Cluster) -> None:
    pre_receive = cluster["third"].repository() / "hooks" / "pre-receive"
    pre_receive.write_text("#!/bin/sh\necho no >&2\nexit 1\n")
    pre_receive.chmod(0o755)
    cluster.commit("one")
    started = time.monotonic()
    result, _ = cluster.push("master", "main")
    assert time.monotonic() - started < 30
    assert remote_lines(result.stderr) == [
        "replicated to mirror",
        "third rejected refs/heads/main (pre-receive hook declined): queued for review",
    ]
    [entry] = cluster["master"].queue()
    assert (entry.reason, entry.transient) == ("rejected", False)


def test_a_peer_that_missed_a_push_is_fast_forwarded_by_the_next(cluster: Cluster) -> None:
    first = cluster.commit("one")
    cluster.push("master", "main")
    cluster.set_remote("master", "mirror", str(cluster.root / "away.git"))
    cluster.commit("two")
    result, _ = cluster.push("master", "main")
    assert (
        remote_lines(result.stderr)[0] == "mirror does not have the repository: queued for review"
    )
    cluster.set_remote("master", "mirror", str(cluster["mirror"].repository()))
    git(cluster["master"].repository(), "remote", "remove", "third", env=cluster.env)
    cluster.commit("three")
    result, _ = cluster.push("master", "main")
    third = cluster.refs("master")["refs/heads/main"]
    assert remote_lines(result.stderr) == [
        "replicated to mirror",
        "third has no remote configured: queued",
    ]
    assert cluster.refs("mirror") == {"refs/heads/main": third}
    # The permanent entry stays for review; the transient one for third is current.
    assert sorted((e.peer, e.reason, e.old) for e in cluster["master"].queue()) == [
        ("mirror", "missing repository", first),
        ("third", "no remote", cluster.refs("third")["refs/heads/main"]),
    ]

    git(
        cluster["master"].repository(),
        "config",
        "remote.third.url",
        str(cluster["third"].repository()),
        env=cluster.env,
    )
    cluster.commit("four")
    result, _ = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror", "replicated to third"]
    assert [e.reason for e in cluster["master"].queue()] == ["missing repository"]


def test_a_remote_left_from_a_mirror_clone_pushes_only_the_given_refs(cluster: Cluster) -> None:
    git(cluster["master"].repository(), "config", "remote.mirror.mirror", "true", env=cluster.env)
    git(cluster["master"].repository(), "config", "push.followTags", "true", env=cluster.env)
    cluster.commit("one")
    cluster.push("master", "main")
    git(cluster.work, "tag", "-a", "-m", "t", "v1", env=cluster.env)
    git(cluster.work, "branch", "side", env=cluster.env)
    cluster.push("master", "side", "v1", RECONCILER_REPLICA="test")  # master only
    commit = cluster.commit("two")
    result, _ = cluster.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror", "replicated to third"]
    assert cluster.refs("mirror") == {"refs/heads/main": commit}


def test_the_update_is_queued_before_the_push_to_a_peer_starts(
    tmp_path: Path, silent_listener: int
) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror"), timeout=4)
    cluster.set_remote("master", "mirror", f"ssh://127.0.0.1:{silent_listener}/product.git")
    cluster.commit("one")
    push = subprocess.Popen(
        ["git", "push", str(cluster["master"].repository()), "main"],
        cwd=cluster.work,
        env=cluster.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: len(cluster["master"].queue()) == 1, timeout=10, what="an entry")
        [entry] = cluster["master"].queue()
        assert entry.reason == "pending"
        assert push.poll() is None  # the hook is still waiting for the peer
        assert push.wait(timeout=20) == 0
    finally:
        if push.poll() is None:
            push.kill()
            push.wait(timeout=10)
    [entry] = cluster["master"].queue()
    assert entry.reason == "timeout"


def test_only_older_failed_tries_of_a_delivered_ref_are_superseded(tmp_path: Path) -> None:
    def entry(ref: str, reason: str, peer: str = "mirror") -> QueueEntry:
        return QueueEntry(
            repository="product",
            ref=ref,
            old="1" * 40,
            new="2" * 40,
            peer=peer,
            reason=reason,
            transient=reason != "diverged",
            time=1.0,
            server="master",
        )

    moot = write_entry(tmp_path, entry("refs/heads/main", "unreachable"))
    kept = [
        write_entry(tmp_path, entry("refs/heads/main", "pending")),  # another hook's, in flight
        write_entry(tmp_path, entry("refs/heads/main", "diverged")),  # for review
        write_entry(tmp_path, entry("refs/heads/main", "timeout", peer="third")),
        write_entry(tmp_path, entry("refs/heads/other", "timeout")),
    ]
    before = write_entry(tmp_path, entry("refs/heads/main", "pending")).name
    newer = write_entry(tmp_path, entry("refs/heads/main", "timeout"))
    with drain_lock(tmp_path):
        supersede(tmp_path, "product", "mirror", {"refs/heads/main"}, before)  # lock taken
    assert moot in read_queue(tmp_path)
    supersede(tmp_path, "product", "mirror", {"refs/heads/main"}, before)
    names = {e.name for e in read_queue(tmp_path)}
    assert moot.name not in names
    assert {e.name for e in kept} | {before, newer.name} == names


def test_an_internal_error_is_one_line_and_the_updates_stay_queued(cluster: Cluster) -> None:
    commit = cluster.commit("one")
    cluster.push("master", "main", RECONCILER_REPLICA="test")
    said: list[str] = []

    def emit(line: str) -> None:
        said.append(line)
        if len(said) == 1:
            raise RuntimeError("the terminal went away")

    environ = {**cluster.env, "GIT_DIR": str(cluster["master"].repository())}
    assert post_receive.run_hook(f"{ZERO} {commit} refs/heads/main\n", environ, emit) == 0
    assert said == ["replicated to mirror", "replication hook error: the terminal went away"]
    queued = cluster["master"].queue()
    assert sorted((e.peer, e.reason) for e in queued) == [
        ("mirror", "pending"),
        ("third", "pending"),
    ]
    # Queued twice is harmless: the lease makes the second delivery "up to date".
    assert drain(cluster["master"].base, environ=cluster.env).delivered == 2
    assert cluster.refs("third") == {"refs/heads/main": commit}


def test_input_that_is_not_ref_updates_is_one_error_line(cluster: Cluster) -> None:
    result = run_hook_file(cluster, "master", "this is not an update\n")
    assert result.stdout.startswith("replication hook error: unexpected update line")
    assert len(result.stdout.splitlines()) == 1
    assert cluster["master"].queue() == []


def _python_3_9() -> str | None:
    candidates = [shutil.which("python3.9")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.stdout.strip() == "True":
            return candidate
    return None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_hook_runs_on_python_3_9(tmp_path: Path, mode: str) -> None:
    python = _python_3_9()
    if python is None:
        pytest.skip("no Python 3.9 on this machine")
    cluster = build_cluster(tmp_path, mode=mode, python=python)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "python3").symlink_to(python)
    path = f"{shims}{os.pathsep}{cluster.env['PATH']}"
    commit = cluster.commit("one")
    result, _ = cluster.push("master", "main", PATH=path)
    expected = {
        "sync": ["replicated to mirror", "replicated to third"],
        "async": ["mirror: queued", "third: queued"],
    }
    assert remote_lines(result.stderr) == expected[mode]

    def delivered() -> bool:
        return all(cluster.refs(n) == {"refs/heads/main": commit} for n in ("mirror", "third"))

    wait_until(delivered, what="both peers to have the commit")
    wait_until(lambda: cluster["master"].queue() == [], what="an empty queue")
    wait_until(lambda: not live_processes("--drain", str(tmp_path)), what="the drainer to exit")


def test_a_push_of_more_refs_than_one_command_takes(cluster: Cluster) -> None:
    count = post_receive.PUSH_CHUNK + 1
    commit = cluster.commit("one")
    lines = "".join(f"create refs/heads/b{i:04d} {commit}\n" for i in range(count))
    subprocess.run(
        ["git", "update-ref", "--stdin"],
        cwd=cluster.work,
        env=cluster.env,
        input=lines,
        text=True,
        check=True,
        timeout=60,
    )
    result, _ = cluster.push("master", "refs/heads/*:refs/heads/*")
    assert remote_lines(result.stderr) == ["replicated to mirror", "replicated to third"]
    for name in ("mirror", "third"):
        assert len(cluster.refs(name)) == count + 1  # and main
    assert cluster["master"].queue() == []


def test_a_retry_drain_delivers_what_a_peer_missed_and_keeps_what_diverged(
    tmp_path: Path,
) -> None:
    cluster = build_cluster(tmp_path)
    first = cluster.commit("one")
    cluster.push("master", "main")
    cluster.set_remote("master", "mirror", str(tmp_path / "away.git"))
    cluster.set_remote("master", "third", str(tmp_path / "away.git"))
    second = cluster.commit("two")
    git(cluster.work, "branch", "topic", first, env=cluster.env)
    cluster.push("master", "main", "topic")
    assert len(cluster["master"].queue()) == 4
    theirs = cluster.commit("theirs", branch="elsewhere")
    cluster.push("third", "elsewhere:topic", RECONCILER_REPLICA="test")  # third has its own
    cluster.set_remote("master", "mirror", str(cluster["mirror"].repository()))
    cluster.set_remote("master", "third", str(cluster["third"].repository()))

    hook = cluster["master"].repository() / "hooks" / "post-receive"
    drained = subprocess.run(
        [str(hook), "--drain", str(cluster["master"].base), "--retry"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(drained.stdout) == {
        "format_version": 1,
        "delivered": 3,
        "remaining": 1,
        "locked": False,
    }
    assert cluster.refs("mirror") == {"refs/heads/main": second, "refs/heads/topic": first}
    assert cluster.refs("third") == {"refs/heads/main": second, "refs/heads/topic": theirs}
    [entry] = cluster["master"].queue()
    assert (entry.peer, entry.ref, entry.reason) == ("third", "refs/heads/topic", "diverged")


def test_split_brain_keeps_both_commits_and_replicates_the_rest(cluster: Cluster) -> None:
    base = cluster.commit("base")
    cluster.push("master", "main")
    other = cluster.root / "other-work"
    git(
        cluster.root,
        "clone",
        "-q",
        str(cluster["mirror"].repository()),
        str(other),
        env=cluster.env,
    )
    ours = cluster.commit("ours")
    (other / "file.txt").write_text("theirs\n")
    git(other, "commit", "-q", "-am", "theirs", env=cluster.env)
    theirs = git(other, "rev-parse", "HEAD", env=cluster.env).stdout.strip()
    git(other, "branch", "unrelated", base, env=cluster.env)

    pushes = {
        "master": subprocess.Popen(
            ["git", "push", str(cluster["master"].repository()), "main"],
            cwd=cluster.work,
            env=cluster.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "mirror": subprocess.Popen(
            ["git", "push", str(cluster["mirror"].repository()), "main", "unrelated"],
            cwd=other,
            env=cluster.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    accepted = {}
    said = {}
    for name, push in pushes.items():
        try:
            said[name] = push.communicate(timeout=60)[1]
        finally:
            if push.poll() is None:
                push.kill()
                push.wait(timeout=10)
        accepted[name] = push.returncode == 0
    pushed = {"master": ours, "mirror": theirs}

    assert any(accepted.values())
    for name in ("master", "mirror", "third"):
        assert cluster.refs(name)["refs/heads/main"] in (ours, theirs), name
    for name, commit in pushed.items():
        if accepted[name]:
            # What a server accepted from a person is never overwritten by a peer.
            assert cluster.refs(name)["refs/heads/main"] == commit, name
    if all(accepted.values()):
        # Both sides were told, and each recorded the other for review.
        for name, other_name in (("master", "mirror"), ("mirror", "master")):
            assert f"{other_name} rejected refs/heads/main (diverged)" in said[name], said
            entries = [e for e in cluster[name].queue() if e.ref == "refs/heads/main"]
            assert {e.reason for e in entries} == {"diverged"}, [
                (e.peer, e.reason, e.detail) for e in entries
            ]
            assert other_name in {e.peer for e in entries}
    # The other branch pushed meanwhile is replicated normally.
    if accepted["mirror"]:
        for name in ("master", "third"):
            assert cluster.refs(name)["refs/heads/unrelated"] == base, name


def push_records(server_base: Path) -> list[dict[str, object]]:
    path = server_base / pushes.PUSHES_PATH
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_peer_push_is_recorded_with_its_duration_and_outcome(
    tmp_path: Path, closed_port: int
) -> None:
    cluster = build_cluster(tmp_path)
    cluster.set_remote("master", "third", f"ssh://127.0.0.1:{closed_port}/product.git")
    cluster.commit("one")
    started = time.time()
    cluster.push("master", "main")
    cluster.commit("two")
    cluster.push("master", "main")

    records = push_records(cluster["master"].base)
    by_peer: dict[object, list[dict[str, object]]] = {}
    for record in records:
        by_peer.setdefault(record["peer"], []).append(record)
    assert [r["result"] for r in by_peer["mirror"]] == ["ok", "ok"]
    assert [r["result"] for r in by_peer["third"]] == ["unreachable", "unreachable"]
    for record in records:
        assert 0 < float(record["seconds"]) < 20  # type: ignore[arg-type]
        assert started - 1 <= float(record["time"]) <= time.time() + 1  # type: ignore[arg-type]
    # The peers took the pushes from a peer and recorded nothing themselves.
    assert push_records(cluster["mirror"].base) == []


def test_async_drainer_pushes_are_recorded(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, mode="async")
    cluster.commit("one")
    cluster.push("master", "main")

    def recorded() -> bool:
        return {r["peer"] for r in push_records(cluster["master"].base)} == {"mirror", "third"}

    wait_until(recorded, what="the drainer to record its pushes")
    wait_until(lambda: not live_processes("--drain", str(tmp_path)), what="the drainer to exit")
    assert {r["result"] for r in push_records(cluster["master"].base)} == {"ok"}


def test_push_records_stop_at_their_bound(tmp_path: Path) -> None:
    base = tmp_path / "repositories"
    (base / ".reconciler").mkdir(parents=True)
    path = base / pushes.PUSHES_PATH
    path.write_bytes(b"x" * pushes.PUSHES_MAX_BYTES)
    pushes.record_push(base, "mirror", 0.5, "ok")
    assert path.stat().st_size == pushes.PUSHES_MAX_BYTES
    path.write_bytes(b"")
    pushes.record_push(base, "mirror", 0.5, "ok")
    assert push_records(base)[0]["seconds"] == 0.5


def test_a_record_waiting_for_the_lock_lands_in_the_compacted_file(tmp_path: Path) -> None:
    """The gather program renames a compacted file over the record file while it holds
    the lock: a hook that waited for the lock writes into the new file, not the old."""
    import fcntl

    base = tmp_path / "repositories"
    (base / ".reconciler").mkdir(parents=True)
    old = time.time() - 2 * pushes.PUSH_WINDOW_SECONDS
    path = base / pushes.PUSHES_PATH
    path.write_text(
        json.dumps({"peer": "mirror", "time": old, "seconds": 1.0, "result": "ok"}) + "\n"
    )
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        writer = threading.Thread(target=pushes.record_push, args=(base, "mirror", 2.0, "timeout"))
        writer.start()
        time.sleep(0.1)  # the writer now waits for the lock on the old file
        peers, dirty = pushes.parse_push_lines(path.read_text(), time.time())
        assert dirty
        atomic_write(str(path), pushes.compacted_push_lines(peers).encode())
    writer.join(timeout=10)
    answer = pushes.read_pushes(str(base), time.time())
    assert answer["mirror"]["count"] == 2
    assert answer["mirror"]["results"] == {"ok": 1, "timeout": 1}
    assert answer["mirror"]["recent"] == [2.0]


def test_a_peer_gitosis_refusing_the_key_is_denied_with_its_own_sentence() -> None:
    """Not "unreachable": the peer answered, and trying again changes nothing."""
    update = post_receive.RefUpdate(old=ZERO, new="1" * 40, ref="refs/heads/main")
    stderr = (
        "ERROR:gitosis.serve.main:Repository read access denied\n"
        "fatal: Could not read from remote repository.\n\n"
        "Please make sure you have the correct access rights\nand the repository exists.\n"
    )
    run = post_receive.Run(returncode=128, stdout="", stderr=stderr, timed_out=False)
    outcome = post_receive.classify(update, None, run)
    assert (outcome.reason, outcome.detail) == ("denied", "Repository read access denied")
    assert "denied" in PERMANENT_REASONS
    assert post_receive.peer_line("t0", [outcome], 30) == (
        "t0 refused access: gitosis on t0 said 'Repository read access denied': queued for review"
    )
    # Without gitosis's sentence it is what it was: a connection that failed.
    refused = post_receive.Run(
        128, "", "ssh: connect to host x port 1: Connection refused\n", False
    )
    assert post_receive.classify(update, None, refused).reason == "unreachable"


def test_the_admin_repository_is_not_replicated_by_the_hook(cluster: Cluster) -> None:
    """Only reconcile apply sends it; the pusher is told so, and no peer is pushed."""
    for server in cluster.servers.values():
        settings = json.loads((server.base / ".reconciler/replication.json").read_text())
        settings["admin_repository"] = "product"
        (server.base / ".reconciler/replication.json").write_text(json.dumps(settings))
    cluster.commit("admin change")

    result, _ = cluster.push("master", "main")

    assert remote_lines(result.stderr) == [
        "product reaches the other servers at the next reconcile apply"
    ]
    assert cluster.refs("mirror") == {} and cluster.refs("third") == {}
    assert cluster["master"].queue() == []


def _branches(cluster: Cluster, names: list[str], at: str) -> None:
    lines = "".join(f"update refs/heads/{name} {at}\n" for name in names)
    subprocess.run(
        ["git", "update-ref", "--stdin"],
        cwd=cluster.work,
        env=cluster.env,
        input=lines,
        text=True,
        check=True,
        timeout=60,
    )


def test_moving_more_refs_than_explicit_leases_still_leases_each_ref(cluster: Cluster) -> None:
    """Beyond EXPLICIT_LEASES_MAX existing refs the leases go through the workspace's
    tracking refs: every ref still has its own compare-and-swap."""
    names = [f"b{i:02d}" for i in range(lease_push.EXPLICIT_LEASES_MAX + 4)]
    assert len(names) > lease_push.EXPLICIT_LEASES_MAX
    first = cluster.commit("one")
    _branches(cluster, names, first)
    cluster.push("master", "refs/heads/*:refs/heads/*")
    theirs = cluster.commit("theirs", branch="elsewhere")
    cluster.push("third", f"elsewhere:{names[3]}", RECONCILER_REPLICA="test")  # third alone
    git(cluster.work, "checkout", "-q", "-B", "main", first, env=cluster.env)
    ours = cluster.commit("ours", branch="main")  # not a descendant of theirs
    _branches(cluster, names, ours)

    result, _ = cluster.push("master", *[f"{n}:{n}" for n in names])

    assert remote_lines(result.stderr) == [
        "replicated to mirror",
        f"third rejected refs/heads/{names[3]} (diverged): queued for review",
    ]
    expected = {f"refs/heads/{n}": ours for n in names} | {"refs/heads/main": first}
    assert cluster.refs("mirror") == expected
    assert cluster.refs("third") == expected | {f"refs/heads/{names[3]}": theirs}
    [entry] = cluster["master"].queue()
    assert (entry.peer, entry.ref, entry.old, entry.reason) == (
        "third",
        f"refs/heads/{names[3]}",
        first,
        "diverged",
    )


def test_a_push_of_many_refs_to_a_peer_that_is_away_is_one_queue_file(
    tmp_path: Path, closed_port: int
) -> None:
    cluster = build_cluster(tmp_path, names=("master", "mirror"))
    cluster.set_remote("master", "mirror", f"ssh://127.0.0.1:{closed_port}/product.git")
    commit = cluster.commit("one")
    names = [f"t{i:03d}" for i in range(200)]
    lines = "".join(f"create refs/tags/{name} {commit}\n" for name in names)
    subprocess.run(
        ["git", "update-ref", "--stdin"],
        cwd=cluster.work,
        env=cluster.env,
        input=lines,
        text=True,
        check=True,
        timeout=60,
    )
    result, _ = cluster.push("master", "main", "refs/tags/*:refs/tags/*")
    assert remote_lines(result.stderr) == ["mirror unreachable: queued"]
    files = list((cluster["master"].base / ".reconciler/queue").iterdir())
    assert len(files) == 1, files
    queued = cluster["master"].queue()
    assert len(queued) == len(names) + 1
    assert {e.reason for e in queued} == {"unreachable"}
    assert len({e.name for e in queued}) == len(queued)

    cluster.set_remote("master", "mirror", str(cluster["mirror"].repository()))
    # Apply drains one delivered entry by its name: only that entry leaves the batch.
    first = queued[0]
    assert remove_entry(cluster["master"].base, first)
    assert [e.name for e in cluster["master"].queue()] == [e.name for e in queued[1:]]
    result_ = drain(cluster["master"].base, environ=cluster.env, retry=True)
    assert (result_.delivered, result_.remaining) == (len(queued) - 1, 0)
    assert list((cluster["master"].base / ".reconciler/queue").iterdir()) == []
    # The removed entry was not delivered: the peer lacks exactly that ref.
    mirrored = cluster.refs("mirror")
    assert len(mirrored) == len(names) and first.ref not in mirrored
