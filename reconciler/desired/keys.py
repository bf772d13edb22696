"""Checking OpenSSH public key lines (``TYPE BASE64 [COMMENT]``).

gitosis copies each line of a key file into authorized_keys behind its own
``command=...`` options, so a line must be exactly a key: no options of its own,
no line breaks, and a key blob that really is of the type it claims.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def sha256_fingerprint(blob: bytes) -> str:
    """``SHA256:...`` of a key blob, as ``ssh-keygen -l`` and ssh's messages show it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def public_key_problem(line: str) -> str | None:
    """Why ``line`` is not a usable public key line, or None when it is."""
    if any(ord(c) < 0x20 and c != "\t" for c in line):
        return "a public key must be a single line without control characters"
    fields = line.split()
    if not fields:
        return "the public key is empty"
    key_type = fields[0]
    if key_type not in KEY_TYPES:
        shown = key_type if len(key_type) <= 40 else key_type[:40] + "..."
        return (
            f"{shown!r} is not a public key type; a key line starts with one of "
            "ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256 and the like"
        )
    if len(fields) < 2:
        return f"the {key_type} key has no key data after its type"
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return f"the {key_type} key data is not valid base64"
    if len(blob) < 4:
        return f"the {key_type} key data is too short"
    (length,) = struct.unpack(">I", blob[:4])
    embedded = blob[4 : 4 + length]
    if embedded != key_type.encode("ascii"):
        return f"the key data does not hold a {key_type} key"
    if len(blob) <= 4 + length:
        return f"the {key_type} key data is truncated"
    return None


def is_public_key(line: str) -> bool:
    return public_key_problem(line) is None
