"""The command line that acts as the git user after an admin login, run by a real shell."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from reconciler.transport import NO_GIT_USER_MARKER, NO_GIT_USER_STATUS
from reconciler.transport.ssh import become_command

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def shell(command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    # What sshd does with an exec request: the login user's shell runs it with -c.
    return subprocess.run(
        ["/bin/sh", "-c", command], input=stdin, capture_output=True, timeout=30, check=False
    )


def test_no_switch_is_the_plain_argv() -> None:
    assert become_command(["echo", "a b", "$HOME"], "git", None, as_admin=False) == (
        "echo 'a b' '$HOME'"
    )
    assert become_command(["true"], "git", "git", as_admin=False) == "true"
    assert become_command(["id"], "root", "git", as_admin=True) == "id"
    assert become_command(["id"], "admin", "git", as_admin=True) == "sudo -n -- id"


@pytest.fixture
def os_user() -> Iterator[str]:
    """A throw-away OS user with a home, deleted again after the test."""
    name = "rclb" + secrets.token_hex(3)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60, check=False)


@needs_root
def test_root_switches_to_the_git_user_in_its_home_with_argv_and_stdin_intact(
    os_user: str,
) -> None:
    argv = ["sh", "-c", 'id -un; pwd; printf "%s|" "$@"; cat', "x", "a b", "'q'", "$HOME"]
    done = shell(become_command(argv, "root", os_user, as_admin=False), b"from stdin")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines == [os_user, pwd.getpwnam(os_user).pw_dir, "a b|'q'|$HOME|from stdin"]


@needs_root
def test_a_missing_git_user_is_answered_with_the_marker() -> None:
    done = shell(become_command(["true"], "root", "rcl-no-such-user", as_admin=False))
    assert done.returncode == NO_GIT_USER_STATUS
    assert (NO_GIT_USER_MARKER + "rcl-no-such-user").encode() in done.stderr
