"""Carry out a list of operations on one server, in one process.

Input (stdin, JSON): {"actions": [[op, op, ...], ...], "repositories": BASE,
"lock_wait": SECONDS, "holder": "who runs this"}. The operations of one action
run in order; after one fails the rest of that action is skipped, and the next
action goes on. Output (stdout, JSON): {"results": [{"ok": bool, "error": str}, ...],
"waited": SECONDS, "waited_for": LINE}, one result per action; or, when the server
lock stayed taken or cannot be made, {"results": [], "stop": SENTENCE} and nothing
was changed. Every
path is relative to the git user's home and may not leave it; every file is written
atomically (temporary file, fsync, rename, fsync of the directory); every command
is an argv list.

The server lock: every run of this program holds ``fcntl.flock`` on
``BASE/.reconciler/server.lock`` (``SERVER_LOCK_PATH``) for its whole life, and
writes ``pid N since TIME: WHO`` into it. The kernel lets go of it when the holder
is gone, however it ended; the lock's open file is inherited by the commands it
runs (git clone, ssh-keygen, gitosis's hook), so a command that outlives its
program still holds it. A second run waits for it at most ``lock_wait`` seconds,
then changes nothing and says who holds it. Temporary names carry their owner's
pid, and what is left under them is removed only by a holder of the lock, never
one of its own: the owner of any other is gone. The replication hook and its
drainer do not take this lock (a user's push must not wait for an apply); they
share the queue's drain lock (``DRAIN_LOCK_PATH``, the same ``pid N since TIME``
line) with ``drain_queue`` here.

The program stops when its channel closes (the operator's side died or gave up:
the read end of its stdout is gone, or SIGHUP/SIGTERM): it starts no more commands,
kills its clones and pushes, lets its short local commands end, removes its own
temporaries, and exits without moving anything else into place.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

Op = dict[str, Any]
HOME = os.path.realpath(os.path.expanduser("~"))
# In the admin repository while gitosis's post-update hook is owed (see gather.py).
POST_UPDATE_PENDING = "reconciler-post-update-pending"
KEYGEN_PREFIX = ".reconciler-keygen-"
BUNDLE_PREFIX = ".reconciler-bundle-"
# Below the repositories directory, beside the replication queue.
SERVER_LOCK_PATH = ".reconciler/server.lock"
DRAIN_LOCK_PATH = ".reconciler/drain.lock"
LOCK_WAIT = 30.0  # the request's lock_wait replaces it
LOCK_POLL = 0.05
# How long a stopped command has to end after SIGTERM, then after SIGKILL.
TERM_SECONDS = 2.0
REAP_SECONDS = 5.0
# How long a closed channel's program lets its short commands finish.
SETTLE_SECONDS = 30.0


class OpError(Exception):
    pass


class LockBusy(Exception):
    """The lock stayed taken for the whole wait; the message names its holder."""


# --- locks ---------------------------------------------------------------------------


def holder_line(who: str = "") -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"pid {os.getpid()} since {since}" + (f": {who}" if who else "")


NO_HOLDER_YET = "a holder that has not said who it is yet"


def read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        line = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        if line:
            return line.splitlines()[0]
    return NO_HOLDER_YET


def take_lock(path: str, wait: float, who: str = "") -> tuple[int, float, str]:
    """Hold ``fcntl.flock`` on ``path``, waiting at most ``wait`` seconds.

    Returns (fd, seconds waited, the holder waited for or ""). Raises LockBusy
    naming the holder when it stayed taken.
    """
    make_dirs(os.path.dirname(path), 0o755)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    started = time.monotonic()
    waited_for = ""
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited_for = read_holder(fd)
                for _ in range(20):
                    if waited_for != NO_HOLDER_YET:
                        break
                    # Taken a moment ago: its holder writes who it is right after.
                    time.sleep(0.01)
                    waited_for = read_holder(fd)
                if time.monotonic() - started >= wait:
                    raise LockBusy(
                        f"{os.path.relpath(path, HOME)} is held by {waited_for}; gave up "
                        f"after waiting {wait:g}s and changed nothing"
                    ) from None
                time.sleep(LOCK_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_line(who) + "\n").encode("utf-8"), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd, time.monotonic() - started, waited_for


# --- the program's own processes and temporaries ---------------------------------------

# The server lock's descriptor, handed to every command so the lock lasts as long as
# any of them; None outside a run (a test calling an op directly).
LOCK_FD: int | None = None
_STATE = threading.Lock()
# Running commands -> whether a closed channel kills them (see command()).
_CHILDREN: dict[subprocess.Popen[bytes], bool] = {}
_TEMPORARIES: set[str] = set()
_ABANDONED = False


def abandoned() -> bool:
    return _ABANDONED


def own_temporary(path: str) -> str:
    with _STATE:
        _TEMPORARIES.add(path)
    return path


def drop_temporary(path: str) -> None:
    with _STATE:
        _TEMPORARIES.discard(path)


def place(temp: str, full: str) -> None:
    """Move a finished temporary to its final path, unless the channel has closed:
    a closed channel's program moves nothing more into place."""
    with _STATE:
        if _ABANDONED:
            raise OpError("the operator's channel closed; stopping")
        os.replace(temp, full)
        _TEMPORARIES.discard(temp)


