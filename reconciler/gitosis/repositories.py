"""The files gitosis derives from ``[repo NAME]`` sections, and creating repositories.

- ``NAME.git/description`` from ``description``;
- ``projects.list`` (gitweb's list) from ``gitweb`` and ``owner``;
- ``NAME.git/git-daemon-export-ok`` from ``daemon``;
- ``git init --bare --quiet`` for repositories gitosis-serve creates on first access.
"""

from __future__ import annotations

import configparser
import contextlib
import logging
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable

from reconciler.gitosis.config import (
    REPO_PREFIX,
    generated_files_dir,
    get_bool,
    repository_dir,
)
from reconciler.server.common import atomic_write
from reconciler.server.repository_settings import EXPORT_OK as EXPORT_OK  # the planner's too

DESCRIPTION = "description"
PROJECTS_LIST = "projects.list"

# Where gitosis finds a [repo NAME] under the repository base ("NAME" or
# "NAME.git"), or None when neither exists. The runtime looks on disk; the
# reconciler's planner answers from the gathered facts, so both derive the files
# from one definition.
Locate = Callable[[str], "str | None"]


def write_text(path: str, data: str, mode: int = 0o644) -> None:
    atomic_write(path, data.encode("utf-8", "surrogateescape"), mode)


def _repo_sections(config: configparser.RawConfigParser) -> list[tuple[str, str]]:
    """(section, NAME) for every ``[repo NAME]`` section, in file order."""
    found = []
    for section in config.sections():
        parts = section.split(None, 1)
        if len(parts) == 2 and parts[0] == REPO_PREFIX.strip():
            found.append((section, parts[1]))
    return found


def _present(config: configparser.RawConfigParser, section: str, option: str) -> str | None:
    """An option of an existing section, or None; without the raised lookups of
    ``get``, which cost a third of a second over 10,000 sections."""
    return config.get(section, option) if config.has_option(section, option) else None


def repo_section_names(config: configparser.RawConfigParser) -> list[str]:
    return [name for _section, name in _repo_sections(config)]


def _find_on_disk(repositories: str, name: str, log: logging.Logger) -> str | None:
    """``name`` or ``name.git``, whichever exists under ``repositories``."""
    if os.path.exists(os.path.join(repositories, name)):
        return name
    if os.path.exists(os.path.join(repositories, f"{name}.git")):
        return f"{name}.git"
    log.warning("Cannot find %r in %r", name, repositories)
    return None


def descriptions(config: configparser.RawConfigParser) -> list[tuple[str, str]]:
    """(NAME, description) for every ``[repo NAME]`` with a non-empty description.

    gitosis writes ``description`` + newline into the repository's directory and
    leaves the file alone for every other repository.
    """
    found = []
    for section, name in _repo_sections(config):
        description = _present(config, section, "description")
        if description:
            found.append((name, description))
    return found


def set_descriptions(config: configparser.RawConfigParser) -> None:
    log = logging.getLogger("gitosis.gitweb.set_descriptions")
    repositories = repository_dir(config)
    for name, description in descriptions(config):
        found = _find_on_disk(repositories, name, log)
        if found is None:
            continue
        write_text(os.path.join(repositories, found, DESCRIPTION), f"{description}\n")


def quote_plus_python2(text: str) -> str:
    """Python 2's ``urllib.quote_plus``, which gitosis 0.3 runs: unlike Python 3.7+ it
    does not count ``~`` as safe. Otherwise the same (UTF-8 bytes, ``/`` quoted)."""
    return urllib.parse.quote_plus(text).replace("~", "%7E")


def gitweb_entries(config: configparser.RawConfigParser) -> list[tuple[str, str | None]]:
    """(NAME, owner or None) of every repository gitweb lists, in file order.

    A repository is listed when its ``gitweb`` (default: ``[gitosis] gitweb``, else
    off) is on.
    """
    global_enable = get_bool(config, "gitosis", "gitweb")
    entries = []
    for section, name in _repo_sections(config):
        if config.has_option(section, "gitweb"):
            enable = config.getboolean(section, "gitweb")
        else:
            enable = global_enable
        if enable:
            entries.append((name, _present(config, section, "owner")))
    return entries


