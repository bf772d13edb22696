"""The fact readers a subject's module declares, found without a list to edit.

A module of this package that has a top-level ``FACTS = {"key": reader, ...}``
(``declares_facts``) adds those keys to the gather program's answer: ``reader``
gets the ``Gathering`` and returns the key's JSON value. ``gather`` calls every
reader ``fact_readers`` finds, after the readers it names itself (the repository
walk among them: a reader may use what it came across, ``Gathering.walked``).

Two ways of running, one rule. From a directory (the tests; the installed library)
the package's files are listed. In a program assembled at send time
(``reconciler.server_library.entry_blob``) only the modules in its blob exist; the
assembler puts every module that declares facts into a program that imports this
one, and the blob's finder lists them (``reconciler_modules``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

PACKAGE = "reconciler.server"
# The same test on both sides: the assembler's (on the operator's copy of the source)
# and the program's (on the file or the blob's copy of it).
FACTS_LINE = re.compile(r"^FACTS\s*(:[^=\n]*)?=", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Gathering:
    """What every fact reader may use: the git user's home, the repositories
    directory, the operator's request, and the temporaries the repository walk came
    across (absolute paths)."""

    home: str
    base: str
    request: dict[str, Any]
    walked: list[str]

    @property
    def admin(self) -> str:
        return str(self.request.get("admin", "gitosis-admin"))


Reader = Callable[[Gathering], Any]


def declares_facts(source: str) -> bool:
    return FACTS_LINE.search(source) is not None


def _sources() -> dict[str, str]:
    """Module name -> source, of this package's modules (not the package itself)."""
    for finder in sys.meta_path:
        carried = getattr(finder, "reconciler_modules", None)
        if carried is not None:
            prefix = PACKAGE + "."
            return {
                name: entry[1]
                for name, entry in carried.items()
                if name.startswith(prefix) and "." not in name[len(prefix) :]
            }
    directory = os.path.dirname(os.path.abspath(__file__))
    found = {}
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".py") and entry != "__init__.py":
            with open(os.path.join(directory, entry), encoding="utf-8") as handle:
                found[f"{PACKAGE}.{entry[: -len('.py')]}"] = handle.read()
    return found


def fact_readers() -> list[tuple[str, Reader]]:
    """(key, reader) of every module that declares facts, by module name then in
    the order its ``FACTS`` gives; a key declared twice is refused."""
    readers: list[tuple[str, Reader]] = []
    seen: dict[str, str] = {}
    for name, source in sorted(_sources().items()):
        if not declares_facts(source):
            continue
        module = importlib.import_module(name)
        for key, reader in getattr(module, "FACTS", {}).items():
            if key in seen:
                raise RuntimeError(f"fact {key!r} is declared by {seen[key]} and {name}")
            seen[key] = name
            readers.append((key, reader))
    return readers
