"""A repository whose owner planted every git setting that runs a command.

Each planted command appends the uid it runs as to `markers/<setting>`: a test asserts that
the markers directory stays empty, i.e. that git never ran any of them, as root or otherwise.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HOOKS = (
    "pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "reference-transaction",
    "post-index-change", "pre-auto-gc", "post-checkout", "post-rewrite",
)


def _cmd(markers: Path, name: str, tail: str = "true") -> str:
    return f"id -u >> {markers}/{name}; {tail}"


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=cwd, check=True, capture_output=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
    )


def arm(repo: Path, scratch: Path) -> Path:
    """Plant hostile settings in `repo` (which has a `.git`); returns the markers directory.
    `scratch` is a directory outside the repository for the hooks, include file and markers."""
    markers = scratch / "markers"
    markers.mkdir(mode=0o1777, exist_ok=True)
    os.chmod(markers, 0o1777)
    hooks = scratch / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in HOOKS:
        script = hooks / hook
        script.write_text(f"#!/bin/sh\nid -u >> {markers}/hook-{hook}\n")
        script.chmod(0o755)
    include = scratch / "evil.include"
    include.write_text(
        "[filter \"incl\"]\n"
        f"\tclean = {_cmd(markers, 'include-clean', 'cat')}\n"
        f"\tsmudge = {_cmd(markers, 'include-smudge', 'cat')}\n"
        "\trequired = true\n"
    )
    include.chmod(0o644)
    settings = {
        "core.fsmonitor": _cmd(markers, "fsmonitor"),
        "core.pager": _cmd(markers, "core-pager", "cat"),
        "pager.log": _cmd(markers, "pager-log", "cat"),
        "pager.status": _cmd(markers, "pager-status", "cat"),
        "core.editor": _cmd(markers, "editor"),
        "core.sshCommand": _cmd(markers, "ssh"),
        "core.askPass": _cmd(markers, "askpass"),
        "core.hooksPath": str(hooks),
        "credential.helper": "!" + _cmd(markers, "credential"),
        "diff.external": _cmd(markers, "diff-external"),
        "diff.evil.textconv": _cmd(markers, "textconv", "cat"),
        "diff.evil.command": _cmd(markers, "diff-command"),
        "merge.evil.driver": _cmd(markers, "merge-driver"),
        "filter.evil.clean": _cmd(markers, "filter-clean", "cat"),
        "filter.evil.smudge": _cmd(markers, "filter-smudge", "cat"),
        "filter.evil.required": "true",
        "filter.proc.process": _cmd(markers, "filter-process", "false"),
        "gpg.program": _cmd(markers, "gpg", "false"),
        "commit.gpgSign": "true",
        "log.showSignature": "true",
        "status.submoduleSummary": "true",
        "include.path": str(include),
    }
    config = repo / ".git" / "config"
    for key, value in settings.items():
        _git("config", "--file", str(config), key, value)
    (repo / ".gitattributes").write_text(
        "* filter=evil diff=evil merge=evil\n*.inc filter=incl\n"
    )
    (repo / "local.inc").write_text("included=1\n")
    info = repo / ".git" / "info"
    info.mkdir(exist_ok=True)
    (info / "attributes").write_text("*.conf filter=proc\n")
    # An embedded repository with its own hostile configuration: `git status` of the outer
    # repository looks inside it once it is recorded as a submodule.
    inner = repo / "vendor"
    inner.mkdir(exist_ok=True)
    _git("init", "-q", str(inner))
    (inner / "README").write_text("vendor files\n")
    _git("-C", str(inner), "add", "README")
    _git("-C", str(inner), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "v")
    _git("config", "--file", str(inner / ".git" / "config"), "core.fsmonitor",
         _cmd(markers, "inner-fsmonitor"))
    return markers


def fired(markers: Path) -> dict[str, str]:
    """Which planted commands ran, and as which uids."""
    return {p.name: " ".join(p.read_text().split()) for p in sorted(markers.iterdir())}
