"""~/.reconciler/README: a note for a person who logs in as the git user, saying
that reconciler manages the account, which servers are its peers, which files
must not be edited by hand, and how to see what an apply would change
(``reconciler.planning.readme`` writes it, with ``files.write_file``).

Its last line is a check of the lines above it (``check_line``): a file that
still matches its check is the reconciler's own (an apply rewrites it when the
cluster changed); one that does not was edited by hand, and is kept beside it
before it is replaced.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import Any

from reconciler.server.common import read_bytes
from reconciler.server.subjects import Gathering

README_PATH = ".reconciler/README"
MODE = 0o644
MAX_README_BYTES = 64 << 10
# Where a hand-edited README is kept, beside it: README.edited-STAMP.
KEPT_PREFIX = "README.edited-"
CHECK_LINE = re.compile(r"\(written by reconcile apply; check ([0-9a-f]{16})\)\n\Z")


def check(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def check_line(body: str) -> str:
    """The last line of a README whose other lines are ``body``."""
    return f"(written by reconcile apply; check {check(body.encode('utf-8'))})\n"


def is_ours(data: bytes) -> bool:
    """Whether ``data`` ends with the check of what comes before that line."""
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    found = CHECK_LINE.fullmatch(data[start:].decode("utf-8", "replace"))
    return found is not None and found.group(1) == check(data[:start])


def readme_fact(gathering: Gathering) -> dict[str, Any] | None:
    """None: no README. Otherwise whether it is a plain file, its mode, its sha256
    (None: unreadable or larger than any README), and whether it matches its check."""
    full = os.path.join(gathering.home, README_PATH)
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return {"plain": False, "mode": stat.S_IMODE(info.st_mode), "sha256": None, "ours": False}
    data = read_bytes(full, MAX_README_BYTES + 1)
    readable = data is not None and len(data) <= MAX_README_BYTES
    return {
        "plain": True,
        "mode": stat.S_IMODE(info.st_mode),
        "sha256": hashlib.sha256(data).hexdigest() if data is not None and readable else None,
        "ours": data is not None and readable and is_ours(data),
    }


FACTS = {"readme": readme_fact}
