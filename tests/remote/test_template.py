"""The git template: installed whole, named in ~/.gitconfig next to the lines already
there, and copied by ``git init`` the way gitosis, this project's runtime and apply run
it, into new repositories only (gitosis-admin's own post-update stays as it is)."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.gitosis.repositories import init_bare
from reconciler.planning.hooks import config_text, template_entries
from reconciler.server import common, library, template
from reconciler.server.common import OpError
from reconciler.server.hooks import stub
from reconciler.server.ops import CloneMirror, InitBare, InstallTemplate, SetTemplateDir
from reconciler.server_library import install_library_op, library_version

FOREIGN = "# the operator's own settings\n[user]\n\tname = Git User\n[core]\n\tpager = less\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "git"
    home.mkdir()
    monkeypatch.setattr(common, "HOME", str(home))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_TEMPLATE_DIR", "GIT_CONFIG_GLOBAL", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    library.op_install_library(install_library_op(runtime=False))
    return home


def ops(home: Path, mode: str, expect: str | None) -> tuple[InstallTemplate, SetTemplateDir]:
    """The two ops of the planner's action for a cluster in ``mode``."""
    entries = template_entries(mode, str(home))
    digest = template.template_digest(entries)
    return (
        InstallTemplate(digest, entries, library_version()),
        SetTemplateDir(str(home / template.TEMPLATES_DIR / digest), expect),
    )


def apply(home: Path, mode: str, expect: str | None) -> str:
    install, point = ops(home, mode, expect)
    template.op_install_template(install)
    template.op_set_template_dir(point)
    return point.value


def hooks_of(repository: Path) -> dict[str, tuple[str, int | str]]:
    found: dict[str, tuple[str, int | str]] = {}
    for path in sorted((repository / "hooks").iterdir()):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[path.name] = ("link", os.readlink(path))
        else:
            found[path.name] = (path.read_text(), stat.S_IMODE(info.st_mode))
    return found


def test_every_way_gitosis_and_apply_make_a_repository_gets_the_hooks(home: Path) -> None:
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(FOREIGN)
    gitconfig.chmod(0o600)
    value = apply(home, "quorum", None)

    # The operator's lines stay, in order, with the file's mode; one line is added.
    text = gitconfig.read_text()
    assert text.startswith(FOREIGN) and text[len(FOREIGN) :] == f"[init]\n\ttemplateDir = {value}\n"
    assert stat.S_IMODE(gitconfig.stat().st_mode) == 0o600
    assert template.template_facts(str(home)) == {
        "configured": value,
        "digest": os.path.basename(value),
    }

    wanted = {
        "post-receive": (stub(str(home)).decode(), 0o755),
        "proc-receive": ("link", "post-receive"),
    }
    repositories = home / "repositories"
    # This project's gitosis-serve and gitosis-init (git init --bare --quiet PATH).
    init_bare(str(repositories / "runtime.git"))
    # The original gitosis: `git --git-dir=. init` in the new directory, no --template.
    (repositories / "original.git").mkdir()
    subprocess.run(
        ["git", "--git-dir=.", "init", "--quiet"], cwd=repositories / "original.git", check=True
    )
    # The reconciler's own init_bare and clone_mirror.
    from reconciler.server.repositories import op_clone_mirror, op_init_bare

    op_init_bare(InitBare("repositories/apply.git"))
    op_clone_mirror(CloneMirror("repositories/clone.git", str(repositories / "apply.git")))
    for name in ("runtime", "original", "apply", "clone"):
        assert hooks_of(repositories / f"{name}.git") == wanted, name
        for path, text in template.GIT_DEFAULT_FILES.items():
            assert (repositories / f"{name}.git" / path).read_text() == text, (name, path)

    # An existing repository keeps its own hooks: the original gitosis-init runs
    # `git init` a second time on gitosis-admin, whose post-update is gitosis's.
    admin = repositories / "gitosis-admin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--template=", str(admin)], check=True)
    (admin / "hooks").mkdir(exist_ok=True)
    (admin / "hooks/post-update").write_text("#!/bin/sh\nexec gitosis-run-hook post-update\n")
    (admin / "hooks/post-update").chmod(0o755)
    before = hooks_of(admin)
    subprocess.run(["git", "--git-dir=.", "init", "--quiet"], cwd=admin, check=True)
    assert hooks_of(admin) == {**before, **wanted}

    # A second apply of the same plan changes nothing, not even the file's time.
    seen = gitconfig.stat().st_mtime_ns
    apply(home, "quorum", value)
    assert gitconfig.stat().st_mtime_ns == seen
    assert sorted(os.listdir(home / template.TEMPLATES_DIR)) == [os.path.basename(value)]


