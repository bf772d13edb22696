"""Reading one YAML file safely, keeping where every key and value came from.

cluster.d/ is pushed by many people and read by cron, so the reader is defensive:
the file must be UTF-8 text of sane size with one document, no aliases (an alias
bomb expands exponentially once walked), no deep nesting (the composer recurses),
no duplicate keys and only plain scalars. Any problem becomes one
``ReconcilerError`` naming file, line and column; never a traceback.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import Location, ReconcilerError

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 16
# Characters no YAML file written by a person contains (tab, LF and CR excepted).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# One element of a path into a document: a mapping key or a sequence index.
PathItem = str | int
DocPath = tuple[PathItem, ...]


@dataclass
class YamlDocument:
    """A parsed file as plain Python data plus the position of every node."""

    file: str
    data: Any
    key_positions: dict[DocPath, tuple[int, int]] = field(default_factory=dict)
    value_positions: dict[DocPath, tuple[int, int]] = field(default_factory=dict)

    def location(self, path: DocPath, *, key: bool = False) -> Location:
        """Where the node at ``path`` is; falls back to its nearest known ancestor."""
        probe = tuple(path)
        while True:
            positions = (
                (self.key_positions, self.value_positions)
                if key
                else (self.value_positions, self.key_positions)
            )
            for table in positions:
                if probe in table:
                    line, column = table[probe]
                    return Location(self.file, line, column)
            if not probe:
                return Location(self.file, 1, 1)
            probe = probe[:-1]


def _error(file: str, line: int, column: int, message: str) -> ReconcilerError:
    return ReconcilerError(message, Location(file, line, column))


def _decode(data: bytes, file: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise _error(
            file, line, column, f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})"
        ) from None
    control = _CONTROL_RE.search(text)
    if control is not None:
        preceding = text[: control.start()]
        line = preceding.count("\n") + 1
        column = control.start() - (preceding.rfind("\n") + 1) + 1
        raise _error(
            file,
            line,
            column,
            f"the file contains the control character U+{ord(control.group()):04X}; "
            "is it a binary file?",
        )
    return text


def _check_events(text: str, file: str) -> None:
    """Refuse aliases, several documents and deep nesting before composing."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        CollectionStartEvent,
        DocumentStartEvent,
    )

    depth = 0
    documents = 0
    for event in YAML(typ="rt").parse(io.StringIO(text)):
        problem = None
        if isinstance(event, AliasEvent):
            problem = "YAML aliases ('*name') are not allowed in cluster.d/; write the value out"
        elif isinstance(event, DocumentStartEvent):
            documents += 1
            if documents > 1:
                problem = "the file holds more than one YAML document; use one document per file"
        elif isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                problem = f"the YAML is nested more than {MAX_DEPTH} levels deep"
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        if problem is not None:
            mark = event.start_mark
            raise _error(file, mark.line + 1, mark.column + 1, problem)


def _yaml_error(exc: Exception, file: str) -> ReconcilerError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    problem = " ".join(str(problem).split())
    if mark is None:
        return ReconcilerError(f"invalid YAML: {problem}", Location(file, 1, 1))
    return _error(file, mark.line + 1, mark.column + 1, f"invalid YAML: {problem}")


def _explicit_tag(node: Any) -> bool:
    """Whether a mapping or sequence was written with a tag of its own."""
    return getattr(getattr(node, "tag", None), "value", None) is not None


