"""Gathering facts: one program per server, all servers in parallel."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from reconciler.desired import Desired, Server
from reconciler.errors import ReconcilerError, ServerError
from reconciler.facts import Facts, ServerFacts, parse_server_facts
from reconciler.report import Reporter
from reconciler.transport import (
    NO_GIT_USER_MARKER,
    NO_GIT_USER_STATUS,
    Transport,
    program_source,
    run_program,
)

GATHER_TIMEOUT = 300.0
T = TypeVar("T")

# Programs that answer in zlib-compressed JSON (reconciler.server.gather: the facts of
# 10,000 repositories are about 4 MB of JSON, 130 KB compressed).
COMPRESSED_ANSWERS = frozenset({"gather"})


class _DeferredInvoke(types.ModuleType):
    """Stands in for ``invoke`` until something uses it, then imports it and hands over.

    paramiko.config imports invoke only to run an ssh config's ``Match exec``; the
    import pulls in unittest.mock and asyncio, a third of paramiko's import time
    on every plan. ``import invoke`` finds this module; the first attribute asked of
    it (``invoke.run``, in a Match exec) imports the real one, which then replaces it.
    """

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get("invoke") is self:
            del sys.modules["invoke"]
        return getattr(importlib.import_module("invoke"), name)


def _defer_invoke() -> None:
    if "invoke" not in sys.modules and importlib.util.find_spec("invoke") is not None:
        sys.modules["invoke"] = _DeferredInvoke("invoke")


def open_transport(server: Server, *, trust_new_host_keys: bool = False) -> Transport:
    url = server.url
    if url.kind == "local":
        from reconciler.transport.local import LocalTransport

        return LocalTransport(server.name, Path(url.path or "."))
    if "paramiko" not in sys.modules:
        _defer_invoke()
    from reconciler.transport.ssh import SshTarget, SshTransport

    return SshTransport(
        server.name,
        SshTarget(
            host=url.host or "",
            port=url.port,
            user=url.user,
            host_key=server.host_key,
            identity=server.identity,
            become=server.become,
        ),
        trust_new_host_keys=trust_new_host_keys,
    )


def open_transports(
    desired: Desired, names: Iterable[str], *, trust_new_host_keys: bool = False
) -> dict[str, Transport]:
    return {
        name: open_transport(desired.servers[name], trust_new_host_keys=trust_new_host_keys)
        for name in names
    }


class GitUserMissing(ServerError):
    """The server was reached as an admin, and the git user to act as does not exist."""

    def __init__(self, server: str, user: str) -> None:
        super().__init__(server, f"the git user {user} does not exist")
        self.user = user


def run_json_program(
    transport: Transport,
    name: str,
    payload: Any,
    *,
    timeout: float = GATHER_TIMEOUT,
    as_admin: bool = False,
) -> Any:
    """Run a server-side program and decode its JSON answer."""
    result = run_program(transport, name, [], payload, timeout=timeout, as_admin=as_admin)
    if result.returncode == NO_GIT_USER_STATUS and NO_GIT_USER_MARKER in result.stderr_text:
        user = result.stderr_text.split(NO_GIT_USER_MARKER, 1)[1].split()[0]
        raise GitUserMissing(transport.server, user)
    if result.returncode != 0:
        raise ServerError(
            transport.server, program_failure(name, result.returncode, result.stderr_text)
        )
    compressed = name in COMPRESSED_ANSWERS
    try:
        return json.loads(zlib.decompress(result.stdout) if compressed else result.stdout)
    except (ValueError, zlib.error) as exc:
        what = "zlib-compressed JSON" if compressed else "JSON"
        raise ServerError(
            transport.server,
            f"the {name} program's answer is not {what}: {result.stdout[:80]!r}",
        ) from exc


def ask_each(servers: Iterable[str], ask: Callable[[str], T]) -> dict[str, T]:
    """``ask(server)`` for every server at once; the answers of those that gave one (a
    server that fails with ``ReconcilerError`` is left out, for the caller to report)."""
    names = list(servers)
    answers: dict[str, T] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(ask, name) for name in names}
        for name, future in futures.items():
            try:
                answers[name] = future.result()
            except ReconcilerError:
                continue
    return answers


def program_failure(name: str, returncode: int, stderr: str) -> str:
    """Why a server-side program failed, in one sentence plus its whole stderr."""
    text = stderr.strip()
    if text.startswith("sudo:"):
        return (
            f"switching user with sudo failed: {text}; the login user needs password-less "
            "sudo (NOPASSWD) to root or to the git user"
        )
    if "gitosis.serve" in text and "denied" in text:
        # sshd ran the forced command of a gitosis user's key instead of python3.
        return (
            f"the key the reconciler logged in with is a gitosis user's key: sshd ran "
            f"gitosis-serve instead of the {name} program, and gitosis answered "
            f"{text.splitlines()[-1]!r}; give the reconciler a key of its own as a plain "
            "line (no command=) above gitosis's marker in the git user's "
            "~/.ssh/authorized_keys, and name it with identity: or in ~/.ssh/config"
        )
    if not text:
        return f"the {name} program failed with exit status {returncode} and printed nothing"
    return f"the {name} program failed (exit status {returncode}): {text}"


def gather_server(
    desired: Desired, transport: Transport, *, want_refs: bool = False
) -> ServerFacts:
    from reconciler.planning.repository_settings import gather_request

    server = desired.servers[transport.server]
    # Connect first: meanwhile gather_facts assembles the program all of them send.
    host_key = transport.host_key_line()
    data = run_json_program(
        transport,
        "gather",
        {
            "repositories": server.repositories,
            "admin": desired.cluster.admin_repository,
            "refs": want_refs,
            **gather_request(desired),
        },
    )
    return parse_server_facts(transport.server, data, host_key=host_key)


def gather_facts(
    desired: Desired,
    transports: dict[str, Transport],
    reporter: Reporter | None = None,
    *,
    want_refs: bool = False,
) -> Facts:
    reporter = reporter or Reporter()
    reporter.progress(f"gathering facts from {len(transports)} server(s)")
    servers: dict[str, ServerFacts] = {}
    errors: dict[str, ReconcilerError] = {}
    missing_git_users: dict[str, str] = {}
    missing_host_keys: dict[str, str] = {}

    def one(name: str) -> ServerFacts:
        return gather_server(desired, transports[name], want_refs=want_refs)

    with ThreadPoolExecutor(max_workers=max(1, len(transports))) as pool:
        futures = {name: pool.submit(one, name) for name in transports}
        program_source("gather")  # assembled while the connections are made
        for name, future in futures.items():
            try:
                servers[name] = future.result()
            except GitUserMissing as missing:
                missing_git_users[name] = missing.user
                host_key = transports[name].host_key_line()
                if host_key:
                    missing_host_keys[name] = host_key
            except ReconcilerError as exc:
                errors[name] = exc
    return Facts(
        servers=servers,
        errors=errors,
        missing_git_users=missing_git_users,
        missing_host_keys=missing_host_keys,
    )
