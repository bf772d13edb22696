"""The replication settings of one server: ``<base>/.reconciler/replication.json``.

Written by ``reconcile apply`` (a ``write_file`` op with ``settings_json``'s bytes),
read by the gather program (``read_settings``) and by the hook (``load_settings``)::

    {"format_version": 1, "server": "master", "peers": ["mirror", "third"],
     "mirror_users": ["git@master", "git@mirror", "git@third"],
     "mode": "sync", "timeout": 30,
     "peer_urls": {"mirror": "ssh://git@10.1.0.2", "third": "/srv/third/repositories"}}

``peer_urls`` holds, per peer, the part of every repository URL on it before
``/NAME.git`` (as the remotes apply adds are made): a repository that has no
remote for a peer yet (one gitosis created on its first push, before an apply
reached it) is replicated to that URL.

The hook walks up from the repository to the first directory holding this file;
that directory is the repositories base.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.server.common import FORMAT_VERSION, SERVER_NAME, SETTINGS_PATH, read_text

MODES = ("sync", "async", "quorum")
# A stray settings file far above the repositories must not be picked up, and a
# deep tree must not make every push slow.
MAX_BASE_DEPTH = 32


class SettingsError(ValueError):
    """The settings file is missing a field or holds a wrong value."""


@dataclass(frozen=True)
class Settings:
    server: str
    peers: tuple[str, ...]
    mirror_users: frozenset[str]
    mode: str = "sync"
    timeout: float = 30.0
    run_kept_hooks: bool = False
    # The admin repository is never replicated by the hook: only reconcile apply
    # sends it to the servers (the servers' keys have no write access to it).
    admin_repository: str = ""
    # Peer -> repository URL base, for repositories that have no remote for it yet.
    peer_urls: Mapping[str, str] = field(default_factory=dict)

    def peer_url(self, peer: str, repository: str) -> str | None:
        """Where ``repository`` is on ``peer``, as apply would set its remote."""
        base = self.peer_urls.get(peer)
        return f"{base}/{repository}.git" if base else None


def settings_json(
    *,
    server: str,
    peers: Iterable[str],
    mirror_users: Iterable[str],
    mode: str = "sync",
    timeout: float = 30,
    run_kept_hooks: bool = False,
    admin_repository: str | None = None,
    peer_urls: Mapping[str, str] | None = None,
) -> bytes:
    """The content of ``SETTINGS_PATH`` for one server, stable for comparison."""
    if mode not in MODES:
        raise ValueError(f"replication mode must be one of {', '.join(MODES)}, not {mode!r}")
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "server": server,
        # Declared order: the hook reports the peers in this order.
        "peers": [p for p in dict.fromkeys(peers) if p != server],
        "mirror_users": sorted(set(mirror_users)),
        "mode": mode,
        "timeout": timeout,
    }
    if run_kept_hooks:
        # Only when on: the settings of every cluster that does not use it stay as they were.
        data["run_kept_hooks"] = True
    if admin_repository is not None:
        data["admin_repository"] = admin_repository
    if peer_urls is not None:
        data["peer_urls"] = {p: u for p, u in sorted(peer_urls.items()) if p != server}
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_settings(data: object) -> Settings:
    if not isinstance(data, dict):
        raise SettingsError("expected a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise SettingsError(f"unsupported format_version {data.get('format_version')!r}")
    server = data.get("server")
    if not isinstance(server, str) or not SERVER_NAME.fullmatch(server):
        raise SettingsError(f"'server' must be a server name, not {server!r}")
    peers = _string_list(data, "peers")
    for peer in peers:
        if not SERVER_NAME.fullmatch(peer):
            raise SettingsError(f"'peers' must hold server names, not {peer!r}")
    mirror_users = _string_list(data, "mirror_users")
    mode = data.get("mode", "sync")
    if mode not in MODES:
        raise SettingsError(f"'mode' must be one of {', '.join(MODES)}, not {mode!r}")
    timeout = data.get("timeout", 30)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= 3600
    ):
        raise SettingsError(f"'timeout' must be a number of seconds in (0, 3600], not {timeout!r}")
    run_kept_hooks = data.get("run_kept_hooks", False)
    if not isinstance(run_kept_hooks, bool):
        raise SettingsError(f"'run_kept_hooks' must be true or false, not {run_kept_hooks!r}")
    admin = data.get("admin_repository", "")
    if not isinstance(admin, str):
        raise SettingsError(f"'admin_repository' must be a repository name, not {admin!r}")
    peer_urls = data.get("peer_urls", {})
    if not isinstance(peer_urls, dict) or not all(
        isinstance(p, str) and SERVER_NAME.fullmatch(p) and isinstance(u, str) and _url_base(u)
        for p, u in peer_urls.items()
    ):
        raise SettingsError(
            "'peer_urls' must map server names to repository URL bases "
            f"(ssh://HOST or an absolute path), not {peer_urls!r}"
        )
    return Settings(
        server=server,
        peers=tuple(p for p in peers if p != server),
        mirror_users=frozenset(mirror_users),
        mode=str(mode),
        timeout=float(timeout),
        run_kept_hooks=run_kept_hooks,
        admin_repository=admin,
        peer_urls={p: u for p, u in peer_urls.items() if p != server},
    )


def _url_base(url: str) -> bool:
    # Becomes a git remote URL: never an option, never a line break.
    return (
        url.startswith(("ssh://", "/"))
        and not any(c in url for c in "\n\r\0")
        and not url.endswith("/")
    )


def _string_list(data: Mapping[str, object], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"'{key}' must be a list of non-empty strings")
    return list(value)


def load_settings(base: Path) -> Settings:
    path = base / SETTINGS_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return parse_settings(data)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc


def find_base(git_dir: Path) -> Path | None:
    """The nearest directory above ``git_dir`` that holds the settings file."""
    for depth, directory in enumerate(git_dir.parents):
        if depth >= MAX_BASE_DEPTH:
            break
        if (directory / SETTINGS_PATH).is_file():
            return directory
    return None


def read_settings(base: str) -> dict[str, Any]:
    """Gather: the settings file's text and its JSON (``{"invalid": true}`` when it
    does not parse; None when absent)."""
    text = read_text(os.path.join(base, SETTINGS_PATH))
    try:
        settings = json.loads(text) if text else None
    except ValueError:
        settings = {"invalid": True}
    return {"settings": settings, "settings_text": text}
