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
from dataclasses import dataclass, replace
from typing import Any

from reconciler.facts import HookFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.common import KEPT_HOOK_PREFIX, PROC_RECEIVE_REFS
from reconciler.server.hooks import (
    HOOK_MODE,
    HOOK_NAME,
    PROC_RECEIVE_GIT,
    PROC_RECEIVE_HOOK,
    PROC_RECEIVE_KEY,
    TRANSACTION_HOOK,
    stub,
)
from reconciler.server.ops import InstallHook, KeepFile, Op, RemoveSymlink, SetConfig, Symlink
from reconciler.server.template import GIT_DEFAULT_FILES
from reconciler.server_library import library_version

# Quorum mode: hooks/proc-receive is a symlink to the stub, which runs the library's
# entry point named after the hook, and receive.procReceiveRefs hands it every push
# of the replicated refs; it decides before they are written (docs/quorum.md).
LINK_TARGET = HOOK_NAME


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
        hooks.append(ManagedHook(PROC_RECEIVE_HOOK, link=LINK_TARGET))
    return tuple(hooks)


def repository_config(mode: str) -> dict[str, tuple[str, ...]]:
    """The git config ("section.key" -> its values) the planner keeps in every mirrored
    repository of a cluster in replication ``mode``: in quorum mode, the refs receive-pack
    hands to proc-receive. The git template carries it as its ``config`` file, which
    ``git init`` copies."""
    return {PROC_RECEIVE_KEY: PROC_RECEIVE_REFS} if mode == "quorum" else {}


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


def config_text(config: dict[str, tuple[str, ...]]) -> str:
    """``config`` in git's config file syntax ("a.b.c" is key c of [a "b"]; a key with
    several values is a line each)."""
    sections: dict[str, list[str]] = {}
    for key, values in config.items():
        section, _, name = key.rpartition(".")
        head, _, sub = section.partition(".")
        header = f'[{head} "{sub}"]' if sub else f"[{head}]"
        for value in values:
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
    # The same lists the git template is made of.
    wanted_refs = repository_config(mode).get(PROC_RECEIVE_KEY, ())
    for name, facts in ctx.reachable().items():
        quorum = any(h.name == PROC_RECEIVE_HOOK for h in repository_hooks(mode, facts.home))
        old_git = facts.git_version is not None and facts.git_version < PROC_RECEIVE_GIT
        if quorum and old_git:
            version = ".".join(str(part) for part in facts.git_version or ())
            notes.append(
                Note(
                    name,
                    "hook",
                    PROC_RECEIVE_HOOK,
                    "conflict",
                    f"quorum mode needs git 2.29 or later on every server for its "
                    f"{PROC_RECEIVE_HOOK} hook; {name} has git {version}: upgrade git there "
                    "or choose replication mode sync",
                )
            )
            continue
        for repository in ctx.desired.mirrored_repositories():
            existing = facts.repositories.get(repository)
            refs: tuple[str, ...] = ()
            link = legacy = None
            hook = None
            if existing is not None:
                link, legacy = existing.proc_receive_hook, existing.transaction_hook
                refs, hook = existing.proc_receive_refs, existing.hook
            # Only beside the replication hook: the link must never lead to a foreign one.
            ours = (
                hook is None or (hook.managed and not hook.symlink) or ctx.options.replace_foreign
            )
            wanted = quorum and repository != admin and ours
            if legacy != LINK_TARGET and (
                (wanted and link == LINK_TARGET and tuple(refs) == wanted_refs)
                or (not wanted and link != LINK_TARGET)
            ):
                continue  # in line (the common case), decided before building anything
            hooks_dir = f"{ctx.repository_path(name, repository)}/hooks"
            repo = ctx.repository_path(name, repository)
            target = f"{repository} {PROC_RECEIVE_HOOK}"
            link_op = Symlink(f"{hooks_dir}/{PROC_RECEIVE_HOOK}", LINK_TARGET)
            # The release before linked reference-transaction; proc-receive decides now.
            old_link = RemoveSymlink(f"{hooks_dir}/{TRANSACTION_HOOK}", LINK_TARGET)
            retire = (old_link,) if legacy == LINK_TARGET else ()
            if wanted and link not in (None, LINK_TARGET):
                notes.append(
                    Note(
                        name,
                        "hook",
                        target,
                        "conflict",
                        f"{repository}: hooks/{PROC_RECEIVE_HOOK} is not the reconciler's; quorum "
                        "mode needs it: merge it by hand (move it away) and apply again",
                    )
                )
                continue
            if wanted:
                ops: list[Op] = []
                if link is None:
                    ops.append(link_op)
                if tuple(refs) != wanted_refs:
                    # After the link: a config naming a hook that is not there yet
                    # would refuse every push meanwhile.
                    ops.append(SetConfig(repo, PROC_RECEIVE_KEY, tuple(wanted_refs)))
                if not ops and not retire:
                    continue
                if not ops:
                    what = f"remove the old quorum hook ({TRANSACTION_HOOK})"
                elif link is None:
                    what = f"install the quorum hook ({PROC_RECEIVE_HOOK})"
                else:
                    what = f"set {PROC_RECEIVE_KEY} for the quorum hook"
                actions.append(
                    Action(
                        name,
                        "hook",
                        "create" if link is None else "change",
                        target,
                        f"{repository}: {what}",
                        Phase.CONFIGURATION,
                        (*ops, *retire),
                    )
                )
                continue
            ops = []
            if link == LINK_TARGET and refs:
                # Before the link goes: pushes must not be handed to a missing hook.
                ops.append(SetConfig(repo, PROC_RECEIVE_KEY, ()))
            if link == LINK_TARGET:
                ops.append(RemoveSymlink(link_op.path, link_op.target))
            if not ops and not retire:
                continue
            why = "not quorum mode" if repository != admin else "not replicated by hooks"
            actions.append(
                Action(
                    name,
                    "hook",
                    "remove",
                    target,
                    f"{repository}: remove the quorum hook ({why})",
                    Phase.CONFIGURATION,
                    (*ops, *retire),
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
            op = InstallHook(path, content, version)
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
                        (replace(op, expect_sha256="absent"),),
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
                        (replace(op, expect_sha256=hook.sha256),),
                    )
                )
            elif ctx.options.replace_foreign:
                kept = f"hooks/{KEPT_HOOK_PREFIX}{ctx.options.stamp}"
                # Both with the digest seen: what is kept is exactly what is replaced.
                expect = hook.sha256 or None
                to = f"{ctx.repository_path(name, repository)}/{kept}"
                keep = KeepFile(path, to, expect_sha256=expect)
                actions.append(
                    Action(
                        name,
                        "hook",
                        "change",
                        target,
                        f"{repository}: replace the foreign post-receive hook, "
                        f"keeping it as {kept}",
                        Phase.CONFIGURATION,
                        (keep, replace(op, expect_sha256=expect)),
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
