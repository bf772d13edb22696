"""The git template: ``init.templateDir`` in the git user's ~/.gitconfig names a
template holding every mirrored repository's hooks and config
(``reconciler.planning.hooks.template_entries``), so that a repository gitosis
creates on its first push, before an apply reached the server, replicates from that
push on (``reconciler.server.template``).

A value of ``init.templateDir`` the reconciler did not write is a conflict, never
replaced: the operator's template may hold more than hooks.
"""

from __future__ import annotations

import posixpath

from reconciler.planning.context import PlanContext
from reconciler.planning.hooks import template_entries
from reconciler.planning.model import Action, Kind, Note, Phase
from reconciler.server.ops import InstallTemplate, SetTemplateDir
from reconciler.server.template import (
    GIT_DEFAULT_FILES,
    GITCONFIG,
    KEY,
    TEMPLATES_DIR,
    template_digest,
)
from reconciler.server_library import library_version

TARGET = f"~/{GITCONFIG} {KEY}"


def plan_git_template(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    mode = ctx.desired.cluster.replication.mode
    for name, facts in ctx.reachable().items():
        entries = template_entries(mode, facts.home)
        digest = template_digest(entries)
        root = posixpath.join(facts.home, TEMPLATES_DIR)
        wanted = posixpath.join(root, digest)
        current = facts.git_template
        if current.configured == wanted and current.digest == digest:
            continue
        if current.configured is not None and posixpath.dirname(current.configured) != root:
            notes.append(
                Note(
                    name,
                    "template",
                    TARGET,
                    "conflict",
                    f"~/{GITCONFIG} sets {KEY} to {current.configured}, not the reconciler's "
                    "template: a repository gitosis creates on its first push gets no "
                    f"replication hook until the next apply; unset it (git config --global "
                    f"--unset {KEY}) and apply again",
                )
            )
            continue
        shown = f"~/{TEMPLATES_DIR}/{digest}"
        # git's own description and info/exclude go without saying.
        files = ", ".join(p for p in sorted(entries) if p not in GIT_DEFAULT_FILES)
        kind: Kind
        if current.configured is None:
            kind = "create"
            description = f"git template {shown} ({files}) as {KEY} in ~/{GITCONFIG}"
        elif current.configured == wanted:
            kind = "change"
            description = f"git template {shown}: make it again (it does not hold {files})"
        else:
            kind = "change"
            old = posixpath.basename(current.configured)
            description = f"git template {shown} ({files}) as {KEY}, replacing {old}"
        ops = (
            # Its hooks run the library: carried out only once that is in place.
            InstallTemplate(digest, entries, library_version()),
            SetTemplateDir(wanted, current.configured),
        )
        actions.append(
            Action(name, "template", kind, TARGET, description, Phase.CONFIGURATION, ops)
        )
    return actions, notes
