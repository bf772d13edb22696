"""gitosis's rules for user names, repository paths and group names.

``fullmatch`` is used throughout: with ``re.match`` a ``$`` also matches before a
trailing newline, which would let ``"alice\\n"`` through.
"""

from __future__ import annotations

import os
import re

SAFE_USER_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.-]*(@[a-zA-Z][a-zA-Z0-9.-]*)?")

# The quoted argument of a git command in SSH_ORIGINAL_COMMAND, as gitosis-serve checks it.
SAFE_ARG_RE = re.compile(
    r"'/*(?P<path>[a-zA-Z0-9][a-zA-Z0-9@._-]*(/[a-zA-Z0-9][a-zA-Z0-9@._-]*)*)'"
)

# A repository path: every segment starts with an alphanumeric, so no "..",
# no hidden segments, no leading slash, no whitespace or shell metacharacters.
SAFE_REPO_PATH_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9@._-]*(/[a-zA-Z0-9][a-zA-Z0-9@._-]*)*")

# Group names become "[group NAME]" section headers and "@NAME" member references.
SAFE_GROUP_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9@._/-]*")


def is_safe_user(name: str) -> bool:
    return SAFE_USER_RE.fullmatch(name) is not None


def keydir_files(keydir: str) -> list[tuple[str, str]]:
    """``(user, path)`` of every file gitosis reads keys from: ``keydir/USER.pub``, in
    name order, skipping names that start with ``.`` and what is not a file. USER is
    not checked here: gitosis skips an unsafe one with a warning (``is_safe_user``)."""
    found = []
    for filename in sorted(os.listdir(keydir)):
        user, ext = os.path.splitext(filename)
        path = os.path.join(keydir, filename)
        if not filename.startswith(".") and ext == ".pub" and os.path.isfile(path):
            found.append((user, path))
    return found


def is_safe_group(name: str) -> bool:
    return SAFE_GROUP_RE.fullmatch(name) is not None


def strip_git_suffix(path: str) -> str:
    """gitosis strips one ``.git`` extension before matching access rules."""
    return path[: -len(".git")] if path.endswith(".git") and len(path) > 4 else path


def repo_path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe repository path, or None when it is."""
    if (
        SAFE_REPO_PATH_RE.fullmatch(path) is not None
        and SAFE_REPO_PATH_RE.fullmatch(strip_git_suffix(path)) is not None
    ):
        # The common case, decided by the last two checks alone: a path they accept is
        # not empty, starts with neither '/' nor '.' and has no '..' segment. (cluster.d/
        # lists 10,000 repositories; each is checked twice on every load.)
        return None
    if not path:
        return "a repository path must not be empty"
    if path.startswith("/"):
        return f"repository path {path!r} must not start with '/'"
    if path.startswith("."):
        return f"repository path {path!r} must not start with '.'"
    if any(segment == ".." for segment in path.split("/")):
        return f"repository path {path!r} must not contain '..'"
    if SAFE_REPO_PATH_RE.fullmatch(path) is None:
        return (
            f"repository path {path!r} is not safe: each '/'-separated segment must start "
            "with a letter or digit and hold only letters, digits and '@._-'"
        )
    stripped = strip_git_suffix(path)
    if SAFE_REPO_PATH_RE.fullmatch(stripped) is None:
        return f"repository path {path!r} is not safe once its '.git' suffix is removed"
    return None


def normalize_repo_path(path: str) -> str:
    """The canonical name of a repository: validated, ``.git`` suffix removed.

    Raises ValueError with a one-sentence reason for an unsafe path.
    """
    problem = repo_path_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return strip_git_suffix(path)
