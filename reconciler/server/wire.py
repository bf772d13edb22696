"""One definition of a JSON record for both sides: a frozen dataclass whose fields are
its JSON keys.

Standard library only, Python 3.9: the server side builds and reads the same classes
the operator's side does (ops in ``reconciler.server.ops``, facts in the subject
modules), so a renamed field is a type error on both sides and a decoding error in
unit tests, not a key silently missing at the far end.

``Record.to_json`` is the fields by name; ``Record.from_json`` takes exactly those
keys back (a missing required key, an unknown key or a value of the wrong type is a
``WireError`` naming the record and the field), with JSON arrays as tuples, so a
record read back equals the one written. Field annotations are read from their text
(the annotations are strings here, and ``X | None`` cannot be evaluated on 3.9);
only the forms below are allowed, and a class using another fails at its first
use (``Record.shapes``; tests call it for every class).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

# A field's shape: ("str",), ("int",), ("float",), ("bool",), ("any",),
# ("optional", shape), ("tuple", shape) for tuple[X, ...], ("fixed", (shapes...)) for
# tuple[X, Y], ("dict", shape) for dict[str, X], ("record", class) for a nested record
# named in the class's RECORDS.
Shape = tuple[Any, ...]
_SCALARS = {"str", "int", "float", "bool", "Any"}

R = TypeVar("R", bound="Record")


class WireError(ValueError):
    """A JSON value is not the record it should be; the message says where."""


def _split(text: str) -> list[str]:
    """Split at top-level commas (not those inside brackets)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_shape(text: str, records: dict[str, type] | None = None) -> Shape:
    """The shape of an annotation's text; ValueError for a form not supported."""
    text = text.strip()
    if text.endswith("| None"):
        return ("optional", parse_shape(text[: -len("| None")], records))
    if text in _SCALARS:
        return ("any",) if text == "Any" else (text,)
    if records and text in records:
        return ("record", records[text])
    if text.startswith("tuple[") and text.endswith("]"):
        inner = _split(text[len("tuple[") : -1])
        if len(inner) == 2 and inner[1] == "...":
            return ("tuple", parse_shape(inner[0], records))
        return ("fixed", tuple(parse_shape(part, records) for part in inner))
    if text.startswith("dict[str,") and text.endswith("]"):
        return ("dict", parse_shape(text[len("dict[str,") : -1], records))
    raise ValueError(f"unsupported field annotation {text!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def convert(value: Any, shape: Shape, where: str) -> Any:
    """``value`` (decoded JSON) as ``shape`` says, or WireError."""
    kind = shape[0]
    if kind == "any":
        return value
    if kind == "optional":
        return None if value is None else convert(value, shape[1], where)
    if kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "tuple":
        if isinstance(value, (list, tuple)):
            return tuple(convert(item, shape[1], f"{where}[{i}]") for i, item in enumerate(value))
    elif kind == "fixed":
        if isinstance(value, (list, tuple)) and len(value) == len(shape[1]):
            return tuple(
                convert(item, part, f"{where}[{i}]")
                for i, (item, part) in enumerate(zip(value, shape[1]))  # noqa: B905 (3.9)
            )
    elif kind == "dict":
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {key: convert(item, shape[1], f"{where}.{key}") for key, item in value.items()}
    elif kind == "record":
        return shape[1].from_json(value, where)
    expected = {
        "str": "a string",
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "tuple": "a list",
        "fixed": f"a list of {len(shape[1]) if kind == 'fixed' else 0}",
        "dict": "an object",
    }[kind]
    raise WireError(f"{where} must be {expected}, not {value!r:.80}")


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of every wire record; subclasses are frozen dataclasses."""

    # Other records a field may hold, by the name its annotation uses.
    RECORDS: ClassVar[dict[str, type]] = {}
    # Leave fields at their defaults out of the JSON (facts sent for every repository).
    OMIT_DEFAULTS: ClassVar[bool] = False
    # Set once per class, on first use: field name -> (shape, required).
    _SHAPES: ClassVar[dict[str, tuple[Shape, bool]]]

    @classmethod
    def shapes(cls) -> dict[str, tuple[Shape, bool]]:
        found = cls.__dict__.get("_SHAPES")
        if found is None:
            found = {}
            for item in dataclasses.fields(cls):
                required = (
                    item.default is dataclasses.MISSING
                    and item.default_factory is dataclasses.MISSING
                )
                found[item.name] = (parse_shape(str(item.type), cls.RECORDS), required)
            cls._SHAPES = found
        return found

    def to_json(self) -> dict[str, Any]:
        data = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if self.OMIT_DEFAULTS and value == item.default:
                continue
            data[item.name] = _plain(value)
        return data

    @classmethod
    def from_json(cls: type[R], data: Any, where: str = "") -> R:
        name = where or cls.__name__
        if not isinstance(data, dict):
            raise WireError(f"{name} must be an object, not {data!r:.80}")
        shapes = cls.shapes()
        unknown = sorted(set(data) - set(shapes) - cls.envelope())
        if unknown:
            raise WireError(f"{name} has unknown field {unknown[0]!r}")
        values = {}
        for key, (shape, required) in shapes.items():
            if key in data:
                values[key] = convert(data[key], shape, f"{name}.{key}")
            elif required:
                raise WireError(f"{name} lacks field {key!r}")
        return cls(**values)

    @classmethod
    def envelope(cls) -> frozenset[str]:
        """Keys beside the fields that from_json accepts (and ignores)."""
        return frozenset()
