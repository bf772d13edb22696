"""Remotes: each repository's remotes as its config says (gather), and the managed
peer remotes made or taken out (execute's ``set_remote``, ``remove_remote``)."""

from __future__ import annotations

from typing import Any

from reconciler.server.common import command, git_dir, run
from reconciler.server.ops import RemoveRemote, SetRemote, handler


def remote_facts(config: dict[tuple[str, str | None], dict[str, list[str]]]) -> dict[str, Any]:
    remotes: dict[str, Any] = {}
    for (section, sub), values in config.items():
        if section == "remote" and sub is not None:
            urls = values.get("url")
            remote: dict[str, Any] = {"url": urls[-1] if urls else None}
            # Absent keys mean the defaults (None, [], false): at 10,000 repositories
            # with two remotes each, writing them out is a fifth of the answer.
            for key in ("pushurl", "mirror"):
                if values.get(key):
                    remote[key] = values[key][-1]
            if values.get("fetch"):
                remote["fetch"] = values["fetch"]
            if (values.get("reconcilermanaged") or ["false"])[-1] == "true":
                remote["managed"] = True
            remotes[sub] = remote
    return remotes


def local_config(repo: str) -> list[tuple[str, str]] | None:
    """The repository's own config as (key, value) pairs, in one git call; None if unreadable."""
    done = command(["git", "--git-dir", repo, "config", "--local", "-z", "--list"])
    if done.returncode != 0:
        return None
    entries = []
    for item in done.stdout.split(b"\0"):
        if item:
            key, _, value = item.partition(b"\n")
            entries.append((key.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
    return entries


def op_set_remote(op: SetRemote) -> None:
    repo = git_dir(op.repo)
    name = op.name
    if op.replace:
        command(["git", "--git-dir", repo, "config", "--remove-section", f"remote.{name}"])
    # Read the config once and touch only what differs: every git call is a process,
    # and apply sets two remotes in each of thousands of repositories.
    entries = local_config(repo)
    prefix = f"remote.{name}."
    seen: dict[str, list[str]] = {}
    for key, value in entries or []:
        if key.startswith(prefix):
            seen.setdefault(key[len(prefix) :], []).append(value)
    for key in ("fetch", "mirror", "pushurl"):
        if entries is None or key in seen:
            command(["git", "--git-dir", repo, "config", "--unset-all", f"remote.{name}.{key}"])
    if entries is None or seen.get("url") != [op.url]:
        run(["git", "--git-dir", repo, "config", f"remote.{name}.url", op.url])
    if entries is None or seen.get("reconcilermanaged") != ["true"]:
        run(["git", "--git-dir", repo, "config", f"remote.{name}.reconcilerManaged", "true"])


def op_remove_remote(op: RemoveRemote) -> None:
    repo = git_dir(op.repo)
    run(["git", "--git-dir", repo, "config", "--remove-section", f"remote.{op.name}"])


OPS = dict(
    [
        handler(SetRemote, op_set_remote),
        handler(RemoveRemote, op_remove_remote),
    ]
)
