"""``reconcile import``: cluster.d/ from an existing gitosis.conf and keydir/.

The imported files grant the same access as the original gitosis.conf for every
user who has a key in keydir/ (nobody else can log in), with one intended
difference: the servers' own users (members of the mirror group) get write
access to every mirrored repository, which is what mirroring needs. Anything
that cluster.d/ cannot express (``map`` options, per-group ``repositories``,
``[gitosis]`` options) is reported, never silently dropped.
"""

from __future__ import annotations

import configparser
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.desired.files import write_if_changed
from reconciler.desired.load import CLUSTER_DIR, KEYDIR, is_cluster_name, is_server_name
from reconciler.errors import ConfigErrors, Location, ReconcilerError
from reconciler.gitosis.config import GROUP_PREFIX, REPO_PREFIX, parse_config
from reconciler.gitosis.names import (
    is_safe_group,
    is_safe_user,
    keydir_files,
    repo_path_problem,
    strip_git_suffix,
)

DEFAULT_ADMIN = "gitosis-admin"
DEFAULT_MIRROR_GROUP = "grp_mirror"


@dataclass
class ImportResult:
    """The cluster.d/ files to write, and what a person should know about them."""

    files: dict[str, str]
    servers: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass
class _GroupOut:
    members: list[str] = field(default_factory=list)
    writable: list[str] = field(default_factory=list)
    readonly: list[str] = field(default_factory=list)


def keydir_users(root: Path) -> set[str]:
    """The users gitosis would create from keydir/: safe names of ``*.pub`` files."""
    directory = root / KEYDIR
    if not directory.is_dir():
        return set()
    return {user for user, _path in keydir_files(str(directory)) if is_safe_user(user)}


def _read_config(path: Path, shown: str) -> configparser.RawConfigParser:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ReconcilerError(
            "there is no gitosis.conf to import; point -C at the gitosis-admin checkout",
            Location(shown),
        ) from None
    except UnicodeDecodeError:
        raise ReconcilerError("gitosis.conf is not UTF-8 text", Location(shown)) from None
    except OSError as exc:
        raise ReconcilerError(
            f"cannot read gitosis.conf: {exc.strerror or exc}", Location(shown)
        ) from None
    try:
        return parse_config(text, source=shown)
    except configparser.Error as exc:
        line = getattr(exc, "lineno", 0) or 0
        message = " ".join(str(getattr(exc, "message", exc)).split())
        raise ReconcilerError(
            f"gitosis.conf cannot be read as gitosis reads it: {message}", Location(shown, line)
        ) from None


