"""The git user's template directory: what ``git init`` puts in every repository it makes.

gitosis creates a repository on its first access (``git init``, with no
``--template``, in gitosis and in this project's runtime alike), and so do the
reconciler's own ``init_bare`` and ``clone_mirror``. With ``init.templateDir`` in the
git user's ``~/.gitconfig`` naming ``~/.reconciler/templates/DIGEST/``, each of those
repositories holds the replication hooks (and the repository config, as a template
``config`` file, which git copies before it adds its own ``core`` settings) from the
moment it exists, not from the next apply.

A template directory's name is a digest of what it holds (``template_digest``), so
the one ``~/.gitconfig`` names is never changed in place: a new template is made
aside and renamed into place whole, then ``~/.gitconfig`` is pointed at it (with
``git config``, which writes a lock file and renames it, keeping every other line).
The template it named until then is kept for a ``git init`` that may be copying it
right now; older ones go. Gather reports what ``~/.gitconfig`` names and, when it is
one of ours, the digest of what that directory really holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from typing import Any

from reconciler.server import library
from reconciler.server.common import (
    OpError,
    fsync_dir,
    make_dirs,
    make_tree,
    parse_git_config,
    read_bytes,
    read_text,
    resolve,
    run,
)
from reconciler.server.ops import InstallTemplate, SetTemplateDir, handler

TEMPLATES_DIR = ".reconciler/templates"  # relative to the git user's home
GITCONFIG = ".gitconfig"
KEY = "init.templateDir"
MAX_FILE_BYTES = 1 << 20
MAX_ENTRIES = 64

# What git's own template puts in a repository besides its sample hooks (unchanged for
# many releases): a template replaces git's whole, and gitweb shows the description of
# a repository nobody described, as it did before.
GIT_DEFAULT_FILES = {
    "description": "Unnamed repository; edit this file 'description' to name the repository.\n",
    "info/exclude": (
        "# git ls-files --others --exclude-from=.git/info/exclude\n"
        "# Lines that start with '#' are comments.\n"
        "# For a project mostly in C, the following would be a good set of\n"
        "# exclude patterns (uncomment them if you want to use them):\n"
        "# *.[oa]\n"
        "# *~\n"
    ),
}

# Path below the template -> {"content": TEXT, "mode": MODE} or {"link": TARGET}.
Entries = dict[str, dict[str, Any]]


def template_digest(entries: Entries) -> str:
    """The name of the template directory holding exactly ``entries``."""
    digest = hashlib.sha256()
    for path in sorted(entries):
        entry = entries[path]
        if "link" in entry:
            item = f"{path}\0link\0{entry['link']}"
        else:
            item = f"{path}\0file\0{int(entry['mode']):o}\0{entry['content']}"
        digest.update(item.encode("utf-8", "surrogateescape") + b"\0\0")
    return digest.hexdigest()[:16]


def read_template(directory: str) -> Entries | None:
    """What a template directory holds, as ``Entries``; None if it cannot be read
    whole (missing, too large, or holding anything but files, links and directories)."""
    found: Entries = {}
    try:
        walk = list(os.walk(directory))
    except OSError:
        return None
    if not os.path.isdir(directory):
        return None
    for current, dirs, files in walk:
        for name in [*dirs, *files]:
            full = os.path.join(current, name)
            relative = os.path.relpath(full, directory)
            try:
                info = os.lstat(full)
            except OSError:
                return None
            if stat.S_ISDIR(info.st_mode):
                continue
            if stat.S_ISLNK(info.st_mode):
                found[relative] = {"link": os.readlink(full)}
            elif stat.S_ISREG(info.st_mode):
                data = read_bytes(full, MAX_FILE_BYTES)
                if data is None:
                    return None
                found[relative] = {
                    "content": data.decode("utf-8", "surrogateescape"),
                    "mode": stat.S_IMODE(info.st_mode),
                }
            else:
                return None
            if len(found) > MAX_ENTRIES:
                return None
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(current, d))]
    return found


def configured_template(home: str) -> str | None:
    """``init.templateDir`` as ``~/.gitconfig`` sets it (the last value wins, as in
    git); None when it does not."""
    config = parse_git_config(read_text(os.path.join(home, GITCONFIG)) or "")
    values = config.get(("init", None), {}).get("templatedir")
    if not values:
        return None
    # A pathname: git expands a leading ~/ to the home.
    return home + values[-1][1:] if values[-1].startswith("~/") else values[-1]


def template_facts(home: str) -> dict[str, Any]:
    """Gather: what ``~/.gitconfig`` names as the template, and, when that is one of
    the reconciler's, the digest of what it holds (None: missing or unreadable)."""
    configured = configured_template(home)
    digest = None
    root = os.path.join(home, TEMPLATES_DIR)
    if configured is not None and os.path.dirname(configured) == root:
        entries = read_template(configured)
        digest = template_digest(entries) if entries is not None else None
    return {"configured": configured, "digest": digest}


