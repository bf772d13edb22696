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

Relation = Literal["same", "behind", "ahead", "unknown"]

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


def with_server_keys(desired: Desired, facts: Facts) -> Desired:
    """The desired state plus every reached server's own key, as if it were in keydir/."""
    users = dict(desired.users)
    for user, key in server_keys(desired, facts).items():
        users[user] = (key,)
    return dataclasses.replace(desired, users=users)


def rendered_changes(desired: Desired, facts: Facts) -> dict[str, str]:
    """Rendered files (and the servers' key files) whose content differs from HEAD's."""
    from reconciler.desired.render import key_file, render_admin_files

    rendered = render_admin_files(with_server_keys(desired, facts))
    for user, key in server_keys(desired, facts).items():
        rendered[key_file(user)] = key + "\n"
    committed = git.committed_contents(desired.root, sorted(rendered))
    return {
        path: content for path, content in sorted(rendered.items()) if committed[path] != content
    }


def relation(root: Path, ours: str | None, theirs: str) -> Relation:
    if ours == theirs:
        return "same"
    if ours is None or not git.has_commit(root, theirs):
        return "unknown"
    if git.is_ancestor(root, theirs, ours):
        return "behind"
    if git.is_ancestor(root, ours, theirs):
        return "ahead"
    return "unknown"


def gather_checkout(desired: Desired, facts: Facts) -> CheckoutFacts:
    root = desired.root
    ours = git.head(root)
    relations: dict[str, Relation] = {}
    for name, server_facts in facts.servers.items():
        theirs = server_facts.admin.head
        if theirs:
            relations[name] = relation(root, ours, theirs)
    return CheckoutFacts(
        root=root,
        branch=git.current_branch(root),
        head=ours,
        files=rendered_changes(desired, facts),
        relations=relations,
        uncommitted=tuple(git.changed_paths(root, *COMMITTED_WITH_RENDERING)),
    )
