"""Hooks: ``hooks/post-receive`` of every mirrored repository is the stub that runs the
replication hook of the server library (``reconciler.server.hooks``).

Ours is recognised by its marker line; any other hook of ours (an older stub, or a
whole copy of the hook as releases before the server library installed) is
replaced by the stub; a foreign hook is reported and replaced only with
--replace-foreign, which first keeps it beside ours as
``hooks/post-receive.foreign-<UTC time of the plan>`` (mode kept); the replication
hook runs that copy after replicating when ``replication: run_kept_hooks`` is on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from reconciler.facts import HookFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.hooks import HOOK_MODE, HOOK_NAME, KEPT_HOOK_PREFIX, TRANSACTION_HOOK, stub
from reconciler.server.template import GIT_DEFAULT_FILES
from reconciler.server_library import library_version

# Quorum mode: hooks/reference-transaction is a symlink to the stub, which runs the
# library's entry point named after the hook; it decides before the ref is written
# (docs/quorum.md).
TRANSACTION_TARGET = HOOK_NAME


@dataclass(frozen=True)
class ManagedHook:
    name: str  # below hooks/
    content: bytes | None = None  # a file of mode HOOK_MODE ...
    link: str | None = None  # ... or a symlink to the hook of that name beside it


def repository_hooks(mode: str, home: str) -> tuple[ManagedHook, ...]:
    """The hooks the planner keeps in every mirrored repository of a cluster in
    replication ``mode`` (the admin repository has no transaction hook), for a git
    user whose home is ``home``. The git template every new repository starts from
    is built from this list too (``template_entries``): keep the two one list."""
    hooks = [ManagedHook(HOOK_NAME, content=stub(home))]
    if mode == "quorum":
        hooks.append(ManagedHook(TRANSACTION_HOOK, link=TRANSACTION_TARGET))
    return tuple(hooks)


def repository_config(mode: str) -> dict[str, str]:
    """The git config ("section.key" -> value) the planner keeps in every mirrored
    repository of a cluster in replication ``mode``; none yet. The git template
    carries it as its ``config`` file, which ``git init`` copies."""
    del mode
    return {}


def template_entries(mode: str, home: str) -> dict[str, dict[str, Any]]:
    """The git template (``reconciler.server.template``): every mirrored repository's
    hooks and config, so that a repository gitosis creates on its first push holds
    them from the start."""
    entries: dict[str, dict[str, Any]] = {
        path: {"content": content, "mode": 0o644} for path, content in GIT_DEFAULT_FILES.items()
    }
    for hook in repository_hooks(mode, home):
        if hook.link is not None:
            entries[f"hooks/{hook.name}"] = {"link": hook.link}
        elif hook.content is not None:
            entries[f"hooks/{hook.name}"] = {"content": hook.content.decode(), "mode": HOOK_MODE}
    config = repository_config(mode)
    if config:
        entries["config"] = {"content": config_text(config), "mode": 0o644}
    return entries


def config_text(config: dict[str, str]) -> str:
    """``config`` in git's config file syntax ("a.b.c" is key c of [a "b"])."""
    sections: dict[str, list[str]] = {}
    for key, value in config.items():
        section, _, name = key.rpartition(".")
        head, _, sub = section.partition(".")
        header = f'[{head} "{sub}"]' if sub else f"[{head}]"
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        sections.setdefault(header, []).append(f'\t{name} = "{quoted}"')
    return "".join(
        f"{header}\n" + "".join(f"{line}\n" for line in lines) for header, lines in sections.items()
    )


