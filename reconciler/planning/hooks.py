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
from dataclasses import replace

from reconciler.facts import HookFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.hooks import HOOK_MODE, HOOK_NAME, KEPT_HOOK_PREFIX, TRANSACTION_HOOK, stub
from reconciler.server.ops import InstallHook, KeepFile, RemoveSymlink, Symlink
from reconciler.server_library import library_version

# Quorum mode: hooks/reference-transaction is a symlink to the stub, which runs the
# library's entry point named after the hook; it decides before the ref is written
# (docs/quorum.md).
TRANSACTION_TARGET = HOOK_NAME


def plan_transaction_hooks(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    quorum = ctx.desired.cluster.replication.mode == "quorum"
    admin = ctx.desired.cluster.admin_repository
    for name, facts in ctx.reachable().items():
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
            link = Symlink(path, TRANSACTION_TARGET)
            if wanted and current is None:
                actions.append(
                    Action(
                        name,
                        "hook",
                        "create",
                        target,
                        f"{repository}: install the quorum hook ({TRANSACTION_HOOK})",
                        Phase.CONFIGURATION,
                        (link,),
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
                        (RemoveSymlink(link.path, link.target),),
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
