"""The admin repository: gitosis-admin on every server at the checkout's commit.

The rendered gitosis.conf and keydir/ (with every server's own key and the
generated mirror group) are committed in the admin checkout, then the commit is
sent to every server with compare-and-swap on the branch, and gitosis's
post-update hook runs there. A server holding only gitosis-init's single commit
is adopted; a server whose admin history is unknown to the checkout is refused.
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.planning.bootstrap import init_command
from reconciler.planning.context import PlanContext
from reconciler.planning.model import ADMIN_CHECKOUT, Action, Kind, Note, Phase
from reconciler.server.ops import INIT_COMMIT, AdminUpdate, GitosisInit, LocalCommit, Op

# Placeholders filled in by apply once the checkout's commit exists.
HEAD = "@HEAD"
BUNDLE = "@BUNDLE"


def first_admin_key(ctx: PlanContext) -> str | None:
    """A key for gitosis-init on a server without an admin repository."""
    group = ctx.desired.groups.get(ctx.desired.cluster.admin_repository)
    for member in group.members if group else ():
        keys = ctx.desired.users.get(member)
        if keys:
            return keys[0]
    for keys in ctx.desired.users.values():
        if keys:
            return keys[0]
    return None


def plan_admin(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    checkout = ctx.checkout
    admin = ctx.desired.cluster.admin_repository
    new_commit = bool(checkout.files or checkout.uncommitted or checkout.removed)
    for path, where in checkout.hand_edited:
        notes.append(
            Note(
                ADMIN_CHECKOUT,
                "admin",
                path,
                "conflict",
                f"{path} was edited by hand ({where}) and differs from what cluster.d/ "
                "renders; apply keeps it and commits no render over it: put the change "
                "into cluster.d/, then run 'reconcile render' (it replaces the edited "
                "file) and apply again",
            )
        )
    if checkout.hand_edited:
        new_commit = False  # the edit is kept: no render is committed over it
    if new_commit:
        changed = sorted({*checkout.files, *checkout.uncommitted} - set(checkout.removed))
        shown = ", ".join(changed[:8]) + (
            f", … ({len(changed) - 8} more)" if len(changed) > 8 else ""
        )
        if checkout.removed:
            gone = f"remove {', '.join(checkout.removed)} (no longer a user or server)"
            shown = f"{shown}; {gone}" if shown else gone
        op = LocalCommit(checkout.files, remove=tuple(checkout.removed))
        actions.append(
            Action(
                ADMIN_CHECKOUT,
                "admin",
                "change",
                str(checkout.root),
                f"commit {shown}",
                Phase.ADMIN,
                (op,),
            )
        )
    if checkout.head is None and not new_commit:
        notes.append(
            Note(
                ADMIN_CHECKOUT,
                "admin",
                str(checkout.root),
                "error",
                "the admin checkout has no commit",
            )
        )
        return actions, notes
    for name, facts in ctx.reachable().items():
        path = ctx.repository_path(name, admin)
        state = facts.admin
        update = AdminUpdate(
            repo=path,
            branch=state.branch,
            new=HEAD,
            bundle=BUNDLE,
            # To finish a gitosis-init that was cut short (no ~/.gitosis.conf yet).
            pubkey=first_admin_key(ctx),
            init_command=init_command(facts),
        )
        if not state.exists:
            key = first_admin_key(ctx)
            if key is None:
                notes.append(
                    _error(
                        name,
                        admin,
                        f"no {admin} repository and no user key to run gitosis-init with",
                    )
                )
                continue
            actions.append(
                _action(
                    name,
                    "create",
                    admin,
                    f"initialise {admin} (gitosis-init) and send the admin commit",
                    GitosisInit(key, init_command(facts)),
                    replace(update, old=INIT_COMMIT, branch="master"),
                )
            )
            continue
        relation = checkout.relations.get(name, "unknown")
        at = state.head[:12] if state.head else ""
        if state.head is None:
            actions.append(
                _action(
                    name,
                    "create",
                    admin,
                    f"send the admin commit to {admin}",
                    replace(update, old=None),
                )
            )
        elif relation == "same" and not new_commit and state.post_update_pending:
            description = (
                f"finish {admin} at {at}: run gitosis's post-update hook "
                "(an earlier apply was interrupted)"
            )
            actions.append(
                _action(name, "change", admin, description, replace(update, old=state.head))
            )
        elif relation == "same" and not new_commit:
            continue
        elif relation in ("same", "behind"):
            description = f"fast-forward {admin} from {at}"
            actions.append(
                _action(name, "change", admin, description, replace(update, old=state.head))
            )
        elif state.only_init_commit:
            description = f"adopt {admin}: replace gitosis-init's single commit {at}"
            actions.append(
                _action(name, "change", admin, description, replace(update, old=state.head))
            )
        elif relation == "ahead":
            message = (
                f"{admin} on {name} is ahead of the admin checkout (at {at}); reconcile "
                "apply fast-forwards the checkout to it and sends it to every server (or pull "
                "it into the checkout by hand and run again)"
            )
            notes.append(_error(name, admin, message))
        elif relation == "absent":
            message = (
                f"{admin} on {name} holds a commit the admin checkout does not have (at {at}): "
                "history unrelated to the checkout's, or commits pushed there directly; "
                "reconcile apply fetches it and fast-forwards the checkout if it descends from "
                "the checkout's commit, and otherwise refuses to overwrite it"
            )
            notes.append(_error(name, admin, message))
        else:
            message = (
                f"{admin} on {name} holds history unrelated to the admin checkout "
                f"(at {at}); refusing to overwrite it"
            )
            notes.append(_error(name, admin, message))
    return actions, notes


def _action(server: str, kind: Kind, admin: str, description: str, *ops: Op) -> Action:
    return Action(server, "admin", kind, admin, description, Phase.ADMIN, ops)


def _error(server: str, admin: str, message: str) -> Note:
    return Note(server, "admin", admin, "error", message)
