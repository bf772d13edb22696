"""What every server-side module shares: paths, reading, atomic writes, locks, commands.

Standard library only, Python 3.9. One definition of each helper for the gather and
execute programs, the replication hook and its drainer, and the gitosis runtime
(the operator's side imports the same ones: ``atomic_write``, ``SERVER_NAME``).

Files are written whole: a temporary in the same directory (a name that starts with
``.`` and holds ``.reconciler-tmp-PID-``), fsynced, renamed, then the directory
fsynced. Commands run in a process group of their own, bounded by a timeout after
which the whole group is stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

FORMAT_VERSION = 1
# Below the repositories directory (the "base"), all of them.
SETTINGS_PATH = ".reconciler/replication.json"
QUEUE_PATH = ".reconciler/queue"
# The refs quorum mode hands to hooks/proc-receive (receive.procReceiveRefs).
PROC_RECEIVE_REFS = ("refs/heads/", "refs/tags/", "refs/notes/")
KEPT_HOOK_PREFIX = "post-receive.foreign-"  # apply's copies of the hooks it replaced
PUSHES_PATH = ".reconciler/pushes.jsonl"
SERVER_LOCK_PATH = ".reconciler/server.lock"
DRAIN_LOCK_PATH = ".reconciler/drain.lock"
# Server names become remote names, `-c remote.<name>.…` keys and file names:
# the one pattern both sides check them with.
SERVER_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9.-]*")
# A login name: what useradd accepts (plus upper case), at most LOGIN_NAME_MAX long;
# the git user of a server (user:, ssh://USER@) is checked with it on both sides.
LOGIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.-]*")
LOGIN_NAME_MAX = 32
# Variables that pin git to one repository (set for a hook, or by a caller running
# inside one): dropped wherever git is run for another repository.
REPOSITORY_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
)
TEMPORARY_MARK = ".reconciler-tmp-"
# Every temporary name the server side makes carries its maker's pid: atomic_write's
# ``.NAME.reconciler-tmp-PID-…``, a new repository's ``.NAME.git.tmp-PID-…``, and
# ``.reconciler-keygen-PID-…`` / ``.reconciler-bundle-PID-…``.
TEMPORARY_NAME = re.compile(
    r"\.(?:reconciler-(?:keygen|bundle)-|.+?(?:\.reconciler-tmp-|\.git\.tmp-))([0-9]+)-"
)
# A full object id: SHA-1 or SHA-256.
OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

HOME = os.path.realpath(os.path.expanduser("~"))

LOCK_POLL = 0.05
# How long an execute run waits for a lock (the request's lock_wait replaces it).
LOCK_WAIT = 30.0
# How long a stopped command has to end after SIGTERM, then after SIGKILL.
TERM_SECONDS = 2.0
REAP_SECONDS = 5.0
# How long the output of a stopped command's group is read once the group is gone:
# what is left in the pipes then is there already. A process outside the group can
# hold them much longer (an ssh connection master keeps the descriptors of every
# session it runs, as long as the peer keeps that session open).
DRAIN_SECONDS = 0.5
# The ssh of the reconciler's own repairs on a server (clones, ref pushes and fetches
# between servers). Never through a connection the hooks keep open: that one was let
# in under the authorized_keys line its peer had when it connected, and a repair may
# follow the very apply that changed it.
REPAIR_SSH = "ssh -o BatchMode=yes -o ConnectTimeout=15 -o ControlPath=none"


class OpError(Exception):
    """An operation cannot be carried out; the message says why, in one sentence."""


class LockBusy(Exception):
    """The lock stayed taken for the whole wait; the message names its holder."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


# --- reading ---------------------------------------------------------------------------


def read_bytes(path: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a file, or None. Plain os.open/os.read: a buffered
    file object per small file costs several times more, and there are tens of
    thousands of them (config, HEAD, refs, hook of every repository)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = min(limit, 65536)
        first = os.read(fd, size)
        if len(first) < size:
            # A short read of a regular file is its end: no second read to learn that
            # (one system call less per file, five per repository).
            return first
        chunks = [first]
        left = limit - len(first)
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: str, limit: int = 1 << 20) -> str | None:
    data = read_bytes(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def read_lines(path: str) -> list[str]:
    text = read_text(path, 16 << 20)
    if text is None:
        return []
    return [line for line in text.splitlines() if line.strip()]


def unquote(value: str) -> str:
    value = value.strip()
    if '"' not in value and "\\" not in value and "#" not in value and ";" not in value:
        return value  # what the loop below gives, without walking every character
    out = []
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if c == '"':
            quoted = not quoted
        elif c == "\\" and i + 1 < len(value):
            i += 1
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(value[i], value[i]))
        elif c in "#;" and not quoted:
            break
        else:
            out.append(c)
        i += 1
    return "".join(out).strip()


