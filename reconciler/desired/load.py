"""``load(directory) -> Desired``: read cluster.d/ and keydir/, check everything.

Every problem found is collected and raised together as ``ConfigErrors``, each
naming file, line and column. Entries are validated one by one, so a broken
server does not hide the mistakes in the next one, and a broken entry still
counts as defined, so references to it do not produce follow-on errors.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reconciler.desired.keys import public_key_problem
from reconciler.desired.model import (
    Cluster,
    Desired,
    Group,
    Replication,
    Repository,
    Server,
    ServerURL,
    parse_server_url,
)
from reconciler.desired.source import DocPath, YamlDocument, read_yaml
from reconciler.errors import ConfigErrors, Location, ReconcilerError
from reconciler.gitosis.names import (
    SAFE_REPO_PATH_RE,
    is_safe_group,
    is_safe_user,
    keydir_files,
    repo_path_problem,
    strip_git_suffix,
)
from reconciler.server.common import SERVER_NAME, is_login_name

CLUSTER_DIR = "cluster.d"
KEYDIR = "keydir"
MAX_KEY_FILE_BYTES = 64 * 1024

_SECTIONS = ("servers", "repositories", "groups", "users")
# What the servers are, and how to reach them: collected first when the caller wants
# to know them before the rest is checked (``load``'s ``servers_known``).
_SERVER_KEYS = frozenset({"cluster", "servers"})
_SECTION_NOUN = {
    "servers": "server",
    "repositories": "repository",
    "groups": "group",
    "users": "user",
}


@dataclass
class _Entry:
    """One named entry (a server, repository, group or user) and where it is."""

    section: str
    name: str
    spec: Any  # the validated pydantic value, or None when it failed validation
    valid: bool
    document: YamlDocument

    @property
    def path(self) -> DocPath:
        return (self.section, self.name)

    @property
    def location(self) -> Location:
        return self.document.location(self.path, key=True)

    def at(self, *path: str | int, key: bool = False) -> Location:
        return self.document.location((*self.path, *path), key=key)


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for item in path:
        if isinstance(item, int):
            text += f"[{item}]"
        else:
            text += f".{item}" if text else str(item)
    return text or "the file"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys(model: Any, path: tuple[Any, ...]) -> list[str] | None:
    from pydantic import BaseModel

    for item in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(item) if isinstance(item, str) else None
        if field is None:
            return None
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[ReconcilerError] = []
        self.entries: dict[str, dict[str, _Entry]] = {section: {} for section in _SECTIONS}
        self.cluster_entry: tuple[Any, bool, YamlDocument] | None = None
        # A file that could not be parsed may hold the cluster: or the servers, so
        # their absence is not reported on top of the parse error.
        self.unreadable = False
        # (id of the kind, type of the mapping) -> what an empty mapping validated to.
        self.empty_entries: dict[tuple[int, type], Any] = {}

    def error(self, location: Location, message: str) -> None:
        self.errors.append(ReconcilerError(message, location))

    def display(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    # -- reading -----------------------------------------------------------------

    def read_documents(self) -> list[YamlDocument]:
        directory = self.root / CLUSTER_DIR
        if not directory.is_dir():
            self.error(
                Location(self.display(CLUSTER_DIR)),
                "there is no cluster.d/ directory here; point -C at the gitosis-admin checkout",
            )
            return []
        documents: list[YamlDocument] = []
        names = sorted(path.name for path in directory.iterdir())
        yaml_names = [n for n in names if n.endswith(".yaml") and not n.startswith(".")]
        for name in names:
            if name.endswith(".yml") and not name.startswith("."):
                self.error(
                    Location(self.display(CLUSTER_DIR, name)),
                    "files in cluster.d/ must end in .yaml; this one would be ignored",
                )
        if not yaml_names:
            self.error(
                Location(self.display(CLUSTER_DIR)),
                "cluster.d/ holds no *.yaml files; describe the cluster there",
            )
        for name in yaml_names:
            path = directory / name
            if not path.is_file():
                self.error(Location(self.display(CLUSTER_DIR, name)), "this is not a file")
                continue
            try:
                documents.append(read_yaml(path, self.display(CLUSTER_DIR, name)))
            except ConfigErrors as exc:
                self.errors.extend(exc.errors)
                self.unreadable = True
            except ReconcilerError as exc:
                self.errors.append(exc)
                self.unreadable = True
        return documents

    def schema_errors(self, document: YamlDocument, prefix: DocPath, model: Any, exc: Any) -> None:
        section = prefix[0]
        seen: set[tuple[Any, ...]] = set()
        for err in exc.errors():
            loc = tuple(err["loc"])
            kind = err["type"]
            if section == "users" and kind in ("list_type", "string_type") and loc == ():
                if prefix in seen:
                    continue
                seen.add(prefix)
                self.error(
                    document.location(prefix),
                    f"{_dotted(prefix)} must be a public key line or a list of them",
                )
                continue
            full = (*prefix, *loc)
            if kind == "missing":
                parent = full[:-1]
                self.error(
                    document.location(parent, key=True),
                    f"{_dotted(parent)} is missing the required key '{full[-1]}'",
                )
            elif kind == "extra_forbidden":
                known = _known_keys(model, loc[:-1])
                hint = f"; expected one of: {', '.join(known)}" if known else ""
                self.error(
                    document.location(full, key=True),
                    f"unknown key '{full[-1]}' in {_dotted(full[:-1])}{hint}",
                )
            else:
                message = str(err["msg"])
                message = message[:1].lower() + message[1:]
                value = err.get("input")
                got = ""
                if value is None or isinstance(value, str | int | float | bool):
                    got = f", got {_shown(value)}"
                if kind == "bool_type":
                    got += " (write true or false)"
                if kind == "model_type":
                    message = "must be a mapping of keys to values"
                self.error(document.location(full), f"{_dotted(full)}: {message}{got}")

    def validate_value(
        self, document: YamlDocument, prefix: DocPath, kind: Any, value: Any
    ) -> tuple[Any, bool]:
        """Validate one entry against its type; report its errors, never raise."""
        # An empty mapping (``name: {}``, most of 10,000 repositories) validates to the
        # same frozen value every time: validated once per type of mapping and kind.
        empty = isinstance(value, dict) and not value
        key = (id(kind), type(value))
        if empty and key in self.empty_entries:
            return self.empty_entries[key], True
        from pydantic import ValidationError

        from reconciler.desired.schema import SECTION_MODEL

        try:
            spec = _adapter(kind).validate_python(value)
        except ValidationError as exc:
            self.schema_errors(document, prefix, SECTION_MODEL.get(str(prefix[0])), exc)
            return None, False
        if empty:
            self.empty_entries[key] = spec
        return spec, True

    def collect(self, document: YamlDocument, servers: bool | None = None) -> None:
        """The document's entries; with ``servers`` True only those of cluster: and
        servers:, with False only the others (each entry is collected once either way)."""
        from reconciler.desired.schema import SECTION_ENTRY, TOP_LEVEL_KEYS, ClusterSpec

        data = document.data
        if data is None:
            return
        if not isinstance(data, dict):
            if not servers:
                self.error(
                    document.location(()),
                    "a cluster.d/ file must be a mapping with keys such as servers: and groups:",
                )
            return
        for key, value in data.items():
            if servers is not None and (key in _SERVER_KEYS) != servers:
                continue
            if key not in TOP_LEVEL_KEYS:
                self.error(
                    document.location((key,), key=True),
                    f"unknown top-level key '{key}'; expected one of: {', '.join(TOP_LEVEL_KEYS)}",
                )
                continue
            if key == "cluster":
                if self.cluster_entry is not None:
                    first = self.cluster_entry[2].location(("cluster",), key=True)
                    self.error(
                        document.location(("cluster",), key=True),
                        f"cluster: is also defined at {first}; define it in one file only",
                    )
                    continue
                # An empty cluster: (None) means every default, as no cluster: at all does.
                spec, valid = self.validate_value(
                    document, ("cluster",), ClusterSpec, {} if value is None else value
                )
                self.cluster_entry = (spec, valid, document)
                continue
            if value is None:
                continue
            if not isinstance(value, dict):
                noun = _SECTION_NOUN[key]
                self.error(
                    document.location((key,)),
                    f"{key}: must be a mapping of {noun} names to their settings",
                )
                continue
            for name, raw in value.items():
                spec, valid = self.validate_value(document, (key, name), SECTION_ENTRY[key], raw)
                entry = _Entry(key, name, spec, valid, document)
                canonical = self.canonical(key, name)
                previous = self.entries[key].get(canonical)
                if previous is not None:
                    self.error(
                        entry.location,
                        f"{_SECTION_NOUN[key]} '{canonical}' is also defined at "
                        f"{previous.location}",
                    )
                    continue
                self.entries[key][canonical] = entry

    @staticmethod
    def canonical(section: str, name: str) -> str:
        if section == "repositories" and repo_path_problem(name) is None:
            return strip_git_suffix(name)
        return name

    # -- checks beyond the schema --------------------------------------------------

    def cluster(self) -> Cluster:
        if self.cluster_entry is None:
            return Cluster(name=self.default_cluster_name())
        spec, valid, document = self.cluster_entry
        if not valid:
            return Cluster(name=self.default_cluster_name())
        if spec.name is not None and not is_cluster_name(spec.name):
            self.error(
                document.location(("cluster", "name")),
                f"the cluster name {spec.name!r} must start with a letter or digit and hold "
                "only letters, digits and '._-'",
            )
        admin = spec.admin_repository
        problem = repo_path_problem(admin)
        if problem is not None:
            self.error(document.location(("cluster", "admin_repository")), problem)
        else:
            admin = strip_git_suffix(admin)
        if not is_safe_group(spec.mirror_group):
            self.error(
                document.location(("cluster", "mirror_group")),
                f"the mirror group name {spec.mirror_group!r} is not a safe gitosis group name",
            )
        return Cluster(
            name=spec.name if spec.name is not None else self.default_cluster_name(),
            admin_repository=admin,
            mirror_group=spec.mirror_group,
            replication=Replication(
                mode=spec.replication.mode or "sync",
                timeout=spec.replication.timeout,
                run_kept_hooks=spec.replication.run_kept_hooks,
            ),
        )

    def default_cluster_name(self) -> str:
        """The checkout's directory name (usually gitosis-admin), when it is a valid name."""
        name = self.root.absolute().name
        return name if is_cluster_name(name) else "cluster"

    def keydir_users(self) -> dict[str, tuple[tuple[str, ...], Location]]:
        directory = self.root / KEYDIR
        users: dict[str, tuple[tuple[str, ...], Location]] = {}
        if not directory.is_dir():
            return users
        for user, found in keydir_files(str(directory)):
            path = Path(found)
            shown = self.display(KEYDIR, path.name)
            if not is_safe_user(user):
                self.error(
                    Location(shown),
                    f"{user!r} is not a safe gitosis user name, so gitosis ignores this key "
                    "file; rename or remove it",
                )
                continue
            try:
                if path.stat().st_size > MAX_KEY_FILE_BYTES:
                    self.error(Location(shown), "the key file is too large to be public keys")
                    continue
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                self.error(Location(shown), "the key file is not UTF-8 text")
                continue
            except OSError as exc:
                self.error(Location(shown), f"cannot read the key file: {exc.strerror or exc}")
                continue
            keys: list[str] = []
            for number, line in enumerate(text.split("\n"), start=1):
                line = line.rstrip("\r")
                if not line.strip():
                    continue
                problem = public_key_problem(line)
                if problem is not None:
                    self.error(Location(shown, number, 1), problem)
                    continue
                keys.append(line.strip())
            if not keys and text.strip() == "":
                self.error(Location(shown), "the key file holds no public key")
            users[user] = (tuple(keys), Location(shown))
        return users

    def previously_rendered(self) -> tuple[set[str], set[str]]:
        """keydir/ paths the checkout's gitosis.conf lists as rendered from inline
        users, and those it lists as servers' own keys."""
        from reconciler.desired.render import (
            GITOSIS_CONF,
            previous_server_key_files,
            previously_rendered_key_files,
        )

        try:
            text = (self.root / GITOSIS_CONF).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return set(), set()
        return previously_rendered_key_files(text), previous_server_key_files(text)

    def inline_users(self) -> dict[str, tuple[str, ...]]:
        users: dict[str, tuple[str, ...]] = {}
        for name, entry in self.entries["users"].items():
            if not is_safe_user(name):
                self.error(
                    entry.location,
                    f"the user name {name!r} is not safe for gitosis: it must match "
                    "name or name@host with letters, digits and '_.-'",
                )
            if not entry.valid:
                continue
            keys: list[str] = []
            lines: list[str] = entry.spec
            if not lines:
                self.error(entry.at(), f"user {name!r} has no public key")
            for index, line in enumerate(lines):
                problem = public_key_problem(line)
                if problem is not None:
                    self.error(entry.at(index), f"user {name!r}: {problem}")
                    continue
                keys.append(line.strip())
            users[name] = tuple(keys)
        return users

    def servers(self) -> dict[str, Server]:
        servers: dict[str, Server] = {}
        seen_urls: dict[str, str] = {}
        if not self.entries["servers"] and not self.unreadable:
            self.error(
                Location(self.display(CLUSTER_DIR)),
                "no server is defined; add at least one under servers:",
            )
        for name, entry in self.entries["servers"].items():
            if not is_server_name(name):
                self.error(
                    entry.location,
                    f"the server name {name!r} must start with a letter and hold only "
                    "letters, digits, '.' and '-' (it becomes the user git@{name})",
                )
            if not entry.valid:
                continue
            spec = entry.spec
            url = self.url(entry, "url", spec.url)
            peer_url = self.url(entry, "peer_url", spec.peer_url) if spec.peer_url else url
            if spec.user is not None:
                if not is_login_name(spec.user):
                    self.error(
                        entry.at("user"),
                        f"user of server {name!r}: {spec.user!r} is not a valid user name "
                        "(a letter or '_' first, then letters, digits, '_', '.' or '-')",
                    )
                elif url is not None and url.kind != "ssh":
                    self.error(
                        entry.at("user"),
                        f"user of server {name!r} needs an ssh:// url (a local: server is "
                        "already the git user's home)",
                    )
                elif not spec.peer_url and url is not None:
                    # The peers reach the git user, not the admin the operator logs in as.
                    peer_url = dataclasses.replace(url, user=spec.user)
            if url is not None:
                key = str(url)
                if key in seen_urls:
                    self.error(
                        entry.at("url"),
                        f"server {name!r} has the same url as server {seen_urls[key]!r}",
                    )
                seen_urls.setdefault(key, name)
            if spec.host_key is not None:
                problem = public_key_problem(spec.host_key)
                if problem is not None:
                    self.error(entry.at("host_key"), f"host_key of server {name!r}: {problem}")
            if SAFE_REPO_PATH_RE.fullmatch(spec.repositories) is None:
                self.error(
                    entry.at("repositories"),
                    f"repositories of server {name!r} must be a relative path inside the git "
                    "user's home, each segment starting with a letter or digit",
                )
            if spec.identity is not None and not spec.identity.strip():
                self.error(entry.at("identity"), f"identity of server {name!r} is empty")
            if url is None or peer_url is None:
                continue
            servers[name] = Server(
                name=name,
                url=url,
                peer_url=peer_url,
                repositories=spec.repositories,
                host_key=spec.host_key.strip() if spec.host_key else None,
                identity=spec.identity,
                user=spec.user,
            )
        return servers

    def url(self, entry: _Entry, key: str, text: str) -> ServerURL | None:
        try:
            return parse_server_url(text, self.root)
        except ValueError as exc:
            self.error(entry.at(key), f"{key} of server {entry.name!r}: {exc}")
            return None

    def repositories(self) -> dict[str, Repository]:
        repositories: dict[str, Repository] = {}
        for name, entry in self.entries["repositories"].items():
            problem = repo_path_problem(entry.name)
            if problem is not None:
                self.error(entry.location, problem)
                continue
            if not entry.valid:
                continue
            spec = entry.spec
            description = spec.description if spec is not None else None
            owner = spec.owner if spec is not None else None
            for key, value in (("description", description), ("owner", owner)):
                if value is not None:
                    problem = _config_value_problem(value)
                    if problem is not None:
                        self.error(entry.at(key), f"{key} of repository {name!r} {problem}")
            repositories[name] = Repository(
                name=name,
                description=description,
                owner=owner,
                gitweb=spec.gitweb if spec is not None else None,
                daemon=spec.daemon if spec is not None else None,
            )
        return repositories

    def groups(self, cluster: Cluster, users: set[str], server_names: set[str]) -> dict[str, Group]:
        groups: dict[str, Group] = {}
        defined = set(self.entries["groups"]) | {cluster.mirror_group, "all"}
        server_users = {f"git@{name}" for name in server_names}
        repositories = set(self.entries["repositories"]) | {cluster.admin_repository}
        for name, entry in self.entries["groups"].items():
            if not is_safe_group(name):
                self.error(
                    entry.location,
                    f"the group name {name!r} must start with a letter or digit and hold "
                    "only letters, digits and '@._/-'",
                )
            if name == cluster.mirror_group:
                self.error(
                    entry.location,
                    f"the group {name!r} is the generated mirror group; do not define it "
                    "(its members are the servers' keys)",
                )
            if not entry.valid:
                continue
            spec = entry.spec
            members: list[str] = list(spec.members) if spec is not None else []
            for index, member in enumerate(members):
                where = entry.at("members", index)
                if member.startswith("@"):
                    if member[1:] not in defined:
                        self.error(
                            where,
                            f"member {member!r} of group {name!r} refers to a group that is "
                            "not defined",
                        )
                elif not is_safe_user(member):
                    self.error(
                        where,
                        f"member {member!r} of group {name!r} is not a valid gitosis user name",
                    )
                elif member not in users and member not in server_users:
                    self.error(
                        where,
                        f"member {member!r} of group {name!r} is not a known user; add "
                        f"keydir/{member}.pub or an entry under users:",
                    )
            access: dict[str, list[str]] = {"writable": [], "readonly": []}
            for mode in access:
                listed: list[str] = list(getattr(spec, mode)) if spec is not None else []
                for index, repository in enumerate(listed):
                    where = entry.at(mode, index)
                    problem = repo_path_problem(repository)
                    if problem is not None:
                        self.error(where, f"{mode} of group {name!r}: {problem}")
                        continue
                    canonical = strip_git_suffix(repository)
                    if canonical not in repositories:
                        self.error(
                            where,
                            f"group {name!r} grants {mode} access to repository "
                            f"{canonical!r}, which is not declared under repositories:",
                        )
                    if canonical not in access[mode]:
                        access[mode].append(canonical)
            groups[name] = Group(
                name=name,
                members=tuple(dict.fromkeys(members)),
                writable=tuple(access["writable"]),
                readonly=tuple(access["readonly"]),
            )
        return groups

    def load(self, servers_known: ServersKnown | None = None) -> Desired:
        documents = self.read_documents()
        if self.errors and not documents and not self.unreadable:
            raise ConfigErrors(self.errors)  # no cluster.d/ or no files: nothing to check
        if servers_known is None:
            for document in documents:
                self.collect(document)
        else:
            for document in documents:
                self.collect(document, servers=True)
        # The cluster and the servers depend on their own entries only.
        cluster = self.cluster()
        servers = self.servers()
        if servers_known is not None:
            if not self.errors:
                servers_known(cluster, servers)
            for document in documents:
                self.collect(document, servers=False)
        inline = self.inline_users()
        keydir = self.keydir_users()
        rendered, server_keys = self.previously_rendered()
        current_server_users = {f"git@{name}" for name in self.entries["servers"]}
        users: dict[str, tuple[str, ...]] = {}
        orphaned: list[str] = []
        for name, (keys, _where) in keydir.items():
            if name in self.entries["users"]:
                continue
            path = f"{KEYDIR}/{name}.pub"
            if path in rendered or (path in server_keys and name not in current_server_users):
                orphaned.append(path)
                continue
            users[name] = keys
        for name, keys in inline.items():
            users[name] = keys
        if (
            self.cluster_entry is None
            or self.cluster_entry[0] is None
            or (self.cluster_entry[0].replication.mode is None)
        ):
            # The default: quorum where a majority can survive a server down.
            mode: Literal["sync", "async", "quorum"] = "quorum" if len(servers) >= 3 else "sync"
            cluster = dataclasses.replace(
                cluster, replication=dataclasses.replace(cluster.replication, mode=mode)
            )
        repositories = self.repositories()
        groups = self.groups(
            cluster, set(users) | set(self.entries["users"]), set(self.entries["servers"])
        )
        if self.errors:
            raise ConfigErrors(self.errors)
        locations = {
            (section, name): entry.location
            for section, entries in self.entries.items()
            for name, entry in entries.items()
        }
        for name, (_keys, where) in keydir.items():
            if name in users:
                locations.setdefault(("users", name), where)
        return Desired(
            root=self.root.absolute(),
            cluster=cluster,
            servers=servers,
            repositories=repositories,
            groups=groups,
            users=users,
            inline_users=frozenset(inline),
            orphaned_key_files=tuple(orphaned),
            locations=locations,
        )


