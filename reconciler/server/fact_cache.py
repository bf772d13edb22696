"""Telling, without reading it, that a repository is as it was when its facts were
last read: the status of every file and directory they were read from, compared as
git's index compares a file's stat data.

The operator keeps the facts (``reconciler.gather_cache``, in its own cache
directory: nothing is written on a server) and sends, for each repository it
remembers, a digest of those statuses and which refs paths they covered (its
*layout*). The gather stats the same inputs; an equal digest answers "unchanged"
instead of reading and parsing config, HEAD, refs and hooks. A converged plan of
10,000 repositories then costs about twelve ``stat`` calls per repository instead of
some forty system calls and the parsing.

A status is the inode, size, modification and change time (nanoseconds); the change
time moves on any write, rename, chmod or chown, and nobody can set it back. An
input that did not exist is part of the digest as absent: it appearing is a change.

The one change a status cannot show is a second one within the same clock tick as
the first, with the same size. So, as git does with its index, facts whose inputs
changed less than ``RACY_NS`` before the gather began are not offered for keeping
(``keepable``): they are read again next time, until they have been still that
long. Each input is stat'ed before it is read, so a change during the read
shows next time as a difference, never as the old status paired with new content.
"""

from __future__ import annotations

import hashlib
import os
from typing import Union

# Facts whose inputs changed less than this before the gather began are read afresh
# next time: file times come from a clock that ticks every few milliseconds, and a
# stepped clock or a file system with coarse times moves them further.
RACY_NS = 2_000_000_000

# An input's status: (inode, size, mtime_ns, ctime_ns); None: absent; False: could
# not be stat'ed (facts read from it are not offered for keeping).
# (A Union: the server's Python may be 3.9, where types have no "|".)
Status = Union[tuple[int, int, int, int], None, bool]  # noqa: UP007
# (path relative to the repository, whether a symlink there is followed, status)
Input = tuple[str, bool, Status]
# What the operator remembers of each repository: (the digest of its inputs' statuses,
# its layout: the refs paths among them).
Remembered = dict[str, tuple[str, list[str]]]


def status(path: str, follow: bool) -> Status:
    try:
        info = os.stat(path, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):  # ValueError: a NUL or an unencodable character
        return False
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def digest(statuses: list[Status]) -> str | None:
    """One short digest of the statuses, in order; None if one could not be taken."""
    parts = []
    for one in statuses:
        if one is False:
            return None
        parts.append("-" if one is None else "{} {} {} {}".format(*one))  # type: ignore[misc]
    # sha256, as everywhere on the server side: a FIPS-mode Python refuses blake2.
    return hashlib.sha256(";".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def current_digest(
    gitdir: str, fixed: tuple[tuple[str, bool], ...], layout: list[str]
) -> str | None:
    """The digest of the inputs' statuses now: ``fixed`` (what every repository's facts
    are read from) then the refs paths of ``layout`` (followed, as they are read)."""
    prefix = gitdir + "/"
    statuses: list[Status] = [status(prefix + relative, follow) for relative, follow in fixed]
    statuses += [status(prefix + relative, True) for relative in layout]
    return digest(statuses)


def keepable(inputs: list[Input], fixed: int, horizon_ns: int) -> tuple[str, list[str]] | None:
    """(digest, layout) of facts read from ``inputs`` (the ``fixed`` inputs first, then
    the refs paths: the layout), if they may be kept: every input stat'ed, and none
    changed after ``horizon_ns``."""
    for _relative, _follow, now in inputs:
        if now is False:
            return None
        if now is not None and (now[2] >= horizon_ns or now[3] >= horizon_ns):  # type: ignore[index]
            return None
    found = digest([now for _relative, _follow, now in inputs])
    if found is None:
        return None
    return found, [relative for relative, _follow, _now in inputs[fixed:]]


def parse_known(value: object) -> Remembered | None:
    """The request's "known": {"layouts": [[refs path, ...], ...], "repositories":
    {name: [digest, layout index]}}; None (nothing remembered, and facts read are not
    offered for keeping) when absent or not of that shape."""
    if not isinstance(value, dict):
        return None
    layouts = value.get("layouts")
    entries = value.get("repositories")
    if not isinstance(layouts, list) or not isinstance(entries, dict):
        return None
    if not all(
        isinstance(layout, list) and all(isinstance(p, str) for p in layout) for layout in layouts
    ):
        return None
    remembered: Remembered = {}
    for name, entry in entries.items():
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
            and 0 <= entry[1] < len(layouts)
        ):
            remembered[name] = (entry[0], layouts[entry[1]])
    return remembered
