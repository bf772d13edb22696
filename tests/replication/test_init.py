"""What apply installs: the hook stub, its marker, the library it runs, the settings file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.replication import HOOK_MARKER, settings_json, stub
from reconciler.server.settings import SettingsError, parse_settings
from reconciler.testing.library import install_server_library


def test_the_hook_is_a_short_stub_with_its_marker_naming_the_library() -> None:
    source = stub("/home/git")
    lines = source.decode().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == HOOK_MARKER
    # The entry point is the hook's own name: hooks/proc-receive links here.
    assert lines[-1] == 'exec /home/git/.reconciler/server/bin/"${0##*/}" "$@"'
    assert len(source) < 400
    # A home with a space or a quote in it is still one word for sh.
    assert stub("/srv/it's git").decode().splitlines()[-1] == (
        'exec \'/srv/it\'"\'"\'s git/.reconciler/server/bin\'/"${0##*/}" "$@"'
    )


def test_the_stub_runs_the_installed_library(tmp_path: Path) -> None:
    home = tmp_path / "home with space"
    home.mkdir()
    hook = tmp_path / "post-receive"
    hook.write_bytes(install_server_library(home))
    hook.chmod(0o755)
    done = subprocess.run(
        [str(hook), "--drain"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("usage: post-receive --drain BASE")


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
        ({"peer_urls": ["mirror"]}, "peer_urls"),
        ({"peer_urls": {"mirror": "-oProxyCommand=x"}}, "peer_urls"),
        ({"peer_urls": {"mirror": "ssh://m\n"}}, "peer_urls"),
        ({"peer_urls": {"-x": "ssh://m"}}, "peer_urls"),
    ],
)
def test_wrong_settings_are_refused(change: dict[str, object], message: str) -> None:
    data = json.loads(settings_json(server="master", peers=["mirror"], mirror_users=[])) | change
    with pytest.raises(SettingsError, match=message):
        parse_settings(data)


def test_peer_urls_name_where_each_peer_keeps_a_repository() -> None:
    data = settings_json(
        server="master",
        peers=["mirror", "third"],
        mirror_users=[],
        peer_urls={"master": "ssh://me", "mirror": "ssh://git@m:2222", "third": "/srv/t/repos"},
    )
    settings = parse_settings(json.loads(data))
    assert settings.peer_urls == {"mirror": "ssh://git@m:2222", "third": "/srv/t/repos"}
    assert settings.peer_url("mirror", "tools/x") == "ssh://git@m:2222/tools/x.git"
    assert settings.peer_url("master", "x") is None


def test_an_unknown_mode_is_refused_when_writing() -> None:
    with pytest.raises(ValueError, match="mode"):
        settings_json(server="m", peers=[], mirror_users=[], mode="later")
