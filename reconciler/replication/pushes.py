"""The replication hook's push records, as the gather program reads them.

Where: ``<repositories>/.reconciler/pushes.jsonl`` on each server
(``PUSHES_PATH`` below the repositories base).

Lines: JSON objects, one per line. The hook appends one **record** per peer
push it made (the sync push of a user's update, or a drainer's push of queued
entries), holding ``flock`` on the file::

    {"peer": "mirror", "time": 1764089000.25, "seconds": 0.1834, "result": "ok"}

``result`` is ``ok`` when the peer took every update, otherwise the reason of
the first it did not take (the queue's reasons: ``unreachable``, ``timeout``,
``diverged``, ...). A push with no remote to push to is not a push and is not
recorded.

Bounded: the hook stops appending once the file holds ``PUSHES_MAX_BYTES``;
every gather folds what left the window (records older than an hour, or beyond
the latest 128 per peer) into one **totals** line per peer, written whole to a
temporary file renamed over this one while it holds the same lock::

    {"peer": "mirror", "count": 4211, "sum": 812.5, "results": {"ok": 4200, "timeout": 11}}

So ``count``, ``sum`` and ``results`` (totals plus records) only grow, as a
Prometheus summary's ``_count`` and ``_sum`` must, and the records in the window
give its quantiles.
"""

from __future__ import annotations

from reconciler.server.common import PUSHES_PATH
from reconciler.server.pushes import PUSHES_MAX_BYTES, record_push

__all__ = ["PUSHES_MAX_BYTES", "PUSHES_PATH", "record_push"]
