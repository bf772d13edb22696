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


@dataclass(frozen=True)
class CheckoutFacts:
    root: Path
    branch: str
    head: str | None
    files: dict[str, str]  # rendered files whose content differs from the working tree
    relations: dict[str, Relation]  # server -> how its admin head relates to ours


def with_server_keys(desired: Desired, facts: Facts) -> Desired:
    """The desired state plus every reached server's own public key as a user."""
    users = dict(desired.users)
    inline = set(desired.inline_users)
    for name, server_facts in facts.servers.items():
        if name in desired.servers and server_facts.server_key:
            user = desired.server_user(name)
            users[user] = (server_facts.server_key,)
            inline.add(user)
    return dataclasses.replace(desired, users=users, inline_users=frozenset(inline))


def rendered_changes(desired: Desired, facts: Facts) -> dict[str, str]:
    from reconciler.desired.render import render_admin_files

    rendered = render_admin_files(with_server_keys(desired, facts))
    changes: dict[str, str] = {}
    for relative, content in sorted(rendered.items()):
        path = desired.root / relative
        try:
            current = path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            current = None
        if current != content:
            changes[relative] = content
    return changes


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
    )
