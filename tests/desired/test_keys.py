"""Public key lines: real keys pass, anything else says why not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.desired.keys import is_public_key, public_key_problem

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID2SEK7Vsq94T8E38AD5kgitjN388tAgclJW6VSJGmoA"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("rsa", "2048"), ("ecdsa", "384")])
def test_keys_made_by_ssh_keygen_pass(tmp_path: Path, kind: str, bits: str | None) -> None:
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "me@host", "-f", str(tmp_path / "k")]
    if bits:
        argv += ["-b", bits]
    subprocess.run(argv, check=True, timeout=60)
    line = (tmp_path / "k.pub").read_text().strip()
    assert public_key_problem(line) is None
    assert is_public_key(line.rsplit(" ", 1)[0])  # the comment is optional


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("", "empty"),
        ("ssh-ed25519", "no key data"),
        ("ssh-ed25519 !!!!", "not valid base64"),
        ("ssh-ed25519 AAAA", "too short"),
        ("ssh-rsa " + ED25519.split()[1], "does not hold a ssh-rsa key"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "truncated"),
        ('command="sh" ' + ED25519, "is not a public key type"),
        (ED25519 + "\nssh-ed25519 AAAA", "single line"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "is not a public key type"),
    ],
)
def test_bad_key_lines_say_why(line: str, fragment: str) -> None:
    problem = public_key_problem(line)
    assert problem is not None and fragment in problem
