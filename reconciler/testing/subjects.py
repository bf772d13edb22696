"""What a converged server reports for every subject that declares itself
(``reconciler.subjects``), naming none of them: the files its ``converged`` gives,
written to a directory, read back by the server modules' own fact readers
(``reconciler.server.subjects.fact_readers``). A planner table starts from these
facts, so a new managed file needs no line in the tables of the other subjects.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import subjects as registry
from reconciler.server.subjects import Gathering, fact_readers
from reconciler.subjects import ManagedFile

if TYPE_CHECKING:
    from reconciler.desired import Desired


def converged_files(desired: Desired, server: str) -> dict[str, ManagedFile]:
    """Path relative to the home -> what an apply leaves there, of every subject."""
    found: dict[str, ManagedFile] = {}
    for known in registry.subjects():
        for path, wanted in known.converged(desired, server).items():
            if path in found:
                raise AssertionError(f"{path} is declared by two subjects")
            found[path] = wanted
    return found


def write_files(home: Path, files: Mapping[str, ManagedFile]) -> None:
    for path, wanted in files.items():
        full = home / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(wanted.content.encode("utf-8"))
        os.chmod(full, wanted.mode)


def read_subject_facts(home: Path) -> dict[str, Any]:
    """The declared facts' keys of a gather program's answer, on ``home``."""
    repositories = home / "repositories"
    gathering = Gathering(str(home), str(repositories), {"repositories": "repositories"}, [])
    return {key: reader(gathering) for key, reader in fact_readers()}


def converged_facts(desired: Desired, server: str) -> dict[str, Any]:
    """The declared facts' keys of the answer of ``server`` once an apply converged it."""
    with tempfile.TemporaryDirectory(prefix="converged-") as top:
        home = Path(top)
        write_files(home, converged_files(desired, server))
        return read_subject_facts(home)
