"""The quorum hook on local servers (directories), with real git: receive-pack hands
every push to hooks/proc-receive, which has a majority take it before the refs are
written, lets peers' writes and repairs through, and puts back what it refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from reconciler.replication import settings_json
from reconciler.server.common import PROC_RECEIVE_REFS
from reconciler.testing.library import install_server_library

NAMES = ("a", "b", "c")


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if done.returncode:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def make(tmp: Path, peers_with_remote: tuple[str, ...] = NAMES) -> dict[str, Path]:
    repos = {}
    for name in NAMES:
        base = tmp / name / "repositories"
        (base / ".reconciler").mkdir(parents=True)
        repo = base / "p.git"
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True, timeout=60)
        hook = repo / "hooks" / "post-receive"
        # The library in the server's home and the stub in the repository, as apply
        # installs them; proc-receive links to the stub and takes the replicated refs.
        hook.write_bytes(install_server_library(tmp / name))
        hook.chmod(0o755)
        (repo / "hooks" / "proc-receive").symlink_to("post-receive")
        for prefix in PROC_RECEIVE_REFS:
            git(repo, "config", "--add", "receive.procReceiveRefs", prefix)
        (base / ".reconciler" / "replication.json").write_bytes(
            settings_json(
                server=name,
                peers=NAMES,
                mirror_users=[f"git@{n}" for n in NAMES],
                mode="quorum",
                timeout=10,
            )
        )
        repos[name] = repo
    for name, repo in repos.items():
        for peer in NAMES:
            if peer != name and peer in peers_with_remote:
                git(repo, "remote", "add", peer, str(repos[peer]))
    return repos


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "RECONCILER_"))}
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        **extra,
    )
    return env


def client(tmp: Path) -> Path:
    work = tmp / "client"
    if not work.exists():
        subprocess.run(["git", "init", "-q", str(work)], check=True, timeout=60)
    return work


def commit(work: Path, parent: str | None = None, message: str = "c") -> str:
    tree = git(work, "hash-object", "-t", "tree", "-w", "/dev/null")
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    return git(work, *args, env=env_for())


def push(work: Path, repo: Path, *refspecs: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A person's push to ``repo`` (gitosis would set GITOSIS_USER to a developer)."""
    return subprocess.run(
        ["git", "push", "--porcelain", str(repo), *refspecs],
        cwd=work,
        env=env_for(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def value(repo: Path, ref: str) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", ref],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip()


def test_a_push_is_taken_by_every_server_before_it_is_written(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    done = push(work, repos["a"], f"{first}:refs/heads/master")
    assert done.returncode == 0, done.stderr
    assert "refs/heads/master: taken by 3 of 3 servers" in done.stderr
    for repo in repos.values():
        assert value(repo, "refs/heads/master") == first


def test_refused_without_a_majority_and_put_back(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    shutil.rmtree(repos["c"])  # c is gone: a and b are a majority, b alone is not
    first = commit(work)
    done = push(work, repos["a"], f"{first}:refs/heads/x")
    assert done.returncode == 0, done.stderr
    assert "refs/heads/x: taken by 2 of 3 servers" in done.stderr
    assert "c did not take refs/heads/x" in done.stderr
    # b refuses a write when a is gone too, and puts nothing back (it moved nobody).
    shutil.rmtree(repos["a"])
    second = commit(work, first)
    refused = push(work, repos["b"], f"{second}:refs/heads/x")
    assert refused.returncode != 0
    assert "refs/heads/x refused: 1 of 3 servers could take it" in refused.stderr, refused.stderr
    # git's own line for the ref names the reason too.
    assert "no majority of the servers could take it" in refused.stdout, refused.stdout
    assert value(repos["b"], "refs/heads/x") == first


def test_a_refused_ref_is_put_back_on_the_peer_that_took_it(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    assert push(work, repos["a"], f"{first}:refs/heads/y").returncode == 0
    # c holds another value (it missed a put-back, say); b would take the update.
    other = commit(work, first, "other")
    git(
        repos["c"],
        "fetch",
        "-q",
        str(work),
        f"{other}:refs/heads/y",
        env=env_for(RECONCILER_REPLICA="t"),
    )
    shutil.rmtree(repos["a"])
    mine = commit(work, first, "mine")
    refused = push(work, repos["b"], f"{mine}:refs/heads/y")
    assert refused.returncode != 0
    assert "c holds another value" in refused.stderr and "fetch and retry" in refused.stderr
    assert value(repos["b"], "refs/heads/y") == first
    assert value(repos["c"], "refs/heads/y") == other  # never forced


def test_each_ref_of_a_push_is_decided_on_its_own_unless_the_push_is_atomic(
    tmp_path: Path,
) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    base = commit(work)
    assert (
        push(work, repos["a"], f"{base}:refs/heads/fine", f"{base}:refs/heads/taken").returncode
        == 0
    )
    # b and c took someone else's update of refs/heads/taken that a has not seen.
    theirs = commit(work, base, "theirs")
    for peer in ("b", "c"):
        git(
            repos[peer],
            "fetch",
            "-q",
            str(work),
            f"+{theirs}:refs/heads/taken",
            env=env_for(RECONCILER_REPLICA="t"),
        )
    mine = commit(work, base, "mine")
    done = push(work, repos["a"], f"{mine}:refs/heads/fine", f"{mine}:refs/heads/taken")
    assert done.returncode != 0
    assert "refs/heads/fine: taken by 3 of 3 servers" in done.stderr, done.stderr
    assert all(value(repo, "refs/heads/fine") == mine for repo in repos.values())
    assert value(repos["b"], "refs/heads/taken") == theirs
    # a is behind on it (b and c are a majority): it says so and catches up by itself.
    assert "refs/heads/taken refused: this server is behind on it" in done.stderr, done.stderr
    for _ in range(300):
        if value(repos["a"], "refs/heads/taken") == theirs:
            break
        time.sleep(0.1)
    assert value(repos["a"], "refs/heads/taken") == theirs
    # --atomic: the refused ref takes the other with it, on every server (b and c are
    # busy with refs/heads/taken, so it cannot get a majority; fine could).
    for peer in ("b", "c"):
        (repos[peer] / "refs" / "heads" / "taken.lock").write_text("held")
    later = commit(work, theirs, "later")
    atomic = subprocess.run(
        [
            "git",
            "push",
            "--atomic",
            str(repos["a"]),
            f"+{later}:refs/heads/fine",
            f"{later}:refs/heads/taken",
        ],
        cwd=work,
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert atomic.returncode != 0
    assert "refs/heads/taken refused: 1 of 3 servers could take it" in atomic.stderr, atomic.stderr
    assert "another ref of the same atomic push was refused" in atomic.stderr, atomic.stderr
    assert all(value(repo, "refs/heads/fine") == mine for repo in repos.values()), atomic.stderr


def test_repairs_and_peer_writes_do_not_vote(tmp_path: Path) -> None:
    repos = make(tmp_path, peers_with_remote=())  # no peer can be reached at all
    work = client(tmp_path)
    first = commit(work)
    for marker in ({"RECONCILER_REPLICA": "b"}, {"GITOSIS_USER": "git@b"}):
        done = push(work, repos["a"], f"{first}:refs/heads/repair", **marker)
        assert done.returncode == 0, done.stderr
        assert "taken by" not in done.stderr
        assert value(repos["a"], "refs/heads/repair") == first
        assert push(work, repos["a"], ":refs/heads/repair", **marker).returncode == 0
        assert value(repos["a"], "refs/heads/repair") == ""
    # Refs outside refs/heads, tags and notes are not replicated and never vote.
    other = push(work, repos["a"], f"{first}:refs/other/x")
    assert other.returncode == 0, other.stderr
    refused = push(work, repos["a"], f"{first}:refs/heads/user")
    assert refused.returncode != 0 and "refused: 1 of 3" in refused.stderr
    assert value(repos["a"], "refs/heads/user") == ""


def test_tags_and_deletions_vote_and_a_refused_deletion_changes_nothing(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    for spec in (f"{first}:refs/tags/v1", ":refs/tags/v1"):
        done = push(work, repos["a"], spec)
        assert done.returncode == 0 and "refs/tags/v1: taken by 3 of 3 servers" in done.stderr
    assert all(git(repo, "for-each-ref") == "" for repo in repos.values())
    assert push(work, repos["a"], f"{first}:refs/tags/v2").returncode == 0
    shutil.rmtree(repos["c"])
    (repos["b"] / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    (repos["b"] / "refs" / "tags" / "v2.lock").write_text("held")  # b is busy with v2
    refused = push(work, repos["a"], ":refs/tags/v2")
    assert refused.returncode != 0
    assert "refs/tags/v2 refused: 1 of 3 servers could take it" in refused.stderr
    assert "fetch and retry" in refused.stderr
    assert value(repos["a"], "refs/tags/v2") == first
    assert value(repos["b"], "refs/tags/v2") == first


def test_a_push_of_many_tags_is_one_proposal(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    lines = "".join(f"create refs/tags/t{i} {first}\n" for i in range(1500))
    subprocess.run(
        ["git", "update-ref", "--stdin"], input=lines, cwd=work, text=True, check=True, timeout=60
    )
    # Count the hook's runs: the library's proc-receive entry, wrapped.
    done = push(work, repos["a"], f"{first}:refs/heads/main", "refs/tags/*:refs/tags/*")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "and 1481 more refs, each taken by 3 or more servers" in done.stderr, done.stderr[-500:]
    for repo in repos.values():
        assert (
            int(git(repo, "for-each-ref", "--count=100000", "--format=x", "refs/tags").count("x"))
            == 1500
        )
        assert value(repo, "refs/heads/main") == first


def test_receive_packs_own_checks_hold_for_the_refs_it_hands_over(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    assert (
        push(work, repos["a"], f"{first}:refs/heads/master", f"{first}:refs/heads/b").returncode
        == 0
    )
    # HEAD names refs/heads/master: deleting it is refused, as receive-pack refuses it.
    current = push(work, repos["a"], ":refs/heads/master")
    assert current.returncode != 0
    assert "deletion of the current branch prohibited" in current.stdout, current.stdout
    git(repos["a"], "config", "receive.denyDeletes", "true")
    denied = push(work, repos["a"], ":refs/heads/b")
    assert denied.returncode != 0 and "deletion prohibited" in denied.stdout
    hook = repos["a"] / "hooks" / "update"
    hook.write_text("#!/bin/sh\necho 'no pushes to b' >&2\nexit 1\n")
    hook.chmod(0o755)
    declined = push(work, repos["a"], f"{commit(work, first)}:refs/heads/b")
    assert declined.returncode != 0 and "hook declined" in declined.stdout
    assert "no pushes to b" in declined.stderr
    assert all(value(repo, "refs/heads/b") == first for repo in repos.values())


def test_a_proposal_of_thousands_of_refs_is_one_push_per_peer() -> None:
    from reconciler.server import lease_push
    from reconciler.server.queue import RefUpdate

    sha, old = "a" * 40, "b" * 40
    tags = [RefUpdate("0" * 40, sha, f"refs/tags/{'x' * 200}-{i:05d}") for i in range(5000)]
    updates = [RefUpdate(old, sha, "refs/heads/main"), *tags]
    assert [len(c) for c in lease_push.chunks(updates)] == [5001]
    # A pattern refspec and one explicit lease (the branch): the tags' creations are
    # compare-and-swap without one (git never moves an existing tag without force).
    argv = lease_push.push_argv(updates, exact=True)
    assert len(argv) < 10 and "--force-with-lease=refs/heads/main:" + old in argv, argv
    # A branch's creation is leased "must be absent" in a proposal, not in a plain push.
    created = [RefUpdate("0" * 40, sha, "refs/heads/new")]
    assert "--force-with-lease=refs/heads/new:" in lease_push.push_argv(created, exact=True)
    assert not any("lease" in a for a in lease_push.push_argv(created))
    # Beyond EXPLICIT_LEASES_MAX leases, the tracking refs carry them: one argument.
    branches = [RefUpdate(old, sha, f"refs/heads/b{i}") for i in range(3000)]
    argv = lease_push.push_argv(branches, exact=True)
    assert argv.count("--force-with-lease") == 1 and len(argv) < 10, argv[:10]
    # Thousands of deletions are explicit refspecs: a push per thousand.
    deletions = [RefUpdate(sha, "0" * 40, f"refs/tags/t{i}") for i in range(2500)]
    assert [len(c) for c in lease_push.chunks(deletions)] == [1000, 1000, 500]


def test_a_branch_creation_is_not_taken_by_a_peer_holding_an_ancestor(tmp_path: Path) -> None:
    # c holds refs/heads/z at an ancestor of the value proposed as a creation: a push
    # without a lease would fast-forward it; the proposal's compare-and-swap ("must
    # be absent") has c vote "other value" and leaves its ref alone.
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    git(
        repos["c"],
        "fetch",
        "-q",
        str(work),
        f"{first}:refs/heads/z",
        env=env_for(RECONCILER_REPLICA="t"),
    )
    second = commit(work, first, "second")
    done = push(work, repos["a"], f"{second}:refs/heads/z")
    assert done.returncode == 0, done.stderr
    assert "refs/heads/z: taken by 2 of 3 servers" in done.stderr, done.stderr
    assert "c did not take refs/heads/z (other value)" in done.stderr, done.stderr
    assert value(repos["b"], "refs/heads/z") == second


def test_a_ref_the_proposer_cannot_lock_is_refused_and_put_back(tmp_path: Path) -> None:
    # The proposals go out while the proposer takes its own locks: a ref it cannot
    # lock (a push killed while git held it left REF.lock) was taken by the peers
    # meanwhile, is refused here and put back there; the other ref is written.
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    (repos["a"] / "refs" / "heads" / "held.lock").write_text("held")
    done = push(work, repos["a"], f"{first}:refs/heads/held", f"{first}:refs/heads/free")
    assert done.returncode != 0
    assert "refs/heads/free: taken by 3 of 3 servers" in done.stderr, done.stderr
    assert "could not put" not in done.stderr, done.stderr
    assert "failed to lock" in done.stdout, done.stdout
    for name, repo in repos.items():
        assert value(repo, "refs/heads/free") == first, name
        assert value(repo, "refs/heads/held") == "", name


def test_a_push_of_many_tags_votes_per_ref(tmp_path: Path) -> None:
    # One push per peer, and still a vote per ref: c holds another value of one tag
    # and refuses that one, takes the rest; b takes all. Every tag has its majority.
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    other = commit(work, first, "other")
    git(
        repos["c"],
        "fetch",
        "-q",
        str(work),
        f"{other}:refs/tags/t-00007",
        env=env_for(RECONCILER_REPLICA="t"),
    )
    tags = [f"{first}:refs/tags/t-{i:05d}" for i in range(300)]
    done = push(work, repos["a"], f"{first}:refs/heads/main", *tags)
    assert done.returncode == 0, done.stderr
    assert "refs/tags/t-00007: taken by 2 of 3 servers" in done.stderr, done.stderr
    assert "refs/tags/t-00000: taken by 3 of 3 servers" in done.stderr, done.stderr
    assert "c did not take refs/tags/t-00007 (other value)" in done.stderr, done.stderr
    assert "c did not take refs/tags/t-00008" not in done.stderr, done.stderr
    for name, repo in repos.items():
        assert value(repo, "refs/heads/main") == first
        for i in (0, 8, 299):
            assert value(repo, f"refs/tags/t-{i:05d}") == first, (name, i)
    assert value(repos["c"], "refs/tags/t-00007") == other


def test_deny_non_fast_forwards_holds_for_a_forced_push(tmp_path: Path) -> None:
    repos = make(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    assert push(work, repos["a"], f"{first}:refs/heads/b").returncode == 0
    git(repos["a"], "config", "receive.denyNonFastForwards", "true")
    sideways = commit(work, None, "unrelated")
    forced = push(work, repos["a"], f"+{sideways}:refs/heads/b")
    assert forced.returncode != 0 and "non-fast-forward" in forced.stdout, forced.stdout
    assert all(value(repo, "refs/heads/b") == first for repo in repos.values())
    ahead = commit(work, first, "on top")
    assert push(work, repos["a"], f"{ahead}:refs/heads/b").returncode == 0
    assert all(value(repo, "refs/heads/b") == ahead for repo in repos.values())
