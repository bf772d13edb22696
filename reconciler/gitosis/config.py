"""Reading gitosis.conf and deciding access, exactly as gitosis does.

gitosis parses its configuration with Python 2's ``RawConfigParser``: option names
are lower-cased, values are not interpolated, duplicate sections and options are
allowed (the last one wins), and a ``;`` preceded by whitespace starts an inline
comment. Group membership and access follow gitosis's ``group`` and ``access``
modules (GITOSIS.md, "Group resolution").
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterator
from pathlib import Path

GROUP_PREFIX = "group "
REPO_PREFIX = "repo "
DEFAULT_REPOSITORIES = "repositories"


def new_config() -> configparser.RawConfigParser:
    """An empty parser configured like gitosis's; ``read``/``read_file`` merge into it."""
    return configparser.RawConfigParser(
        strict=False, inline_comment_prefixes=(";",), interpolation=None
    )


def parse_config(text: str, source: str = "gitosis.conf") -> configparser.RawConfigParser:
    """Parse gitosis.conf text; raises ``configparser.Error`` on malformed input."""
    config = new_config()
    config.read_string(text, source=source)
    return config


def read_config(path: str | Path) -> configparser.RawConfigParser:
    path = Path(path)
    return parse_config(path.read_text(encoding="utf-8"), source=str(path))


def get(config: configparser.RawConfigParser, section: str, option: str) -> str | None:
    """An option's value, or None when the section or option is absent."""
    try:
        return config.get(section, option)
    except (configparser.NoSectionError, configparser.NoOptionError):
        return None


def get_bool(
    config: configparser.RawConfigParser, section: str, option: str, default: bool = False
) -> bool:
    try:
        return config.getboolean(section, option)
    except (configparser.NoSectionError, configparser.NoOptionError):
        return default


def group_names(config: configparser.RawConfigParser) -> list[str]:
    return [s[len(GROUP_PREFIX) :] for s in config.sections() if s.startswith(GROUP_PREFIX)]


def _membership(config: configparser.RawConfigParser, user: str, seen: set[str]) -> Iterator[str]:
    for section in config.sections():
        if not section.startswith(GROUP_PREFIX):
            continue
        group = section[len(GROUP_PREFIX) :]
        if group in seen:
            continue
        members = (get(config, section, "members") or "").split()
        # @all is the only group whose membership is bootstrapped like this;
        # every other group starts from the user name itself.
        if user in members or "@all" in members:
            seen.add(group)
            yield group
            yield from _membership(config, f"@{group}", seen)


def membership(config: configparser.RawConfigParser, user: str) -> list[str]:
    """The groups ``user`` belongs to, in gitosis's order; always ends with ``all``."""
    groups = list(_membership(config, user, set()))
    groups.append("all")
    return groups


def repositories_base(config: configparser.RawConfigParser, group: str | None = None) -> str:
    """The repository base for a group: its own ``repositories``, then [gitosis]'s."""
    if group is not None:
        prefix = get(config, GROUP_PREFIX + group, "repositories")
        if prefix is not None:
            return prefix
    return get(config, "gitosis", "repositories") or DEFAULT_REPOSITORIES


def have_access(
    config: configparser.RawConfigParser, user: str, mode: str, path: str
) -> tuple[str, str] | None:
    """``(repository base, actual path)`` if ``user`` has ``mode`` access to ``path``.

    ``mode`` is ``writable``, ``writeable`` (the accepted misspelling) or
    ``readonly``. The first group (in membership order) that grants it wins,
    either by listing ``path`` or through a ``map MODE PATH = ACTUAL`` option.
    """
    # os.path.splitext, as gitosis: "x.git" -> "x", but ".git" or "a/.git" stay.
    base, ext = os.path.splitext(path)
    if ext == ".git":
        path = base
    for group in membership(config, user):
        section = GROUP_PREFIX + group
        repos = (get(config, section, mode) or "").split()
        mapping: str | None = path if path in repos else get(config, section, f"map {mode} {path}")
        if mapping is not None:
            return repositories_base(config, group), mapping
    return None


def access_mode(config: configparser.RawConfigParser, user: str, path: str) -> str | None:
    """``"writable"``, ``"readonly"`` or None: what gitosis-serve would grant.

    Write access is always sufficient for reading; the misspelling ``writeable``
    counts as ``writable``.
    """
    if have_access(config, user, "writable", path) or have_access(config, user, "writeable", path):
        return "writable"
    if have_access(config, user, "readonly", path):
        return "readonly"
    return None


def repository_dir(config: configparser.RawConfigParser) -> str:
    """``[gitosis] repositories`` joined to the home directory (absolute values win)."""
    return os.path.join(os.path.expanduser("~"), repositories_base(config))


def generated_files_dir(config: configparser.RawConfigParser) -> str:
    """Where ``projects.list`` goes: ``[gitosis] generate-files-in`` or ``~/gitosis``."""
    return get(config, "gitosis", "generate-files-in") or os.path.expanduser("~/gitosis")


def authorized_keys_path(config: configparser.RawConfigParser) -> str:
    return get(config, "gitosis", "ssh-authorized-keys-path") or os.path.expanduser(
        "~/.ssh/authorized_keys"
    )