class _Importer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.shown = str(root / "gitosis.conf")
        self.config = _read_config(root / "gitosis.conf", self.shown)
        self.users = keydir_users(root)
        self.warnings: list[str] = []
        self.errors: list[ReconcilerError] = []
        self.servers: list[str] = []
        self.groups: dict[str, _GroupOut] = {}
        self.repositories: dict[str, dict[str, Any]] = {}
        self.admin = DEFAULT_ADMIN
        self.mirror = DEFAULT_MIRROR_GROUP
        self.group_sections = {
            s[len(GROUP_PREFIX) :] for s in self.config.sections() if s.startswith(GROUP_PREFIX)
        }

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def split(self, section: str, option: str) -> list[str]:
        if not self.config.has_option(section, option):
            return []
        return self.config.get(section, option).split()

    def repository_names(self, section: str, values: list[str]) -> list[str]:
        names: list[str] = []
        for value in values:
            problem = repo_path_problem(value)
            if problem is not None:
                self.warn(f"[{section}]: dropped {value!r}, which gitosis never serves: {problem}")
                continue
            name = strip_git_suffix(value)
            if name != self.admin:
                self.repositories.setdefault(name, {})
            if name != value:
                # gitosis strips '.git' from the requested path, never from the list.
                self.warn(
                    f"[{section}]: {value!r} never granted access, because gitosis compares "
                    f"names without '.git'; {name!r} is mirrored but this access is not "
                    "imported (add it to the group if it was meant)"
                )
                continue
            if name not in names:
                names.append(name)
        return names

    def read_gitosis_section(self) -> None:
        if not self.config.has_section("gitosis"):
            return
        for option, value in self.config.items("gitosis"):
            if option == "repositories" and value == "repositories":
                continue
            self.warn(
                f"[gitosis] {option} = {value} is not carried over; the servers' "
                "'repositories' key and per-repository gitweb/daemon replace it"
            )

    def read_mirror_group(self) -> None:
        section = GROUP_PREFIX + self.mirror
        if not self.config.has_section(section):
            return
        others: list[str] = []
        for member in self.split(section, "members"):
            server = member[len("git@") :] if member.startswith("git@") else ""
            if server and is_server_name(server):
                if server not in self.servers:
                    self.servers.append(server)
            else:
                others.append(member)
        writable = self.repository_names(
            section, self.split(section, "writable") + self.split(section, "writeable")
        )
        readonly = self.repository_names(section, self.split(section, "readonly"))
        if self.admin in writable or self.admin in readonly:
            self.warn(
                f"[{section}] gave the servers' keys access to {self.admin}; the generated "
                f"mirror group gives them no access to {self.admin} (a server's key that can "
                "push it rewrites every server's access rules), reconcile apply sends it to "
                "every server instead"
            )
        if others:
            name = f"{self.mirror}-members"
            self.warn(
                f"[{section}] members {' '.join(others)} are not servers' keys (git@SERVER); "
                f"they keep their access through the new group {name!r}"
            )
            self.groups[name] = _GroupOut(self.members(section, others), writable, readonly)

    def members(self, section: str, members: list[str]) -> list[str]:
        kept: list[str] = []
        server_users = {f"git@{server}" for server in self.servers}
        for member in members:
            if member.startswith("@"):
                group = member[1:]
                if group in self.group_sections or group in ("all", self.mirror):
                    kept.append(member)
                else:
                    self.warn(f"[{section}]: dropped {member!r}, a group that is not defined")
            elif not is_safe_user(member):
                self.warn(f"[{section}]: dropped {member!r}, which is not a gitosis user name")
            elif member not in self.users and member not in server_users:
                self.warn(
                    f"[{section}]: dropped {member!r}, who has no key in keydir/ and so "
                    "cannot log in"
                )
            elif member not in kept:
                kept.append(member)
        return kept

    def read_group(self, name: str) -> None:
        section = GROUP_PREFIX + name
        if not is_safe_group(name):
            self.errors.append(
                ReconcilerError(
                    f"the group name {name!r} cannot be used in cluster.d/; rename the "
                    "group in gitosis.conf first",
                    Location(self.shown),
                )
            )
            return
        if self.config.has_option(section, "writeable"):
            self.warn(f"[{section}]: the misspelt 'writeable' is imported as 'writable'")
        for option in self.config.options(section):
            if option.startswith("map ") or option == "repositories":
                self.warn(f"[{section}] {option} is not carried over; cluster.d/ has no equivalent")
        members = self.members(section, self.split(section, "members"))
        writable = self.repository_names(
            section, self.split(section, "writable") + self.split(section, "writeable")
        )
        readonly = self.repository_names(section, self.split(section, "readonly"))
        self.groups[name] = _GroupOut(members, writable, readonly)

    def read_repo(self, name: str) -> None:
        section = REPO_PREFIX + name
        problem = repo_path_problem(name)
        if problem is not None:
            self.warn(f"[{section}] is dropped: {problem}")
            return
        spec: dict[str, Any] = self.repositories.setdefault(strip_git_suffix(name), {})
        for option in ("description", "owner"):
            if self.config.has_option(section, option):
                value = " ".join(self.config.get(section, option).split())
                spec[option] = value
        for option in ("gitweb", "daemon"):
            if self.config.has_option(section, option):
                try:
                    spec[option] = self.config.getboolean(section, option)
                except ValueError:
                    self.warn(f"[{section}] {option} is not a boolean and is not carried over")

    def run(self) -> ImportResult:
        self.read_gitosis_section()
        self.read_mirror_group()
        for section in self.config.sections():
            if section == "gitosis":
                continue
            if section.startswith(GROUP_PREFIX):
                name = section[len(GROUP_PREFIX) :]
                if name != self.mirror:
                    self.read_group(name)
            elif section.startswith(REPO_PREFIX):
                self.read_repo(section[len(REPO_PREFIX) :])
            else:
                self.warn(f"[{section}] is not a gitosis section and is not carried over")
        if self.errors:
            raise ConfigErrors(self.errors)
        name = self.root.absolute().name
        if not is_cluster_name(name):
            name = "imported"
        return ImportResult(
            files={
                f"{CLUSTER_DIR}/10-cluster.yaml": _cluster_file(name, self.servers),
                f"{CLUSTER_DIR}/20-repositories.yaml": _dump(
                    "Every repository listed here is mirrored to every server; "
                    f"{self.admin} always is.",
                    {"repositories": self.repositories},
                ),
                f"{CLUSTER_DIR}/30-groups.yaml": _dump(
                    f"gitosis groups. The mirror group ({self.mirror}) of the servers' own "
                    "keys is generated; do not define it.",
                    {"groups": {n: _group_data(g) for n, g in self.groups.items()}},
                ),
            },
            servers=list(self.servers),
            warnings=self.warnings,
        )