def plan_transaction_hooks(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    mode = ctx.desired.cluster.replication.mode
    admin = ctx.desired.cluster.admin_repository
    for name, facts in ctx.reachable().items():
        quorum = any(h.name == TRANSACTION_HOOK for h in repository_hooks(mode, facts.home))
        for repository in ctx.desired.mirrored_repositories():
            existing = facts.repositories.get(repository)
            current = existing.transaction_hook if existing else None
            hook = existing.hook if existing else None
            # Only beside the replication hook: the link must never lead to a foreign one.
            ours = (
                hook is None or (hook.managed and not hook.symlink) or ctx.options.replace_foreign
            )
            wanted = quorum and repository != admin and ours
            if (current == TRANSACTION_TARGET) == wanted and current in (None, TRANSACTION_TARGET):
                continue
            path = f"{ctx.repository_path(name, repository)}/hooks/{TRANSACTION_HOOK}"
            target = f"{repository} {TRANSACTION_HOOK}"
            op = {"op": "symlink", "path": path, "target": TRANSACTION_TARGET}
            if wanted and current is None:
                actions.append(
                    Action(
                        name,
                        "hook",
                        "create",
                        target,
                        f"{repository}: install the quorum hook ({TRANSACTION_HOOK})",
                        Phase.CONFIGURATION,
                        (op,),
                    )
                )
            elif not wanted and current == TRANSACTION_TARGET:
                why = "not quorum mode" if repository != admin else "not replicated by hooks"
                actions.append(
                    Action(
                        name,
                        "hook",
                        "remove",
                        target,
                        f"{repository}: remove the quorum hook ({why})",
                        Phase.CONFIGURATION,
                        ({**op, "op": "remove_symlink"},),
                    )
                )
            elif wanted:
                notes.append(
                    Note(
                        name,
                        "hook",
                        target,
                        "conflict",
                        f"{repository}: hooks/{TRANSACTION_HOOK} is not the reconciler's; quorum "
                        "mode needs it: merge it by hand (move it away) and apply again",
                    )
                )
    return actions, notes


def _current(hook: HookFacts | None, digest: str, uid: int) -> bool:
    return (
        hook is not None
        and hook.managed
        and not hook.symlink
        and hook.sha256 == digest
        and hook.mode == HOOK_MODE
        and hook.uid == uid
    )


def plan_hooks(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    version = library_version()
    for name, facts in ctx.reachable().items():
        source = stub(facts.home)
        digest = hashlib.sha256(source).hexdigest()
        content = source.decode("utf-8")
        for repository in ctx.desired.mirrored_repositories():
            existing = facts.repositories.get(repository)
            hook = existing.hook if existing else None
            if _current(hook, digest, facts.uid):
                continue  # the common case, decided before building anything
            path = f"{ctx.repository_path(name, repository)}/hooks/post-receive"
            # Carried out only once the library the stub runs is installed there.
            op = {"op": "install_hook", "path": path, "content": content, "library": version}
            target = f"{repository} post-receive"
            if hook is None:
                actions.append(
                    Action(
                        name,
                        "hook",
                        "create",
                        target,
                        f"{repository}: install the replication hook",
                        Phase.CONFIGURATION,
                        ({**op, "expect_sha256": "absent"},),
                    )
                )
                continue
            if hook.managed and not hook.symlink:
                if hook.sha256 == digest and hook.mode == HOOK_MODE and hook.uid == facts.uid:
                    continue
                if hook.uid != facts.uid:
                    notes.append(
                        Note(
                            name,
                            "hook",
                            target,
                            "conflict",
                            f"{repository}: post-receive is owned by uid {hook.uid}, not the git "
                            f"user (uid {facts.uid}); fix its owner on the server",
                        )
                    )
                    continue
                why = "update the replication hook" if hook.sha256 != digest else "fix its mode"
                actions.append(
                    Action(
                        name,
                        "hook",
                        "change",
                        target,
                        f"{repository}: {why} (mode {HOOK_MODE:o})",
                        Phase.CONFIGURATION,
                        ({**op, "expect_sha256": hook.sha256},),
                    )
                )
            elif ctx.options.replace_foreign:
                kept = f"hooks/{KEPT_HOOK_PREFIX}{ctx.options.stamp}"
                # Both with the digest seen: what is kept is exactly what is replaced.
                expect = {"expect_sha256": hook.sha256} if hook.sha256 else {}
                to = f"{ctx.repository_path(name, repository)}/{kept}"
                keep = {"op": "keep_file", "path": path, "to": to, **expect}
                actions.append(
                    Action(
                        name,
                        "hook",
                        "change",
                        target,
                        f"{repository}: replace the foreign post-receive hook, "
                        f"keeping it as {kept}",
                        Phase.CONFIGURATION,
                        (keep, {**op, **expect}),
                    )
                )
            else:
                notes.append(
                    Note(
                        name,
                        "hook",
                        target,
                        "conflict",
                        f"{repository}: hooks/post-receive is not the replication hook; "
                        "merge it by hand or apply with --replace-foreign",
                    )
                )
    return actions, notes
