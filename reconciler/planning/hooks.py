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

from reconciler.facts import HookFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.hooks import HOOK_MODE, KEPT_HOOK_PREFIX, stub
from reconciler.server_library import library_version


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
