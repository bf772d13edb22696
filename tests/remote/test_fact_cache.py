"""The cache of repository facts (reconciler.gather_cache on the operator's side,
reconciler.server.fact_cache on the server's): whatever is changed in a repository,
and however, the answer with the cache is the one a full read gives; unchanged
repositories are not read again; and nothing is written on the server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import gather_cache
from reconciler.errors import ServerError
from reconciler.gather_cache import MAGIC, GatherCache
from reconciler.server import fact_cache, hooks, repositories
from tests.remote.test_gather import run_assembled_gather

# More than a tick of the clock file times come from, so that two changes the test
# makes one after the other never share a time stamp (as two writes by hand, seconds
# apart, never do).
TICK = 0.03


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def make_repository(base: Path, name: str, commits: int = 2) -> Path:
    """A bare repository with ``commits`` commits on master and a tag, made by git."""
    gitdir = base / f"{name}.git"
    work = base.parent / f"work-{name.replace('/', '-')}"
    git("init", "--quiet", "--bare", str(gitdir))
    git("init", "--quiet", str(work))
    for i in range(commits):
        (work / "file").write_text(f"{name} {i}\n")
        git("add", "file", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{i}", cwd=work)
    (base.parent / f"first-{gitdir.name}").write_text(
        git("rev-list", "--max-parents=0", "HEAD", cwd=work)
    )
    git("tag", "v1", cwd=work)
    git("push", "--quiet", str(gitdir), "master", "v1", cwd=work)
    (gitdir / "hooks").mkdir(exist_ok=True)
    (gitdir / "hooks" / "post-receive").write_bytes(b"#!/bin/sh\necho managed\n")
    os.chmod(gitdir / "hooks" / "post-receive", 0o755)  # noqa: S103 - a hook's mode
    return gitdir


class Gatherer:
    """A server's repository walk as the gather program runs it, with the operator's
    cache file beside it: what one ``reconcile plan`` does for one server."""

    def __init__(self, home: Path, operator: str = "operator") -> None:
        self.home = home
        self.base = home / "repositories"
        self.path = home.parent / f"{home.name}-{operator}-cache" / "server.marshal"
        self.version = "v1"

    def cached(self, want_refs: bool = True) -> tuple[dict[str, Any], int]:
        cache = GatherCache(self.path, self.version)
        # Through JSON, as the request and the answer travel.
        remembered = fact_cache.parse_known(json.loads(json.dumps(cache.known(want_refs))))
        unchanged: list[str] = []
        found = repositories.walk_repositories(
            str(self.base),
            want_refs,
            NO_HOOK,
            remembered=remembered,
            unchanged=unchanged,
            horizon_ns=time.time_ns() - fact_cache.RACY_NS,
        )
        answer = json.loads(json.dumps({"repositories": found, "unchanged": unchanged}))
        cache.merge("server", answer)
        cache.save()
        return answer["repositories"], answer["fact_cache_hits"]

    def full(self, want_refs: bool = True) -> dict[str, Any]:
        return repositories.walk_repositories(str(self.base), want_refs, NO_HOOK)


NO_HOOK = hooks.NO_KNOWN_CONTENT


def rewrite_in_place(path: Path, old: bytes, new: bytes) -> None:
    """Change ``path`` without changing its size, inode or modification time: only
    its change time tells (an editor that writes in place, then ``touch -r``)."""
    assert len(old) == len(new)
    before = path.stat()
    data = path.read_bytes()
    assert old in data, (path, data)
    with open(path, "r+b") as handle:
        handle.write(data.replace(old, new, 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def other_commit(gitdir: Path) -> str:
    """The repository's first commit (as ``make_repository`` noted it)."""
    return (gitdir.parents[1] / f"first-{gitdir.name}").read_text()


def symlink_replace(target: str, link: Path) -> None:
    temp = link.with_name(link.name + ".new")
    os.symlink(target, temp)
    os.replace(temp, link)


def replace_by_copy(base: Path) -> None:
    """b.git replaced by a copy of a.git with every time kept (cp -a)."""
    shutil.rmtree(base / "b.git")
    shutil.copytree(base / "a.git", base / "b.git", symlinks=True)


def link_directory(base: Path, name: str) -> None:
    """b.git's directory ``name`` replaced by a symlink to a.git's."""
    shutil.rmtree(base / "b.git" / name)
    os.symlink(f"../a.git/{name}", base / "b.git" / name)


def link_namespace(base: Path) -> None:
    """refs/heads/shared a symlink to a directory elsewhere, holding a ref (a
    namespace shared by hand): the walk does not enter a symlinked directory."""
    shared = base.parent / "shared-namespace"
    shared.mkdir()
    (shared / "x").write_text("1" * 40 + "\n")
    os.symlink(shared, base / "a.git/refs/heads/shared")


