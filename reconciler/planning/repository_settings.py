"""Repository settings: what gitosis writes from the ``[repo NAME]`` sections.

gitosis writes ``NAME.git/description``, gitweb's ``projects.list`` and
``git-daemon-export-ok`` when the admin repository is pushed or gitosis-serve
creates a repository, and only for repositories that exist at that moment. apply
sends the admin commit before it creates the repositories, so those would keep
git's default description and stay out of gitweb until the next admin push. The
reconciler therefore holds every server to what gitosis would write for the
rendered gitosis.conf, once the planned repositories exist, with gitosis's own
rules (``reconciler.gitosis.repositories``) and nothing more:

- a description is written only where the section has one (gitosis never resets
  one), into the directory gitosis would pick (``NAME`` if anything is there,
  else ``NAME.git``);
- ``projects.list`` is the whole list gitosis would write; absent and empty are
  the same (gitweb lists nothing either way);
- ``git-daemon-export-ok`` is created or removed in every repository on the
  server, also those not in cluster.d/, since gitosis does that at every admin push.
"""

from __future__ import annotations

import configparser
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.desired.render import render_gitosis_conf
from reconciler.facts import ServerFacts
from reconciler.gitosis.config import parse_config
from reconciler.gitosis.repositories import (
    DESCRIPTION,
    EXPORT_OK,
    PROJECTS_LIST,
    daemon_flags,
    descriptions,
    gitweb_entries,
    project_list_lines,
    quote_plus_python2,
    repo_section_names,
)
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Kind, Note, Phase
from reconciler.server.ops import Op, RemoveFile, WriteFile

if TYPE_CHECKING:
    from reconciler.desired import Desired

SUBJECT = "repository-settings"
# gitosis's default generate-files-in; the rendered gitosis.conf never sets another.
PROJECTS_LIST_PATH = f"gitosis/{PROJECTS_LIST}"


@functools.lru_cache(maxsize=4)
def _parse(text: str) -> configparser.RawConfigParser:
    return parse_config(text)


def rendered_config(desired: Desired) -> configparser.RawConfigParser:
    """The rendered gitosis.conf as gitosis reads it (read-only: the parse is shared)."""
    return _parse(render_gitosis_conf(desired))


def gather_request(desired: Desired) -> dict[str, object]:
    """What the gather program reads for this subject, in the same single round trip."""
    config = rendered_config(desired)
    return {
        "repo_sections": repo_section_names(config),
        "descriptions": [name for name, _text in descriptions(config)],
        "projects_list": PROJECTS_LIST_PATH,
    }


class _Layout:
    """The server's repositories as they will be once the plan's repositories exist."""

    def __init__(self, facts: ServerFacts, mirrored: list[str]):
        self.facts = facts
        self.repositories = set(facts.repositories) | set(mirrored)
        # Creating a/b.git makes the directory a/, which gitosis finds before a.git.
        self.parents = {
            "/".join(parts[:i])
            for parts in (name.split("/") for name in self.repositories)
            for i in range(1, len(parts))
        }

    def plain(self, name: str) -> bool:
        section = self.facts.repo_sections.get(name)
        return (section is not None and section.plain) or name in self.parents

    def locate(self, name: str) -> str | None:
        if self.plain(name):
            return name
        return f"{name}.git" if name in self.repositories else None

    def description_now(self, name: str) -> str | None:
        """The text at the path gitosis will write to, if the gather read that path."""
        section = self.facts.repo_sections.get(name)
        if section is None or section.plain != self.plain(name):
            return None
        return section.description


def _action(server: str, kind: Kind, target: str, description: str, op: Op) -> Action:
    return Action(server, SUBJECT, kind, target, description, Phase.CONFIGURATION, (op,))


def _descriptions(
    ctx: PlanContext, server: str, layout: _Layout, described: list[tuple[str, str]]
) -> list[Action]:
    base = ctx.desired.servers[server].repositories
    actions = []
    for name, text in described:
        where = layout.locate(name)
        if where is None:
            continue  # gitosis skips it ("Cannot find"); no plan creates it
        wanted = f"{text}\n"
        current = layout.description_now(name)
        if current == wanted:
            continue
        actions.append(
            _action(
                server,
                "create" if current is None else "change",
                f"{name} description",
                f"{name}: description {text!r}",
                WriteFile(f"{base}/{where}/{DESCRIPTION}", wanted),
            )
        )
    return actions


def _export_flags(
    ctx: PlanContext, server: str, layout: _Layout, enabled: Callable[[str], bool]
) -> list[Action]:
    base = ctx.desired.servers[server].repositories
    managed = set(ctx.desired.mirrored_repositories())
    actions = []
    for name in sorted(layout.repositories):
        repository = layout.facts.repositories.get(name)
        present = repository is not None and repository.export_ok
        wanted = enabled(name)
        if present == wanted:
            continue
        path = f"{base}/{name}.git/{EXPORT_OK}"
        target = f"{name} {EXPORT_OK}"
        if wanted:
            actions.append(
                _action(
                    server,
                    "create",
                    target,
                    f"{name}: {EXPORT_OK} (daemon = yes)",
                    WriteFile(path, "", mode=0o644),
                )
            )
        else:
            why = (
                "daemon is off" if name in managed else "not in cluster.d/; gitosis removes it too"
            )
            actions.append(
                _action(
                    server,
                    "remove",
                    target,
                    f"{name}: remove {EXPORT_OK} ({why})",
                    RemoveFile(path),
                )
            )
    return actions


def _projects_list(
    server: str, layout: _Layout, entries: list[tuple[str, str | None]]
) -> list[Action]:
    wanted = project_list_lines(entries, layout.locate)
    current = layout.facts.projects_list
    if current == wanted or (current is None and wanted == ""):
        return []
    # gitosis 0.3 quotes with Python 2's rules: what it writes at the next admin
    # push is as good as ours, and rewriting it after every such push would be noise.
    if current == project_list_lines(entries, layout.locate, quote_plus_python2):
        return []
    count = wanted.count("\n")
    return [
        _action(
            server,
            "create" if current is None else "change",
            PROJECTS_LIST_PATH,
            f"gitweb's {PROJECTS_LIST}: {count} repositor{'y' if count == 1 else 'ies'} listed",
            WriteFile(PROJECTS_LIST_PATH, wanted, mode=0o644),
        )
    ]


def plan_repository_settings(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    config = rendered_config(ctx.desired)
    mirrored = ctx.desired.mirrored_repositories()
    # Read from the configuration once per plan, not once per server.
    described = descriptions(config)
    enabled = daemon_flags(config)
    entries = gitweb_entries(config)
    actions: list[Action] = []
    for server, facts in ctx.reachable().items():
        layout = _Layout(facts, mirrored)
        actions += _descriptions(ctx, server, layout, described)
        actions += _export_flags(ctx, server, layout, enabled)
        actions += _projects_list(server, layout, entries)
    return actions, []