class _Converter:
    """Turns ruamel's round-trip nodes into plain data, recording positions."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.document = YamlDocument(file, None)
        self.errors: list[ReconcilerError] = []

    def scalar(self, value: Any, path: DocPath) -> Any:
        import datetime

        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return str(value)
        location = self.document.location(path)
        if isinstance(value, datetime.date):
            problem = "is read as a date by YAML; quote it to make it a string"
        else:
            problem = "uses a YAML tag or type that cluster.d/ does not accept"
        self.errors.append(ReconcilerError(f"this value {problem}", location))
        return None

    def convert(self, node: Any, path: DocPath) -> Any:
        from ruamel.yaml.comments import CommentedMap, CommentedSeq

        if isinstance(node, CommentedMap | CommentedSeq) and _explicit_tag(node):
            # A tagged collection (``!!python/object/apply:...``, ``!include [...]``)
            # carries no positions for its items; refuse it before walking it.
            self.errors.append(
                ReconcilerError(
                    "this value uses a YAML tag or type that cluster.d/ does not accept",
                    self.document.location(path),
                )
            )
            return None
        if isinstance(node, CommentedMap):
            result: dict[str, Any] = {}
            for key in node:
                key_line, key_col = node.lc.key(key)
                position = (key_line + 1, key_col + 1)
                if isinstance(key, bool) or not isinstance(key, str | int):
                    self.errors.append(
                        _error(
                            self.file,
                            *position,
                            f"the key {key!r} is not a name; quote it if it is meant as one",
                        )
                    )
                    continue
                name = str(key)
                child = (*path, name)
                self.document.key_positions[child] = position
                value = node[key]
                if value is None:
                    self.document.value_positions[child] = position
                else:
                    value_line, value_col = node.lc.value(key)
                    self.document.value_positions[child] = (value_line + 1, value_col + 1)
                result[name] = self.convert(value, child)
            return result
        if isinstance(node, CommentedSeq):
            items: list[Any] = []
            for index, value in enumerate(node):
                child = (*path, index)
                line, col = node.lc.item(index)
                self.document.value_positions[child] = (line + 1, col + 1)
                self.document.key_positions[child] = (line + 1, col + 1)
                items.append(self.convert(value, child))
            return items
        if isinstance(node, dict | list | set):
            self.errors.append(
                ReconcilerError(
                    "this value uses a YAML type that cluster.d/ does not accept",
                    self.document.location(path),
                )
            )
            return None
        return self.scalar(node, path)


def read_yaml(path: Path, file: str) -> YamlDocument:
    """Parse ``path`` (shown as ``file`` in messages) into a ``YamlDocument``.

    Raises ``ReconcilerError`` for a file that is not sane YAML, or ``ConfigErrors``
    for several values of types cluster.d/ does not accept.
    """
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ReconcilerError(
                f"the file is {size} bytes, more than the limit of {MAX_FILE_BYTES}",
                Location(file),
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ReconcilerError(
            f"cannot read the file: {exc.strerror or exc}", Location(file)
        ) from None
    cached = _cached_document(raw, file)
    if cached is not None:
        return cached
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from reconciler.errors import ConfigErrors

    text = _decode(raw, file)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        _check_events(text, file)
        node = yaml.load(text)
    except YAMLError as exc:
        raise _yaml_error(exc, file) from None
    except RecursionError:
        raise ReconcilerError("the YAML is nested too deeply", Location(file, 1, 1)) from None
    converter = _Converter(file)
    root_line = getattr(getattr(node, "lc", None), "line", None)
    root_col = getattr(getattr(node, "lc", None), "col", None)
    if isinstance(root_line, int) and isinstance(root_col, int):
        converter.document.value_positions[()] = (root_line + 1, root_col + 1)
    converter.document.data = converter.convert(node, ())
    if converter.errors:
        raise ConfigErrors(converter.errors)
    _store_document(raw, converter.document)
    return converter.document


# -- a cache of parsed files, keyed by their exact bytes ---------------------------
#
# ruamel's round-trip parser is pure Python: parsing a cluster.d/ of 10,000
# repositories takes seconds, on every plan. A file whose bytes were parsed before
# gives the same document again, so the result is kept under the sha256 of those
# bytes (and of the parser's version). Only files that parsed without problems are
# kept; the cache holds nothing about servers, so it cannot make a plan stale.

CACHE_FORMAT = 1
CACHE_ENV = "RECONCILER_YAML_CACHE"  # a directory, or "off"
CACHE_MAX_AGE = 14 * 24 * 3600


def _cache_dir() -> Path | None:
    from reconciler.caches import cache_dir

    return cache_dir(CACHE_ENV, "yaml")


def _parser_identity() -> str:
    """Which ruamel.yaml parsed the file, found without importing it (that alone
    costs a fifth of a second): its module file, size and modification time."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("ruamel.yaml")
    origin = spec.origin if spec is not None else None
    if not origin:
        raise OSError("ruamel.yaml not found")
    info = os.stat(origin)
    return f"{origin}:{info.st_size}:{info.st_mtime_ns}"


def _cache_file(raw: bytes) -> Path | None:
    import hashlib
    import sys

    directory = _cache_dir()
    if directory is None:
        return None
    salt = f"{CACHE_FORMAT}\0{_parser_identity()}\0{sys.version_info[:2]}\0".encode()
    return directory / (hashlib.sha256(salt + raw).hexdigest() + ".marshal")


def _cached_document(raw: bytes, file: str) -> YamlDocument | None:
    import marshal

    try:
        path = _cache_file(raw)
        if path is None:
            return None
        # Our own file in a 0700 directory; marshal builds values and never runs code.
        stored = marshal.loads(path.read_bytes())  # noqa: S302
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if (
        not isinstance(stored, tuple)
        or len(stored) != 3
        or not isinstance(stored[1], dict)
        or not isinstance(stored[2], dict)
    ):
        return None
    data, keys, values = stored
    return YamlDocument(file, data, keys, values)


def _store_document(raw: bytes, document: YamlDocument) -> None:
    import marshal
    import os
    import tempfile
    import time

    try:
        path = _cache_file(raw)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        blob = marshal.dumps((document.data, document.key_positions, document.value_positions))
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(temp, path)
        # Forget files of old versions of cluster.d/.
        cutoff = time.time() - CACHE_MAX_AGE
        for old in path.parent.glob("*.marshal"):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    except (OSError, ValueError):
        pass  # a cache that cannot be written only costs time