def namespace_to_file(base: Path) -> None:
    """What the symlink points at becomes a ref file (git pruned the directory and
    wrote a ref of that name there): now it is read as refs/heads/shared, and the
    link and the directory holding it are unchanged."""
    shared = base.parent / "shared-namespace"
    shutil.rmtree(shared)
    shared.write_text("2" * 40 + "\n")


def add_repository(base: Path) -> None:
    make_repository(base, "group/c", 1)


Change = Callable[[Path], None]

# Each change, made to the state the ones before it left; repository "a" is the one
# changed unless the change says otherwise.
CHANGES: list[tuple[str, Change]] = [
    (
        "config edited in place",
        lambda b: rewrite_in_place(b / "a.git/config", b"bare = true", b"bare = True"),
    ),
    (
        "config edited back",
        lambda b: rewrite_in_place(b / "a.git/config", b"bare = True", b"bare = true"),
    ),
    (
        "a remote added",
        lambda b: git("--git-dir", str(b / "a.git"), "remote", "add", "peer", "ssh://x/a.git"),
    ),
    (
        "a loose ref moved by git",
        lambda b: git(
            "--git-dir",
            str(b / "a.git"),
            "update-ref",
            "refs/heads/master",
            other_commit(b / "a.git"),
        ),
    ),
    ("refs packed", lambda b: git("--git-dir", str(b / "a.git"), "pack-refs", "--all")),
    (
        "a packed ref edited in place",
        lambda b: rewrite_in_place(b / "a.git/packed-refs", b" refs/tags/v1", b" refs/tags/v2"),
    ),
    ("packed-refs removed", lambda b: (b / "a.git/packed-refs").unlink()),
    (
        "a branch in a new directory",
        lambda b: git(
            "--git-dir",
            str(b / "b.git"),
            "update-ref",
            "refs/heads/topic/one",
            other_commit(b / "b.git"),
        ),
    ),
    (
        "a loose ref rewritten in place",
        lambda b: rewrite_in_place(
            b / "b.git/refs/heads/topic/one", other_commit(b / "b.git")[:8].encode(), b"0" * 8
        ),
    ),
    ("a ref lock left", lambda b: (b / "b.git/refs/heads/master.lock").write_text("x\n")),
    ("the ref lock gone", lambda b: (b / "b.git/refs/heads/master.lock").unlink()),
    (
        "notes",
        lambda b: git(
            "--git-dir",
            str(b / "b.git"),
            "update-ref",
            "refs/notes/commits",
            other_commit(b / "b.git"),
        ),
    ),
    ("HEAD edited in place", lambda b: rewrite_in_place(b / "a.git/HEAD", b"master", b"mastex")),
    (
        "the hook edited in place",
        lambda b: rewrite_in_place(b / "a.git/hooks/post-receive", b"managed", b"foreign"),
    ),
    ("the hook's mode", lambda b: os.chmod(b / "a.git/hooks/post-receive", 0o644)),
    ("the hook a symlink", lambda b: symlink_replace("/bin/true", b / "a.git/hooks/post-receive")),
    ("proc-receive linked", lambda b: os.symlink("post-receive", b / "a.git/hooks/proc-receive")),
    (
        "proc-receive linked elsewhere",
        lambda b: symlink_replace("elsewhere", b / "a.git/hooks/proc-receive"),
    ),
    (
        "reference-transaction a file",
        lambda b: (b / "a.git/hooks/reference-transaction").write_text("#!/bin/sh\n"),
    ),
    ("exported", lambda b: (b / "a.git/git-daemon-export-ok").touch()),
    ("no longer exported", lambda b: (b / "a.git/git-daemon-export-ok").unlink()),
    ("a new repository", add_repository),
    ("a repository removed", lambda b: shutil.rmtree(b / "group/c.git")),
    (
        "a repository replaced by a copy of another, times kept",
        replace_by_copy,
    ),
    (
        "the hooks directory a symlink",
        lambda b: link_directory(b, "hooks"),
    ),
    (
        "the linked hooks directory's hook edited",
        lambda b: os.chmod(b / "a.git/hooks/reference-transaction", 0o700),
    ),
    (
        "the refs of a repository a symlink",
        lambda b: link_directory(b, "refs"),
    ),
    (
        "a ref under the linked refs",
        lambda b: git(
            "--git-dir",
            str(b / "a.git"),
            "update-ref",
            "refs/heads/via-link",
            other_commit(b / "a.git"),
        ),
    ),
    ("a ref directory that is a symlink", link_namespace),
    ("the directory it points at turned into a ref file", namespace_to_file),
    ("objects gone: not a repository", lambda b: shutil.rmtree(b / "a.git/objects")),
]