def _adapter(kind: Any) -> Any:
    from pydantic import TypeAdapter

    cached = _ADAPTERS.get(id(kind))
    if cached is None:
        cached = TypeAdapter(kind)
        _ADAPTERS[id(kind)] = cached
    return cached


_ADAPTERS: dict[int, Any] = {}


def is_cluster_name(name: str) -> bool:
    return _CLUSTER_NAME_RE.fullmatch(name) is not None


def is_server_name(name: str) -> bool:
    """A server name makes ``git@NAME`` a safe gitosis user and a valid remote name."""
    return SERVER_NAME.fullmatch(name) is not None


_CLUSTER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")


def _config_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be written as a gitosis.conf option value unchanged."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return "must be a single line without control characters"
    if value != value.strip():
        return "must not start or end with spaces, which gitosis.conf drops"
    if " ;" in value or "\t;" in value:
        return "must not contain ' ;', which gitosis.conf reads as the start of a comment"
    return None


ServersKnown = Callable[[Cluster, dict[str, Server]], None]


def load(directory: Path, servers_known: ServersKnown | None = None) -> Desired:
    """Read ``directory``/cluster.d/*.yaml and keydir/*.pub into a validated ``Desired``.

    Raises ``ConfigErrors`` listing every problem found. ``servers_known`` is called
    with the cluster and the servers as soon as their entries are read and found
    valid (no file unreadable, no problem in them), before everything else is
    checked: the servers can be reached meanwhile. It is not called when they are
    not valid; the rest may still fail to load after it was called.
    """
    return _Loader(directory).load(servers_known)