CONFIG_MEMO_LINES = 4096  # lines remembered by one gather (most repeat in every repository)


# What one line of a config says: the section its header opens, and the key and the
# value it sets (each None if it does not).
def _config_line(raw: str) -> tuple[tuple[str, str | None] | None, tuple[str, str] | None]:
    line = raw.strip()
    if not line or line[0] in "#;":
        return None, None
    header: tuple[str, str | None] | None = None
    if line.startswith("["):
        end = line.find("]")
        inside = line[1:end]
        if '"' in inside:
            name, _, sub = inside.partition(" ")
            header = (name.lower(), sub.strip().strip('"').replace('\\"', '"'))
        elif "." in inside:
            name, _, sub = inside.partition(".")
            header = (name.lower(), sub.lower())
        else:
            header = (inside.lower(), None)
        rest = line[end + 1 :].strip()
        if not rest:
            return header, None
        line = rest
    key, sep, value = line.partition("=")
    return header, (key.strip().lower(), unquote(value) if sep else "true")


def parse_git_config(
    text: str,
    memo: dict[str, tuple[tuple[str, str | None] | None, tuple[str, str] | None]] | None = None,
) -> dict[tuple[str, str | None], dict[str, list[str]]]:
    """The subset of git's config syntax that git itself writes: sections and keys.

    ``memo`` (kept by the caller across many configs) remembers what each line says:
    all but the URLs are the same lines in every repository of a server.
    """
    sections: dict[tuple[str, str | None], dict[str, list[str]]] = {}
    current: tuple[str, str | None] | None = None
    for raw in text.splitlines():
        if memo is None:
            header, entry = _config_line(raw)
        else:
            said = memo.get(raw)
            if said is None:
                said = _config_line(raw)
                if len(memo) < CONFIG_MEMO_LINES:
                    memo[raw] = said
            header, entry = said
        if header is not None:
            current = header
            sections.setdefault(current, {})
        if entry is None or current is None:
            continue
        key, value = entry
        sections[current].setdefault(key, []).append(value)
    return sections


def is_repository(path: str) -> bool:
    # Plain concatenation (POSIX paths) rather than os.path.join: this and the fact
    # readers run once per repository, tens of thousands of times in a gather.
    return os.path.isfile(path + "/HEAD") and os.path.isdir(path + "/objects")


def is_login_name(name: str) -> bool:
    return len(name) <= LOGIN_NAME_MAX and LOGIN_NAME.fullmatch(name) is not None


def without_repository_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in REPOSITORY_ENV}


def safe_relative(name: str) -> bool:
    return bool(name) and not name.startswith("/") and ".." not in name.split("/")


def resolve(path: str) -> str:
    """``path`` (relative to the git user's home) as an absolute path inside it."""
    if not path or os.path.isabs(path) or ".." in path.split("/"):
        raise OpError(f"refusing path {path!r}: not relative to the home directory")
    full = os.path.normpath(os.path.join(HOME, path))
    if not (full == HOME or full.startswith(HOME + os.sep)):
        raise OpError(f"refusing path {path!r}: outside the home directory")
    return full


def git_dir(relative: str) -> str:
    """An existing repository's directory, from its path relative to the home."""
    full = resolve(relative)
    if not os.path.isdir(full):
        raise OpError(f"repository {relative} does not exist")
    return full


# --- this process's children and temporaries ---------------------------------------------

# The server lock's descriptor, handed to every command so the lock lasts as long as
# any of them; None outside an execute run (the hook, a test calling an op directly).
LOCK_FD: int | None = None
_STATE = threading.Lock()
# Running commands -> whether a closed channel kills them (see bounded()).
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


def abandon_children(settle: float) -> list[str]:
    """Start no more commands, stop the killable ones, give the others ``settle``
    seconds to end; returns the temporaries left to remove."""
    global _ABANDONED
    with _STATE:
        _ABANDONED = True
        children = dict(_CHILDREN)
        temporaries = list(_TEMPORARIES)
    stop_groups([child.pid for child, killable in children.items() if killable])
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and not all(_dead(child.pid) for child in children):
        time.sleep(0.01)
    return temporaries


# shutil and tempfile are imported where they are used: the replication hooks import
# this module on every push and use neither (tests/replication/test_hook_imports.py).


def remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process
    return True


def abandoned_temporary(name: str) -> bool:
    """``name`` is one of the server side's temporary names and its maker is gone
    (not this process, not any live one): a run killed mid-write left it."""
    match = TEMPORARY_NAME.match(name)
    if match is None:
        return False
    pid = int(match.group(1))
    return pid != os.getpid() and not process_alive(pid)