@pytest.fixture
def trusting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Facts read a moment after their change are kept (the test waits a tick between
    a gather and the next change instead of the racy margin)."""
    monkeypatch.setattr(fact_cache, "RACY_NS", 0)


@pytest.mark.usefixtures("trusting")
def test_every_kind_of_change_is_seen_and_nothing_else_is_read_again(tmp_path: Path) -> None:
    # Two operators: one gathering with the refs, one without (as plan does); each
    # keeps its own file, so each change meets what the one before it left cached.
    gatherers = [(Gatherer(tmp_path, "with-refs"), True), (Gatherer(tmp_path, "plain"), False)]
    make_repository(tmp_path / "repositories", "a")
    make_repository(tmp_path / "repositories", "b")
    time.sleep(TICK)
    for gatherer, refs in gatherers:
        first, hits = gatherer.cached(refs)
        assert hits == 0 and first == gatherer.full(refs)
    from_cache_after_a_change = 0
    for what, change in CHANGES:
        time.sleep(TICK)
        change(tmp_path / "repositories")
        time.sleep(TICK)
        for gatherer, refs in gatherers:
            expected = gatherer.full(refs)
            cached, hits = gatherer.cached(refs)
            assert cached == expected, (what, refs)
            from_cache_after_a_change += hits
            # Asked again with nothing changed: every repository whose facts can be
            # kept comes from the cache (one with a ref lock cannot: its age moves).
            again, hits = gatherer.cached(refs)
            assert again == expected, (what, refs)
            locked = [name for name, facts in expected.items() if facts.get("ref_locks")]
            assert hits == len(expected) - len(locked), (what, refs)
    # The repository a change left alone was answered from the cache, so the
    # comparisons above did compare cached facts, not only fresh reads.
    assert from_cache_after_a_change >= len(CHANGES)


@pytest.mark.usefixtures("trusting")
def test_facts_kept_with_the_refs_are_not_given_to_a_gather_without_them(tmp_path: Path) -> None:
    gatherer = Gatherer(tmp_path)
    make_repository(gatherer.base, "a")
    time.sleep(TICK)
    gatherer.cached(want_refs=True)
    assert gatherer.cached(want_refs=True)[1] == 1
    assert gatherer.cached(want_refs=False) == (gatherer.full(want_refs=False), 0)
    assert gatherer.cached(want_refs=False)[1] == 1
    assert gatherer.cached(want_refs=True) == (gatherer.full(want_refs=True), 0)


def test_facts_read_just_after_a_change_are_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The racy margin: a change within it might be followed by another in the same
    clock tick, with the same size, which no status could tell; so such facts are not
    kept until their inputs have been still for the whole margin."""
    monkeypatch.setattr(fact_cache, "RACY_NS", 400_000_000)
    gatherer = Gatherer(tmp_path)
    make_repository(gatherer.base, "a")
    assert gatherer.cached()[1] == 0
    assert gatherer.cached()[1] == 0  # still within the margin: read again
    time.sleep(0.5)
    assert gatherer.cached()[1] == 0  # now kept...
    assert gatherer.cached()[1] == 1  # ...and used
    rewrite_in_place(gatherer.base / "a.git/config", b"bare = true", b"bare = True")
    facts, hits = gatherer.cached()
    assert hits == 0 and facts == gatherer.full()


