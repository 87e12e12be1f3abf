"""An account synced from the central names a context the branch uses for something else.

Asterisk merges every `[name]` section of extensions.conf and its includes into one context.
An endpoint with `context=from-pstn` must therefore never make synch write `[from-pstn]`: on
the branch that is the trunk's inbound context, and the generated routes (outbound patterns
to the trunk) would let callers from the PSTN dial out again. synch writes only the contexts
listed in `dialplan.contexts` (default: FreePBX's `from-internal`); any other account is left
out of the dialplan with a warning, and the rest of the sync goes on.

Real `synch sync` against a real central and branch Asterisk 22.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from tests.integration.test_sync_real import Synch, freepbx_central, ok, settings_for

pytestmark = pytest.mark.asterisk

Factory = Callable[..., AsteriskInstance]
BRANCH_INBOUND = "[from-pstn]\nexten => 5551234,1,Dial(PJSIP/1001)\n"


def _with_context(endpoints: str, extension: int, context: str) -> str:
    """The central's endpoint file with `extension`'s `context=` changed."""
    pattern = rf"(\[{extension}\]\ntype=endpoint\n(?:.*\n)*?)context=[^\n]*"
    return re.sub(pattern, rf"\g<1>context={context}", endpoints, count=1)


@pytest.fixture
def central(asterisk_factory: Factory) -> AsteriskInstance:
    files = freepbx_central({"HeadOffice": [1001, 1002, 1003]}, custom=False)
    endpoints = files["pjsip.endpoint.conf"]
    for extension, context in ((1001, "from-internal"), (1002, "from-internal"),
                               (1003, "from-pstn")):
        endpoints = _with_context(endpoints, extension, context)
    files["pjsip.endpoint.conf"] = endpoints
    return asterisk_factory("ctx-central", configs=files)


@pytest.fixture
def branch(asterisk_factory: Factory) -> AsteriskInstance:
    return asterisk_factory(
        "ctx-branch",
        configs={"extensions.conf": BRANCH_INBOUND + "\n#tryinclude extensions_synch.conf\n"},
    )


def _synch(tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance,
           **dialplan: object) -> Synch:
    config = settings_for(central, branch, branch.config_dir)
    config["dialplan"] = {
        "enabled": True, "trunk": "pstn-gw", "outbound": ["_00X."], **dialplan
    }
    return Synch(config, tmp_path)


def test_foreign_context_is_never_written_and_the_rest_syncs(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance
) -> None:
    assert "context=from-pstn" in central.read_config("pjsip.endpoint.conf")
    synch = _synch(tmp_path, central, branch)

    result = synch("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("sync applied: +1001 +1002 +1003")

    generated = (branch.config_dir / "extensions_synch.conf").read_text()
    assert "[from-internal]" in generated
    assert "[from-pstn]" not in generated
    # The branch's own inbound context is exactly what the branch wrote: no emergency,
    # outbound route or phone of synch's was merged into it.
    inbound = branch.cli("dialplan show from-pstn")
    assert "'5551234' =>" in inbound, inbound
    for merged in ("'112' =>", "'_00X.' =>", "'1002' =>", "synch-unknown"):
        assert merged not in inbound, inbound
    # The operator is told which account, which context and which key to change.
    assert re.search(r"warning: .*1003.*from-pstn.*dialplan\.contexts", result.stderr), (
        result.stderr
    )
    internal = branch.cli("dialplan show from-internal")
    for needed in ("'112' =>", "'1001' =>", "'1002' =>", "'_00X.' =>"):
        assert needed in internal, internal


def test_listed_contexts_are_the_ones_generated(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance
) -> None:
    synch = _synch(tmp_path, central, branch, contexts=["from-internal-sales"])
    result = synch("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    generated = (branch.config_dir / "extensions_synch.conf").read_text()
    # Nobody uses from-internal-sales, and from-internal is no longer listed: no context.
    assert re.findall(r"^\[(from-[^\]]*)\]", generated, re.M) == []
    assert "'112' =>" not in branch.cli("dialplan show from-pstn")
    assert "OK" in ok(synch("check-config"))
