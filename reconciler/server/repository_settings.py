"""Repository settings as gitosis writes them: ``NAME.git/description``, gitweb's
``~/gitosis/projects.list`` and ``git-daemon-export-ok`` (gather: how gitosis finds
each ``[repo NAME]`` and what it would replace). They are written with the plain file
ops (``reconciler.server.files``)."""

from __future__ import annotations

import os
from typing import Any

from reconciler.server.common import read_text, safe_relative

EXPORT_OK = "git-daemon-export-ok"


def repository_flags(gitdir: str) -> dict[str, bool]:
    # Absent means false: a stat per repository, and most repositories are not exported.
    return {"export_ok": True} if os.path.exists(f"{gitdir}/{EXPORT_OK}") else {}


def repo_section_facts(base: str, names: list[str], described: set[str]) -> dict[str, Any]:
    """How gitosis finds each [repo NAME] now: ``base/NAME`` if anything is there (it
    is tried first), else ``base/NAME.git``; and the description it would replace."""
    found: dict[str, Any] = {}
    for name in names:
        if not isinstance(name, str) or not safe_relative(name):
            continue
        entry: dict[str, Any] = {}
        plain = os.path.exists(os.path.join(base, name))
        if plain:
            entry["plain"] = True
        if name in described:
            directory = name if plain else name + ".git"
            entry["description"] = read_text(os.path.join(base, directory, "description"))
        found[name] = entry
    return found


def projects_list(home: str, relative: object) -> dict[str, Any]:
    if isinstance(relative, str) and safe_relative(relative):
        return {"projects_list": read_text(os.path.join(home, relative), 64 << 20)}
    return {}
