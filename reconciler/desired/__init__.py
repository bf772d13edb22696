"""The desired state: cluster.d/ loading, validation, rendering and import."""

from __future__ import annotations

from reconciler.desired.load import load
from reconciler.desired.model import (
    Cluster,
    Desired,
    Group,
    Replication,
    Repository,
    Server,
    ServerURL,
)

__all__ = [
    "Cluster",
    "Desired",
    "Group",
    "Replication",
    "Repository",
    "Server",
    "ServerURL",
    "load",
]
