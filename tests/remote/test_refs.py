"""``read_refs`` gives what it gave before its loose refs were read inline (without
``read_text``): the same refs in the same order, the same locks and aborted refs,
so the same ``refs_digest``, on real repositories and on odd ref trees."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from pathlib import Path

from reconciler.server import refs
from reconciler.server.common import read_text

SHA1 = "1" * 40
SHA256 = "2" * 64


# -- the reading as it was (commit 223ff22), the reference ---------------------------


def reference_read_refs(
    gitdir: str, locks: list[list[object]], aborted: list[str]
) -> dict[str, str]:
    found: dict[str, str] = {}
    packed = read_text(gitdir + "/packed-refs", 256 << 20)
    if packed:
        for line in packed.splitlines():
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            found[name.strip()] = sha
    _reference_loose(gitdir + "/refs", "refs/", found, 0, locks)
    aborted.extend(sorted(ref for ref in found if ref.startswith(refs.ABORTED_PREFIX)))
    return {ref: sha for ref, sha in found.items() if ref.startswith(refs.REPLICATED_PREFIXES)}


def _reference_loose(
    directory: str, prefix: str, found: dict[str, str], depth: int, locks: list[list[object]]
) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir():
            if depth < refs.MAX_REF_DEPTH and not entry.is_symlink():
                _reference_loose(entry.path, prefix + entry.name + "/", found, depth + 1, locks)
            continue
        if entry.name.endswith(".lock"):
            with contextlib.suppress(OSError):
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                locks.append([prefix + entry.name[: -len(".lock")], round(age, 1)])
            continue
        text = read_text(entry.path, 4096)
        if text is None:
            continue
        text = text.strip()
        if len(text) in (40, 64) and not text.startswith("ref:"):
            found[prefix + entry.name] = text


def assert_same_reading(gitdir: Path) -> dict[str, str]:
    old_locks: list[list[object]] = []
    old_aborted: list[str] = []
    new_locks: list[list[object]] = []
    new_aborted: list[str] = []
    old = reference_read_refs(str(gitdir), old_locks, old_aborted)
    new = refs.read_refs(str(gitdir), new_locks, new_aborted)
    assert list(new.items()) == list(old.items())
    assert new_aborted == old_aborted
    assert [lock[0] for lock in new_locks] == [lock[0] for lock in old_locks]
    for (_, new_age), (_, old_age) in zip(new_locks, old_locks, strict=True):
        assert abs(float(str(new_age)) - float(str(old_age))) <= 1.0
    assert refs.refs_digest(new) == refs.refs_digest(old)
    assert refs.read_refs(str(gitdir)) == new  # without locks and aborted asked for
    return new


# -- a real repository -----------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_a_real_repository_with_packed_and_loose_refs_reads_the_same(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    commits = []
    for number in range(4):
        (work / "file").write_text(f"{number}\n")
        git("add", "file", cwd=work)
        git("commit", "-q", "-m", f"commit {number}", cwd=work)
        commits.append(git("rev-parse", "HEAD", cwd=work))
    git("tag", "-a", "-m", "annotated", "v1", commits[1], cwd=work)  # peeled in packed-refs
    git("tag", "light", commits[0], cwd=work)
    git("branch", "feature/deep/er", commits[2], cwd=work)
    git("notes", "add", "-m", "a note", commits[3], cwd=work)
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--mirror", str(work), str(bare), cwd=tmp_path)
    git("pack-refs", "--all", cwd=bare)
    # Loose refs after packing: one over a packed value, new ones at several depths.
    git("update-ref", "refs/heads/main", commits[2], cwd=bare)
    git("update-ref", "refs/heads/topic/a/b/c", commits[1], cwd=bare)
    git("update-ref", "refs/tags/loose", commits[3], cwd=bare)
    git("update-ref", f"refs/reconciler/aborted/heads/main/{commits[0]}", commits[0], cwd=bare)
    git("update-ref", "refs/remotes/peer/main", commits[0], cwd=bare)  # not replicated
    git("symbolic-ref", "refs/heads/symbolic", "refs/heads/main", cwd=bare)
    heads = bare / "refs" / "heads"
    (heads / "stuck.lock").write_text(commits[0] + "\n")  # a killed push's lock
    os.utime(heads / "stuck.lock", (time.time() - 600, time.time() - 600))
    (heads / "alias").symlink_to("main")  # a symlinked ref is read through
    (heads / "linked").symlink_to("../tags", target_is_directory=True)  # not entered
    (heads / "dangling").symlink_to("nowhere")
    (heads / "empty").write_text("")
    (heads / "crlf").write_bytes(commits[1].encode() + b"\r\n")
    (heads / "dir.lock").mkdir()  # a directory, entered: only files are locks
    (heads / "dir.lock" / "inside").write_text(commits[1] + "\n")
    (bare / "refs" / "tags" / "sha256").write_text(SHA256 + "\n")

    found = assert_same_reading(bare)
    assert found["refs/heads/main"] == commits[2]  # the loose value over the packed one
    assert found["refs/heads/alias"] == commits[2]
    assert found["refs/heads/topic/a/b/c"] == commits[1]
    assert found["refs/heads/crlf"] == commits[1]
    assert found["refs/heads/dir.lock/inside"] == commits[1]
    assert found["refs/tags/v1"] != commits[1]  # the tag object, not the peeled commit
    assert found["refs/tags/sha256"] == SHA256
    assert "refs/notes/commits" in found
    assert not any(ref.startswith(("refs/heads/linked/", "refs/remotes/")) for ref in found)
    for absent in ("symbolic", "dangling", "empty", "stuck"):
        assert f"refs/heads/{absent}" not in found
    locks: list[list[object]] = []
    aborted: list[str] = []
    refs.read_refs(str(bare), locks, aborted)
    assert [lock[0] for lock in locks] == ["refs/heads/stuck"]
    assert float(str(locks[0][1])) >= 599
    assert aborted == [f"refs/reconciler/aborted/heads/main/{commits[0]}"]


def test_no_refs_directory_and_unreadable_packed_refs_read_the_same(tmp_path: Path) -> None:
    gitdir = tmp_path / "bare.git"
    gitdir.mkdir()
    assert assert_same_reading(gitdir) == {}
    (gitdir / "packed-refs").mkdir()  # cannot be read as a file
    (gitdir / "refs").write_text("not a directory\n")
    assert assert_same_reading(gitdir) == {}


# -- odd trees, at random ----------------------------------------------------------------

CONTENTS = [
    (SHA1 + "\n").encode(),
    SHA1.encode(),
    (SHA256 + "\n").encode(),
    f"  {SHA1}\t\r\n".encode(),
    f"\x0b{SHA1}\x0c".encode(),
    f"\u2028{SHA1}\u00a0".encode(),  # whitespace only str.strip() knows
    f"{SHA1[:39]}\u00e9".encode(),  # 40 characters, 41 bytes
    b"\xff" * 40,  # not UTF-8: 40 replacement characters
    b"ref: refs/heads/main\n",
    b"ref:" + b"x" * 36,
    b"",
    b"\n",
    SHA1.encode() * 2,
    b"x" * 5000,  # longer than the 4,096 bytes read
    (SHA1 + "\n").encode().replace(b"1", b"a", 3),
]
PACKED_LINES = [
    "# pack-refs with: peeled fully-peeled sorted ",
    f"{SHA1} refs/heads/packed",
    f"{SHA1} refs/tags/packed ",
    f"^{SHA1}",
    "",
    "   ",
    f"{SHA1} refs/notes/packed\r",
    f"{SHA1}",
    f"{SHA1} refs/reconciler/aborted/heads/x/{SHA1}",
    f"{SHA1} refs/remotes/peer/x",
    f"{SHA256} refs/heads/long",
    f"{SHA1} refs/heads/dup",
    f"{SHA1} refs/heads/a",
    "\u2028" + f"{SHA1} refs/heads/sep",
]
NAMES = ["a", "b", "dup", "main", "x.lock", "y.lock", "deep", "packed", "v1", ".hidden", "é"]
TOPS = ["heads", "tags", "notes", "remotes", "reconciler/aborted/heads", "other"]


def random_tree(rng: random.Random, gitdir: Path) -> None:
    gitdir.mkdir()
    if rng.random() < 0.8:
        lines = [rng.choice(PACKED_LINES) for _ in range(rng.randrange(8))]
        ending = rng.choice(["\n", "\r\n"])
        (gitdir / "packed-refs").write_text(ending.join(lines) + ending)
    made: list[Path] = []
    for _ in range(rng.randrange(12)):
        parts = [rng.choice(TOPS), *(rng.choice(NAMES) for _ in range(rng.randrange(3)))]
        directory = gitdir / "refs" / Path(*parts)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue
        made.append(directory)
        path = directory / rng.choice(NAMES)
        if path.exists() or path.is_symlink():
            continue
        roll = rng.random()
        if roll < 0.1 and made:
            path.symlink_to(rng.choice(made), target_is_directory=True)
        elif roll < 0.15:
            path.symlink_to(directory / "missing")
        elif roll < 0.2 and any(p.is_file() for p in directory.iterdir()):
            path.symlink_to(next(p for p in directory.iterdir() if p.is_file()))
        else:
            path.write_bytes(rng.choice(CONTENTS))


def test_random_ref_trees_read_the_same(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    refs_seen = locks_seen = aborted_seen = 0
    for number in range(300):
        gitdir = tmp_path / f"r{number}.git"
        random_tree(rng, gitdir)
        found = assert_same_reading(gitdir)
        locks: list[list[object]] = []
        aborted: list[str] = []
        refs.read_refs(str(gitdir), locks, aborted)
        refs_seen += len(found)
        locks_seen += len(locks)
        aborted_seen += len(aborted)
    # The trees did hold what is compared.
    assert refs_seen > 300
    assert locks_seen > 30
    assert aborted_seen > 30
