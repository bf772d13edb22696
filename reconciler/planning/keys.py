"""Server keys: every server's git user has a key pair of its own, made on that server.

A key pair that keydir/ already names for the server (``keydir/git@SERVER.pub``,
as the manual recipe makes it) is reused whatever its type, when it is one of the
identity files the git user's ``ssh`` offers without configuration: the
replication hook's pushes to the peers authenticate with it. Otherwise the
server key is ``~/.ssh/id_ed25519``, generated there when missing, and the plan
says which keydir/ key it replaces.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from reconciler.desired import Desired
from reconciler.desired.keys import sha256_fingerprint
from reconciler.facts import KeyPair, ServerFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.ops import Keygen

GENERATED_KEY = ".ssh/id_ed25519"
# The identity files OpenSSH's client tries by default (ssh_config(5), IdentityFile),
# in its order, less DSA (no longer accepted) and the security-key types (an
# unattended hook cannot touch a token).
DEFAULT_IDENTITIES = (".ssh/id_rsa", ".ssh/id_ecdsa", ".ssh/id_ed25519")


@dataclass(frozen=True)
class ServerKey:
    """The key pair that is, or will be, a server's own key."""

    path: str  # relative to the git user's home
    public: str | None  # None: not generated yet


def key_id(line: str) -> tuple[str, str] | None:
    """(type, base64 blob) of a public key line; comments and options aside."""
    parts = line.split()
    for index, part in enumerate(parts[:-1]):
        if part.startswith(("ssh-", "ecdsa-", "sk-")):
            return part, parts[index + 1]
    return None


def fingerprint(line: str) -> str:
    """``TYPE SHA256:...`` as ``ssh-keygen -l`` shows it."""
    found = key_id(line)
    if found is None:
        return line.strip()[:40]
    keytype, blob = found
    try:
        return f"{keytype} {sha256_fingerprint(base64.b64decode(blob))}"
    except (binascii.Error, ValueError):
        return keytype


def _pairs(facts: ServerFacts) -> tuple[KeyPair, ...]:
    if facts.key_pairs:
        return facts.key_pairs
    # Facts of an older gather program: only ~/.ssh/id_ed25519 was read.
    return (KeyPair(GENERATED_KEY, facts.server_key),) if facts.server_key else ()


def named_keys(desired: Desired, server: str) -> tuple[str, ...]:
    """The keys keydir/ (or cluster.d/ users:) gives the server's own user."""
    return desired.users.get(desired.server_user(server), ())


def choose_server_key(desired: Desired, server: str, facts: ServerFacts) -> ServerKey:
    named = {key_id(line) for line in named_keys(desired, server)} - {None}
    pairs = {pair.path: pair for pair in _pairs(facts)}
    for path in DEFAULT_IDENTITIES:
        pair = pairs.get(path)
        if pair is not None and key_id(pair.public) in named:
            return ServerKey(path, pair.public)
    return ServerKey(GENERATED_KEY, facts.server_key)


def server_public_key(desired: Desired, server: str, facts: ServerFacts) -> str | None:
    """The public key line of the server's own key, once it exists."""
    return choose_server_key(desired, server, facts).public


def keydir_holds(desired: Desired, server: str, key: str) -> bool:
    """Whether keydir/ already names ``key`` for the server (then it is left as it is)."""
    wanted = key_id(key)
    return wanted is not None and any(
        key_id(line) == wanted for line in named_keys(desired, server)
    )


def _replaced(ctx: PlanContext, server: str, facts: ServerFacts, key: ServerKey) -> str:
    """The keydir/ key the server key replaces and why, as a phrase; empty when none."""
    named = named_keys(ctx.desired, server)
    if not named or (key.public is not None and keydir_holds(ctx.desired, server, key.public)):
        return ""
    user = ctx.desired.server_user(server)
    shown = ", ".join(fingerprint(line) for line in named)
    elsewhere = [
        pair.path
        for pair in _pairs(facts)
        if pair.path not in DEFAULT_IDENTITIES and keydir_holds(ctx.desired, server, pair.public)
    ]
    if elsewhere:
        why = (
            f"is the key pair ~/{elsewhere[0]}, which the git user's ssh does not offer "
            "by default (the replication hook could not push with it)"
        )
    else:
        why = "matches no key pair in the git user's ~/.ssh"
    return f"keydir/{user}.pub ({shown}), which {why}"


def plan_server_keys(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    for name, facts in ctx.reachable().items():
        user = ctx.desired.server_user(name)
        key = choose_server_key(ctx.desired, name, facts)
        target = f"~/{key.path}"
        replaced = _replaced(ctx, name, facts, key)
        if key.public is not None:
            if replaced:
                notes.append(
                    Note(
                        name,
                        "server-key",
                        target,
                        "warning",
                        f"the admin commit replaces {replaced}, with ~/{key.path}.pub "
                        f"({fingerprint(key.public)})",
                    )
                )
            else:
                where = f", named in keydir/{user}.pub" if key.path != GENERATED_KEY else ""
                notes.append(
                    Note(name, "server-key", target, "info", f"server key {target} present{where}")
                )
            continue
        if facts.server_key_private:
            notes.append(
                Note(
                    name,
                    "server-key",
                    target,
                    "conflict",
                    "~/.ssh/id_ed25519 exists without its .pub file; recreate the public key "
                    "with 'ssh-keygen -y' on the server",
                )
            )
            continue
        description = f"generate the server key ~/.ssh/id_ed25519 ({user})"
        if replaced:
            description += f" to replace {replaced}"
        actions.append(
            Action(
                server=name,
                subject="server-key",
                kind="create",
                target=target,
                description=description,
                phase=Phase.SERVER_KEYS,
                ops=(Keygen(user),),
            )
        )
    return actions, notes
