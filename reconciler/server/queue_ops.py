"""The replication queue's op: removing the entries a drain delivered.

Apart from the queue's format (``reconciler.server.queue``) because every run of a
replication hook reads and writes the queue, and the op catalogue
(``reconciler.server.ops``: one dataclass per kind) is the largest import of the
library; the hooks never import it (tests/replication/test_hook_imports.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.server import common
from reconciler.server.common import DRAIN_LOCK_PATH, LockBusy, OpError, fsync_dir, resolve
from reconciler.server.ops import DrainQueue, handler
from reconciler.server.queue import split_name, update_entries


def op_drain_queue(op: DrainQueue) -> None:
    """Remove delivered queue entries while holding the queue's drain lock."""
    base = resolve(op.base)
    queue = os.path.join(base, op.queue)
    try:
        fd, _waited, _holder = common.take_lock(
            os.path.join(base, DRAIN_LOCK_PATH), common.LOCK_WAIT, "reconcile apply (drain_queue)"
        )
    except LockBusy as exc:
        raise OpError(f"the replication queue's drain lock {exc}") from None
    try:
        for name in op.files:
            try:
                split_name(name)
            except ValueError:
                raise OpError(f"refusing queue entry name {name!r}") from None
        update_entries(Path(base), dict.fromkeys(op.files), sync=False)
        fsync_dir(queue)
    finally:
        os.close(fd)


OPS = dict(
    [
        handler(DrainQueue, op_drain_queue),
    ]
)