def test_a_new_mode_is_a_new_template_and_the_one_before_is_kept_once(home: Path) -> None:
    first = apply(home, "quorum", None)
    second = apply(home, "sync", first)
    assert first != second
    names = sorted(os.listdir(home / template.TEMPLATES_DIR))
    # A git init may be copying the one named until now: it stays until the next change.
    assert names == sorted(os.path.basename(v) for v in (first, second))
    init_bare(str(home / "repositories/new.git"))
    assert sorted(os.listdir(home / "repositories/new.git/hooks")) == ["post-receive"]
    third = apply(home, "quorum", second)
    assert third == first
    assert sorted(os.listdir(home / template.TEMPLATES_DIR)) == sorted(
        os.path.basename(v) for v in (second, third)
    )


def test_a_damaged_template_is_seen_and_made_again(home: Path) -> None:
    value = apply(home, "sync", None)
    hook = Path(value) / "hooks/post-receive"
    hook.write_text("#!/bin/sh\nexit 0\n")
    facts = template.template_facts(str(home))
    assert facts["configured"] == value and facts["digest"] != os.path.basename(value)
    apply(home, "sync", value)
    assert template.template_facts(str(home))["digest"] == os.path.basename(value)


def test_refusals_change_nothing(home: Path) -> None:
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(FOREIGN + "[init]\n\ttemplateDir = /usr/local/share/my-template\n")
    install, point = ops(home, "sync", None)
    template.op_install_template(install)
    # Someone set their own template after the plan was made: not overwritten.
    with pytest.raises(OpError, match="since the plan was made"):
        template.op_set_template_dir(point)
    with pytest.raises(OpError, match="not a template in"):
        template.op_set_template_dir(replace(point, value="/tmp/elsewhere", expect=None))
    with pytest.raises(OpError, match="are not template"):
        template.op_install_template(replace(install, digest="0" * 16))
    with pytest.raises(OpError, match="refusing template file"):
        bad = {"../x": {"content": "", "mode": 0o644}}
        template.op_install_template(
            replace(install, entries=bad, digest=template.template_digest(bad))
        )
    with pytest.raises(OpError, match="not installed"):
        template.op_install_template(replace(install, library="0" * 16))
    assert gitconfig.read_text().endswith("templateDir = /usr/local/share/my-template\n")


def test_the_template_config_is_what_git_init_starts_a_repository_with(home: Path) -> None:
    # The per-repository config the planner manages (quorum mode's receive.procReceiveRefs).
    entries = {
        "config": {
            "content": config_text({"receive.procReceiveRefs": ("refs/heads/", "refs/tags/")}),
            "mode": 0o644,
        },
        "hooks/post-receive": {"content": stub(str(home)).decode(), "mode": 0o755},
    }
    digest = template.template_digest(entries)
    template.op_install_template(InstallTemplate(digest, entries, library_version()))
    value = str(home / template.TEMPLATES_DIR / digest)
    template.op_set_template_dir(SetTemplateDir(value, None))
    init_bare(str(home / "repositories/r.git"))

    def get(key: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(home / "repositories/r.git"), "config", "--local", key],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert get("receive.procReceiveRefs") == "refs/tags/"  # the last of its values
    repo = str(home / "repositories/r.git")
    every = subprocess.run(
        ["git", "--git-dir", repo, "config", "--get-all", "receive.procReceiveRefs"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert every.stdout.split() == ["refs/heads/", "refs/tags/"]
    assert get("core.bare") == "true"  # git's own settings are added to it
