"""schemas/cluster.schema.json is generated from the models and kept fresh."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.desired.schema import TOP_LEVEL_KEYS, schema_text

PROJECT = Path(__file__).resolve().parents[2]
SCHEMA = PROJECT / "schemas" / "cluster.schema.json"


def test_schema_file_is_fresh() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == schema_text(), (
        "schemas/cluster.schema.json is stale; regenerate it with "
        "'uv run python -m reconciler.desired.schema'"
    )


def test_schema_describes_the_format() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert tuple(schema["properties"]) == TOP_LEVEL_KEYS
    assert schema["additionalProperties"] is False
    server = schema["$defs"]["ServerSpec"]
    assert server["required"] == ["url"]
    assert server["additionalProperties"] is False


def test_example_files_name_the_schema() -> None:
    for path in sorted((PROJECT / "cluster.d").glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/cluster.schema.json", path
