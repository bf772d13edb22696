"""Gather every fact the planner needs from one server, in one process.

Input (stdin, JSON): {"repositories": "repositories", "admin": "gitosis-admin",
"repo_sections": the names of gitosis.conf's [repo NAME] sections, "descriptions":
those of them with a description, "projects_list": gitweb's list, relative to the
home, "known": what the operator remembers of each repository (``fact_cache``)}, as
one line, or as a first line {"repositories", "admin", "refs", "known", "more": true}
and the rest after it; or {"mode": "refs" | "ancestry" | "admin_tip", ...} for the
follow-up questions. Output (stdout, zlib-compressed JSON): see ``main``. Reads files only;
the processes it spawns are one ``git log`` in the admin repository and one
``git --version``. It never reads a private key. The one file it may write is the replication hook's
push record file, which it compacts.

Each subject's fact reader lives with its op handlers (``reconciler.server.keys``,
``.known_hosts``, ``.ssh_config``, ``.settings``, ``.queue``, ``.pushes``,
``.repositories``, ``.admin``, ``.repository_settings``, ``.library``, ``.template``).
A subject's module may instead declare its readers (``FACTS``, see
``reconciler.server.subjects``): they are called after these, without being named here.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
import time
import zlib
from typing import Any

from reconciler.server import (
    admin,
    fact_cache,
    hooks,
    keys,
    known_hosts,
    library,
    pushes,
    queue,
    refs,
    repositories,
    repository_settings,
    settings,
    ssh_config,
    subjects,
    template,
)
from reconciler.server.common import FORMAT_VERSION


def answer(request: dict[str, Any], mode: str) -> dict[str, Any]:
    base = os.path.join(os.path.expanduser("~"), request.get("repositories", "repositories"))
    if mode == "refs":
        return refs.answer_refs(base, request.get("names", []))
    if mode == "admin_tip":
        return admin.answer_admin_tip(
            base, request.get("admin", "gitosis-admin"), request.get("have")
        )
    return refs.answer_ancestry(base, request.get("checks", []))


def write_answer(result: dict[str, Any]) -> None:
    # One write of the C encoder's output (json.dump streams through the slow
    # pure-Python encoder in tens of thousands of small writes), compressed: the facts
    # of 10,000 repositories are about 4 MB of JSON, 130 KB compressed, and level 1
    # costs a few milliseconds.
    data = json.dumps(result, separators=(",", ":")).encode()
    sys.stdout.buffer.write(zlib.compress(data, 1))


def main() -> None:
    # One line; with "more", the rest of the request follows (see _rest_of_request).
    request = json.loads(sys.stdin.readline() or "{}")
    mode = request.get("mode", "facts")
    if mode != "facts":
        write_answer(answer(request, mode))
        return
    started = time.monotonic()
    home = os.path.expanduser("~")
    base = os.path.join(home, request.get("repositories", "repositories"))
    # Hooks equal to this server's stub need no hashing.
    known = hooks.KnownContent(hooks.stub(home))
    try:
        account = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        account = str(os.getuid())
    admin_name = request.get("admin", "gitosis-admin")
    walked: list[str] = []
    # What the operator remembers (reconciler.gather_cache): repositories whose inputs
    # stat as they did then are answered "unchanged" instead of being read.
    remembered = fact_cache.parse_known(request.get("known"))
    unchanged: list[str] = []
    found = (
        repositories.walk_repositories(
            base,
            request.get("refs", False),
            known,
            walked,
            remembered=remembered,
            unchanged=unchanged,
            horizon_ns=time.time_ns() - fact_cache.RACY_NS,
        )
        if os.path.isdir(base)
        else {}
    )
    _rest_of_request(request)
    result: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "home": home,
        "uid": os.getuid(),
        "user": account,
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        **keys.key_facts(home),
        **known_hosts.ssh_lines(home),
        **ssh_config.ssh_config_facts(home),
        "repositories_dir": base,
        "repositories_exists": os.path.isdir(base),
        **settings.read_settings(base),
        **queue.gather_queue(base),
        "repositories": found,
        **({"unchanged": unchanged} if remembered is not None else {}),
        "admin": admin.admin_facts(base, admin_name),
        "pushes": pushes.read_pushes(base, time.time()),
        "repo_sections": repository_settings.repo_section_facts(
            base, request.get("repo_sections") or [], set(request.get("descriptions") or [])
        ),
        "gitosis": library.gitosis_facts(home),
        "library": library.library_facts(home),
        "git_template": template.template_facts(home),
        **repository_settings.projects_list(home, request.get("projects_list")),
        **hooks.git_version(),
    }
    gathering = subjects.Gathering(home, base, request, walked)
    for key, reader in subjects.fact_readers():
        result[key] = reader(gathering)
    result["seconds"] = round(time.monotonic() - started, 4)
    write_answer(result)


def _rest_of_request(request: dict[str, Any]) -> None:
    """The request's second part, when its first says "more": the operator starts the
    gather as soon as it knows the servers, and sends what depends on the rest of
    cluster.d/ once that is loaded, so the walk (read-only) runs meanwhile. Nothing
    is written before it has come: when the input ends without it (cluster.d/ was
    invalid, the operator stopped), the program stops here."""
    if request.get("more"):
        rest = sys.stdin.read()
        if not rest:
            sys.exit(ABANDONED_STATUS)
        request.update(json.loads(rest))


# The operator stopped before sending the rest of the request (it does not read the
# answer then).
ABANDONED_STATUS = 3


if __name__ == "__main__":
    main()
