"""A cluster of real OpenSSH servers on 127.0.0.1, one OS user per server.

Each server is an ``sshd`` of its own (own port, host key, config, log) that lets in
exactly one freshly created OS user; that user's home plays the git user's home
(``~git``) of a gitosis server. The project's stdlib-only server runtime
(``gitosis-init``, ``gitosis-serve``, ``gitosis-run-hook``) is copied to a
world-readable directory (``runtime_bin``) so the server users can run it even when
the checkout lives under ``/root`` (mode 0700).

Usage::

    with SshCluster(2) as cluster:
        a, b = cluster.servers
        a.gitosis_init(cluster.admin.public_key)
        subprocess.run(["git", "clone", f"{a.url}/gitosis-admin.git", dst],
                       env=cluster.git_env(cluster.admin), check=True)

Needs root. Every process it starts is stopped again (on ``stop()``, on leaving the
``with`` block, and at interpreter exit), the users are deleted with their homes,
and every wait is bounded. From a shell::

    python -m reconciler.testing.cluster up 3      # prints the servers, writes a state file
    python -m reconciler.testing.cluster env       # export GIT_SSH_COMMAND=...
    python -m reconciler.testing.cluster down
"""

from __future__ import annotations

import argparse
import atexit
import compileall
import contextlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import reconciler
from reconciler.server.library import RUNTIME_COMMANDS

SYSTEM_PYTHON = Path("/usr/bin/python3")
USER_PREFIX = "rcl"
USER_COMMENT_TAG = "reconciler test cluster"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
COMMAND_TIMEOUT = 120.0
STATE_ENV = "RECONCILER_SSH_CLUSTER"
DEFAULT_STATE = Path(".cluster/ssh-cluster.json")

# Console scripts the runtime directory provides: name -> "module:function".
RUNTIME_SCRIPTS: dict[str, str] = dict(RUNTIME_COMMANDS)
# How the operator logs in to a server given in ``admin_logins``: as root, or as a
# sudoer made for the test; the git user is then not made by the cluster (apply
# makes it) and the runtime is not on its PATH: a bare server.
AdminLogin = Literal["root", "sudo"]
SUDOERS_DIR = Path("/etc/sudoers.d")


class ClusterError(RuntimeError):
    """The test cluster could not be started or stopped."""


def find_sshd() -> Path | None:
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None


def unavailable_reason() -> str | None:
    """Why a cluster cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the sshd test cluster needs root (it creates OS users)"
    if find_sshd() is None:
        return "sshd is not installed (apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen", "git", "useradd", "userdel", "usermod"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} is not installed"
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing (the server runtime needs it)"
    return None


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise ClusterError(f"{name} is not installed")
    return found


def _run(
    argv: Sequence[str | Path],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise ClusterError(
            f"{shlex.join(proc.args)} exited with {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


def _retry_locked(argv: Sequence[str], attempts: int = 40) -> subprocess.CompletedProcess[str]:
    """useradd/userdel fail while another process holds /etc/passwd's lock; retry a while."""
    proc = _run(argv, check=False)
    for _ in range(attempts):
        if proc.returncode == 0 or "lock" not in proc.stderr.lower():
            break
        time.sleep(0.25)
        proc = _run(argv, check=False)
    return proc


# --- processes -------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, real uid) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
    return ppid, uid


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in all_pids():
        info = _proc_stat(p)
        if info is not None:
            children.setdefault(info[0], []).append(p)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for p in all_pids():
        info = _proc_stat(p)
        if info is not None and info[1] == uid:
            pids.append(p)
    return pids


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _kill(pids: Sequence[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; pids are processes this module started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)  # a paused process must see the signal
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.02)
        if not any(pid_alive(p) for p in pids):
            return


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_control_master(cmdline: Sequence[str]) -> bool:
    # A master renames itself "ssh: CONTROL_PATH [mux]".
    title = " ".join(cmdline)
    return title.startswith("ssh: ") and title.rstrip().endswith("[mux]")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ssh_banner(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


# --- identities and the runtime --------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """An SSH key pair on this machine: ``name`` is the key's comment (a gitosis user name)."""

    name: str
    private_key: Path
    public_key: str  # "ssh-ed25519 AAAA... NAME"

    @classmethod
    def generate(cls, directory: Path, name: str) -> Identity:
        directory.mkdir(parents=True, exist_ok=True)
        key = directory / f"id_{name.replace('@', '_at_')}"
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key])
        return cls(name, key, key.with_suffix(".pub").read_text().strip())