def abandon() -> None:
    """The channel closed: start no more commands, kill the long ones, let the short
    ones end, remove our temporaries, exit."""
    global _ABANDONED
    with _STATE:
        _ABANDONED = True
        children = dict(_CHILDREN)
        temporaries = list(_TEMPORARIES)
    stop_groups([child.pid for child, killable in children.items() if killable])
    # Past this bound they are left to end by themselves: they hold the server lock's
    # descriptor, so nobody else starts meanwhile.
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and not all(_dead(child.pid) for child in children):
        time.sleep(0.01)
    for path in temporaries:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    os._exit(1)


def stop_groups(pids: list[int]) -> None:
    """End commands with whatever they started: SIGTERM first, which git answers by
    removing its lock files (a ``config.lock`` left behind would fail every later
    ``git config`` there), then SIGKILL for what is still running."""
    for sig, wait in ((signal.SIGTERM, TERM_SECONDS), (signal.SIGKILL, REAP_SECONDS)):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(_dead(pid) for pid in pids):
            time.sleep(0.01)
        if all(_dead(pid) for pid in pids):
            return


def _dead(pid: int) -> bool:
    """Whether a process has ended (a zombie has: it writes nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def watch_channel() -> None:
    """Abandon the run when the read end of stdout or stderr goes away (sshd, or the
    local operator, is gone), or on SIGHUP/SIGTERM."""
    import select

    def on_signal(_signum: int, _frame: object) -> None:
        # Not in the handler itself: the interrupted code may hold _STATE.
        threading.Thread(target=abandon).start()

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    poller = select.poll()
    for fd in (1, 2):
        # No events asked for: poll still reports POLLERR/POLLHUP, which a pipe's
        # write end shows once its reader is closed.
        poller.register(fd, 0)

    def watch() -> None:
        while True:
            for _fd, events in poller.poll():
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    abandon()

    threading.Thread(target=watch, daemon=True).start()


def resolve(path: str) -> str:
    if not path or os.path.isabs(path) or ".." in path.split("/"):
        raise OpError(f"refusing path {path!r}: not relative to the home directory")
    full = os.path.normpath(os.path.join(HOME, path))
    if not (full == HOME or full.startswith(HOME + os.sep)):
        raise OpError(f"refusing path {path!r}: outside the home directory")
    return full


def run(
    argv: list[str],
    *,
    cwd: str | None = None,
    stdin: bytes = b"",
    timeout: float = 600,
    env: dict[str, str] | None = None,
    killable: bool = False,
) -> str:
    done = command(argv, cwd=cwd, stdin=stdin, timeout=timeout, env=env, killable=killable)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OpError(f"{' '.join(argv[:3])} failed: {message[-1] if message else done.returncode}")
    return done.stdout.decode("utf-8", "replace")


def command(
    argv: list[str],
    *,
    cwd: str | None = None,
    stdin: bytes = b"",
    timeout: float = 600,
    env: dict[str, str] | None = None,
    killable: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command in a process group of its own holding the server lock's descriptor.

    ``killable`` commands (a clone into a temporary, a push to a peer: long, and safe
    to cut short) are killed with whatever they started, git's ssh included, when the
    channel closes. The others are short and local, and are let finish: git, killed
    even by SIGTERM, now and then leaves its ``config.lock`` behind, which fails every
    later ``git config`` in that repository.
    """
    # Every ref written here is a repair, not a person's push: quorum mode's
    # reference-transaction hook lets it through without a vote.
    env = {**(os.environ if env is None else env), "RECONCILER_REPLICA": "reconcile-apply"}
    with _STATE:
        if _ABANDONED:
            raise OpError("the operator's channel closed; stopping")
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
                pass_fds=() if LOCK_FD is None else (LOCK_FD,),
            )
        except OSError as exc:
            raise OpError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        _CHILDREN[child] = killable
    try:
        out, err = child.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stop_groups([child.pid])
        child.communicate()
        raise OpError(f"{argv[0]} timed out after {timeout:.0f}s") from exc
    finally:
        with _STATE:
            _CHILDREN.pop(child, None)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: str, mode: int) -> None:
    if not os.path.isdir(directory):
        # exist_ok: repositories are created in parallel, maybe under one new parent.
        os.makedirs(directory, mode=mode, exist_ok=True)


