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
from reconciler.server.hooks import (
    HOOK_MODE,
    HOOK_NAME,
    KEPT_HOOK_PREFIX,
    PROC_RECEIVE_GIT,
    PROC_RECEIVE_HOOK,
    PROC_RECEIVE_KEY,
    PROC_RECEIVE_REFS,
    TRANSACTION_HOOK,
    stub,
)
from reconciler.server.ops import InstallHook, KeepFile, Op, RemoveSymlink, SetConfig, Symlink
from reconciler.server_library import library_version

# Quorum mode: hooks/proc-receive is a symlink to the stub, which runs the library's
# entry point named after the hook, and receive.procReceiveRefs hands it every push
# of the replicated refs; it decides before they are written (docs/quorum.md).
LINK_TARGET = HOOK_NAME


def plan_transaction_hooks(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    quorum = ctx.desired.cluster.replication.mode == "quorum"
    admin = ctx.desired.cluster.admin_repository
    wanted_refs = PROC_RECEIVE_REFS
    for name, facts in ctx.reachable().items():
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
