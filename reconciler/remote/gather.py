"""Gather every fact the planner needs from one server, in one process.

Input (stdin, JSON): {"repositories": "repositories", "admin": "gitosis-admin",
"hook": the current replication hook's text (optional: a hook equal to it is not
hashed again), "repo_sections": the names of gitosis.conf's [repo NAME] sections,
"descriptions": those of them with a description, "projects_list": gitweb's list,
relative to the home}.
Output (stdout, JSON): see ``main``. Reads files only; the single process it spawns
is one ``git log`` in the admin repository. It never reads a private key. The one
file it may write is the replication hook's push record file, which it compacts.
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
import shutil
import stat
import subprocess
import sys
import time
from typing import Any

FORMAT_VERSION = 1
REPLICATED_PREFIXES = ("refs/heads/", "refs/tags/", "refs/notes/")
ABORTED_PREFIX = "refs/reconciler/aborted/"  # quorum repair's keeping of unacknowledged values
HOOK_MARKER = b"# reconciler replication hook"
MAX_DEPTH = 12
MAX_REF_DEPTH = 512  # only a guard against recursion; os.walk had none
MAX_QUEUE = 100000
EXPORT_OK = "git-daemon-export-ok"
MAX_KEY_FILES = 256  # files looked at in ~/.ssh for key pairs
POST_UPDATE_PENDING = "reconciler-post-update-pending"  # written by execute.py
# The replication hook's push records (format: reconciler/replication/pushes.py).
PUSHES_PATH = os.path.join(".reconciler", "pushes.jsonl")
PUSHES_READ_LIMIT = 4 << 20
PUSH_WINDOW_SECONDS = 3600.0
PUSH_WINDOW_RECORDS = 128
PUSH_RESULTS = (
    "ok",
    "unreachable",
    "timeout",
    "pending",
    "no remote",
    "diverged",
    "missing repository",
    "rejected",
)
PUSHES_LOCK_TRIES = 100  # 10 ms apart
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def read_bytes(path, limit):
    """Up to ``limit`` bytes of a file, or None. Plain os.open/os.read: a buffered
    file object per small file costs several times more, and there are tens of
    thousands of them (config, HEAD, refs, hook of every repository)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        left = limit
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


