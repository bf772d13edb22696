"""What every subject's planner needs: the desired state, the facts, the options."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.facts import Facts, ServerFacts

if TYPE_CHECKING:
    from reconciler.admin_checkout import CheckoutFacts
    from reconciler.desired import Desired, Server
    from reconciler.refs import RefReport

from reconciler.server.common import SETTINGS_PATH

__all__ = ["SETTINGS_PATH", "PlanContext", "PlanOptions", "repository_url", "settings_text"]


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


@dataclass(frozen=True)
class PlanOptions:
    replace_foreign: bool = False
    prune: bool = False  # remove the reconciler's hook and remotes from unmanaged repositories
    only_servers: tuple[str, ...] = ()
    # When the plan was made (UTC): names the copies of the foreign hooks it replaces.
    stamp: str = field(default_factory=utc_stamp)


@dataclass(frozen=True)
class PlanContext:
    """Every input is required: a planner never mistakes "not gathered" for "in line"
    (``reconciler.pipeline.observe`` gathers all of them in one pass)."""

    desired: Desired
    facts: Facts
    checkout: CheckoutFacts
    options: PlanOptions
    refs: RefReport

    def planned_servers(self) -> list[str]:
        """The servers this plan changes: all, or those named with --server."""
        names = list(self.desired.servers)
        if self.options.only_servers:
            names = [n for n in names if n in self.options.only_servers]
        return names

    def reachable(self) -> dict[str, ServerFacts]:
        """Facts of the planned servers that answered."""
        return {
            name: self.facts.servers[name]
            for name in self.planned_servers()
            if name in self.facts.servers
        }

    def peers(self, server: str) -> list[str]:
        return [name for name in self.desired.servers if name != server]

    def repository_path(self, server: str, repository: str) -> str:
        """The repository's directory relative to the git user's home."""
        return f"{self.desired.servers[server].repositories}/{repository}.git"


def repository_url(server: Server, repository: str) -> str:
    """How the other servers reach ``repository`` on ``server`` (its peer_url)."""
    return f"{repository_base_url(server)}/{repository}.git"


@functools.lru_cache(maxsize=1024)
def repository_base_url(server: Server) -> str:
    """The part of every repository URL on ``server`` before ``/NAME.git``."""
    url = server.peer_url
    if url.kind == "local":
        return f"{url.path}/{server.repositories}"
    user = f"{url.user}@" if url.user else ""
    host = f"[{url.host}]" if url.host and ":" in url.host else url.host
    port = f":{url.port}" if url.port else ""
    # Through gitosis-serve, which takes the path relative to its repository base.
    return f"ssh://{user}{host}{port}"


def settings_text(desired: Desired, server: str) -> str:
    """The replication hook's settings file for ``server``, byte for byte."""
    from reconciler.server.settings import settings_json

    return settings_json(
        server=server,
        peers=desired.servers,
        mirror_users=desired.server_users(),
        mode=desired.cluster.replication.mode,
        timeout=desired.cluster.replication.timeout,
        run_kept_hooks=desired.cluster.replication.run_kept_hooks,
        admin_repository=desired.cluster.admin_repository,
        # A repository gitosis creates on its first push has no remotes until the
        # next apply: the hook reaches the peers at these instead.
        peer_urls={
            peer: repository_base_url(spec)
            for peer, spec in desired.servers.items()
            if peer != server
        },
    ).decode("utf-8")
