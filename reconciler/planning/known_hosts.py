"""known_hosts: each server trusts every ssh peer's host key under its peer_url host name.

The lines the reconciler writes end with the comment ``reconciler:<peer>`` so that
a removed server's lines can be found again; other lines are never touched.
"""

from __future__ import annotations

from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.known_hosts import known_hosts_host
from reconciler.server.ops import EditLines

MANAGED_COMMENT = "reconciler:"


def desired_lines(ctx: PlanContext, server: str) -> tuple[dict[str, str], list[Note]]:
    """Peer name -> the known_hosts line ``server`` needs for it."""
    lines: dict[str, str] = {}
    notes: list[Note] = []
    for peer in ctx.peers(server):
        spec = ctx.desired.servers[peer]
        if spec.peer_url.kind != "ssh" or not spec.peer_url.host:
            continue
        key = spec.host_key
        if key is None:
            key = ctx.facts.host_key(peer)
        if key is None:
            facts = ctx.facts.servers.get(server)
            if facts and any(
                line.endswith(f" {MANAGED_COMMENT}{peer}") for line in facts.known_hosts
            ):
                continue  # its line from an earlier run stays until the peer answers again
            notes.append(
                Note(
                    server,
                    "known_hosts",
                    peer,
                    "warning",
                    f"cannot add {peer}'s host key: {peer} was not reached and has no host_key pin",
                )
            )
            continue
        keytype, blob = key.split()[:2]
        host = known_hosts_host(spec.peer_url.host, spec.peer_url.port)
        lines[peer] = f"{host} {keytype} {blob} {MANAGED_COMMENT}{peer}"
    return lines, notes


def plan_known_hosts(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    for name, facts in ctx.reachable().items():
        wanted, missing_notes = desired_lines(ctx, name)
        notes += missing_notes
        present = {line.strip() for line in facts.known_hosts}
        add = [line for line in wanted.values() if line not in present]
        remove = []
        for line in sorted(present):
            comment = line.rsplit(" ", 1)[-1]
            if comment.startswith(MANAGED_COMMENT) and line not in wanted.values():
                peer = comment[len(MANAGED_COMMENT) :]
                # A line for a server still in the cluster whose key we could not
                # read this time stays; only dropped servers and replaced keys go.
                if peer not in ctx.desired.servers or peer in wanted:
                    remove.append(line)
        if not add and not remove:
            continue
        what = []
        if add:
            what.append("add " + ", ".join(sorted(_peer_of(line) for line in add)))
        if remove:
            what.append("remove " + ", ".join(sorted(_peer_of(line) for line in remove)))
        actions.append(
            Action(
                server=name,
                subject="known_hosts",
                kind="create" if not remove and not present else "change",
                target="~/.ssh/known_hosts",
                description=f"known_hosts: {'; '.join(what)}",
                phase=Phase.CONFIGURATION,
                ops=(
                    EditLines(
                        ".ssh/known_hosts",
                        add=tuple(add),
                        remove=tuple(remove),
                        mode=0o600,
                        dir_mode=0o700,
                    ),
                ),
            )
        )
    return actions, notes


def _peer_of(line: str) -> str:
    return line.rsplit(MANAGED_COMMENT, 1)[1]
