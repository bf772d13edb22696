"""What the server-facing commands share: load cluster.d/, open transports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from reconciler.desired import Cluster, Desired, Server
    from reconciler.facts import ServerFacts
    from reconciler.planning import PlanOptions
    from reconciler.transport import Transport


def load_and_connect(
    directory: Path, servers: list[str], trust_new_host_keys: bool
) -> tuple[Desired, dict[str, Transport]]:
    desired, transports, _started = _load(directory, servers, trust_new_host_keys, early=False)
    return desired, transports


def load_and_start_gather(
    directory: Path, servers: list[str], trust_new_host_keys: bool
) -> tuple[Desired, dict[str, Transport], Mapping[str, Future[ServerFacts]] | None]:
    """``load_and_connect``, with every server's gather started as soon as cluster.d/'s
    servers are known (``EarlyGather``): the gathers under way, for ``gather_facts``,
    or None when they could not start early (then they start as usual)."""
    return _load(directory, servers, trust_new_host_keys, early=True)


def _load(
    directory: Path, servers: list[str], trust_new_host_keys: bool, *, early: bool
) -> tuple[Desired, dict[str, Transport], Mapping[str, Future[ServerFacts]] | None]:
    from reconciler import git
    from reconciler.desired import load
    from reconciler.gather import EarlyGather, open_transport, open_transports

    top: list[Path | None] = []
    started: list[EarlyGather] = []

    def servers_known(cluster: Cluster, known: dict[str, Server]) -> None:
        top.append(git.toplevel(directory))
        # Only what would connect anyway, checked as below: nothing is recorded in
        # known_hosts before cluster.d/ is found valid.
        if trust_new_host_keys or top[0] != directory.resolve():
            return
        if any(name not in known for name in servers):
            return
        transports = {name: open_transport(server) for name, server in known.items()}
        started.append(EarlyGather(cluster, known, transports))

    try:
        desired = load(directory, servers_known if early else None)
        if not top:
            top.append(git.toplevel(directory))
        _check_servers(directory, desired, servers, top[0])
    except BaseException:
        for gather in started:
            gather.abandon()
        raise
    if started and started[0].matches(desired):
        return desired, started[0].transports, started[0].finish(desired)
    for gather in started:
        gather.abandon()
        close_all(gather.transports)
    # Every server is gathered (peers' facts feed the plan); --server limits the changes.
    transports = open_transports(desired, desired.servers, trust_new_host_keys=trust_new_host_keys)
    return desired, transports, None


def _check_servers(directory: Path, desired: Desired, servers: list[str], top: Path | None) -> None:
    if top != directory.resolve():
        where = "is not a git checkout" if top is None else f"is inside the checkout {top}"
        raise ReconcilerError(
            f"{directory} {where}; plan, apply and status work at the top of a clone of "
            "gitosis-admin (its cluster.d/ holds the desired state)"
        )
    unknown = [name for name in servers if name not in desired.servers]
    if unknown:
        raise ReconcilerError(
            f"no server named {', '.join(unknown)} in {directory / 'cluster.d'} "
            f"(servers: {', '.join(desired.servers)})"
        )


def plan_options(
    servers: list[str], replace_foreign: bool = False, prune: bool = False
) -> PlanOptions:
    from reconciler.planning import PlanOptions

    return PlanOptions(replace_foreign=replace_foreign, prune=prune, only_servers=tuple(servers))


def close_all(transports: dict[str, Transport]) -> None:
    for transport in transports.values():
        transport.close()


def require_admin_checkout(directory: Path) -> None:
    """Apply commits into the checkout: make sure it is a gitosis-admin one."""
    from reconciler import git

    if git.committed_contents(directory, ["gitosis.conf"])["gitosis.conf"] is None:
        raise ReconcilerError(
            f"{directory.resolve()} does not look like a gitosis-admin checkout (no gitosis.conf "
            "committed); clone gitosis-admin, or run 'reconcile render' and commit first"
        )
