"""What the server-facing commands share: load cluster.d/, open transports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ReconcilerError
from reconciler.transport import Transport

if TYPE_CHECKING:
    from reconciler.desired import Desired
    from reconciler.planning import PlanOptions


def load_and_connect(
    directory: Path, servers: list[str], trust_new_host_keys: bool
) -> tuple[Desired, dict[str, Transport]]:
    from reconciler.desired import load
    from reconciler.gather import open_transports

    desired = load(directory)
    from reconciler import git

    top = git.toplevel(directory)
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
    # Every server is gathered (peers' facts feed the plan); --server limits the changes.
    return desired, open_transports(
        desired, desired.servers, trust_new_host_keys=trust_new_host_keys
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
