"""The format of ``cluster.d/*.yaml`` as pydantic models (DESIGN.md section 3).

These models check shape and types only (``extra="forbid"``, strict types:
``timeout: "30"`` is an error, not a silent conversion). Names, references, URLs
and keys are checked afterwards in ``reconciler.desired.load``, where every error
can point at the file and line it concerns. ``schemas/cluster.schema.json`` is
generated from ``ClusterFile``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from reconciler.gitosis.names import SAFE_GROUP_RE, SAFE_REPO_PATH_RE, SAFE_USER_RE
from reconciler.server.common import SERVER_NAME

SERVER_NAME_PATTERN = f"^{SERVER_NAME.pattern}$"
CLUSTER_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$"


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ReplicationSpec(Spec):
    """How the replication hook forwards a push to the other servers."""

    mode: Literal["sync", "async", "quorum"] | None = Field(
        None,
        description="quorum: a push is acknowledged only once a majority of the servers holds "
        "it (the default for 3 or more servers); sync: the hook waits for the peers after the "
        "push (the default for 1 or 2 servers); async: it queues and returns.",
    )
    timeout: int = Field(30, ge=1, le=3600, description="Seconds per peer push from the hook.")
    run_kept_hooks: bool = Field(
        False,
        description="After replicating a push, run the foreign post-receive hook that "
        "apply --replace-foreign kept as hooks/post-receive.foreign-TIME (the newest), with "
        "the same input, on the server the push was made to.",
    )


class ClusterSpec(Spec):
    """The cluster as a whole; optional, defined in at most one file."""

    name: str | None = Field(
        None,
        description="A name for the cluster, used in messages; default: the checkout's "
        "directory name.",
    )
    admin_repository: str = Field(
        "gitosis-admin", description="The gitosis admin repository; always mirrored."
    )
    mirror_group: str = Field(
        "grp_mirror",
        description="The generated gitosis group of the servers' own keys; never define it.",
    )
    replication: ReplicationSpec = Field(default_factory=ReplicationSpec)


class ServerSpec(Spec):
    """One gitosis server of the cluster."""

    url: str = Field(
        description="ssh://[user@]host[:port] or local:PATH (a directory acting as ~git)."
    )
    user: str | None = Field(
        None,
        description="The git user to act as when url logs in as someone else (root, or a "
        "sudoer): the reconciler switches to it, and creates it on a bare server.",
    )
    peer_url: str | None = Field(
        None,
        description="The address the other servers use to reach it; default url (with "
        "user: as its user name when user: is given).",
    )
    repositories: str = Field(
        "repositories", description="The repository directory, relative to the git user's home."
    )
    host_key: str | None = Field(
        None, description="Pinned public host key line; otherwise the operator's known_hosts."
    )
    identity: str | None = Field(
        None, description="Private key file to log in with; otherwise what ssh would use."
    )


class RepositorySpec(Spec):
    """A mirrored repository; the options become its [repo NAME] section."""

    description: str | None = Field(None, description="Written to NAME.git/description.")
    owner: str | None = Field(None, description="The owner shown in projects.list.")
    gitweb: bool | None = Field(None, description="List the repository in projects.list.")
    daemon: bool | None = Field(None, description="Export the repository via git-daemon.")


class GroupSpec(Spec):
    """A gitosis group: who may read and write which repositories."""

    members: list[str] = Field(
        default_factory=list, description="User names, git@SERVER and @group references."
    )
    writable: list[str] = Field(default_factory=list, description="Repositories to push to.")
    readonly: list[str] = Field(default_factory=list, description="Repositories to fetch.")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# A user's keys: one public key line, or a list of them.
KeyLines = Annotated[
    list[str],
    BeforeValidator(_one_or_many, json_schema_input_type=str | list[str]),
]

UserName = Annotated[str, StringConstraints(pattern=f"^{SAFE_USER_RE.pattern}$")]
ServerName = Annotated[str, StringConstraints(pattern=SERVER_NAME_PATTERN)]
RepositoryName = Annotated[str, StringConstraints(pattern=f"^{SAFE_REPO_PATH_RE.pattern}$")]
GroupName = Annotated[str, StringConstraints(pattern=f"^{SAFE_GROUP_RE.pattern}$")]


class ClusterFile(Spec):
    """One file in cluster.d/; all files are merged in name order."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="reconciler cluster.d file",
    )

    cluster: ClusterSpec | None = None
    servers: dict[ServerName, ServerSpec] | None = None
    repositories: dict[RepositoryName, RepositorySpec | None] | None = None
    groups: dict[GroupName, GroupSpec | None] | None = None
    users: dict[UserName, KeyLines] | None = None


# The model (or type) of one entry of each top-level key, used to validate entry by
# entry so that one bad entry does not hide the rest of the file.
SECTION_ENTRY: dict[str, Any] = {
    "servers": ServerSpec,
    "repositories": RepositorySpec | None,
    "groups": GroupSpec | None,
    "users": KeyLines,
}
# The model behind each top-level key, to list the keys it accepts in messages.
SECTION_MODEL: dict[str, type[BaseModel]] = {
    "cluster": ClusterSpec,
    "servers": ServerSpec,
    "repositories": RepositorySpec,
    "groups": GroupSpec,
}
TOP_LEVEL_KEYS = ("cluster", "servers", "repositories", "groups", "users")


def json_schema() -> dict[str, Any]:
    schema = ClusterFile.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return schema


def schema_text() -> str:
    import json

    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    """Regenerate schemas/cluster.schema.json: ``python -m reconciler.desired.schema PATH``."""
    import sys
    from pathlib import Path

    from reconciler.desired.files import write_if_changed

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "schemas/cluster.schema.json")
    write_if_changed(target, schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