def remove_stale(directory: str, prefix: str) -> None:
    """Remove what an earlier run killed mid-write left under our temporary names.

    Only while holding the server lock, and never a temporary of this program's own
    (``PREFIX<pid>-...``): every other owner held the lock too, so it is gone.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    mine = f"{prefix}{os.getpid()}-"
    for name in names:
        if name.startswith(prefix) and not name.startswith(mine):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def atomic_write(full: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(full)
    prefix = "." + os.path.basename(full) + ".reconciler-tmp-"
    remove_stale(directory, prefix)
    fd, temp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", dir=directory)
    own_temporary(temp)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        place(temp, full)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        drop_temporary(temp)
        raise
    fsync_dir(directory)


def current_sha256(full: str) -> str | None:
    try:
        with open(full, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def is_repository(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(
        os.path.join(path, "objects")
    )


def existing_repository_only(directory: str) -> None:
    """Refuse to make a missing ``*.git`` directory on the way to a file: repositories
    are made whole by init_bare or clone_mirror, never as a side effect (a hook
    written where the repository could not be created would leave a husk that
    later looks like the repository)."""
    path = directory
    while path.startswith(HOME + os.sep) and not os.path.isdir(path):
        if path.endswith(".git"):
            raise OpError(f"repository {os.path.relpath(path, HOME)} does not exist")
        path = os.path.dirname(path)


def op_write_file(op: Op) -> None:
    full = resolve(op["path"])
    existing_repository_only(os.path.dirname(full))
    make_dirs(os.path.dirname(full), op.get("dir_mode", 0o755))
    expect = op.get("expect_sha256")
    content = op["content"].encode("utf-8")
    if expect is not None:
        seen = current_sha256(full)
        if seen == hashlib.sha256(content).hexdigest() and stat_mode(full) == op.get("mode", 0o644):
            return  # another run wrote exactly this meanwhile
        if (expect == "absent" and seen is not None) or (expect != "absent" and seen != expect):
            raise OpError(f"{op['path']} changed since the plan was made; run plan again")
    atomic_write(full, content, op.get("mode", 0o644))


def stat_mode(full: str) -> int | None:
    try:
        return os.stat(full).st_mode & 0o7777
    except OSError:
        return None


def op_keep_file(op: Op) -> None:
    """Copy a file that is about to be replaced to ``to`` in the same directory, mode kept.

    A symlink is kept as a symlink to the same target. A copy already at ``to`` with
    the same content is left (a rerun); anything else there is refused.
    """
    import stat

    source, target = resolve(op["path"]), resolve(op["to"])
    if os.path.dirname(source) != os.path.dirname(target) or source == target:
        raise OpError(f"refusing to keep {op['path']} as {op['to']}: not beside it")
    try:
        info = os.lstat(source)
    except FileNotFoundError:
        raise OpError(f"{op['path']} is gone since the plan was made; run plan again") from None
    if stat.S_ISLNK(info.st_mode):
        link = os.readlink(source)
        if os.path.lexists(target):
            if os.path.islink(target) and os.readlink(target) == link:
                return
            raise OpError(f"{op['to']} exists already; move it away and run again")
        directory = os.path.dirname(target)
        temp = os.path.join(directory, f".{os.path.basename(target)}.reconciler-tmp-link")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.symlink(link, temp)
        os.replace(temp, target)
        fsync_dir(directory)
        return
    if not stat.S_ISREG(info.st_mode):
        raise OpError(f"{op['path']} is not a file; move it away by hand")
    with open(source, "rb") as handle:
        data = handle.read()
    expect = op.get("expect_sha256")
    if expect is not None and hashlib.sha256(data).hexdigest() != expect:
        raise OpError(f"{op['path']} changed since the plan was made; run plan again")
    if os.path.lexists(target):
        if os.path.isfile(target) and not os.path.islink(target):
            with open(target, "rb") as handle:
                if handle.read() == data:
                    return
        raise OpError(f"{op['to']} exists already; move it away and run again")
    atomic_write(target, data, stat.S_IMODE(info.st_mode))


def op_symlink(op: Op) -> None:
    """Make ``path`` a symlink to ``target`` (a name in the same directory), atomically;
    with ``expect`` the path must be absent or already such a link."""
    full = resolve(op["path"])
    link = op["target"]
    if "/" in link or link in ("", ".", ".."):
        raise OpError(f"refusing link target {link!r}: not a name beside {op['path']}")
    existing_repository_only(os.path.dirname(full))
    if os.path.islink(full) and os.readlink(full) == link:
        return
    if os.path.lexists(full):
        raise OpError(f"{op['path']} exists and is not ours; run plan again")
    directory = os.path.dirname(full)
    temp = os.path.join(directory, f".{os.path.basename(full)}.{os.getpid()}.reconciler-tmp-link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.symlink(link, temp)
    os.replace(temp, full)
    fsync_dir(directory)


def op_remove_symlink(op: Op) -> None:
    """Remove ``path`` only while it is the symlink to ``target`` the reconciler made."""
    full = resolve(op["path"])
    if os.path.islink(full) and os.readlink(full) == op["target"]:
        os.unlink(full)
        fsync_dir(os.path.dirname(full))


ABORTED_NAMESPACE = "refs/reconciler/aborted/"


def op_remove_stale_lock(op: Op) -> None:
    """Remove ``REF.lock`` that a killed push left, only while it is still older than
    ``min_age`` seconds (a live push holds a ref's lock for a few seconds at most)."""
    repo = git_dir(op)
    ref = op["ref"]
    if not re.fullmatch(r"refs/[A-Za-z0-9._/-]+", ref) or ".." in ref:
        raise OpError(f"refusing ref {ref!r}")
    path = os.path.join(repo, ref + ".lock")
    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return
    if age < float(op["min_age"]):
        raise OpError(f"{ref}.lock is only {age:.0f}s old: a push may still hold it")
    os.unlink(path)
    fsync_dir(os.path.dirname(path))


def op_adopt_majority(op: Op) -> None:
    """Quorum mode's repair of a server holding a value a majority does not: fetch
    the majority's value from a peer holding it, keep this server's own value under
    ``refs/reconciler/aborted/`` (unless it is an ancestor of the majority's: then
    nothing is lost by moving on) and move the ref, all with compare-and-swap."""
    repo = git_dir(op)
    ref, new, old, peer = op["ref"], op["new"], op["old"], op["peer"]
    if not re.fullmatch(r"refs/[A-Za-z0-9._/-]+", ref) or ".." in ref:
        raise OpError(f"refusing ref {ref!r}")
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", new):
        raise OpError(f"refusing object id {new!r}")
    env = dict(os.environ)
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15")
    run(
        ["git", "--git-dir", repo, "fetch", "--quiet", "--no-tags", "--", peer, ref],
        env=env,
        timeout=op.get("timeout", 600),
        killable=True,
    )
    fetched = run(["git", "--git-dir", repo, "rev-parse", "--verify", "FETCH_HEAD"]).strip()
    if fetched != new:
        raise OpError(f"{ref} on {peer} moved since the plan was made; run plan again")
    lines = []
    if old:
        ancestor = subprocess.run(
            ["git", "--git-dir", repo, "merge-base", "--is-ancestor", old, new],
            capture_output=True,
            check=False,
        )
        if ancestor.returncode != 0:
            kept = ABORTED_NAMESPACE + ref[len("refs/") :] + "/" + old
            lines.append(f"create {kept} {old}\n")
    lines.append(f"update {ref} {new} {old or '0' * len(new)}\n")
    stdin = ("start\n" + "".join(lines) + "prepare\ncommit\n").encode()
    run(
        ["git", "--git-dir", repo, "update-ref", "-m", "reconcile: follow the majority", "--stdin"],
        stdin=stdin,
    )


def op_edit_lines(op: Op) -> None:
    full = resolve(op["path"])
    make_dirs(os.path.dirname(full), op.get("dir_mode", 0o700))
    try:
        with open(full, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = []
    remove = set(op.get("remove", ()))
    kept = [line for line in lines if line.strip() not in remove]
    present = {line.strip() for line in kept}
    kept += [line for line in op.get("add", ()) if line not in present]
    atomic_write(
        full, ("\n".join(kept) + "\n").encode("utf-8") if kept else b"", op.get("mode", 0o600)
    )


def op_keygen(op: Op) -> None:
    directory = resolve(".ssh")
    make_dirs(directory, 0o700)
    os.chmod(directory, 0o700)
    key = os.path.join(directory, "id_ed25519")
    if os.path.exists(key):
        return
    # Made under a temporary name and moved in, private key first, public key last:
    # a run killed while ssh-keygen writes leaves no half a key pair under the real
    # names, and once both are moved nothing is left to clean up.
    remove_stale(directory, KEYGEN_PREFIX)
    made = os.path.join(directory, f"{KEYGEN_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
    own_temporary(made)
    own_temporary(made + ".pub")
    try:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", op["comment"], "-f", made])
        place(made, key)
        place(made + ".pub", key + ".pub")
    except BaseException:
        for leftover in (made, made + ".pub"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
            drop_temporary(leftover)
        raise
    fsync_dir(directory)


def _temporary_sibling(full: str) -> str:
    parent = os.path.dirname(full)
    prefix = "." + os.path.basename(full) + ".tmp-"
    remove_stale(parent, prefix)
    temp = own_temporary(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    # mkdtemp's 0700 would stay on a repository that git init fills in place.
    os.chmod(temp, 0o755)  # noqa: S103 - a repository is as readable as a clone makes it
    return temp


def _create_repository(op: Op, fill: Callable[[str], object]) -> None:
    full = resolve(op["path"])
    if is_repository(full):
        return
    if os.path.lexists(full):
        raise OpError(f"{op['path']} exists but is not a git repository; move it out of the way")
    make_dirs(os.path.dirname(full), 0o750)
    temp = _temporary_sibling(full)
    try:
        fill(temp)
        if os.path.lexists(full):
            # Another program made it meanwhile (gitosis-serve on a user's push).
            raise OpError(f"{op['path']} appeared while it was being created; run again")
        place(temp, full)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        drop_temporary(temp)
        raise
    fsync_dir(os.path.dirname(full))


def op_init_bare(op: Op) -> None:
    _create_repository(op, lambda temp: run(["git", "init", "--bare", "--quiet", temp]))


def op_clone_mirror(op: Op) -> None:
    def fill(temp: str) -> None:
        os.rmdir(temp)
        env = dict(os.environ)
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15")
        run(
            ["git", "clone", "--mirror", "--quiet", op["url"], temp],
            timeout=op.get("timeout", 3600),
            env=env,
            killable=True,
        )
        # The peer remotes are managed separately; `git remote remove` would delete
        # every ref that the mirror refspec maps, so only the section goes.
        run(["git", "--git-dir", temp, "config", "--remove-section", "remote.origin"])

    _create_repository(op, fill)


def git_dir(op: Op) -> str:
    full = resolve(op["repo"])
    if not os.path.isdir(full):
        raise OpError(f"repository {op['repo']} does not exist")
    return full


def local_config(repo: str) -> list[tuple[str, str]] | None:
    """The repository's own config as (key, value) pairs, in one git call; None if unreadable."""
    done = command(["git", "--git-dir", repo, "config", "--local", "-z", "--list"])
    if done.returncode != 0:
        return None
    entries = []
    for item in done.stdout.split(b"\0"):
        if item:
            key, _, value = item.partition(b"\n")
            entries.append((key.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
    return entries


def op_set_remote(op: Op) -> None:
    repo = git_dir(op)
    name = op["name"]
    if op.get("replace"):
        command(["git", "--git-dir", repo, "config", "--remove-section", f"remote.{name}"])
    # Read the config once and touch only what differs: every git call is a process,
    # and apply sets two remotes in each of thousands of repositories.
    entries = local_config(repo)
    prefix = f"remote.{name}."
    seen: dict[str, list[str]] = {}
    for key, value in entries or []:
        if key.startswith(prefix):
            seen.setdefault(key[len(prefix) :], []).append(value)
    for key in ("fetch", "mirror", "pushurl"):
        if entries is None or key in seen:
            command(["git", "--git-dir", repo, "config", "--unset-all", f"remote.{name}.{key}"])
    if entries is None or seen.get("url") != [op["url"]]:
        run(["git", "--git-dir", repo, "config", f"remote.{name}.url", op["url"]])
    if entries is None or seen.get("reconcilermanaged") != ["true"]:
        run(["git", "--git-dir", repo, "config", f"remote.{name}.reconcilerManaged", "true"])


def op_remove_remote(op: Op) -> None:
    repo = git_dir(op)
    run(["git", "--git-dir", repo, "config", "--remove-section", f"remote.{op['name']}"])


def op_remove_file(op: Op) -> None:
    full = resolve(op["path"])
    expect = op.get("expect_sha256")
    if expect is not None and current_sha256(full) not in (expect, None):
        raise OpError(f"{op['path']} changed since the plan was made; run plan again")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(full)


def op_gitosis_init(op: Op) -> None:
    # The runtime the reconciler installed, by its absolute path (its gitosis-init
    # then writes absolute paths into authorized_keys and the post-update hook), or
    # whichever gitosis-init the server has on its PATH.
    command = resolve(op["command"]) if op.get("command") else "gitosis-init"
    run([command], cwd=HOME, stdin=op["pubkey"].encode() + b"\n")


GIT_USER_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.-]{0,31}")


def op_create_git_user(op: Op) -> None:
    """Run as root: create the git user gitosis serves as (home, a shell for sshd's
    forced commands, no password but not locked, so that key logins work)."""
    user = op["user"]
    if GIT_USER_RE.fullmatch(user) is None:
        raise OpError(f"refusing to create user {user!r}: not a valid user name")
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    # --password '*' in the same call: a run killed between useradd and a usermod
    # would leave an account locked ('!'), whose keys sshd refuses without PAM.
    # sbin is not on every session's PATH (sshd's SetEnv, a sudoer's).
    search = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    found = shutil.which("useradd", path=search)
    if found is None:
        raise OpError("cannot create the git user: useradd is not installed")
    useradd = [found, "--create-home", "--shell", "/bin/sh", "--password", "*"]
    run([*useradd, "--comment", "git version control", user])


RUNTIME_WRAPPER = """#!{python} -I
import sys
sys.path.insert(0, {lib!r})
from {module} import {function}
sys.exit({function}())
"""


def op_install_runtime(op: Op) -> None:
    """Install the stdlib-only gitosis runtime under ``dir``: the package in
    ``lib-VERSION`` (made aside and renamed into place whole), the commands in
    ``bin`` (each replaced atomically), ``VERSION`` last. A gitosis-serve started
    before the switch finishes on the version it started with."""
    root = resolve(op["dir"])
    version = op["version"]
    if re.fullmatch(r"[0-9a-f]{8,64}", version) is None:
        raise OpError(f"refusing runtime version {version!r}")
    make_dirs(root, 0o755)
    lib = os.path.join(root, "lib-" + version)
    if not os.path.isdir(lib):
        remove_stale(root, ".lib-")
        temp = tempfile.mkdtemp(prefix=f".lib-{version}-", dir=root)
        try:
            for relative, content in sorted(op["files"].items()):
                if relative.startswith("/") or ".." in relative.split("/"):
                    raise OpError(f"refusing runtime file {relative!r}")
                full = os.path.join(temp, relative)
                make_dirs(os.path.dirname(full), 0o755)
                with open(full, "wb") as handle:
                    handle.write(base64.b64decode(content))
                    os.fsync(handle.fileno())
                os.chmod(full, 0o644)
            for directory, _dirs, _files in os.walk(temp):
                os.chmod(directory, 0o755)  # noqa: S103 - code others may read, as /usr/lib
            os.rename(temp, lib)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        fsync_dir(root)
    bin_dir = os.path.join(root, "bin")
    make_dirs(bin_dir, 0o755)
    for name, target in sorted(op["commands"].items()):
        module, function = target.split(":")
        wrapper = RUNTIME_WRAPPER.format(
            python=sys.executable, lib=lib, module=module, function=function
        )
        atomic_write(os.path.join(bin_dir, name), wrapper.encode("utf-8"), 0o755)
    previous = read_small(os.path.join(root, "VERSION"))
    atomic_write(os.path.join(root, "VERSION"), (version + "\n").encode(), 0o644)
    # Keep the version that was current until now (a command may still be starting
    # from it); older ones are no longer referenced by anything.
    for name in os.listdir(root):
        if name.startswith("lib-") and name not in ("lib-" + version, "lib-" + previous):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def read_small(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(256).strip()
    except OSError:
        return ""


def op_admin_update(op: Op) -> None:
    """Bring the admin repository's branch to ``new`` with compare-and-swap on ``old``."""
    repo = git_dir(op)
    ref = "refs/heads/" + op["branch"]
    # Set until gitosis's post-update hook has run for the new commit: a run killed
    # between moving the branch and the hook's end (authorized_keys, gitosis.conf)
    # is seen by the next gather and the hook is run again.
    pending = os.path.join(repo, POST_UPDATE_PENDING)
    with open(pending, "w", encoding="utf-8") as marker:
        marker.write(op["new"] + "\n")
    fsync_dir(repo)
    remove_stale(repo, BUNDLE_PREFIX)
    fd, bundle = tempfile.mkstemp(prefix=f"{BUNDLE_PREFIX}{os.getpid()}-", dir=repo)
    own_temporary(bundle)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64decode(op["bundle"]))
        run(["git", "--git-dir", repo, "bundle", "unbundle", bundle])
    finally:
        os.unlink(bundle)
        drop_temporary(bundle)
    expected = op.get("old") or "0" * 40
    if expected == "@INIT":
        # Just made by gitosis-init: the branch must hold exactly its single commit.
        expected = run(["git", "--git-dir", repo, "rev-parse", "--verify", ref]).strip()
        count = run(["git", "--git-dir", repo, "rev-list", "--count", ref]).strip()
        if count != "1":
            raise OpError(f"{op['repo']} holds more than gitosis-init's commit")
    current = command(["git", "--git-dir", repo, "rev-parse", "--verify", "--quiet", ref])
    if current.stdout.decode().strip() != op["new"]:
        # Not there yet (another run may have sent the same commit meanwhile).
        update = ["git", "--git-dir", repo, "update-ref", "-m", "reconcile apply"]
        run([*update, ref, op["new"], expected])
    if op.get("pubkey") and not os.path.lexists(os.path.join(HOME, ".gitosis.conf")):
        # gitosis-init makes ~/.gitosis.conf last: without it an earlier init was
        # cut short, and gitosis's hook cannot run. gitosis-init finishes what it
        # started; the branch holds our commit now, so it commits nothing.
        op_gitosis_init({"pubkey": op["pubkey"], "command": op.get("init_command")})
    hook = os.path.join(repo, "hooks", "post-update")
    if os.access(hook, os.X_OK):
        env = dict(os.environ)
        env["GIT_DIR"] = repo
        run([hook, ref], cwd=repo, env=env)
    else:
        run(["git", "--git-dir", repo, "update-server-info"])
    os.unlink(pending)
    fsync_dir(repo)


def op_push_refs(op: Op) -> None:
    """Push ref updates to a peer remote with compare-and-swap on each target value.

    ``updates``: [ref, new, expected]; an empty ``new`` deletes, an empty
    ``expected`` requires the ref to be absent on the peer. Never forced otherwise.
    """
    repo = git_dir(op)
    argv = ["git", "--git-dir", repo, "push", "--porcelain"]
    refspecs = []
    for ref, new, expected in op["updates"]:
        argv.append(f"--force-with-lease={ref}:{expected}")
        refspecs.append(f"{new}:{ref}" if new else f":{ref}")
    env = dict(os.environ)
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15")
    # The peer's replication hook must not forward what the reconciler delivers.
    env["RECONCILER_REPLICA"] = "reconcile"
    done = command(
        [*argv, op["peer"], *refspecs], env=env, timeout=op.get("timeout", 600), killable=True
    )
    rejected = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == "!":
            rejected.append(f"{parts[1].split(':')[-1]} {parts[2]}")
    if rejected:
        raise OpError(f"{op['peer']} rejected " + "; ".join(rejected))
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OpError(f"push to {op['peer']} failed: {lines[-1] if lines else done.returncode}")


def op_drain_queue(op: Op) -> None:
    """Remove delivered queue entries while holding the queue's drain lock."""
    base = resolve(op["base"])
    queue = os.path.join(base, op["queue"])
    try:
        fd, _waited, _holder = take_lock(
            os.path.join(base, DRAIN_LOCK_PATH), LOCK_WAIT, "reconcile apply (drain_queue)"
        )
    except LockBusy as exc:
        raise OpError(f"the replication queue's drain lock {exc}") from None
    try:
        for name in op["files"]:
            if "/" in name or name.startswith("."):
                raise OpError(f"refusing queue entry name {name!r}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(queue, name))
        fsync_dir(queue)
    finally:
        os.close(fd)


OPS = {
    "push_refs": op_push_refs,
    "drain_queue": op_drain_queue,
    "write_file": op_write_file,
    "edit_lines": op_edit_lines,
    "keep_file": op_keep_file,
    "symlink": op_symlink,
    "adopt_majority": op_adopt_majority,
    "remove_stale_lock": op_remove_stale_lock,
    "remove_symlink": op_remove_symlink,
    "keygen": op_keygen,
    "init_bare": op_init_bare,
    "clone_mirror": op_clone_mirror,
    "set_remote": op_set_remote,
    "remove_remote": op_remove_remote,
    "remove_file": op_remove_file,
    "gitosis_init": op_gitosis_init,
    "admin_update": op_admin_update,
    "create_git_user": op_create_git_user,
    "install_runtime": op_install_runtime,
}


# Independent operations on distinct paths: a run of actions made only of these
# (one repository each, as the plan makes them) is carried out a few at a time.
# Cloning is mostly waiting for the peer; one after another, adding a server with
# hundreds of repositories took several times as long as the clones themselves.
PARALLEL_OPS = frozenset({"clone_mirror", "init_bare"})
PARALLEL_WORKERS = 4


def run_action(action: list[Op]) -> dict[str, Any]:
    for op in action:
        try:
            handler = OPS.get(str(op.get("op")))
            if handler is None:
                raise OpError(f"unknown operation {op.get('op')!r}")
            handler(op)
        except (OpError, OSError, KeyError, ValueError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
    return {"ok": True, "error": ""}


def parallel(action: list[Op]) -> bool:
    return bool(action) and all(op.get("op") in PARALLEL_OPS for op in action)


def main() -> None:
    global LOCK_FD, LOCK_WAIT

    os.umask(0o022)
    request = json.loads(sys.stdin.read() or "{}")
    if request.get("lock") is False:
        # Run as root to create the git user: there is no git user's home (nor its
        # repositories directory) to hold the server lock in yet.
        json.dump({"results": run_actions(request.get("actions", [])), "waited": 0}, sys.stdout)
        return
    lock_path = SERVER_LOCK_PATH
    try:
        LOCK_WAIT = float(request.get("lock_wait", LOCK_WAIT))
        base = resolve(request.get("repositories") or "repositories")
        lock_path = os.path.join(base, SERVER_LOCK_PATH)
        LOCK_FD, waited, waited_for = take_lock(
            lock_path, LOCK_WAIT, str(request.get("holder", ""))
        )
    except LockBusy as exc:
        json.dump({"results": [], "stop": f"the server lock {exc}"}, sys.stdout)
        return
    except (OpError, ValueError, TypeError) as exc:
        json.dump({"results": [], "stop": str(exc)}, sys.stdout)
        return
    except OSError as exc:
        # Without the lock nothing is changed here, as when another run holds it.
        why = f"cannot take the server lock {os.path.relpath(lock_path, HOME)}"
        json.dump({"results": [], "stop": f"{why}: {exc.strerror or exc}"}, sys.stdout)
        return
    try:
        results = run_actions(request.get("actions", []))
    finally:
        os.close(LOCK_FD)
        LOCK_FD = None
    answer: dict[str, Any] = {"results": results, "waited": round(waited, 3)}
    if waited_for:
        answer["waited_for"] = waited_for
    json.dump(answer, sys.stdout)


def run_actions(actions: list[list[Op]]) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    results: list[dict[str, Any]] = []
    start = 0
    while start < len(actions):
        end = start
        paths: set[Any] = set()
        while end < len(actions) and parallel(actions[end]):
            targets = {op.get("path") for op in actions[end]}
            if paths & targets:
                break
            paths |= targets
            end += 1
        if end - start > 1:
            with ThreadPoolExecutor(max_workers=min(PARALLEL_WORKERS, end - start)) as pool:
                results += pool.map(run_action, actions[start:end])
            start = end
        else:
            results.append(run_action(actions[start]))
            start += 1
    return results


if __name__ == "__main__":
    watch_channel()
    main()
