"""Where the operator's caches live: ``$XDG_CACHE_HOME/reconciler/KIND`` (else
``~/.cache/reconciler/KIND``), a directory named by an environment variable, or none
at all when that variable says "off"."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(variable: str, kind: str) -> Path | None:
    setting = os.environ.get(variable, "")
    if setting == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reconciler" / kind
