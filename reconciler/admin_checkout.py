"""Facts about the operator's admin checkout, for planning the admin repository.

``gather_checkout`` renders gitosis.conf and keydir/ from cluster.d/ plus the
servers' own keys, finds which rendered files differ from the working tree, and
how each server's admin branch relates to the checkout's HEAD.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler import git
from reconciler.desired import Desired
from reconciler.facts import Facts

# "absent": the checkout does not hold the server's commit (pushed there directly).
Relation = Literal["same", "behind", "ahead", "absent", "unknown"]

# Committed together with the rendered files, so the servers' admin repository
# always holds the cluster.d/ that gitosis.conf was rendered from.
COMMITTED_WITH_RENDERING = ("cluster.d", "keydir")


@dataclass(frozen=True)
class CheckoutFacts:
    root: Path
    branch: str
    head: str | None
    files: dict[str, str]  # rendered files whose content differs from the commit at HEAD
    relations: dict[str, Relation]  # server -> how its admin head relates to ours
    uncommitted: tuple[str, ...] = ()  # changes in cluster.d/ and keydir/ not yet committed
    # keydir/ files that must go: rendered for users who left cluster.d/, or the keys
    # of servers that left (or were renamed).
    removed: tuple[str, ...] = ()
    # Rendered files changed by hand since they were rendered, each with where:
    # "committed in COMMIT by AUTHOR: SUBJECT" or "not committed". Never overwritten.
    hand_edited: tuple[tuple[str, str], ...] = ()


def key_blob(line: str) -> str:
    """What identifies a public key line for sshd: its key data, not its comment."""
    fields = line.split()
    return fields[1] if len(fields) > 1 else line.strip()


def server_keys(desired: Desired, facts: Facts) -> dict[str, str]:
    """``git@<server>`` -> that server's public key, for every server reached whose key
    keydir/ does not hold yet (a key file that already names it is left as it is)."""
    from reconciler.planning.keys import keydir_holds, server_public_key

    keys = {}
    for name, server_facts in facts.servers.items():
        if name not in desired.servers:
            continue
        key = server_public_key(desired, name, server_facts)
        if key and not keydir_holds(desired, name, key):
            keys[desired.server_user(name)] = key
    return keys


def departed_key_files(desired: Desired, facts: Facts) -> list[str]:
    """keydir/ files that are the keys of servers no longer in cluster.d/.

    Those an earlier render recorded as server keys are already
    ``desired.orphaned_key_files``. A checkout rendered before that record existed
    is recognised by the key itself: a file ``git@X.pub`` for no current server X
    whose every key is a current server's key (a server renamed in cluster.d/
    keeps its key). A person's key is never a server's key, so no person's file
    matches; any other duplicate is a conflict the plan reports instead.
    """
    from reconciler.desired.render import key_file

    current = {key_blob(key) for key in server_keys(desired, facts).values()}
    for name in desired.servers:
        current.update(key_blob(key) for key in desired.users.get(desired.server_user(name), ()))
    server_users = set(desired.server_users())
    found = set(desired.orphaned_key_files)
    for user, keys in desired.users.items():
        if user in desired.inline_users or user in server_users or not user.startswith("git@"):
            continue
        if keys and all(key_blob(key) in current for key in keys):
            found.add(key_file(user))
    return sorted(found)


def with_server_keys(desired: Desired, facts: Facts) -> Desired:
    """The desired state plus every reached server's own key, as if it were in keydir/,
    without the key files of servers that left."""
    from reconciler.desired.render import key_file

    departed = set(departed_key_files(desired, facts))
    users = {user: keys for user, keys in desired.users.items() if key_file(user) not in departed}
    for user, key in server_keys(desired, facts).items():
        users[user] = (key,)
    return dataclasses.replace(desired, users=users)


def rendered_changes(
    desired: Desired, facts: Facts
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Rendered files (and the servers' key files) whose content differs from HEAD's,
    and HEAD's content of every rendered file (None: absent)."""
    from reconciler.desired.render import key_file, render_admin_files

    rendered = render_admin_files(with_server_keys(desired, facts))
    for user, key in server_keys(desired, facts).items():
        rendered[key_file(user)] = key + "\n"
    committed = git.committed_contents(desired.root, sorted(rendered))
    changed = {
        path: content for path, content in sorted(rendered.items()) if committed[path] != content
    }
    return changed, committed


def removed_files(desired: Desired, facts: Facts) -> tuple[str, ...]:
    """The departed key files still committed at HEAD or present in the working tree."""
    paths = departed_key_files(desired, facts)
    committed = git.committed_contents(desired.root, paths)
    return tuple(
        path for path in paths if committed[path] is not None or (desired.root / path).exists()
    )


def relation(root: Path, ours: str | None, theirs: str, parents: tuple[str, ...] = ()) -> Relation:
    """How a server's admin commit ``theirs`` (whose parents are ``parents``, when
    known) relates to the checkout's ``ours``."""
    if ours == theirs:
        return "same"
    if ours is None:
        return "unknown"
    if not git.has_commit(root, theirs):
        # A commit pushed straight on top of ours is ahead even before it is fetched.
        return "ahead" if ours in parents else "absent"
    if git.is_ancestor(root, theirs, ours):
        return "behind"
    if git.is_ancestor(root, ours, theirs):
        return "ahead"
    return "unknown"


def hand_edits(
    root: Path, files: dict[str, str], committed: str | None
) -> tuple[tuple[str, str], ...]:
    """The rendered files a person edited since ``render`` wrote them: in the working
    tree (not committed, so apply would never send it), or at HEAD, about to be
    rendered over (a commit pushed to a server, which cron's run fetched), while the
    working tree holds HEAD's.
    Only gitosis.conf can tell (its digest line); the key files hold nothing to edit
    but the key."""
    from reconciler.desired.render import GITOSIS_CONF, edited_by_hand

    try:
        working: str | None = (root / GITOSIS_CONF).read_text(encoding="utf-8", errors="replace")
    except OSError:
        working = None
    if GITOSIS_CONF not in files:
        # HEAD holds the render: an edit in the working tree alone would never be sent.
        edited = working is not None and edited_by_hand(working)
        return ((GITOSIS_CONF, "not committed"),) if edited else ()
    if working is not None and working != committed:
        # The working tree decides: a hand edit of it, or a render the operator ran
        # (over an edited commit too: that is how an edit is let go).
        return ((GITOSIS_CONF, "not committed"),) if edited_by_hand(working) else ()
    if committed is not None and edited_by_hand(committed):
        last = git.run_git(root, "log", "-1", "--format=%h by %an: %s", "--", GITOSIS_CONF)
        return ((GITOSIS_CONF, f"committed in {last.strip()}"),)
    return ()


def gather_checkout(desired: Desired, facts: Facts) -> CheckoutFacts:
    from reconciler.desired.render import GITOSIS_CONF

    root = desired.root
    ours = git.head(root)
    files, committed = rendered_changes(desired, facts)
    relations: dict[str, Relation] = {}
    for name, server_facts in facts.servers.items():
        theirs = server_facts.admin.head
        if theirs:
            parents = next((c.parents for c in server_facts.admin.history if c.sha == theirs), ())
            relations[name] = relation(root, ours, theirs, parents)
    return CheckoutFacts(
        root=root,
        branch=git.current_branch(root),
        head=ours,
        files=files,
        relations=relations,
        uncommitted=tuple(git.changed_paths(root, *COMMITTED_WITH_RENDERING)),
        removed=removed_files(desired, facts),
        hand_edited=hand_edits(root, files, committed[GITOSIS_CONF]),
    )
