"""What apply installs: the hook's bytes, its marker, and the settings file."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

import pytest

from reconciler.replication import (
    HOOK_MARKER,
    HOOK_VERSION,
    hook_digest,
    hook_source,
    post_receive,
    settings_json,
)
from reconciler.replication.post_receive import SettingsError, parse_settings

HOOK_FILE = Path(post_receive.__file__)


def test_the_hook_is_the_file_with_its_marker_and_version() -> None:
    source = hook_source()
    assert source == HOOK_FILE.read_bytes()
    lines = source.decode().splitlines()
    assert lines[0] == "#!/usr/bin/env python3"
    assert lines[1] == HOOK_MARKER
    assert f"HOOK_VERSION = {HOOK_VERSION}" in lines
    assert hook_digest() == hashlib.sha256(source).hexdigest()


def test_the_hook_imports_only_the_standard_library() -> None:
    tree = ast.parse(hook_source())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            modules.add((node.module or "").split(".")[0])
    assert modules - {"__future__"} <= sys.stdlib_module_names


def test_the_hook_parses_as_python_3_9() -> None:
    ast.parse(hook_source(), feature_version=(3, 9))


def test_settings_round_trip_through_the_hook() -> None:
    data = json.loads(
        settings_json(
            server="master",
            peers=["mirror", "third", "master", "mirror"],
            mirror_users=["git@third", "git@master", "git@mirror"],
            mode="async",
            timeout=30,
        )
    )
    assert data == {
        "format_version": 1,
        "server": "master",
        "peers": ["mirror", "third"],
        "mirror_users": ["git@master", "git@mirror", "git@third"],
        "mode": "async",
        "timeout": 30,
    }
    settings = parse_settings(data)
    assert settings.peers == ("mirror", "third")
    assert settings.mode == "async"
    assert settings.timeout == 30.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format_version"),
        ({"server": ""}, "server"),
        ({"server": "a=b"}, "server"),
        ({"peers": ["-x"]}, "peers"),
        ({"peers": "mirror"}, "peers"),
        ({"mirror_users": [1]}, "mirror_users"),
        ({"mode": "eventual"}, "mode"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": True}, "timeout"),
    ],
)
def test_wrong_settings_are_refused(change: dict[str, object], message: str) -> None:
    data = json.loads(settings_json(server="master", peers=["mirror"], mirror_users=[])) | change
    with pytest.raises(SettingsError, match=message):
        parse_settings(data)


def test_an_unknown_mode_is_refused_when_writing() -> None:
    with pytest.raises(ValueError, match="mode"):
        settings_json(server="m", peers=[], mirror_users=[], mode="later")
