"""What runs on servers must run on their python3 (3.9 or newer, standard library only)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reconciler"
SERVER_SIDE = sorted(
    [
        PACKAGE / "__init__.py",
        *(PACKAGE / "gitosis").glob("*.py"),
        *(PACKAGE / "server").glob("*.py"),
    ]
)
STDLIB = set(sys.stdlib_module_names)


@pytest.mark.parametrize("path", SERVER_SIDE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_python_39_grammar_and_stdlib_only(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    imported = set()
    ours = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
            ours |= {alias.name for alias in node.names if alias.name.startswith("reconciler")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("reconciler"):
                ours.add(node.module)
    assert imported - STDLIB - {"reconciler"} == set()
    # Only what the server library holds: the operator's modules are not installed there.
    assert {
        m for m in ours if not m.startswith(("reconciler.server", "reconciler.gitosis"))
    } == set()


def test_the_program_loader_is_python_39_and_stdlib_only() -> None:
    from reconciler.server_library import LOADER
    from reconciler.transport import BOOTSTRAP

    for source in (LOADER, BOOTSTRAP):
        tree = ast.parse(source, feature_version=(3, 9))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert imported - STDLIB == set()
    assert "\n" not in BOOTSTRAP  # gitosis-serve refuses a command with a newline
