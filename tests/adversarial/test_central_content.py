"""A hostile central's content: values Asterisk evaluates on the branch. A synced `set_var` may
set a plain channel variable, nothing else (a dialplan function written through it, such as
`FILE()`, runs on every call of that endpoint). Each case: `synch sync` refuses the whole
change, names the section and key, and the branch's file and git history stay as they were."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from tests.integration.test_sync_real import Synch, freepbx_central, ok, settings_for

pytestmark = pytest.mark.asterisk

SITES = {"HeadOffice": [1001, 1002], "DevOps": [2001]}

HOSTILE_SET_VAR = {
    "file write": "FILE(/tmp/synch-owned,,,a)=owned",
    "shell": "SHELL(touch /tmp/synch-owned)=1",
    "astdb write": "DB(synch/owned)=1",
    "function with blanks": "CHANNEL (language)=de",
    "expression in the value": "GREETING=${SHELL(id)}",
    "arithmetic in the value": "GREETING=$[1+1]",
    "escaped value": "GREETING=\\x41\\n",
    "transfer context": "TRANSFER_CONTEXT=from-pstn",
    "dynamic features": "__DYNAMIC_FEATURES=owned",
    "no name": "=value",
    "no assignment": "GREETING",
}


def with_set_var(endpoints: str, extension: int, assignment: str) -> str:
    section = f"[{extension}]\ntype=endpoint\n"
    assert section in endpoints
    return endpoints.replace(section, f"{section}set_var={assignment}\n")


def test_set_var_may_set_plain_channel_variables_only(
    tmp_path: Path, asterisk_factory: Callable[..., AsteriskInstance]
) -> None:
    good = freepbx_central(SITES)
    central = asterisk_factory("hostile-central", configs=good)
    branch = asterisk_factory("hostile-branch")
    synch = Synch(settings_for(central, branch, tmp_path / "etc"), tmp_path)
    ok(synch("sync"))
    before = synch.file.read_bytes()
    head = synch.git("rev-parse", "HEAD")
    endpoints = good["pjsip.endpoint.conf"]
    for case, assignment in HOSTILE_SET_VAR.items():
        central.write_config("pjsip.endpoint.conf", with_set_var(endpoints, 1002, assignment))
        result = synch("sync")
        assert result.returncode == 1, (case, result.stdout, result.stderr)
        assert result.stdout.startswith("sync failed: refused unsafe central config"), (
            case, result.stdout)  # fmt: skip
        assert "section '1002': set_var=" in result.stdout, (case, result.stdout)
        assert synch.file.read_bytes() == before, case
        assert synch.git("rev-parse", "HEAD") == head, case
        assert synch.git("status", "--porcelain") == "", case
    # Plain variables, inheritance prefixes included, still pass.
    central.write_config(
        "pjsip.endpoint.conf", with_set_var(endpoints, 1002, "__CALLGROUP_NOTE=desk 2, floor 1")
    )
    assert ok(synch("sync")).startswith("sync applied: ~1002")
    assert "set_var=__CALLGROUP_NOTE=desk 2, floor 1\n" in synch.file.read_text()
