"""The server package as the operator's side sends it.

Programs (``gather``, ``execute``) are assembled at send time from the modules of
``reconciler.server`` that they import (``program_blob``); the library installed once
per server is the whole package with the gitosis runtime (``library_files``), its
version a digest of those files (``reconciler.server.library.library_digest``, the
definition the server checks them with).
"""

from __future__ import annotations

import ast
import base64
import functools
import json
import threading
import zlib
from collections.abc import Iterator
from importlib import resources
from typing import Any

from reconciler.server import subjects
from reconciler.server.library import library_digest
from reconciler.server.ops import InstallLibrary

# Entry points of the programs sent over the channel: name -> "module:function".
PROGRAMS = {
    "gather": "reconciler.server.gather:main",
    "execute": "reconciler.server.execute:run",
}


# Run by the transport's bootstrap with the blob as ``b``: imports the program's
# modules from the blob, ahead of anything installed on the server, and calls the
# entry point.
LOADER = """
import importlib, importlib.machinery, sys

modules = b["modules"]


# A plain class: importlib.abc's base classes would import importlib.resources (and
# with it pathlib, tempfile, inspect) into every program for nothing.
class Finder:
    # What reconciler.server.subjects lists the package's modules from.
    reconciler_modules = modules

    def find_spec(self, name, path=None, target=None):
        if name not in modules:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=modules[name][0])

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        _package, source, path = modules[module.__name__]
        module.__file__ = "<reconciler>/" + path
        exec(compile(source, module.__file__, "exec"), module.__dict__)


sys.meta_path.insert(0, Finder())
name, function = b["entry"].split(":")
sys.exit(getattr(importlib.import_module(name), function)())
"""


@functools.cache
def library_files() -> dict[str, bytes]:
    """Path below lib-VERSION -> content: ``reconciler/__init__.py`` and every module
    of ``reconciler.server`` and ``reconciler.gitosis``."""
    files = {"reconciler/__init__.py": resources.files("reconciler").joinpath("__init__.py")}
    for package in ("server", "gitosis"):
        for entry in resources.files(f"reconciler.{package}").iterdir():
            if entry.name.endswith(".py"):
                files[f"reconciler/{package}/{entry.name}"] = entry
    return {path: files[path].read_bytes() for path in sorted(files)}


@functools.cache
def library_version() -> str:
    return library_digest(library_files().items())


def install_library_op(*, runtime: bool) -> InstallLibrary:
    """The op that installs this version's library (and, with ``runtime``, the gitosis
    runtime's commands running it)."""
    return InstallLibrary(version=library_version(), files=_encoded_files(), runtime=runtime)


@functools.cache
def _encoded_files() -> dict[str, str]:
    # One copy for every server's op (the ops are values and never change it).
    return {path: base64.b64encode(content).decode() for path, content in library_files().items()}


def _module_name(path: str) -> str:
    name = path[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


_PARSE_LOCK = threading.Lock()
_HOLDERS = (ast.stmt, ast.excepthandler, ast.match_case)


def _statements(nodes: list[Any]) -> Iterator[ast.stmt]:
    """Every statement below ``nodes``, at any depth, without visiting expressions (an
    import is a statement; ast.walk's visit of every expression node was most of a
    program's assembly, which the gathers wait for)."""
    for node in nodes:
        if isinstance(node, ast.stmt):
            yield node
        for name in node._fields:
            value = getattr(node, name)
            # Statements are held only in lists of statements, handlers or match cases.
            if isinstance(value, list) and value and isinstance(value[0], _HOLDERS):
                yield from _statements(value)


def _imports(source: bytes) -> set[str]:
    """The ``reconciler.*`` modules a module's source imports (``from P import M`` may
    name a module M of package P)."""
    found: set[str] = set()
    # CPython 3.11's parser is not safe to run from several threads at once (the
    # gathers of several servers assemble their programs concurrently): "SystemError:
    # AST constructor recursion depth mismatch".
    with _PARSE_LOCK:
        tree = ast.parse(source)
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("reconciler")}


_BLOBS: dict[str, bytes] = {}
_BLOBS_LOCK = threading.Lock()


def program_blob(name: str) -> bytes:
    """Program ``name`` as zlib-compressed JSON: {"loader": LOADER, "entry":
    "module:function", "modules": {module: [is_package, source, path]}} holding the
    modules it needs, for the transport's bootstrap."""
    # Assembled once per process: the gathers of every server ask for it at the same
    # moment, and each assembly parses the modules (about 30 ms of CPU).
    with _BLOBS_LOCK:
        if name not in _BLOBS:
            _BLOBS[name] = entry_blob(PROGRAMS[name])
        return _BLOBS[name]


def entry_blob(entry: str) -> bytes:
    """``program_blob`` for any entry point "module:function" of the library."""
    by_module = {_module_name(path): path for path in library_files()}
    wanted = [entry.split(":")[0]]
    modules: dict[str, list[object]] = {}
    while wanted:
        module = wanted.pop()
        if module in modules or module not in by_module:
            continue
        path = by_module[module]
        source = library_files()[path]
        modules[module] = [path.endswith("/__init__.py"), source.decode("utf-8"), path]
        parts = module.split(".")
        # Its packages too: importing a module imports them first.
        wanted += [".".join(parts[:i]) for i in range(1, len(parts))]
        wanted += sorted(_imports(source))
        if module == subjects.__name__:
            # Found by listing the program's modules, not by an import: every module
            # of the package that declares facts travels with the module that finds them.
            wanted += sorted(
                name
                for name, path in by_module.items()
                if name.rpartition(".")[0] == subjects.PACKAGE
                and subjects.declares_facts(library_files()[path].decode("utf-8"))
            )
    blob = {"loader": LOADER, "entry": entry, "modules": dict(sorted(modules.items()))}
    return zlib.compress(json.dumps(blob, separators=(",", ":")).encode(), 9)