def project_list_lines(
    entries: list[tuple[str, str | None]],
    locate: Locate,
    quote: Callable[[str], str] = urllib.parse.quote_plus,
) -> str:
    """gitweb's ``projects.list``: ``NAME[.git] [OWNER]`` per entry, URL-quoted; gitosis
    lists a repository it cannot find under its configured name."""
    lines = []
    for name, owner in entries:
        fields = [locate(name) or name]
        if owner is not None:
            fields.append(owner)
        lines.append(" ".join(quote(f) for f in fields) + "\n")
    return "".join(lines)


def project_list_text(
    config: configparser.RawConfigParser,
    locate: Locate,
    quote: Callable[[str], str] = urllib.parse.quote_plus,
) -> str:
    return project_list_lines(gitweb_entries(config), locate, quote)


def project_list(config: configparser.RawConfigParser) -> str:
    log = logging.getLogger("gitosis.gitweb.generate_projects_list")
    repositories = repository_dir(config)
    return project_list_text(config, lambda name: _find_on_disk(repositories, name, log))


def write_project_list(config: configparser.RawConfigParser) -> None:
    write_text(os.path.join(generated_files_dir(config), PROJECTS_LIST), project_list(config))


def daemon_flags(config: configparser.RawConfigParser) -> Callable[[str], bool]:
    """Whether gitosis gives repository NAME (without ``.git``) ``git-daemon-export-ok``:
    its ``[repo NAME] daemon``, else ``[gitosis] daemon``, else off. Every repository
    under the base gets the flag or loses it, with or without a ``[repo]`` section.

    The sections are read once, not per repository under the base.
    """
    global_enable = get_bool(config, "gitosis", "daemon")
    explicit = {
        section: config.getboolean(section, "daemon")
        for section, _name in _repo_sections(config)
        if config.has_option(section, "daemon")
    }
    return lambda name: explicit.get(f"{REPO_PREFIX}{name}", global_enable)


def set_export_ok(config: configparser.RawConfigParser) -> None:
    """Create or remove ``git-daemon-export-ok`` in every repository under the base."""
    log = logging.getLogger("gitosis.gitdaemon.set_export_ok")
    repositories = repository_dir(config)
    enabled = daemon_flags(config)
    for dirpath, dirnames, _filenames in os.walk(repositories):
        reldir = os.path.relpath(dirpath, repositories)
        repos = [d for d in dirnames if d.endswith(".git")]
        # Repositories are leaves: do not descend into them.
        dirnames[:] = [d for d in dirnames if not d.endswith(".git")]
        for repo in repos:
            name = repo[: -len(".git")]
            if reldir != ".":
                name = os.path.join(reldir, name)
            flag = os.path.join(dirpath, repo, EXPORT_OK)
            if enabled(name):
                log.debug("Allow %r", name)
                with open(flag, "a", encoding="utf-8"):
                    pass
            else:
                log.debug("Deny %r", name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(flag)


def refresh_generated_files(config: configparser.RawConfigParser) -> None:
    """Descriptions, projects.list and export flags, as after a push or a new repository."""
    set_descriptions(config)
    write_project_list(config)
    set_export_ok(config)


def init_bare(path: str, *, initial_branch: str | None = None) -> None:
    """``git init --bare --quiet`` at ``path`` (created with mode 0750 if missing).

    git's output goes to stderr: in gitosis-serve stdout is the git protocol stream.
    """
    os.makedirs(path, mode=0o750, exist_ok=True)
    argv = ["git"]
    if initial_branch is not None:
        argv += ["-c", f"init.defaultBranch={initial_branch}"]
    argv += ["init", "--bare", "--quiet", path]
    subprocess.run(argv, stdout=sys.stderr, check=True)