def read_text(path, limit=1 << 20):
    data = read_bytes(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def read_lines(path):
    text = read_text(path, 16 << 20)
    if text is None:
        return []
    return [line for line in text.splitlines() if line.strip()]


def unquote(value):
    value = value.strip()
    if not any(c in value for c in '"\\#;'):
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


def parse_git_config(text):
    """The subset of git's config syntax that git itself writes: sections and keys."""
    sections: dict[tuple[str, str | None], dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            end = line.find("]")
            header = line[1:end]
            if '"' in header:
                name, _, sub = header.partition(" ")
                current = (name.lower(), sub.strip().strip('"').replace('\\"', '"'))
            elif "." in header:
                name, _, sub = header.partition(".")
                current = (name.lower(), sub.lower())
            else:
                current = (header.lower(), None)
            sections.setdefault(current, {})
            rest = line[end + 1 :].strip()
            if not rest:
                continue
            line = rest
        if current is None:
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        sections[current].setdefault(key, []).append(unquote(value) if sep else "true")
    return sections


def read_refs(gitdir, locks=None, aborted=None):
    """The replicated refs; ``locks`` (a list) receives [ref, age in seconds] of each
    ``REF.lock`` that git left: a push killed while it held the ref's lock;
    ``aborted`` the refs quorum repair kept under refs/reconciler/aborted/."""
    refs = {}
    packed = read_text(os.path.join(gitdir, "packed-refs"), 256 << 20)
    if packed:
        for line in packed.splitlines():
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            refs[name.strip()] = sha
    read_loose_refs(os.path.join(gitdir, "refs"), "refs/", refs, 0, locks)
    if aborted is not None:
        aborted.extend(sorted(ref for ref in refs if ref.startswith(ABORTED_PREFIX)))
    return {ref: sha for ref, sha in refs.items() if ref.startswith(REPLICATED_PREFIXES)}


def read_loose_refs(directory, prefix, refs, depth, locks=None):
    """Loose refs under ``directory`` into ``refs`` (as os.walk would find them:
    symlinked directories are not entered, unreadable ones are skipped)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir():
            if depth < MAX_REF_DEPTH and not entry.is_symlink():
                read_loose_refs(entry.path, prefix + entry.name + "/", refs, depth + 1, locks)
            continue
        if entry.name.endswith(".lock"):
            # No ref's name ends in .lock: git's lock of the ref while it is updated.
            if locks is not None:
                with contextlib.suppress(OSError):
                    age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                    locks.append([prefix + entry.name[: -len(".lock")], round(age, 1)])
            continue
        text = read_text(entry.path, 4096)
        if text is None:
            continue
        text = text.strip()
        if len(text) in (40, 64) and not text.startswith("ref:"):
            refs[prefix + entry.name] = text


def refs_digest(refs):
    digest = hashlib.sha256()
    for ref in sorted(refs):
        digest.update(f"{refs[ref]} {ref}\n".encode())
    return digest.hexdigest()


class KnownContent:
    """The content the operator expects (the current hook), hashed once per run.

    A file equal to it byte for byte has its digest without hashing it again; any
    other file is hashed. Nothing is remembered between runs.
    """

    def __init__(self, data):
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest() if data is not None else None

    def digest(self, data):
        if self.data is not None and len(data) == len(self.data) and data == self.data:
            return self.sha256
        return hashlib.sha256(data).hexdigest()


NO_KNOWN_CONTENT = KnownContent(None)


def hook_facts(gitdir, known=NO_KNOWN_CONTENT):
    path = os.path.join(gitdir, "hooks", "post-receive")
    try:
        info = os.lstat(path)
    except OSError:
        return None
    facts: dict[str, object] = {
        "mode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "sha256": None,
        "managed": False,
    }
    if stat.S_ISLNK(info.st_mode):
        facts["symlink"] = True  # absent: false
    if stat.S_ISREG(info.st_mode):
        data = read_bytes(path, 4 << 20)
        if data is None:
            return facts
        facts["sha256"] = known.digest(data)
        facts["managed"] = HOOK_MARKER in data[:512]
    return facts


def repository_facts(gitdir, want_refs, known=NO_KNOWN_CONTENT):
    config = parse_git_config(read_text(os.path.join(gitdir, "config")) or "")
    remotes = {}
    for (section, sub), values in config.items():
        if section == "remote" and sub is not None:
            remote = {"url": (values.get("url") or [None])[-1]}
            # Absent keys mean the defaults (None, [], false): at 10,000 repositories
            # with two remotes each, writing them out is a fifth of the answer.
            for key in ("pushurl", "mirror"):
                if values.get(key):
                    remote[key] = values[key][-1]
            if values.get("fetch"):
                remote["fetch"] = values["fetch"]
            if (values.get("reconcilermanaged") or ["false"])[-1] == "true":
                remote["managed"] = True
            remotes[sub] = remote
    locks: list[list[object]] = []
    aborted: list[str] = []
    refs = read_refs(gitdir, locks, aborted)
    facts = {
        "head": (read_text(os.path.join(gitdir, "HEAD"), 4096) or "").strip(),
        "bare": (config.get(("core", None), {}).get("bare") or ["true"])[-1] == "true",
        "remotes": remotes,
        "hook": hook_facts(gitdir, known),
        "refs_digest": refs_digest(refs),
        "ref_count": len(refs),
    }
    if locks:
        facts["ref_locks"] = locks
    if aborted:
        facts["aborted"] = aborted
    # quorum mode's hooks/reference-transaction: absent (the common case) says nothing;
    # otherwise where a symlink points, or "file" for anything else.
    transaction_hook = os.path.join(gitdir, "hooks", "reference-transaction")
    try:
        facts["transaction_hook"] = os.readlink(transaction_hook)
    except FileNotFoundError:
        pass
    except OSError:
        if os.path.lexists(transaction_hook):
            facts["transaction_hook"] = "file"
    # Absent means false: a stat per repository, and most repositories are not exported.
    if os.path.exists(os.path.join(gitdir, EXPORT_OK)):
        facts["export_ok"] = True
    if want_refs:
        facts["refs"] = refs
    return facts


def is_repository(path):
    return os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(
        os.path.join(path, "objects")
    )


def walk_repositories(base, want_refs, known=NO_KNOWN_CONTENT):
    found = {}
    stack = [(base, 0, "")]
    while stack:
        directory, depth, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.endswith(".git") and is_repository(entry.path):
                name = prefix + entry.name[: -len(".git")]
                found[name] = repository_facts(entry.path, want_refs, known)
            elif depth < MAX_DEPTH:
                stack.append((entry.path, depth + 1, prefix + entry.name + "/"))
    return found


def admin_facts(base, admin):
    gitdir = os.path.join(base, admin + ".git")
    if not is_repository(gitdir):
        return {"exists": False}
    head = (read_text(os.path.join(gitdir, "HEAD"), 4096) or "").strip()
    branch = head[len("ref: refs/heads/") :] if head.startswith("ref: refs/heads/") else "master"
    refs = read_refs(gitdir)
    sha = refs.get("refs/heads/" + branch)
    history = []
    if sha:
        done = subprocess.run(
            ["git", "--git-dir", gitdir, "log", "-2", "--format=%H%x09%P%x09%cn", sha],
            capture_output=True,
            check=False,
        )
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                history.append(
                    {"sha": parts[0], "parents": parts[1].split(), "committer": parts[2]}
                )
    hook = os.path.join(gitdir, "hooks", "post-update")
    return {
        "exists": True,
        "branch": branch,
        "head": sha,
        "history": history,
        "post_update_hook": os.access(hook, os.X_OK),
        # Left by an apply killed before gitosis's post-update hook finished.
        "post_update_pending": os.path.exists(os.path.join(gitdir, POST_UPDATE_PENDING)),
    }


def safe_relative(name):
    return bool(name) and not name.startswith("/") and ".." not in name.split("/")


def repo_section_facts(base, names, described):
    """How gitosis finds each [repo NAME] now: ``base/NAME`` if anything is there (it
    is tried first), else ``base/NAME.git``; and the description it would replace."""
    found = {}
    for name in names:
        if not isinstance(name, str) or not safe_relative(name):
            continue
        entry = {}
        plain = os.path.exists(os.path.join(base, name))
        if plain:
            entry["plain"] = True
        if name in described:
            directory = name if plain else name + ".git"
            entry["description"] = read_text(os.path.join(base, directory, "description"))
        found[name] = entry
    return found


def key_pairs(ssh):
    """The public halves of the key pairs in ~/.ssh: NAME.pub beside a file NAME.

    Only the private key's existence is checked; it is never opened.
    """
    pairs: list[dict[str, str]] = []
    try:
        names = sorted(os.listdir(ssh))[:MAX_KEY_FILES]
    except OSError:
        return pairs
    for name in names:
        if name.startswith(".") or not name.endswith(".pub") or len(name) <= len(".pub"):
            continue
        if not os.path.isfile(os.path.join(ssh, name[: -len(".pub")])):
            continue
        text = read_text(os.path.join(ssh, name), 16384)
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if len(lines) == 1:
            pairs.append({"path": ".ssh/" + name[: -len(".pub")], "public": lines[0]})
    return pairs


def read_queue(base):
    entries: list[dict[str, object]] = []
    errors: list[str] = []
    directory = os.path.join(base, ".reconciler", "queue")
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return entries, errors
    for name in names[:MAX_QUEUE]:
        if not name.endswith(".json") or name.startswith("."):
            continue
        text = read_text(os.path.join(directory, name), 1 << 16)
        try:
            entry = json.loads(text or "")
        except ValueError:
            errors.append(name)
            continue
        if isinstance(entry, dict):
            entry["file"] = name
            entries.append(entry)
    return entries, errors


def _number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def parse_push_lines(text, now):
    """Per peer: folded totals, records still in the window, and whether the file
    should be rewritten (records left the window, or lines did not parse)."""
    peers: dict[str, dict[str, Any]] = {}
    dirty = False
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            dirty = True
            continue
        peer = item.get("peer") if isinstance(item, dict) else None
        if not isinstance(peer, str) or not SERVER_NAME.fullmatch(peer):
            dirty = True
            continue
        state = peers.setdefault(peer, {"count": 0, "sum": 0.0, "results": {}, "records": []})
        if "count" in item:  # a totals line of an earlier compaction
            results = item.get("results")
            if not _number(item["count"]) or not _number(item.get("sum")):
                dirty = True
                continue
            if state["count"]:
                dirty = True  # two totals lines: fold them into one
            state["count"] += int(item["count"])
            state["sum"] += float(item["sum"])
            for result, count in (results if isinstance(results, dict) else {}).items():
                if result in PUSH_RESULTS and _number(count):
                    state["results"][result] = state["results"].get(result, 0) + int(count)
            continue
        result = item.get("result")
        if (
            not _number(item.get("seconds"))
            or not _number(item.get("time"))
            or result not in PUSH_RESULTS
        ):
            dirty = True
            continue
        state["records"].append(item)
    for state in peers.values():
        records = sorted(state["records"], key=lambda r: r["time"])
        recent = [r for r in records if r["time"] >= now - PUSH_WINDOW_SECONDS]
        recent = recent[-PUSH_WINDOW_RECORDS:]
        kept = {id(r) for r in recent}
        for record in records:
            if id(record) not in kept:
                dirty = True
                state["count"] += 1
                state["sum"] += float(record["seconds"])
                results = state["results"]
                results[record["result"]] = results.get(record["result"], 0) + 1
        state["records"] = recent
    return peers, dirty


def compacted_push_lines(peers):
    lines = []
    for peer in sorted(peers):
        state = peers[peer]
        if state["count"]:
            total = {
                "peer": peer,
                "count": state["count"],
                "sum": round(state["sum"], 4),
                "results": state["results"],
            }
            lines.append(json.dumps(total, sort_keys=True))
        lines += [json.dumps(r, sort_keys=True) for r in state["records"]]
    return "".join(line + "\n" for line in lines)


def read_pushes(base, now):
    """The hook's push records per peer: cumulative count, sum and results, and the
    durations of the pushes in the window. Compacts the file when records left the
    window (under flock on it: the hook appends under the same lock)."""
    path = os.path.join(base, PUSHES_PATH)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        locked = False
        for _ in range(PUSHES_LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        text = read_text(path, PUSHES_READ_LIMIT) or ""
        peers, dirty = parse_push_lines(text, now)
        if dirty and locked:
            with contextlib.suppress(OSError):
                write_replacing(path, compacted_push_lines(peers).encode("utf-8"))
    finally:
        os.close(fd)  # releases the lock, after the rename
    answer = {}
    for peer, state in peers.items():
        results = dict(state["results"])
        for record in state["records"]:
            results[record["result"]] = results.get(record["result"], 0) + 1
        answer[peer] = {
            "count": state["count"] + len(state["records"]),
            "sum": round(state["sum"] + sum(float(r["seconds"]) for r in state["records"]), 4),
            "results": results,
            "recent": [float(r["seconds"]) for r in state["records"]],
        }
    return answer


def write_replacing(path, data):
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def answer_refs(base, names):
    """Mode "refs": every replicated ref of the named repositories."""
    refs = {}
    for name in names:
        gitdir = os.path.join(base, name + ".git")
        if is_repository(gitdir):
            refs[name] = read_refs(gitdir)
    return {"format_version": FORMAT_VERSION, "refs": refs}


def answer_ancestry(base, checks):
    """Mode "ancestry": for each [repository, ancestor, descendant], is it an ancestor?

    Asked of the server holding ``descendant``; a missing ``ancestor`` object
    means it is not in that history (false).
    """
    results = []
    for name, ancestor, descendant in checks:
        done = subprocess.run(
            [
                "git",
                "--git-dir",
                os.path.join(base, name + ".git"),
                "merge-base",
                "--is-ancestor",
                ancestor,
                descendant,
            ],
            capture_output=True,
            check=False,
        )
        results.append(done.returncode == 0)
    return {"format_version": FORMAT_VERSION, "results": results}


def answer_admin_tip(base, admin, have):
    """Mode "admin_tip": the admin branch's commit, and a bundle of its history
    (base64) unless the operator's commit ``have`` already holds it.

    The operator's checkout learns commits pushed to a server by hand from this,
    over the connection it already trusts, whichever server is reachable.
    """
    facts = admin_facts(base, admin)
    answer = {"format_version": FORMAT_VERSION, "exists": facts["exists"]}
    head = facts.get("head")
    if not head:
        return answer
    answer.update(branch=facts["branch"], head=head)
    gitdir = os.path.join(base, admin + ".git")
    if (
        have
        and subprocess.run(
            ["git", "--git-dir", gitdir, "merge-base", "--is-ancestor", head, have],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    ):
        return answer  # the operator's commit already descends from ours
    done = subprocess.run(
        [
            "git",
            "--git-dir",
            gitdir,
            "bundle",
            "create",
            "--quiet",
            "-",
            "refs/heads/" + facts["branch"],
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        answer["error"] = done.stderr.decode("utf-8", "replace").strip()
    else:
        answer["bundle"] = base64.b64encode(done.stdout).decode("ascii")
    return answer


def gitosis_facts(home, runtime_dir):
    """Which gitosis serves here: the runtime the reconciler installed (its version),
    and whether a gitosis-serve is on the PATH that sshd's forced commands get."""
    version = None
    if runtime_dir:
        text = read_text(os.path.join(home, runtime_dir, "VERSION"), 256)
        version = text.strip() if text else None
    return {"runtime": version, "on_path": shutil.which("gitosis-serve") is not None}


def main():
    request = json.loads(sys.stdin.read() or "{}")
    mode = request.get("mode", "facts")
    if mode != "facts":
        base = os.path.join(os.path.expanduser("~"), request.get("repositories", "repositories"))
        if mode == "refs":
            answer = answer_refs(base, request.get("names", []))
        elif mode == "admin_tip":
            answer = answer_admin_tip(
                base, request.get("admin", "gitosis-admin"), request.get("have")
            )
        else:
            answer = answer_ancestry(base, request.get("checks", []))
        sys.stdout.write(json.dumps(answer, separators=(",", ":")))
        return
    started = time.monotonic()
    home = os.path.expanduser("~")
    base = os.path.join(home, request.get("repositories", "repositories"))
    want_refs = request.get("refs", False)
    hook = request.get("hook")
    known = KnownContent(hook.encode("utf-8") if isinstance(hook, str) else None)
    ssh = os.path.join(home, ".ssh")
    key_public = read_text(os.path.join(ssh, "id_ed25519.pub"), 16384)
    settings_text = read_text(os.path.join(base, ".reconciler", "replication.json"))
    try:
        settings = json.loads(settings_text) if settings_text else None
    except ValueError:
        settings = {"invalid": True}
    queue, queue_errors = read_queue(base)
    try:
        account = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        account = str(os.getuid())
    ssh_info = None
    with contextlib.suppress(OSError):
        ssh_info = stat.S_IMODE(os.stat(ssh).st_mode)
    result = {
        "format_version": FORMAT_VERSION,
        "home": home,
        "uid": os.getuid(),
        "user": account,
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "ssh_dir_mode": ssh_info,
        "server_key": key_public.strip() if key_public else None,
        "server_key_private": os.path.isfile(os.path.join(ssh, "id_ed25519")),
        "key_pairs": key_pairs(ssh),
        "known_hosts": read_lines(os.path.join(ssh, "known_hosts")),
        "authorized_keys": read_lines(os.path.join(ssh, "authorized_keys")),
        "repositories_dir": base,
        "repositories_exists": os.path.isdir(base),
        "settings": settings,
        "settings_text": settings_text,
        "queue": queue,
        "queue_errors": queue_errors,
        "repositories": walk_repositories(base, want_refs, known) if os.path.isdir(base) else {},
        "admin": admin_facts(base, request.get("admin", "gitosis-admin")),
        "pushes": read_pushes(base, time.time()),
        "repo_sections": repo_section_facts(
            base, request.get("repo_sections") or [], set(request.get("descriptions") or [])
        ),
    }
    result["gitosis"] = gitosis_facts(home, request.get("runtime_dir"))
    projects_list = request.get("projects_list")
    if isinstance(projects_list, str) and safe_relative(projects_list):
        result["projects_list"] = read_text(os.path.join(home, projects_list), 64 << 20)
    result["seconds"] = round(time.monotonic() - started, 4)
    # One write of the C encoder's output: json.dump streams through the slow
    # pure-Python encoder in tens of thousands of small writes.
    sys.stdout.write(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
