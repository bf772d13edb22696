"""The ssh transport: paramiko, authenticating as the operator's own ``ssh`` would.

Host keys are verified against the server's pinned ``host_key`` or the operator's
``~/.ssh/known_hosts`` (and ``/etc/ssh/ssh_known_hosts``). An unknown key is
refused with its fingerprint unless the operator asked to trust new keys, in which
case it is recorded in ``~/.ssh/known_hosts``; a changed key is never accepted.
Authentication tries the server's ``identity``, ``~/.ssh/config``'s IdentityFile,
the agent and the default identities, as OpenSSH does.
"""

from __future__ import annotations

import base64
import logging
import os
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from reconciler.desired.keys import sha256_fingerprint
from reconciler.errors import HostKeyError, ServerError
from reconciler.server.known_hosts import known_hosts_host
from reconciler.transport import (
    NO_GIT_USER_MARKER,
    NO_GIT_USER_STATUS,
    CommandResult,
    Stdin,
    TransportStats,
)

# paramiko logs a failed handshake (a server that accepts but never answers) with
# a traceback; without a handler Python's last-resort handler would print it. The
# failure reaches the user as a ServerError instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

__all__ = ["HostKeyError", "SshTarget", "SshTransport", "fingerprint", "parse_public_key"]

CONNECT_TIMEOUT = 15.0
DEFAULT_COMMAND_TIMEOUT = 600.0


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a host key."""
    return sha256_fingerprint(key.asbytes())


def parse_public_key(line: str) -> paramiko.PKey:
    """A key from ``TYPE BASE64 [comment]``; raises ValueError when it is not one."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError("a public key needs a type and base64 data")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        return paramiko.PKey.from_type_string(parts[0], blob)
    except (ValueError, paramiko.SSHException) as exc:
        raise ValueError(f"not a valid {parts[0]} public key") from exc


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect, as given in cluster.d/."""

    host: str
    port: int | None = None
    user: str | None = None
    host_key: str | None = None
    identity: str | None = None
    # The git user to act as when the login user is an admin (root or a sudoer).
    become: str | None = None


def become_command(argv: list[str], login: str, become: str | None, *, as_admin: bool) -> str:
    """The command line that runs ``argv`` as ``become`` (or as root with ``as_admin``)
    for a session logged in as ``login``; quoting happens here and nowhere else.

    root switches with runuser, anyone else with ``sudo -n`` (never a password
    prompt). A git user that does not exist yet is answered with
    NO_GIT_USER_STATUS, so that the gather can plan its creation.
    """
    if as_admin:
        return shlex.join(argv if login == "root" else ["sudo", "-n", "--", *argv])
    if become is None or become == login:
        return shlex.join(argv)
    # In the git user's home, as a login would be; "$@" keeps argv exactly.
    in_home = ["sh", "-c", 'cd && exec "$@"', "reconcile", *argv]
    if login == "root":
        switch = ["runuser", "-u", become, "--", *in_home]
    else:
        switch = ["sudo", "-n", "-H", "-u", become, "--", *in_home]
    missing = shlex.quote(NO_GIT_USER_MARKER + become)
    return (
        # runuser lives in sbin, which is not on every session's PATH.
        'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; '
        f"id -u {shlex.quote(become)} >/dev/null 2>&1 || "
        f"{{ echo {missing} >&2; exit {NO_GIT_USER_STATUS}; }}; exec {shlex.join(switch)}"
    )


def load_known_hosts(keys: paramiko.HostKeys, texts: list[str]) -> set[str]:
    """Add the entries of known_hosts files to ``keys``, as OpenSSH reads them.

    Returns the base64 of the keys marked ``@revoked``, which are never added.
    ``@cert-authority`` lines (host certificates are not supported here) and lines
    that are not valid entries are skipped, as OpenSSH skips them; paramiko's own
    loader raises on them instead.
    """
    revoked: set[str] = set()
    entries: list[paramiko.hostkeys.HostKeyEntry] = []
    for text in texts:
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                marker, _, rest = line.partition(" ")
                fields = rest.split()
                if marker == "@revoked" and len(fields) >= 3:
                    revoked.add(fields[2])
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
            except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError):
                continue
            if entry is not None and entry.key is not None:
                entries.append(entry)
    for entry in entries:
        if entry.key.get_base64() not in revoked:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return revoked


class _UnknownHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, server: str, trust_new: bool, known_hosts: Path, revoked: set[str]) -> None:
        self.server = server
        self.trust_new = trust_new
        self.known_hosts = known_hosts
        self.revoked = revoked

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if key.get_base64() in self.revoked:
            raise HostKeyError(
                self.server,
                f"host key of {hostname} ({key.get_name()} {fingerprint(key)}) is marked "
                "@revoked in known_hosts; refusing to connect",
            )
        if not self.trust_new:
            raise HostKeyError(
                self.server,
                f"host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}); "
                "pin it as host_key in cluster.d/, add it to ~/.ssh/known_hosts, "
                "or run again with --trust-new-host-keys",
            )
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.known_hosts, "a", encoding="utf-8") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        os.chmod(self.known_hosts, 0o600)
        client.get_host_keys().add(hostname, key.get_name(), key)


class SshTransport:
    """One paramiko connection to one server, opened on first use."""

    def __init__(
        self,
        server: str,
        target: SshTarget,
        *,
        trust_new_host_keys: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.server = server
        self.target = target
        self.trust_new_host_keys = trust_new_host_keys
        self.connect_timeout = connect_timeout
        self.stats = TransportStats()
        self._client: paramiko.SSHClient | None = None
        # A failed connection is not tried again in the same run: apply gathers
        # several times, and a server that hangs would cost the timeout each time.
        self._failure: ServerError | None = None
        self._lock = threading.Lock()

    # -- connecting ---------------------------------------------------------
    def _ssh_config(self) -> dict[str, Any]:
        path = Path(os.path.expanduser("~/.ssh/config"))
        if not path.is_file():
            return {}
        try:
            return dict(paramiko.SSHConfig.from_path(str(path)).lookup(self.target.host))
        except (OSError, paramiko.SSHException) as exc:
            raise ServerError(self.server, f"cannot read {path}: {exc}") from exc

    def _connect(self) -> paramiko.SSHClient:
        config = self._ssh_config()
        hostname = str(config.get("hostname", self.target.host))
        port = self.target.port or int(config.get("port", 22))
        user = self.target.user or config.get("user") or _local_user()
        identities: list[str] = []
        if self.target.identity:
            identity = os.path.expanduser(self.target.identity)
            if not os.path.isfile(identity):
                # Falling back to other keys silently would hide a typo in cluster.d/.
                raise ServerError(
                    self.server, f"the identity file {identity} given in cluster.d/ does not exist"
                )
            identities.append(identity)
        identities += [os.path.expanduser(p) for p in config.get("identityfile", [])]
        identities = [p for p in identities if os.path.isfile(p)]

        client = paramiko.SSHClient()
        known_hosts = Path(os.path.expanduser("~/.ssh/known_hosts"))
        lookup = known_hosts_host(hostname, port)
        revoked: set[str] = set()
        if self.target.host_key:
            # A pin replaces known_hosts for this server: only that key is accepted.
            key = parse_public_key(self.target.host_key)
            client.get_host_keys().add(lookup, key.get_name(), key)
        else:
            texts = []
            for path in (Path("/etc/ssh/ssh_known_hosts"), known_hosts):
                if path.is_file():
                    try:
                        texts.append(path.read_text(encoding="utf-8", errors="replace"))
                    except OSError as exc:
                        raise ServerError(self.server, f"cannot read {path}: {exc}") from exc
            # A revoked key is not among the known ones: it reaches the policy, which
            # refuses it.
            revoked = load_known_hosts(client.get_host_keys(), texts)
        client.set_missing_host_key_policy(
            _UnknownHostKeyPolicy(
                self.server,
                self.trust_new_host_keys and not self.target.host_key,
                known_hosts,
                revoked,
            )
        )
        where = f"{user}@{hostname}:{port}"
        started = time.monotonic()
        try:
            client.connect(
                hostname,
                port=port,
                username=user,
                key_filename=identities or None,  # type: ignore[arg-type]
                allow_agent=True,
                look_for_keys=True,
                # The handshake's own wait is a little longer than the banner's, so
                # a server that accepts but never answers fails as "no banner"
                # rather than as a confusing authentication error afterwards.
                timeout=self.connect_timeout + 5,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            offered = f"{exc.key.get_name()} {fingerprint(exc.key)}"
            expected = fingerprint(exc.expected_key)
            if self.target.host_key:
                message = (
                    f"host key of {lookup} does not match the host_key pinned in cluster.d/: "
                    f"the server offered {offered}, the pin is {expected}; refusing to connect"
                )
            else:
                message = (
                    f"host key of {lookup} has CHANGED: the server offered {offered}, "
                    f"~/.ssh/known_hosts holds {expected}; refusing to connect "
                    "(possible man-in-the-middle)"
                )
            raise HostKeyError(self.server, message) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise ServerError(self.server, f"authentication as {where} failed: {exc}") from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reason = reason or type(exc).__name__
            if time.monotonic() - started >= self.connect_timeout:
                reason = f"no answer within {self.connect_timeout:.0f}s ({reason})"
            raise ServerError(self.server, f"cannot connect to {where}: {reason}") from exc
        self.stats.connections += 1
        return client

    def _client_or_connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._client is None:
                try:
                    self._client = self._connect()
                except ServerError as exc:
                    self._failure = exc
                    raise
            return self._client

    # -- running ------------------------------------------------------------
    def run(
        self,
        argv: list[str],
        *,
        stdin: Stdin = b"",
        timeout: float | None = None,
        as_admin: bool = False,
    ) -> CommandResult:
        client = self._client_or_connect()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise ServerError(self.server, "the connection was closed")
        login = transport.get_username() or ""
        if as_admin and self.target.become is None:
            raise ServerError(
                self.server,
                f"this needs an admin login (root or a sudoer) with user: naming the git "
                f"user, but the url logs in as {login}",
            )
        limit = timeout or DEFAULT_COMMAND_TIMEOUT
        deadline = time.monotonic() + limit
        timed_out = f"{argv[0]} timed out after {limit:.0f}s"
        self.stats.commands += 1
        try:
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.settimeout(limit)
            # Quoting happens here, at the point of execution, and nowhere else.
            channel.exec_command(become_command(argv, login, self.target.become, as_admin=as_admin))
            out: list[bytes] = []
            err: list[bytes] = []
            readers = [
                threading.Thread(target=_drain, args=(channel.recv, out), daemon=True),
                threading.Thread(target=_drain, args=(channel.recv_stderr, err), daemon=True),
            ]
            for reader in readers:
                reader.start()
            try:
                for part in (stdin,) if isinstance(stdin, bytes) else stdin:
                    if part:
                        channel.sendall(part)
                channel.shutdown_write()
            except OSError:
                # The command may end without reading all its input (an admin
                # login's session for a git user that does not exist yet answers
                # at once); paramiko has its exit status before it closes the
                # channel, and the status and output are the answer.
                if not channel.closed or not channel.exit_status_ready():
                    raise
            except BaseException:
                # A part of the input could not be made (the caller gave up): the
                # program sees its input end unfinished, and stops.
                channel.close()
                raise
            for reader in readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            # A reader also stops when its recv times out, so the command has
            # finished only once its exit status has arrived, within the limit.
            while not channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not channel.exit_status_ready() or any(r.is_alive() for r in readers):
                channel.close()
                raise ServerError(self.server, timed_out)
            status = channel.recv_exit_status()
            channel.close()
        except TimeoutError as exc:
            raise ServerError(self.server, timed_out) from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ServerError(self.server, f"running {argv[0]} failed: {exc}") from exc
        return CommandResult(status, b"".join(out), b"".join(err))

    def host_key_line(self) -> str | None:
        client = self._client_or_connect()
        transport = client.get_transport()
        if transport is None:
            return None
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _drain(receive: Any, into: list[bytes]) -> None:
    while True:
        try:
            chunk = receive(65536)
        except (TimeoutError, OSError, EOFError):
            return
        if not chunk:
            return
        into.append(chunk)


def _local_user() -> str:
    import getpass

    return getpass.getuser()
