"""Plain files below the home: ``write_file`` (compare-and-swap on the digest seen
when the plan was made) and ``remove_file``; the settings, repository settings and
the hook stubs are written with them. And the temporaries killed runs left:
``leftovers`` finds them, ``remove_leftovers`` removes them."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence

from reconciler.server.common import (
    HOME,
    OpError,
    abandoned_temporary,
    atomic_write,
    make_dirs,
    remove_path,
    resolve,
)
from reconciler.server.ops import RemoveFile, RemoveLeftovers, WriteFile, handler
from reconciler.server.subjects import Gathering

# Where the server side writes besides the repositories' own directories (below the
# home, and below the repositories directory). A hook's temporary is not looked for:
# its hook was not renamed into place, so the next apply writes it again, and every
# write removes the abandoned temporaries of its file first.
HOME_DIRECTORIES = (".", ".ssh", ".reconciler", ".reconciler/gitosis", ".reconciler/lib")
BASE_DIRECTORIES = (".", ".reconciler", ".reconciler/queue")


def current_sha256(full: str) -> str | None:
    try:
        with open(full, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def existing_repository_only(directory: str) -> None:
    """Refuse to make a missing ``*.git`` directory on the way to a file: repositories
    are made whole by init_bare or clone_mirror, never as a side effect (a hook
    written where the repository could not be created would leave a husk that
    later looks like the repository)."""
    path = directory
    while path.startswith(HOME + os.sep) and not os.path.isdir(path):
        if path.endswith(".git"):
            raise OpError(f"repository {os.path.relpath(path, HOME)} does not exist")
        path = os.path.dirname(path)


def op_write_file(op: WriteFile) -> None:
    write_checked(
        op.path,
        op.content.encode("utf-8"),
        op.mode,
        op.expect_sha256,
        op.dir_mode,
    )


def write_checked(
    path: str, content: bytes, mode: int, expect: str | None, dir_mode: int = 0o755
) -> None:
    """Write ``content`` at ``path`` if it still holds what the plan saw: ``expect``
    (a sha256, "absent", or None for whatever is there)."""
    full = resolve(path)
    existing_repository_only(os.path.dirname(full))
    make_dirs(os.path.dirname(full), dir_mode)
    if expect is not None:
        seen = current_sha256(full)
        if seen == hashlib.sha256(content).hexdigest() and stat_mode(full) == mode:
            return  # another run wrote exactly this meanwhile
        if (expect == "absent" and seen is not None) or (expect != "absent" and seen != expect):
            raise OpError(f"{path} changed since the plan was made; run plan again")
    atomic_write(full, content, mode)


def stat_mode(full: str) -> int | None:
    try:
        return os.stat(full).st_mode & 0o7777
    except OSError:
        return None


def op_remove_file(op: RemoveFile) -> None:
    full = resolve(op.path)
    expect = op.expect_sha256
    if expect is not None and current_sha256(full) not in (expect, None):
        raise OpError(f"{op.path} changed since the plan was made; run plan again")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(full)


def leftovers(
    home: str, base: str, admin: str, found_in_walk: list[str], files: Sequence[object] = ()
) -> list[str]:
    """Abandoned temporaries (see ``common.TEMPORARY_NAME``), relative to the home:
    in the directories the server side writes to, the admin repository, those of
    ``files`` (relative to the home: gitweb's projects.list), and those the
    repository walk came across (``found_in_walk``, absolute)."""
    directories = [os.path.join(home, d) for d in HOME_DIRECTORIES]
    directories += [os.path.dirname(os.path.join(home, f)) for f in files if isinstance(f, str)]
    directories += [os.path.join(base, d) for d in BASE_DIRECTORIES]
    directories.append(os.path.join(base, admin + ".git"))
    found = set(found_in_walk)
    for directory in dict.fromkeys(os.path.normpath(d) for d in directories):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found.update(os.path.join(directory, n) for n in names if abandoned_temporary(n))
    relative = (os.path.relpath(path, home) for path in found)
    return sorted(path for path in relative if not path.startswith(".." + os.sep))


def leftovers_fact(gathering: Gathering) -> list[str]:
    # gitweb's projects.list: gitosis writes it, outside the directories above.
    files = [gathering.request.get("projects_list")]
    return leftovers(gathering.home, gathering.base, gathering.admin, gathering.walked, files)


FACTS = {"leftovers": leftovers_fact}


def op_remove_leftovers(op: RemoveLeftovers) -> None:
    """Only what is still abandoned: a name that is not a temporary, or whose maker
    lives (a pid taken again meanwhile), stays."""
    for path in op.paths:
        full = resolve(path)
        if abandoned_temporary(os.path.basename(full)):
            remove_path(full)


OPS = dict(
    [
        handler(WriteFile, op_write_file),
        handler(RemoveFile, op_remove_file),
        handler(RemoveLeftovers, op_remove_leftovers),
    ]
)