@pytest.mark.usefixtures("trusting")
@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # torn
        lambda data: b"",  # emptied
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit
        # A value changed that marshal would still read: only the checksum tells.
        lambda data: data.replace(b"ref: refs/heads/master", b"ref: refs/heads/mastex", 1),
        lambda data: b"not a cache at all\n",
        lambda data: MAGIC + (3).to_bytes(4, "big") + b"\0\0\0\0abc",
    ],
)
def test_a_damaged_cache_is_ignored_and_rewritten(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    gatherer = Gatherer(tmp_path)
    make_repository(gatherer.base, "a")
    time.sleep(TICK)
    gatherer.cached()
    gatherer.path.write_bytes(damage(gatherer.path.read_bytes()))
    facts, hits = gatherer.cached()
    assert hits == 0 and facts == gatherer.full()
    assert gatherer.cached()[1] == 1  # rewritten whole


@pytest.mark.usefixtures("trusting")
def test_facts_read_by_another_version_are_not_used(tmp_path: Path) -> None:
    gatherer = Gatherer(tmp_path)
    make_repository(gatherer.base, "a")
    time.sleep(TICK)
    gatherer.cached()
    assert gatherer.cached()[1] == 1
    gatherer.version = "v2"  # another server library: its gather might read differently
    assert gatherer.cached()[1] == 0


def test_an_answer_naming_a_repository_the_operator_does_not_remember_is_an_error(
    tmp_path: Path,
) -> None:
    cache = GatherCache(tmp_path / "server.marshal", "v1")
    with pytest.raises(ServerError, match="repository b is unchanged"):
        cache.merge("server", {"repositories": {}, "unchanged": ["b"]})


def test_nothing_is_written_on_the_server(tmp_path: Path) -> None:
    """plan changes nothing on a server: the program writes no cache there, whatever
    it is asked."""
    make_repository(tmp_path / "repositories", "a")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    known = {"layouts": [["refs"]], "repositories": {"a": ["0" * 24, 0]}}
    answer = run_assembled_gather(tmp_path, {"repositories": "repositories", "known": known})
    assert set(answer["repositories"]) == {"a"} and answer["unchanged"] == []
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_the_program_answers_unchanged_from_the_operators_digests(tmp_path: Path) -> None:
    """The assembled program, as a server runs it: once the repositories have been
    still for the racy margin it offers their facts for keeping; asked with their
    digests it answers them unchanged, and the operator's cache gives exactly what
    the first gather read. Without "known" it reads everything and offers nothing."""
    home = tmp_path / "home"
    for name in ("a", "b", "deep/c"):
        make_repository(home / "repositories", name)
    time.sleep(fact_cache.RACY_NS / 1e9 + TICK)
    cache = GatherCache(tmp_path / "operator" / "server.marshal", "v1")
    request = {"repositories": "repositories", "refs": True}
    first = run_assembled_gather(home, {**request, "known": cache.known(True)})
    assert first["unchanged"] == []
    assert all("cache" in facts for facts in first["repositories"].values())
    cache.merge("server", first)
    second = run_assembled_gather(home, {**request, "known": cache.known(True)})
    assert sorted(second["unchanged"]) == ["a", "b", "deep/c"]
    assert second["repositories"] == {}
    cache.merge("server", second)
    assert second["repositories"] == first["repositories"]
    plain = run_assembled_gather(home, request)
    assert "unchanged" not in plain
    assert plain["repositories"] == first["repositories"]  # merge took "cache" out


AUDIT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from reconciler.server import repositories
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        opened.append(args[0])
    elif event in ("os.scandir", "os.listdir") and isinstance(args[0], str):
        opened.append(args[0])
gitdir = sys.argv[2]
sys.addaudithook(hook)
inputs = []
repositories.repository_facts(gitdir, True, inputs=inputs)
print(json.dumps({"opened": opened, "inputs": [i[0] for i in inputs]}))
"""


def test_repository_facts_open_nothing_but_their_declared_inputs(tmp_path: Path) -> None:
    """What the cache compares is all the facts are read from: a reader that opened
    another file would be answered from the cache after that file changed."""
    gitdir = make_repository(tmp_path / "repositories", "a")
    git("--git-dir", str(gitdir), "update-ref", "refs/notes/commits", other_commit(gitdir))
    os.symlink("post-receive", gitdir / "hooks" / "proc-receive")
    (gitdir / "git-daemon-export-ok").touch()
    root = str(Path(repositories.__file__).parents[2])
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, root, str(gitdir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen = json.loads(done.stdout)
    declared = {gitdir / relative for relative in seen["inputs"]}
    assert {gitdir / relative for relative, _follow in repositories.REPOSITORY_INPUTS} <= declared
    assert seen["opened"], "the audit saw nothing: the test would prove nothing"
    for path in seen["opened"]:
        assert Path(path) in declared, f"{path} is read but not among the cache's inputs"


@pytest.mark.usefixtures("trusting")
def test_files_of_servers_long_gone_are_forgotten(tmp_path: Path) -> None:
    gatherer = Gatherer(tmp_path)
    make_repository(gatherer.base, "a")
    directory = gatherer.path.parent
    directory.mkdir(parents=True)
    gone = directory / "0123.marshal"
    recent = directory / "4567.marshal"
    child = subprocess.Popen(["true"])  # a pid whose process has exited
    child.wait()
    # What atomic_write leaves when its run is killed mid-write.
    killed = directory / f".server.marshal.reconciler-tmp-{child.pid}-abcd"
    for path in (gone, recent, killed):
        path.write_bytes(b"x")
    long_ago = time.time() - gather_cache.MAX_AGE - 60
    os.utime(gone, (long_ago, long_ago))
    os.utime(killed, (long_ago, long_ago))
    time.sleep(TICK)
    gatherer.cached()
    assert sorted(p.name for p in directory.iterdir()) == ["4567.marshal", "server.marshal"]
