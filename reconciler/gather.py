"""Gathering facts: one program per server, all servers in parallel."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import threading
import types
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from reconciler.desired import Cluster, Desired, Server
from reconciler.errors import ReconcilerError, ServerError
from reconciler.facts import Facts, ServerFacts, parse_server_facts
from reconciler.gather_cache import GatherCache
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
    rest: Callable[[], Any] | None = None,
) -> Any:
    """Run a server-side program and decode its JSON answer (``rest``: see
    ``run_program``)."""
    result = run_program(
        transport, name, [], payload, timeout=timeout, as_admin=as_admin, rest=rest
    )
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


def first_request(server: Server, cluster: Cluster, want_refs: bool) -> dict[str, object]:
    """What the gather program starts on: known from the cluster: and servers: entries
    alone. The rest (``gather_request``) follows once all of cluster.d/ is loaded."""
    return {
        "repositories": server.repositories,
        "admin": cluster.admin_repository,
        "refs": want_refs,
        "more": True,
    }


def _gather(
    transport: Transport, server: Server, first: dict[str, object], rest: Callable[[], Any]
) -> ServerFacts:
    # Connect first: meanwhile the program all of them send is assembled.
    host_key = transport.host_key_line()
    # What this operator remembers of the server's repositories: those unchanged since
    # are not read again (reconciler.gather_cache).
    cache = GatherCache.for_server(server)
    if cache is not None:
        first = {**first, "known": cache.known(bool(first.get("refs")))}
    data = run_json_program(transport, "gather", first, rest=rest)
    if cache is not None and isinstance(data, dict):
        cache.merge(transport.server, data)
        cache.save()
    return parse_server_facts(transport.server, data, host_key=host_key)


def gather_server(
    desired: Desired, transport: Transport, *, want_refs: bool = False
) -> ServerFacts:
    from reconciler.planning.repository_settings import gather_request

    server = desired.servers[transport.server]
    first = first_request(server, desired.cluster, want_refs)
    return _gather(transport, server, first, lambda: gather_request(desired))


class GatherAbandoned(Exception):
    """An early gather was given up before the rest of its request was sent."""


class EarlyGather:
    """Every server's gather, started as soon as cluster.d/'s servers are known.

    The operator's start-up and the loading of the rest of cluster.d/ (10,000
    repositories take a few tenths of a second) would otherwise come before any
    server starts its walk. Each server connects (its host key verified as always)
    and starts on the first part of its request; the rest is sent by ``finish``
    once cluster.d/ is loaded and valid. ``abandon`` (cluster.d/ invalid) ends
    every program's input there, and a gather program writes nothing before the
    rest of its request has come. Daemon threads: a server still connecting does not
    hold up the exit of a command that has given up on it.
    """

    def __init__(
        self, cluster: Cluster, servers: Mapping[str, Server], transports: dict[str, Transport]
    ) -> None:
        self.transports = transports
        self._known = (cluster.admin_repository, dict(servers))
        self._rest: dict[str, object] | None = None
        self._ready = threading.Event()
        self.futures: dict[str, Future[ServerFacts]] = {}
        for name, transport in transports.items():
            future: Future[ServerFacts] = Future()
            first = first_request(servers[name], cluster, False)
            threading.Thread(
                target=self._run, args=(future, transport, servers[name], first), daemon=True
            ).start()
            self.futures[name] = future
        program_source("gather")  # assembled while the connections are made

    def _run(
        self,
        future: Future[ServerFacts],
        transport: Transport,
        server: Server,
        first: dict[str, object],
    ) -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(_gather(transport, server, first, self._wait_for_rest))
        except BaseException as exc:  # handed to whoever reads the result
            future.set_exception(exc)

    def _wait_for_rest(self) -> dict[str, object]:
        if not self._ready.wait(GATHER_TIMEOUT) or self._rest is None:
            raise GatherAbandoned
        return self._rest

    def matches(self, desired: Desired) -> bool:
        """Whether it was started for the servers ``desired`` holds (it always is: the
        same entries give the same values; a check, not a decision)."""
        return self._known == (desired.cluster.admin_repository, desired.servers)

    def finish(self, desired: Desired) -> dict[str, Future[ServerFacts]]:
        """Send every server the rest of its request; the futures of their facts."""
        from reconciler.planning.repository_settings import gather_request

        self._rest = gather_request(desired)
        self._ready.set()
        return self.futures

    def abandon(self) -> None:
        self._ready.set()


def gather_facts(
    desired: Desired,
    transports: dict[str, Transport],
    reporter: Reporter | None = None,
    *,
    want_refs: bool = False,
    started: Mapping[str, Future[ServerFacts]] | None = None,
) -> Facts:
    """Every server's facts; ``started``: the gathers already under way (``EarlyGather``)."""
    reporter = reporter or Reporter()
    reporter.progress(f"gathering facts from {len(transports)} server(s)")
    if started is not None:
        return _collect(started, transports)

    def one(name: str) -> ServerFacts:
        return gather_server(desired, transports[name], want_refs=want_refs)

    with ThreadPoolExecutor(max_workers=max(1, len(transports))) as pool:
        futures = {name: pool.submit(one, name) for name in transports}
        program_source("gather")  # assembled while the connections are made
        return _collect(futures, transports)


def _collect(futures: Mapping[str, Future[ServerFacts]], transports: dict[str, Transport]) -> Facts:
    servers: dict[str, ServerFacts] = {}
    errors: dict[str, ReconcilerError] = {}
    missing_git_users: dict[str, str] = {}
    missing_host_keys: dict[str, str] = {}
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