def remove_stale(directory: str, prefix: str) -> None:
    """Remove what an earlier run killed mid-write left under our temporary names.

    Only while holding the server lock, and only where the maker is gone: gitosis's
    hook on a user's push to gitosis-admin writes authorized_keys without the lock.
    """
    if LOCK_FD is None:
        return  # not a lock holder: leave it to one
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and abandoned_temporary(name):
            remove_path(os.path.join(directory, name))


# --- writing -----------------------------------------------------------------------------


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: str, mode: int = 0o755) -> None:
    if not os.path.isdir(directory):
        # exist_ok: repositories are created in parallel, maybe under one new parent.
        os.makedirs(directory, mode=mode, exist_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` whole: temporary, fsync, rename, directory fsync.

    A reader sees the old file or the new one, never half of one; a writer killed
    midway leaves only a dot-named temporary, which the next server-lock holder
    removes.
    """
    full = os.fspath(path)
    directory = os.path.dirname(full) or "."
    prefix = "." + os.path.basename(full) + TEMPORARY_MARK
    remove_stale(directory, prefix)
    import tempfile

    fd, temp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", dir=directory)

    def write(_temp: str) -> None:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())

    _replace_with(full, temp, write)


def atomic_symlink(link: str, path: str | os.PathLike[str]) -> None:
    """Make ``path`` a symlink to ``link``, replacing whatever is there in one rename:
    a reader sees the old entry or the new link, never none."""
    full = os.fspath(path)
    directory = os.path.dirname(full) or "."
    prefix = "." + os.path.basename(full) + TEMPORARY_MARK
    remove_stale(directory, prefix)
    temp = os.path.join(directory, f"{prefix}{os.getpid()}-link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)  # this process's own, from a try that failed
    _replace_with(full, temp, lambda made: os.symlink(link, made))


def _replace_with(full: str, temp: str, make: Callable[[str], None]) -> None:
    """Put what ``make(temp)`` makes at ``full`` in one rename, then sync the directory;
    a failure on the way leaves nothing at ``temp``."""
    own_temporary(temp)
    try:
        make(temp)
        place(temp, full)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        drop_temporary(temp)
        raise
    fsync_dir(os.path.dirname(full) or ".")


def make_tree(
    root: str, target: str, name: str, entries: Mapping[str, tuple[bytes, int] | str]
) -> None:
    """Make ``target`` (a directory in ``root``) hold exactly ``entries`` (relative path ->
    (content, mode), or a symlink's target): built aside under ``.NAME-``, every file
    and directory synced, then renamed into place whole. What was at ``target`` (a copy
    that is not intact) is moved aside first, so ``target`` never names half a tree."""
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
    try:
        for relative, entry in sorted(entries.items()):
            full = os.path.join(temp, relative)
            make_dirs(os.path.dirname(full), 0o755)
            if isinstance(entry, str):
                os.symlink(entry, full)
                continue
            content, mode = entry
            with open(full, "wb") as handle:
                handle.write(content)
                os.fsync(handle.fileno())
            os.chmod(full, mode)
        for directory, _dirs, _files in os.walk(temp):
            # Read by others: the hooks run the library, git copies a template into
            # every repository it makes.
            os.chmod(directory, 0o755)  # noqa: S103
            fsync_dir(directory)
        if os.path.lexists(target):
            broken = tempfile.mkdtemp(prefix=f".{name}-broken-", dir=root)
            os.rename(target, os.path.join(broken, "old"))
            shutil.rmtree(broken, ignore_errors=True)
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsync_dir(root)


# --- locks -------------------------------------------------------------------------------


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
    """Hold ``fcntl.flock`` on ``path``, waiting at most ``wait`` seconds, and write
    ``pid N since TIME: WHO`` into it.

    Returns (fd, seconds waited, the holder waited for or ""). Raises LockBusy
    naming the holder when it stayed taken. The kernel lets go of the lock when
    the holder is gone, however it ended.
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
                        f"after waiting {wait:g}s and changed nothing",
                        waited_for,
                    ) from None
                time.sleep(LOCK_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_line(who) + "\n").encode("utf-8"), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd, time.monotonic() - started, waited_for


@contextlib.contextmanager
def drain_lock(base: str | os.PathLike[str], who: str = "replication drainer") -> Iterator[bool]:
    """Hold the replication queue's drain lock if nobody else does; yields whether
    it is held. The hook, its drainer and execute's ``drain_queue`` share it."""
    try:
        fd, _waited, _holder = take_lock(os.path.join(os.fspath(base), DRAIN_LOCK_PATH), 0, who)
    except LockBusy:
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


# --- commands, bounded ---------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool


def bounded(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 600,
    killable: bool = False,
    gentle: bool = True,
    merge_output: bool = False,
) -> Finished:
    """Run ``argv`` in a process group of its own holding the server lock's descriptor;
    after ``timeout`` stop the whole group (git's ssh included).

    ``gentle``: SIGTERM first, which git answers by removing its lock files (a
    ``config.lock`` left behind would fail every later ``git config`` there), then
    SIGKILL. ``killable`` commands (a clone into a temporary, a push to a peer) are
    also stopped when the channel closes; the others are short and are let finish.
    ``stdin`` None: the command reads nothing. ``merge_output``: stderr goes to stdout,
    interleaved as written (``stderr`` is then empty). Raises OSError if it cannot start,
    OpError once the channel has closed.
    """
    with _STATE:
        if _ABANDONED:
            raise OpError("the operator's channel closed; stopping")
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            pass_fds=() if LOCK_FD is None else (LOCK_FD,),
        )
        _CHILDREN[child] = killable
    timed_out = False
    try:
        try:
            out, err = child.communicate(stdin, timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_groups([child.pid], gentle=gentle)
            try:
                out, err = child.communicate(timeout=DRAIN_SECONDS)
            except subprocess.TimeoutExpired as exc:
                # Something escaped the group and holds the pipes: keep what was
                # read, stop waiting for it.
                kill_group(child.pid)
                child.kill()
                for stream in (child.stdout, child.stderr):
                    if stream is not None:
                        stream.close()
                child.wait(timeout=REAP_SECONDS)
                out, err = exc.output or b"", exc.stderr or b""
    finally:
        if child.returncode is None:
            kill_group(child.pid)
            child.wait(timeout=REAP_SECONDS)
        with _STATE:
            _CHILDREN.pop(child, None)
    return Finished(child.returncode, out, err or b"", timed_out)


def is_ancestor(
    git_dir: str | os.PathLike[str],
    ancestor: str,
    descendant: str,
    env: Mapping[str, str],
    timeout: float,
) -> bool:
    """Whether ``ancestor`` is ``descendant`` or in its history (False when git cannot
    tell in ``timeout``)."""
    if timeout <= 0:
        return False
    argv = ["git", "merge-base", "--is-ancestor", ancestor, descendant]
    done = bounded(argv, cwd=git_dir, env=env, timeout=timeout, gentle=False)
    return not done.timed_out and done.returncode == 0


def command(
    argv: list[str],
    *,
    cwd: str | None = None,
    stdin: bytes = b"",
    timeout: float = 600,
    env: dict[str, str] | None = None,
    killable: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """``bounded`` for an operation: a command that cannot start or runs out of time
    is the operation's error."""
    # Every ref written here is a repair, not a person's push: a local peer's hook
    # that sees this marker neither forwards nor votes on it.
    env = {**(os.environ if env is None else env), "RECONCILER_REPLICA": "reconcile-apply"}
    try:
        done = bounded(argv, cwd=cwd, env=env, stdin=stdin, timeout=timeout, killable=killable)
    except OSError as exc:
        raise OpError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if done.timed_out:
        raise OpError(f"{argv[0]} timed out after {timeout:.0f}s")
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)


def run(
    argv: list[str],
    *,
    cwd: str | None = None,
    stdin: bytes = b"",
    timeout: float = 600,
    env: dict[str, str] | None = None,
    killable: bool = False,
) -> str:
    """``command`` whose failure is the operation's error; its stdout."""
    done = command(argv, cwd=cwd, stdin=stdin, timeout=timeout, env=env, killable=killable)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OpError(f"{' '.join(argv[:3])} failed: {message[-1] if message else done.returncode}")
    return done.stdout.decode("utf-8", "replace")


def stop_groups(pids: list[int], *, gentle: bool = True) -> None:
    """End commands with whatever they started: SIGTERM first when ``gentle``, then
    SIGKILL for what is still running."""
    steps = ((signal.SIGTERM, TERM_SECONDS),) if gentle else ()
    for sig, wait in (*steps, (signal.SIGKILL, REAP_SECONDS)):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(_dead(pid) for pid in pids):
            time.sleep(0.01)
        if all(_dead(pid) for pid in pids):
            return


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


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


# --- threads (concurrent.futures brings logging and more: a hook's start pays it) -------

T = TypeVar("T")
U = TypeVar("U")


class InThread(Generic[T]):
    """``function(*args)`` running in a thread of its own; ``result`` waits for it and
    returns its value or raises its exception (as a future would)."""

    def __init__(self, function: Callable[..., T], *args: Any) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._value = function(*args)
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def parallel_map(function: Callable[[U], T], items: Iterable[U]) -> list[T]:
    """``function`` of every item at once, one thread each; the values in order, or
    the first item's exception (as ``ThreadPoolExecutor.map`` would raise it)."""
    threads = [InThread(function, item) for item in items]
    return [thread.result() for thread in threads]
