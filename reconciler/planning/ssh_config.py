"""ssh config: each server keeps its connections to the ssh peers open.

A replication push (the hook's, its drainer's, the reconciler's own ref repairs run
on the servers) is ``git push`` over the git user's ``ssh``, and most of its cost was
the ssh handshake to the peer. A block in the git user's ``~/.ssh/config`` turns on
OpenSSH's connection sharing for the peers' hosts: the first ssh to a peer becomes
the master of a connection that stays open ``CONTROL_PERSIST`` seconds after its
last use, and the next pushes run as new sessions on it. gitosis on the peer still
checks every session (each one runs its forced command).

The control sockets live in ``~/.ssh`` itself (0700, the git user's; the peers'
connections need it anyway for the key and known_hosts): OpenSSH refuses to connect
at all when it cannot create the socket, so a directory of their own that went
missing would stop every push to the peers. A stopped peer closes the connection
and its master exits at once; a peer that stops answering without closing it is
given up after ``ServerAliveInterval`` x ``ServerAliveCountMax`` seconds, and every
push is bounded by the hook's timeout meanwhile.
"""

from __future__ import annotations

from reconciler.facts import ServerFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Kind, Note, Phase
from reconciler.server.common import OpError
from reconciler.server.ops import SshConfigBlock
from reconciler.server.ssh_config import (
    BLOCK_BEGIN,
    BLOCK_END,
    CONFIG_PATH,
    SOCKET_PREFIX,
    split_block,
)

SUBJECT = "ssh-config"
TARGET = f"~/{CONFIG_PATH}"
CONTROL_PATH = f"~/.ssh/{SOCKET_PREFIX}%C"
CONTROL_PERSIST = 300  # seconds a master stays after its last session
SERVER_ALIVE_INTERVAL = 10
SERVER_ALIVE_COUNT = 3
# A Unix socket path has at most 107 bytes on Linux. ssh binds the socket under a
# temporary name (the path, ".", 16 random characters) before renaming it, and %C is
# 40 hexadecimal digits.
SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len(CONTROL_PATH.removeprefix("~").removesuffix("%C")) + 40 + 17


def control_socket_fits(home: str) -> bool:
    return len(home.rstrip("/").encode()) + _SOCKET_SUFFIX <= SOCKET_PATH_MAX


def desired_block(ctx: PlanContext, server: str) -> tuple[list[str], list[str]]:
    """The managed block's lines for ``server`` (empty: none) and the peers it covers."""
    peers = []
    hosts: list[str] = []
    for peer in ctx.peers(server):
        url = ctx.desired.servers[peer].peer_url
        if url.kind != "ssh" or not url.host:
            continue
        peers.append(peer)
        if url.host not in hosts:
            hosts.append(url.host)
    if not hosts:
        return [], []
    block = [
        BLOCK_BEGIN,
        "# The replication pushes to the other servers share one connection per peer.",
        f"Host {' '.join(sorted(hosts))}",
        "    ControlMaster auto",
        f"    ControlPath {CONTROL_PATH}",
        f"    ControlPersist {CONTROL_PERSIST}",
        f"    ServerAliveInterval {SERVER_ALIVE_INTERVAL}",
        f"    ServerAliveCountMax {SERVER_ALIVE_COUNT}",
        # What follows the block applies to every host again, as before it was added.
        "Host *",
        BLOCK_END,
    ]
    return block, sorted(peers)


def present_block(facts: ServerFacts) -> list[str] | None:
    """The managed block now in the file (None: none); raises OpError when its end
    marker is missing."""
    _before, block, _after = split_block(list(facts.ssh_config or ()))
    return None if block is None else [line.rstrip("\r\n") for line in block]


def plan_ssh_config(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    for name, facts in ctx.reachable().items():
        try:
            present = present_block(facts)
        except OpError as exc:
            notes.append(Note(name, SUBJECT, TARGET, "conflict", str(exc)))
            continue
        wanted, peers = desired_block(ctx, name)
        if wanted and not control_socket_fits(facts.home):
            notes.append(
                Note(
                    name,
                    SUBJECT,
                    TARGET,
                    "warning",
                    f"connections to the peers are not kept open: a control socket under "
                    f"{facts.home}/.ssh would be longer than the {SOCKET_PATH_MAX} bytes "
                    "a Unix socket path may have",
                )
            )
            wanted, peers = [], []
        if (present or []) == wanted:
            continue
        kind: Kind
        if not wanted:
            kind, description = "remove", "ssh config: remove the block for the peers' connections"
        else:
            kind = "create" if present is None else "change"
            description = f"ssh config: keep the connections to {', '.join(peers)} open"
        actions.append(
            Action(
                server=name,
                subject=SUBJECT,
                kind=kind,
                target=TARGET,
                description=description,
                phase=Phase.CONFIGURATION,
                ops=(SshConfigBlock(CONFIG_PATH, tuple(wanted), 0o600, 0o700),),
            )
        )
    return actions, notes
