"""Gathering facts: one program per server, all servers in parallel."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reconciler.desired import Desired, Server
from reconciler.errors import ReconcilerError, ServerError
from reconciler.facts import Facts, ServerFacts, parse_server_facts
from reconciler.report import Reporter
from reconciler.transport import Transport, run_program

GATHER_TIMEOUT = 300.0


def open_transport(server: Server, *, trust_new_host_keys: bool = False) -> Transport:
    url = server.url
    if url.kind == "local":
        from reconciler.transport.local import LocalTransport

        return LocalTransport(server.name, Path(url.path or "."))
    from reconciler.transport.ssh import SshTarget, SshTransport

    return SshTransport(
        server.name,
        SshTarget(
            host=url.host or "",
            port=url.port,
            user=url.user,
            host_key=server.host_key,
            identity=server.identity,
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


def run_json_program(
    transport: Transport, name: str, payload: Any, *, timeout: float = GATHER_TIMEOUT
) -> Any:
    """Run a server-side program and decode its JSON answer."""
    result = run_program(transport, name, [], payload, timeout=timeout)
    if result.returncode != 0:
        last = result.stderr_text.splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise ServerError(transport.server, f"the {name} program failed: {last[0]}")
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise ServerError(
            transport.server, f"the {name} program's answer is not JSON: {result.stdout[:80]!r}"
        ) from exc


def _hook_text() -> str:
    from reconciler.replication import hook_source

    return hook_source().decode("utf-8")


def gather_server(
    desired: Desired, transport: Transport, *, want_refs: bool = False
) -> ServerFacts:
    from reconciler.planning.repository_settings import gather_request

    server = desired.servers[transport.server]
    data = run_json_program(
        transport,
        "gather",
        {
            "repositories": server.repositories,
            "admin": desired.cluster.admin_repository,
            "refs": want_refs,
            # Hooks equal to the current one need no hashing on the server.
            "hook": _hook_text(),
            **gather_request(desired),
        },
    )
    return parse_server_facts(transport.server, data, host_key=transport.host_key_line())


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

    def one(name: str) -> ServerFacts:
        return gather_server(desired, transports[name], want_refs=want_refs)

    with ThreadPoolExecutor(max_workers=max(1, len(transports))) as pool:
        futures = {name: pool.submit(one, name) for name in transports}
        for name, future in futures.items():
            try:
                servers[name] = future.result()
            except ReconcilerError as exc:
                errors[name] = exc
    return Facts(servers=servers, errors=errors)
