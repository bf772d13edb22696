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
        *(PACKAGE / "remote").glob("*.py"),
        PACKAGE / "replication" / "post_receive.py",
    ]
)
STDLIB = set(sys.stdlib_module_names)


@pytest.mark.parametrize("path", SERVER_SIDE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_python_39_grammar_and_stdlib_only(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - STDLIB - {"reconciler"} == set()