def _group_data(group: _GroupOut) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {"members": group.members}
    if group.writable:
        data["writable"] = group.writable
    if group.readonly:
        data["readonly"] = group.readonly
    return data


HEADER = "# Imported from gitosis.conf by 'reconcile import'.\n"


def _dump(comment: str, data: dict[str, Any]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    def build(value: Any) -> Any:
        if isinstance(value, dict):
            node = CommentedMap()
            for key, item in value.items():
                node[key] = build(item)
            if not value:
                node.fa.set_flow_style()
            return node
        if isinstance(value, list):
            seq = CommentedSeq(build(item) for item in value)
            seq.fa.set_flow_style()
            return seq
        return value

    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    stream = io.StringIO()
    yaml.dump(build(data), stream)
    return f"{HEADER}#\n# {comment}\n{stream.getvalue()}"


def _cluster_file(name: str, servers: list[str]) -> str:
    template = servers or ["master", "mirror"]
    lines = [
        HEADER.rstrip("\n"),
        "#",
        "# Users stay in keydir/*.pub. Fill in the servers below, then run",
        "# 'reconcile render' and 'reconcile validate' and commit.",
        "cluster:",
        f"  name: {name}",
        "",
    ]
    if servers:
        lines.append(
            f"# The mirror group of gitosis.conf named these servers: {', '.join(servers)}."
        )
    lines += [
        "# servers:",
    ]
    for server in template:
        lines += [
            f"#   {server}:",
            f"#     url: ssh://git@{server}.example.com      # how this machine reaches it",
            f"#     # peer_url: ssh://git@{server}.internal  # how the other servers reach it",
        ]
    return "\n".join(lines) + "\n"


def import_gitosis(root: Path) -> ImportResult:
    """The cluster.d/ files equivalent to ``root``/gitosis.conf and keydir/.

    Raises ``ReconcilerError`` (or ``ConfigErrors``) when gitosis.conf is missing,
    unreadable or uses names cluster.d/ cannot hold.
    """
    return _Importer(root).run()


def write_import(root: Path, result: ImportResult) -> list[str]:
    """Write the imported files; refuses to touch an existing cluster.d/ with YAML."""
    directory = root / CLUSTER_DIR
    if directory.is_dir() and any(directory.glob("*.yaml")):
        raise ReconcilerError(
            "cluster.d/ already holds YAML files; import only into a checkout without them",
            Location(str(directory)),
        )
    return [path for path, text in result.files.items() if write_if_changed(root / path, text)]