def install_runtime(root: Path, scripts: Mapping[str, str] = RUNTIME_SCRIPTS) -> Path:
    """Copy the ``reconciler`` package to ``root/lib`` and write ``root/bin`` wrappers.

    The wrappers run ``/usr/bin/python3 -I`` (no user site, no PYTHONPATH), so what
    the server users run is the stdlib-only runtime and nothing from this machine's
    virtual environment. Returns the bin directory.
    """
    package = Path(reconciler.__file__).resolve().parent
    lib = root / "lib"
    bin_dir = root / "bin"
    shutil.copytree(
        package, lib / "reconciler", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    compileall.compile_dir(lib, quiet=1)
    bin_dir.mkdir(parents=True)
    for name, target in scripts.items():
        module, function = target.split(":")
        script = bin_dir / name
        script.write_text(
            f"#!{SYSTEM_PYTHON} -IS\n"
            "import sys\n"
            f"sys.path.insert(0, {str(lib)!r})\n"
            f"from {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.parent == bin_dir else 0o644)
    return bin_dir


# --- servers ---------------------------------------------------------------------


class SshServer:
    """One sshd on 127.0.0.1 serving one OS user, whose home is the server's ``~git``."""

    def __init__(
        self,
        cluster: SshCluster,
        name: str,
        user: str,
        port: int,
        directory: Path,
        admin_login: AdminLogin | None = None,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.user = user
        self.admin_login = admin_login
        # root, or the sudoer made for this server (see _create_admin).
        self.admin_user: str | None = "root" if admin_login == "root" else None
        self.port = port
        self.directory = directory  # root-only: sshd config, host key, log
        self.home = Path("/home") / user
        self.host_key = ""
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SshServer({self.name!r}, user={self.user!r}, port={self.port})"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """How the operator logs in to a server with an admin login."""
        if self.admin_user is None:
            raise ClusterError(f"{self.name} has no admin login")
        return f"ssh://{self.admin_user}@127.0.0.1:{self.port}"

    @property
    def root_keys(self) -> Path:
        # Outside /tmp (world-writable): sshd's StrictModes checks every parent.
        return Path("/run") / f"{self.cluster.workdir.name}-{self.name}" / "root_keys"

    @property
    def sudoers_file(self) -> Path:
        return SUDOERS_DIR / f"{self.admin_user}"

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}"

    @property
    def config_path(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    @property
    def gid(self) -> int:
        return pwd.getpwnam(self.user).pw_gid

    # -- set-up ---------------------------------------------------------------

    def _create(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True)
        if self.admin_login is None:
            self._useradd(self.user, self.home)
        else:
            # Made by `reconcile apply`; deleted with the cluster's users all the same.
            self.cluster._users.append(self.user)
            self._create_admin()
        key = self.directory / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key])
        parts = key.with_suffix(".pub").read_text().split()
        self.host_key = f"{parts[0]} {parts[1]}"
        self._write_config()

    def _useradd(self, user: str, home: Path) -> None:
        # The comment lets `cleanup` find users of runs killed before they could stop.
        comment = f"{USER_COMMENT_TAG} pid={os.getpid()} dir={self.cluster.workdir}"
        proc = _retry_locked(
            [_tool("useradd"), "-m", "-s", "/bin/sh", "-c", comment, "-d", str(home), user]
        )
        if proc.returncode != 0:
            raise ClusterError(f"useradd {user} failed: {proc.stderr.strip()}")
        self.cluster._users.append(user)
        # useradd leaves the account locked ("!"); sshd without PAM then refuses keys.
        proc = _retry_locked([_tool("usermod"), "-p", "*", user])
        if proc.returncode != 0:
            raise ClusterError(f"usermod {user} failed: {proc.stderr.strip()}")

    def _create_admin(self) -> None:
        """The operator's way in as an admin: root's keys in a file of this server's
        sshd alone (root's own authorized_keys is never touched), or a sudoer."""
        key = self.cluster.operator.public_key.strip() + "\n"
        if self.admin_login == "root":
            self.root_keys.parent.mkdir(mode=0o755, parents=True)
            self.root_keys.write_text(key)
            self.root_keys.chmod(0o600)
            return
        if shutil.which("sudo") is None:
            raise ClusterError("sudo is not installed (apt-get install sudo)")
        self.admin_user = self.cluster._unused_user()
        admin_home = Path("/home") / self.admin_user
        self._useradd(self.admin_user, admin_home)
        ssh = admin_home / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(key)
        (ssh / "authorized_keys").chmod(0o600)
        entry = pwd.getpwnam(self.admin_user)
        for path in (ssh, ssh / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        rule = f"{self.admin_user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        temp = SUDOERS_DIR / f".{self.admin_user}.tmp"
        temp.write_text(rule)
        temp.chmod(0o440)
        check = _run(["visudo", "-c", "-q", "-f", temp], check=False)
        if check.returncode != 0:
            temp.unlink()
            raise ClusterError(f"visudo refused the rule for {self.admin_user}: {check.stderr}")
        temp.rename(self.sudoers_file)

    def remove_admin(self) -> None:
        if self.admin_login == "root":
            shutil.rmtree(self.root_keys.parent, ignore_errors=True)
        elif self.admin_user is not None:
            with contextlib.suppress(FileNotFoundError):
                self.sudoers_file.unlink()

    def _write_config(self) -> None:
        runtime_path = f"{self.cluster.runtime_bin}:/usr/local/bin:/usr/bin:/bin"
        if self.admin_login is not None:
            runtime_path = "/usr/local/bin:/usr/bin:/bin"  # a bare server: no gitosis
        allowed = [self.user] + ([self.admin_user] if self.admin_user else [])
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.directory / 'ssh_host_ed25519_key'}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AllowUsers {' '.join(allowed)}",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin " + ("prohibit-password" if self.admin_login == "root" else "no"),
            "StrictModes yes",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            # The replication hook and benchmarks open many connections at once.
            "MaxStartups 200:30:400",
            "MaxSessions 50",
            # sshd gives forced commands a fixed PATH; the runtime must be found on it.
            f"SetEnv PATH={runtime_path}",
        ]
        if self.admin_login == "root":
            lines += ["Match User root", f"    AuthorizedKeysFile {self.root_keys}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- control --------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start this server's sshd and wait (bounded) until it answers with a banner."""
        if self.is_running():
            return
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        sshd = find_sshd()
        if sshd is None:
            raise ClusterError("sshd is not installed")
        for _attempt in range(5):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [str(sshd), "-D", "-e", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self.pid = self._process.pid
            deadline = time.monotonic() + timeout
            # Our sshd says it is bound (a banner alone could come from another
            # process's sshd on a port ours failed to get) and then answers.
            listening = f"Server listening on 127.0.0.1 port {self.port}."
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                if listening in self._log_since(offset) and _ssh_banner(self.port):
                    return
                time.sleep(0.02)
            else:
                self.stop()
                raise ClusterError(f"sshd for {self.name} did not answer on port {self.port}")
            self.pid = None
            log_text = self._log_since(offset)
            if "Address already in use" not in log_text and "Cannot bind" not in log_text:
                raise ClusterError(f"sshd for {self.name} exited: {log_text[-2000:]}")
            # Someone took the port between choosing and binding it: choose another.
            self.port = _free_port()
            self._write_config()
            self.cluster._write_known_hosts()
        raise ClusterError(f"sshd for {self.name} found no free port")

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """Kill this server's sshd, every session it started, and the ssh connection
        masters its user left running to the peers (bounded): a server that is down
        keeps no connection open."""
        if self.pid is None:
            return
        _kill([*_descendants(self.pid), self.pid, *self.control_masters()])
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=STOP_TIMEOUT)
        self._process = None
        self.pid = None

    def control_masters(self) -> list[int]:
        """The OpenSSH connection masters (ControlPersist) of this server's user: they
        detach from the session that started them, so killing sshd's descendants
        leaves them running."""
        try:
            uid = self.uid
        except KeyError:
            return []
        return [p for p in _pids_of_uid(uid) if _is_control_master(process_cmdline(p))]

    def pause(self) -> None:
        """SIGSTOP the listening sshd and its sessions: new connections hang, and so
        do the connections the peers keep open to it, until ``resume()``."""
        if self.pid is not None:
            for pid in [self.pid, *_descendants(self.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            for pid in [self.pid, *_descendants(self.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def is_running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    # -- acting as the server's user -------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "USER": self.user,
            "LOGNAME": self.user,
            "SHELL": "/bin/sh",
            "PATH": f"{self.cluster.runtime_bin}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }

    def run(
        self,
        argv: Sequence[str | Path],
        input: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this server's user with its HOME, in its home by default."""
        full_env = self.env()
        full_env.update(env or {})
        return _run(
            argv,
            input=input,
            check=check,
            timeout=timeout,
            env=full_env,
            cwd=str(cwd or self.home),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
        )

    def authorize(self, public_key: str, options: str = "") -> None:
        """Append a line to the user's authorized_keys that gitosis does not manage."""
        line = f"{options} {public_key}".strip()
        script = (
            "import os, sys\n"
            "d = os.path.expanduser('~/.ssh')\n"
            "os.makedirs(d, mode=0o700, exist_ok=True)\n"
            "p = os.path.join(d, 'authorized_keys')\n"
            "fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)\n"
            "os.write(fd, sys.stdin.read().encode())\n"
            "os.close(fd)\n"
        )
        self.run([str(SYSTEM_PYTHON), "-c", script], input=line + "\n")

    def gitosis_init(self, public_key: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``gitosis-init`` as the server's user with ``public_key`` (default: the admin's)."""
        key = public_key if public_key is not None else self.cluster.admin.public_key
        return self.run([self.cluster.runtime_bin / "gitosis-init"], input=key.strip() + "\n")

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "user": self.user,
            "port": self.port,
            "directory": str(self.directory),
            "home": str(self.home),
            "host_key": self.host_key,
            "pid": self.pid,
        }


# --- the cluster -----------------------------------------------------------------


def _random_user() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return USER_PREFIX + "".join(secrets.choice(alphabet) for _ in range(6))


class SshCluster:
    """N sshd servers on 127.0.0.1 plus an operator identity that can reach them all.

    - ``servers`` (also ``cluster[i]``, ``cluster["s1"]``, iteration, ``len``);
    - ``operator``: an :class:`Identity` whose key is in every server's
      authorized_keys as a plain line (shell access as the git user, which is how
      the reconciler reaches a server) when ``authorize_operator`` is true;
    - ``admin``: the identity named ``admin@operator`` for ``gitosis_init``: its
      access goes through ``gitosis-serve`` once a server is initialised;
    - ``new_identity(name)`` for more people (``alice@desk``);
    - ``known_hosts``: every server's host key; ``git_env(identity)``: an environment
      whose ``GIT_SSH_COMMAND`` uses that identity and known_hosts;
    - ``runtime_bin`` / ``runtime_lib``: the world-readable runtime the servers use.
    """

    def __init__(
        self,
        n: int,
        *,
        names: Sequence[str] | None = None,
        authorize_operator: bool = True,
        scripts: Mapping[str, str] = RUNTIME_SCRIPTS,
        admin_logins: Mapping[str, AdminLogin] | None = None,
    ) -> None:
        if names is not None and len(names) != n:
            raise ValueError("names must have n entries")
        self.names = list(names) if names is not None else [f"s{i + 1}" for i in range(n)]
        self.authorize_operator = authorize_operator
        self.admin_logins = dict(admin_logins or {})
        self.scripts = dict(scripts)
        self.servers: list[SshServer] = []
        self.workdir = Path()
        self.runtime_root = Path()
        self._users: list[str] = []
        self._identities: dict[str, Identity] = {}
        self._started = False
        self._owner_pid = os.getpid()
        self.detached = False

    # -- access ---------------------------------------------------------------

    def __getitem__(self, key: int | str) -> SshServer:
        if isinstance(key, int):
            return self.servers[key]
        for server in self.servers:
            if server.name == key:
                return server
        raise KeyError(key)

    def __iter__(self) -> Iterator[SshServer]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def runtime_bin(self) -> Path:
        return self.runtime_root / "bin"

    @property
    def runtime_lib(self) -> Path:
        return self.runtime_root / "lib"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def identity_dir(self) -> Path:
        return self.workdir / "identities"

    @property
    def operator(self) -> Identity:
        return self.new_identity("operator@reconciler")

    @property
    def admin(self) -> Identity:
        return self.new_identity("admin@operator")

    def new_identity(self, name: str) -> Identity:
        """A key pair with comment ``name`` (created once per cluster)."""
        if name not in self._identities:
            self._identities[name] = Identity.generate(self.identity_dir, name)
        return self._identities[name]

    def ssh_command(self, identity: Identity | None = None) -> list[str]:
        """argv of an ``ssh`` that uses only ``identity`` and this cluster's known_hosts."""
        identity = identity or self.operator
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(identity.private_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ]

    def git_env(
        self, identity: Identity | None = None, base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """``base`` (default os.environ) with GIT_SSH_COMMAND for ``identity`` (default operator).

        OpenSSH ignores $HOME when it looks for ~/.ssh, so key and known_hosts are
        passed explicitly.
        """
        env = dict(os.environ if base is None else base)
        env["GIT_SSH_COMMAND"] = shlex.join(self.ssh_command(identity))
        name = (identity or self.operator).name
        env.setdefault("GIT_AUTHOR_NAME", name)
        env.setdefault("GIT_AUTHOR_EMAIL", name)
        env.setdefault("GIT_COMMITTER_NAME", name)
        env.setdefault("GIT_COMMITTER_EMAIL", name)
        return env

    def _write_known_hosts(self) -> None:
        lines = [s.known_hosts_line for s in self.servers if s.host_key]
        self.known_hosts.write_text("".join(f"{line}\n" for line in lines))

    # -- life cycle -----------------------------------------------------------

    def start(self) -> SshCluster:
        reason = unavailable_reason()
        if reason is not None:
            raise ClusterError(reason)
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="rcl-cluster-"))
            self.runtime_root = Path(tempfile.mkdtemp(prefix="rcl-runtime-"))
            # mkdtemp makes the runtime 0700; install_runtime opens it to the server users.
            install_runtime(self.runtime_root, self.scripts)
            for name in self.names:
                user = self._unused_user()
                server = SshServer(
                    self,
                    name,
                    user,
                    _free_port(),
                    self.workdir / name,
                    self.admin_logins.get(name),
                )
                self.servers.append(server)
                server._create()
                if self.authorize_operator and server.admin_login is None:
                    server.authorize(self.operator.public_key)
            self._write_known_hosts()
            self.admin  # noqa: B018 - generate the key now, outside any timing
            for server in self.servers:
                server.start()
            self._save_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _unused_user(self) -> str:
        for _ in range(100):
            user = _random_user()
            try:
                pwd.getpwnam(user)
            except KeyError:
                return user
        raise ClusterError("no unused user name found")

    def stop(self) -> None:
        """Stop every sshd and session, delete the users with their homes and the temp dirs."""
        if self.detached or os.getpid() != self._owner_pid:
            return  # a forked child or a cluster left running on purpose
        atexit.unregister(self.stop)
        for server in self.servers:
            server.stop()
            server.remove_admin()
        # An sshd of this cluster that is not the one recorded (a killed run's).
        configs = [str(server.config_path) for server in self.servers]
        _kill([p for p in all_pids() if any(c in a for a in process_cmdline(p) for c in configs)])
        for user in list(self._users):
            _delete_user(user)
            self._users.remove(user)
        for directory in (self.workdir, self.runtime_root):
            if directory != Path() and directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
        self._started = False

    def detach(self) -> None:
        """Leave the cluster running after this process exits (see ``attach``)."""
        self.detached = True
        atexit.unregister(self.stop)
        self._save_state()

    def _save_state(self) -> None:
        state = {**self.state(), "detached": self.detached}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    def __enter__(self) -> SshCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state for the command line --------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "runtime_root": str(self.runtime_root),
            "known_hosts": str(self.known_hosts),
            "identities": {
                i.name: {"private_key": str(i.private_key), "public_key": i.public_key}
                for i in self._identities.values()
            },
            "servers": [s.state() for s in self.servers],
        }

    @classmethod
    def attach(cls, state: Mapping[str, Any]) -> SshCluster:
        """A cluster object for servers started by another process (``up``)."""
        servers = state["servers"]
        cluster = cls(len(servers), names=[s["name"] for s in servers])
        cluster.workdir = Path(state["workdir"])
        cluster.runtime_root = Path(state["runtime_root"])
        cluster._started = True
        for name, ident in state["identities"].items():
            cluster._identities[name] = Identity(
                name, Path(ident["private_key"]), ident["public_key"]
            )
        for s in servers:
            server = SshServer(cluster, s["name"], s["user"], s["port"], Path(s["directory"]))
            server.host_key = s["host_key"]
            pid = s["pid"]
            # Only a pid that still runs this server's sshd config is ours to stop.
            # (sshd rewrites its argv into one process title string).
            config = str(server.config_path)
            if pid is not None and any(config in arg for arg in process_cmdline(pid)):
                server.pid = pid
            cluster.servers.append(server)
            cluster._users.append(s["user"])
        return cluster


def _delete_user(user: str) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return
    # Sessions of this user (all started by this cluster: the user is ours alone).
    _kill(_pids_of_uid(entry.pw_uid))
    # The home first, here: `userdel -r` removes it inside its own run, and a home of
    # 10,000 repositories outlasted the command's timeout under load.
    home = Path(entry.pw_dir)
    if home.exists() and home.name == user:
        shutil.rmtree(home, ignore_errors=True)
    proc = _retry_locked([_tool("userdel"), user])
    spool = Path("/var/mail") / user
    with contextlib.suppress(OSError):
        if spool.stat().st_uid == entry.pw_uid:
            spool.unlink()
    with contextlib.suppress(KeyError):
        pwd.getpwnam(user)
        raise ClusterError(f"userdel {user} failed: {proc.stderr.strip()}")


def stale_clusters(only: Path | None = None) -> dict[Path, list[str]]:
    """workdir -> users of clusters whose creating process died without stopping them.

    Only users whose comment names both the creating process and the cluster's
    directory, and whose directory still holds a state file saying the cluster was
    not left running on purpose (``up``), count: anything else may belong to
    someone else's run on this machine and is never touched. ``only`` restricts
    the search to one cluster directory.
    """
    stale: dict[Path, list[str]] = {}
    prefix = USER_COMMENT_TAG + " pid="
    for entry in pwd.getpwall():
        if not entry.pw_name.startswith(USER_PREFIX) or not entry.pw_gecos.startswith(prefix):
            continue
        pid_text, sep, directory = entry.pw_gecos[len(prefix) :].partition(" dir=")
        if not sep or not pid_text.isdigit() or not directory.startswith("/"):
            continue
        workdir = Path(directory)
        if only is not None and workdir != only:
            continue
        if pid_alive(int(pid_text)):
            continue
        try:
            state = json.loads((workdir / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if state.get("detached") or entry.pw_name not in {s["user"] for s in state["servers"]}:
            continue
        stale.setdefault(workdir, []).append(entry.pw_name)
    return stale


def cleanup_stale(only: Path | None = None) -> list[str]:
    """Stop and delete what killed runs left behind; returns the users deleted."""
    deleted = []
    for workdir, users in stale_clusters(only).items():
        SshCluster.attach(json.loads((workdir / "state.json").read_text())).stop()
        deleted.extend(users)
    return deleted


# --- command line ----------------------------------------------------------------


def _state_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get(STATE_ENV) or DEFAULT_STATE)


def _print_cluster(cluster: SshCluster) -> None:
    for s in cluster.servers:
        print(f"{s.name}\t{s.url}\thome={s.home}\tpid={s.pid}")
    print(f"runtime_bin\t{cluster.runtime_bin}")
    print(f"known_hosts\t{cluster.known_hosts}")
    print(f"operator key\t{cluster.operator.private_key}")
    print(f"admin key\t{cluster.admin.private_key}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.testing.cluster",
        description="Bring a cluster of real sshd test servers on 127.0.0.1 up or down.",
    )
    parser.add_argument("--state", help=f"state file (default ${STATE_ENV} or {DEFAULT_STATE})")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start N servers and leave them running")
    up.add_argument("n", type=int)
    up.add_argument("--names", help="comma-separated server names (default s1,s2,...)")
    up.add_argument("--init", action="store_true", help="run gitosis-init with the admin key")
    sub.add_parser("down", help="stop the servers and delete their users")
    env = sub.add_parser("env", help="print export lines for git (GIT_SSH_COMMAND)")
    env.add_argument("--identity", default="admin@operator", help="identity name")
    sub.add_parser("show", help="print the servers of the running cluster")
    sub.add_parser("cleanup", help="stop and delete clusters of test runs that were killed")
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    state_path = _state_path(args.state)

    if args.command == "cleanup":
        for user in cleanup_stale():
            print(f"deleted {user}")
        return 0
    if args.command == "up":
        if state_path.exists():
            print(f"{state_path} exists: run down first", file=sys.stderr)
            return 1
        names = args.names.split(",") if args.names else None
        cluster = SshCluster(args.n, names=names)
        started = time.monotonic()
        cluster.start()
        try:
            if args.init:
                for server in cluster:
                    server.gitosis_init()
            state_path.parent.mkdir(parents=True, exist_ok=True)
            state_path.write_text(json.dumps(cluster.state(), indent=2) + "\n")
        except BaseException:
            cluster.stop()
            raise
        cluster.detach()
        _print_cluster(cluster)
        print(f"up in {time.monotonic() - started:.2f}s; state in {state_path}")
        return 0
    if not state_path.exists():
        print(f"no cluster state at {state_path}", file=sys.stderr)
        return 1
    cluster = SshCluster.attach(json.loads(state_path.read_text()))
    if args.command == "down":
        cluster.stop()
        state_path.unlink()
        print("down")
    elif args.command == "env":
        identity = cluster.new_identity(args.identity)
        print(f"export GIT_SSH_COMMAND={shlex.quote(cluster.git_env(identity)['GIT_SSH_COMMAND'])}")
    else:
        _print_cluster(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