def _checked_entries(op: InstallTemplate) -> Entries:
    entries: Entries = op.entries
    for relative, entry in entries.items():
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise OpError(f"refusing template file {relative!r}")
        link = entry.get("link")
        if link is not None and ("/" in link or link in ("", ".", "..")):
            raise OpError(f"refusing template link {relative!r} -> {link!r}: not a name beside it")
    if template_digest(entries) != op.digest:
        raise OpError(f"the template files sent are not template {op.digest}")
    return entries


def op_install_template(op: InstallTemplate) -> None:
    """Make ``~/.reconciler/templates/DIGEST`` hold exactly ``entries`` (made aside,
    renamed into place whole; a copy that is not intact is replaced), once the
    library its hooks run is installed: a hook in place before its library would
    fail every push to a repository made from it."""
    entries = _checked_entries(op)
    if not library.installed(op.library):
        raise OpError(
            f"the server library {op.library} is not installed in ~/{library.LIBRARY_DIR}; "
            "the template is left as it is"
        )
    root = resolve(TEMPLATES_DIR)
    make_dirs(root, 0o755)
    target = os.path.join(root, op.digest)
    present = read_template(target) if os.path.isdir(target) else None
    if present is None or template_digest(present) != op.digest:
        files = {
            relative: entry["link"]
            if "link" in entry
            else (entry["content"].encode("utf-8", "surrogateescape"), int(entry["mode"]))
            for relative, entry in entries.items()
        }
        make_tree(root, target, op.digest, files)
    configured = configured_template(resolve("."))
    keep = {op.digest, os.path.basename(configured or "")}
    for name in os.listdir(root):
        if name not in keep:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def op_set_template_dir(op: SetTemplateDir) -> None:
    """Point ``init.templateDir`` in ``~/.gitconfig`` at ``value`` if it still names
    what the plan saw (``expect``; None: unset), keeping every other line of the file."""
    path = resolve(GITCONFIG)
    if os.path.realpath(os.path.dirname(op.value)) != resolve(TEMPLATES_DIR):
        raise OpError(f"refusing {KEY} {op.value!r}: not a template in ~/{TEMPLATES_DIR}")
    current = configured_template(resolve("."))
    if current == op.value:
        return
    if current != op.expect:
        raise OpError(
            f"~/{GITCONFIG} sets {KEY} to {current!r} since the plan was made; run plan again"
        )
    entries = read_template(op.value)
    if entries is None or template_digest(entries) != os.path.basename(op.value):
        raise OpError(f"{op.value} is not the template it names; run plan again")
    mode = None
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
    # git writes GITCONFIG.lock and renames it into place: the file is never half written.
    run(["git", "config", "--file", path, "--replace-all", KEY, op.value])
    if mode is None:
        os.chmod(path, 0o644)
    fsync_dir(os.path.dirname(path))


OPS = dict(
    [
        handler(InstallTemplate, op_install_template),
        handler(SetTemplateDir, op_set_template_dir),
    ]
)
