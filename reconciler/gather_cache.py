"""The operator's memory of each server's repository facts, so that a gather reads
only the repositories that changed (reconciler.server.fact_cache has the rule).

One file per server, in the operator's cache directory
(``$XDG_CACHE_HOME/reconciler/gather/``, else ``~/.cache/...``); nothing is written
on a server. Each remembered repository is the facts a gather read, with the digest
of the statuses of everything they were read from and the refs paths among those
(its layout). The next gather sends digests and layouts; the server answers
"unchanged" for a repository whose inputs still stat the same, and this file gives
its facts. Facts the server did not offer for keeping (inputs changed within the
racy margin, a ref lock) are not kept.

The file is keyed by the server's address and repositories directory and holds the
version of the server library whose gather read it: facts read by another version
are not used. It is replaced whole with a rename and checked (length and CRC)
before use; one that is torn or unreadable is ignored and rewritten. Losing it
costs one full read. ``RECONCILER_GATHER_CACHE=off`` turns it off: every gather
reads everything, and nothing is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import time
import zlib
from pathlib import Path
from typing import Any

from reconciler.caches import cache_dir
from reconciler.desired import Server
from reconciler.errors import ServerError
from reconciler.server.common import abandoned_temporary, atomic_write

FACT_CACHE_ENV = "RECONCILER_GATHER_CACHE"  # "off", or a directory
# The file's format: a new ``Entry`` shape needs a new number (the library version in
# the file covers the server side's facts, not this module).
MAGIC = b"reconciler gather cache 2\n"
HEADER = len(MAGIC) + 8  # then the body's length and CRC-32, 4 bytes each

# name -> (digest of its inputs' statuses, its layout, its facts as the gather gave them)
Entry = tuple[str, tuple[str, ...], dict[str, Any]]


def cache_directory() -> Path | None:
    return cache_dir(FACT_CACHE_ENV, "gather")


def server_identity(server: Server) -> str:
    url = server.url
    return repr(
        (url.kind, url.user, url.host, url.port, url.path, server.become, server.repositories)
    )


class GatherCache:
    """One server's remembered facts, for one gather: ``known`` goes into the request,
    ``merge`` completes the answer and takes what may be kept, ``save`` writes it."""

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self.entries: dict[str, Entry] = load(path, version)
        self.changed = False
        self.sent: set[str] = set()

    @classmethod
    def for_server(cls, server: Server) -> GatherCache | None:
        directory = cache_directory()
        if directory is None:
            return None
        from reconciler.server_library import library_version

        name = hashlib.sha256(server_identity(server).encode()).hexdigest()[:32]
        return cls(directory / f"{name}.marshal", library_version())

    def known(self, want_refs: bool) -> dict[str, Any]:
        """The request's "known": each layout once, and per repository its digest and
        layout's index; only facts read as this gather reads them (with the refs, or
        without), so that the answer is what a full read would give."""
        layouts: dict[tuple[str, ...], int] = {}
        repositories: dict[str, list[object]] = {}
        try:
            for name, (digest, layout, facts) in self.entries.items():
                if ("refs" in facts) != want_refs:
                    continue
                index = layouts.setdefault(layout, len(layouts))
                repositories[name] = [digest, index]
        except (TypeError, ValueError):
            # Not of this format after all (MAGIC was not bumped): read everything.
            self.entries = {}
            layouts, repositories = {}, {}
        self.sent = set(repositories)
        return {"layouts": [list(layout) for layout in layouts], "repositories": repositories}

    def merge(self, server: str, data: dict[str, Any]) -> None:
        """Put the remembered facts of the repositories the server found unchanged into
        its answer, and remember the facts it read that it offered for keeping."""
        unchanged = data.pop("unchanged", None)
        found = data.get("repositories")
        if not isinstance(found, dict):
            return  # the parser names what is wrong
        kept: dict[str, Entry] = {}
        for name, facts in found.items():
            offered = facts.pop("cache", None) if isinstance(facts, dict) else None
            if (
                isinstance(offered, list)
                and len(offered) == 2
                and isinstance(offered[0], str)
                and isinstance(offered[1], list)
            ):
                kept[name] = (offered[0], tuple(str(p) for p in offered[1]), facts)
        if unchanged is not None and not isinstance(unchanged, list):
            raise ServerError(
                server, f"the gather program's 'unchanged' is not a list: {unchanged!r:.80}"
            )
        for name in unchanged or ():
            asked = isinstance(name, str) and name in self.sent
            entry = self.entries.get(name) if asked else None
            if entry is None or name in found:
                raise ServerError(
                    server,
                    f"the gather program answered that repository {name} is unchanged, "
                    "but this operator's cache of its facts does not hold it",
                )
            found[name] = entry[2]
            kept[name] = entry
        data["fact_cache_hits"] = len(unchanged or ())
        if kept != self.entries:
            self.entries = kept
            self.changed = True

    def save(self) -> None:
        """Write the file when it changed; a failure only costs the next gather time."""
        if not self.changed:
            return
        with contextlib.suppress(OSError, ValueError):
            write(self.path, self.version, self.entries)


def load(path: Path, version: str) -> dict[str, Entry]:
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if not data.startswith(MAGIC) or len(data) < HEADER:
        return {}
    length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")
    checksum = int.from_bytes(data[len(MAGIC) + 4 : HEADER], "big")
    body = memoryview(data)[HEADER:]
    if length != len(body) or zlib.crc32(body) != checksum:
        return {}  # torn, truncated or damaged
    try:
        # Our own file in a 0700 directory, checked above; marshal builds values only.
        stored = marshal.loads(body)  # noqa: S302
    except (ValueError, EOFError, TypeError):
        return {}
    if not isinstance(stored, tuple) or len(stored) != 2 or stored[0] != version:
        return {}
    entries = stored[1]
    if not isinstance(entries, dict):
        return {}
    with contextlib.suppress(OSError):
        if time.time() - os.stat(path).st_mtime > 24 * 3600:
            # Still in use though unchanged for a day: not one for ``forget_old``.
            os.utime(path)
    return entries


def write(path: Path, version: str, entries: dict[str, Entry]) -> None:
    body = marshal.dumps((version, entries))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = MAGIC + len(body).to_bytes(4, "big") + zlib.crc32(body).to_bytes(4, "big")
    atomic_write(path, header + body, 0o600)
    forget_old(path.parent)


MAX_AGE = 14 * 24 * 3600  # a server not gathered from for this long is forgotten


def forget_old(directory: Path) -> None:
    """Remove the files of servers not gathered from for ``MAX_AGE`` (a cluster gone,
    a server renamed), and temporaries a killed run left (their maker is gone)."""
    now = time.time()
    for old in directory.iterdir():
        with contextlib.suppress(OSError):
            if abandoned_temporary(old.name) or (
                old.suffix == ".marshal" and now - old.stat().st_mtime > MAX_AGE
            ):
                old.unlink()
