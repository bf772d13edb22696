"""The server library: installed whole, checked by gather, repaired, upgraded from the
gitosis runtime's old layout; a hook stub is never written before its library."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.server import common, hooks, library
from reconciler.server.ops import InstallHook, decode
from reconciler.server_library import install_library_op, library_version

VERSION = library_version()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "HOME", str(tmp_path))
    return tmp_path


def lib(home: Path, version: str = VERSION) -> Path:
    return home / library.LIBRARY_DIR / f"lib-{version}"


def test_installed_whole_checked_and_repaired(home: Path) -> None:
    assert library.library_facts(str(home)) == {"version": None, "intact": False}
    library.op_install_library(install_library_op(runtime=False))
    assert library.library_facts(str(home)) == {"version": VERSION, "intact": True}
    assert (home / library.LIBRARY_DIR / "VERSION").read_text() == VERSION + "\n"
    # Python's caches beside the modules are not the library's files.
    (lib(home) / "reconciler/server/__pycache__").mkdir()
    (lib(home) / "reconciler/server/__pycache__/common.cpython-311.pyc").write_bytes(b"x")
    assert library.library_facts(str(home))["intact"] is True

    # One changed byte in a module, or an entry point pointing elsewhere: not intact.
    module = lib(home) / "reconciler/server/replication.py"
    module.write_bytes(module.read_bytes() + b"#")
    assert library.library_facts(str(home)) == {"version": VERSION, "intact": False}
    library.op_install_library(install_library_op(runtime=False))
    assert library.library_facts(str(home))["intact"] is True
    entry = home / library.LIBRARY_DIR / "bin/post-receive"
    entry.write_text("#!/bin/sh\n")
    assert library.library_facts(str(home))["intact"] is False
    library.op_install_library(install_library_op(runtime=False))
    assert library.library_facts(str(home))["intact"] is True
    assert [p.name for p in (home / library.LIBRARY_DIR).iterdir() if "lib-" in p.name] == [
        f"lib-{VERSION}"
    ]


def test_files_that_are_not_the_version_are_refused(home: Path) -> None:
    op = install_library_op(runtime=False)
    files = dict(op.files)
    files["reconciler/server/extra.py"] = base64.b64encode(b"x = 1\n").decode()
    with pytest.raises(common.OpError, match="not version"):
        library.op_install_library(replace(op, files=files))
    assert not (home / library.LIBRARY_DIR).exists()


def test_the_gitosis_runtime_of_the_old_layout_is_upgraded_in_place(home: Path) -> None:
    """Before the server library the runtime had its own lib-VERSION under
    ~/.reconciler/gitosis; its commands keep their paths and run the library now."""
    old = "0123456789abcdef"
    runtime = home / library.RUNTIME_DIR
    (runtime / f"lib-{old}/reconciler/gitosis").mkdir(parents=True)
    (runtime / "lib-fedcba9876543210").mkdir()
    (runtime / "bin").mkdir()
    serve = runtime / "bin/gitosis-serve"
    serve.write_text(
        f"#!/usr/bin/python3 -I\nimport sys\nsys.path.insert(0, '{runtime}/lib-{old}')\n"
    )
    (runtime / "VERSION").write_text(old + "\n")
    library.op_install_library(install_library_op(runtime=True))
    assert library.library_facts(str(home)) == {"version": VERSION, "intact": True}
    assert library.gitosis_facts(str(home))["runtime"] == VERSION
    assert f"sys.path.insert(0, '{lib(home)}')" in serve.read_text()
    assert os.access(serve, os.X_OK)
    # The lib the old VERSION named stays for a command starting from it; older ones go.
    assert sorted(p.name for p in runtime.iterdir()) == ["VERSION", "bin", f"lib-{old}"]
    # The command runs from the library.
    done = subprocess.run(
        [str(runtime / "bin/gitosis-run-hook"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and "usage: gitosis-run-hook" in done.stdout, done.stderr


def test_a_stub_is_never_written_before_its_library(home: Path) -> None:
    gitdir = home / "repositories/product.git"
    (gitdir / "hooks").mkdir(parents=True)
    whole = b"#!/usr/bin/env python3\n" + hooks.HOOK_MARKER.encode() + b"\n" + b"#" * 40000
    (gitdir / "hooks/post-receive").write_bytes(whole)
    op = decode(
        {
            "op": "install_hook",
            "path": "repositories/product.git/hooks/post-receive",
            "content": hooks.stub(str(home)).decode(),
            "library": VERSION,
            "expect_sha256": hashlib.sha256(whole).hexdigest(),
        }
    )
    assert isinstance(op, InstallHook)
    with pytest.raises(common.OpError, match="is not installed"):
        hooks.op_install_hook(op)
    assert (gitdir / "hooks/post-receive").read_bytes() == whole
    library.op_install_library(install_library_op(runtime=False))
    hooks.op_install_hook(op)
    assert (gitdir / "hooks/post-receive").read_bytes() == hooks.stub(str(home))
    assert (gitdir / "hooks/post-receive").stat().st_mode & 0o777 == 0o755
    facts = hooks.hook_facts(str(gitdir), hooks.KnownContent(hooks.stub(str(home))))
    assert facts is not None and facts["managed"] is True
    assert facts["sha256"] == hashlib.sha256(hooks.stub(str(home))).hexdigest()
