"""~/.reconciler/README on every server: what a person who logs in as the git user
should know before touching anything (``reconciler.server.readme``).

The text follows from the desired state alone (no time, no facts), so a second
apply finds it in place. A README the reconciler wrote for an earlier state of the
cluster is rewritten; one edited by hand is kept beside it as
``README.edited-STAMP`` first, as a foreign hook is; something that is not a plain
file there is a conflict, left as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.planning.context import SETTINGS_PATH, PlanContext
from reconciler.planning.model import Action, Kind, Note, Phase
from reconciler.server.ops import KeepFile, Op, WriteFile
from reconciler.server.readme import KEPT_PREFIX, MODE, README_PATH, check_line
from reconciler.subjects import Fact, ManagedFile, subject

if TYPE_CHECKING:
    from reconciler.desired import Desired

SUBJECT = "readme"
TARGET = f"~/{README_PATH}"


@dataclass(frozen=True)
class ReadmeFacts:
    plain: bool = True  # a regular file (not a directory, a link, ...)
    mode: int = MODE
    sha256: str | None = None  # None: unreadable, or too large to be a README
    ours: bool = False  # its last line is the check of the others


def parse_readme(value: Any) -> ReadmeFacts | None:
    """None: no README on the server."""
    if value is None:
        return None
    return ReadmeFacts(
        plain=bool(value["plain"]),
        mode=int(value["mode"]),
        sha256=None if value["sha256"] is None else str(value["sha256"]),
        ours=bool(value["ours"]),
    )


README = Fact("readme", parse_readme, "README")


def readme_text(desired: Desired, server: str) -> str:
    """The README of ``server``, byte for byte."""
    repositories = desired.servers[server].repositories
    peers = [
        f"  {name:<12} {spec.peer_url}" for name, spec in desired.servers.items() if name != server
    ]
    body = "\n".join(
        [
            "This account is managed by reconciler. Please do not change it by hand.",
            "",
            f"It is the git user of server {server} of the gitosis cluster {desired.cluster.name}.",
            f"Every push here is replicated ({desired.cluster.replication.mode} mode) "
            "to its peers:",
            *(peers or ["  (none: this server is the only one)"]),
            "",
            "These files are written by `reconcile apply`; an edit by hand is undone, or",
            "reported as a conflict, at its next run:",
            "  ~/.ssh/authorized_keys        (gitosis writes it from the admin repository)",
            "  ~/.ssh/known_hosts            (the peers' lines)",
            "  ~/.ssh/config                 (the block between the reconciler's markers)",
            "  ~/.gitconfig                  (init.templateDir)",
            f"  ~/{repositories}/{SETTINGS_PATH}",
            f"  ~/{repositories}/*.git/hooks/post-receive, and their remotes",
            "  ~/.reconciler/                (the server library, the git template, this file)",
            "",
            "Who may read or push what is decided in the admin checkout's cluster.d/,",
            "not here. To see what an apply would change, run `reconcile plan` in the",
            "admin checkout (the gitosis-admin clone holding cluster.d/).",
            "",
            "",
        ]
    )
    return body + check_line(body)


def readme_files(desired: Desired, server: str) -> dict[str, ManagedFile]:
    return {README_PATH: ManagedFile(readme_text(desired, server), MODE)}


@subject(SUBJECT, order=11, converged=readme_files, facts=(README,))
def plan_readme(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    for name, facts in ctx.reachable().items():
        present = facts.fact(README)
        wanted = readme_files(ctx.desired, name)[README_PATH].content
        digest = hashlib.sha256(wanted.encode("utf-8")).hexdigest()
        kind: Kind
        ops: tuple[Op, ...]
        if present is None:
            kind, why, ops = "create", "", (WriteFile(README_PATH, wanted, MODE, "absent"),)
        elif not present.plain:
            notes.append(
                Note(
                    name,
                    SUBJECT,
                    TARGET,
                    "conflict",
                    f"{TARGET} is not a plain file; move it away and apply again",
                )
            )
            continue
        elif present.sha256 == digest and present.mode == MODE:
            continue
        elif present.ours or present.sha256 == digest:
            kind, ops = "change", (WriteFile(README_PATH, wanted, MODE, present.sha256),)
            why = " (fix its mode)" if present.sha256 == digest else ""
        else:
            kept = f".reconciler/{KEPT_PREFIX}{ctx.options.stamp}"
            # Both with the digest seen: what is kept is exactly what is replaced.
            keep = KeepFile(README_PATH, kept, expect_sha256=present.sha256)
            kind, ops = "change", (keep, WriteFile(README_PATH, wanted, MODE, present.sha256))
            why = f", keeping the one edited by hand as ~/{kept}"
        actions.append(
            Action(
                name,
                SUBJECT,
                kind,
                TARGET,
                f"{TARGET}: a note for whoever logs in as the git user{why}",
                Phase.CONFIGURATION,
                ops,
            )
        )
    return actions, notes
