"""The first look of ``bin/post-receive``, having imported only ``os`` and ``json``.

Most runs of the replication hook have nothing to do: every push a server takes from
a peer runs it too, and in quorum mode the reference-transaction hook replicated the
update before the ref moved. Importing ``reconciler.server.replication`` (processes,
threads, dataclasses, the queue) costs several times Python's own start, and a
replication push waits for the peer's hook to end, so this gate answers first.

It says "nothing to do" only where ``replication.run_hook`` returns without a word:

- the push came from a peer: ``RECONCILER_REPLICA`` is set (a local peer, or this
  program's own pushes), or gitosis's ``GITOSIS_USER`` is one of the settings'
  ``mirror_users``;
- quorum mode, a repository other than the admin repository, and no kept foreign
  hook to run (``run_kept_hooks``).

Anything else (arguments such as ``--drain``, no settings file above the repository,
a file it cannot read or that is not this format) goes to the replication module,
which decides and reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

# The same values as reconciler.server.common.SETTINGS_PATH and
# reconciler.server.settings.MAX_BASE_DEPTH (tests/replication/test_hook_gate.py
# checks); importing those modules is what this one avoids.
SETTINGS_PATH = ".reconciler/replication.json"
MAX_BASE_DEPTH = 32
FORMAT_VERSION = 1


def _find_base(git_dir: str) -> str | None:
    directory = git_dir
    for _depth in range(MAX_BASE_DEPTH):
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
        if os.path.isfile(os.path.join(directory, SETTINGS_PATH)):
            return directory
    return None


def nothing_to_do(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this run of post-receive can end at once (see the module's docstring)."""
    if args:
        return False
    if environ.get("RECONCILER_REPLICA"):
        return True
    git_dir = os.path.abspath(environ.get("GIT_DIR", "."))
    base = _find_base(git_dir)
    if base is None:
        return False
    try:
        with open(os.path.join(base, SETTINGS_PATH), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return False
    users = data.get("mirror_users")
    user = environ.get("GITOSIS_USER", "")
    if user and isinstance(users, list) and user in users:
        return True
    if data.get("mode") != "quorum" or data.get("run_kept_hooks", False) is not False:
        return False
    admin = data.get("admin_repository", "")
    name = os.path.relpath(git_dir, base).replace(os.sep, "/")
    if name.endswith(".git"):
        name = name[: -len(".git")]
    return isinstance(admin, str) and name != admin
