"""Contact mirroring and short registrations against a real central and branch Asterisk 22:
synch learns a registered phone's contact at the central, and while the branch serves the
phones the branch calls it there at once (before the phone ever registers at the branch);
on fallback the branch's AORs are as synced again."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.ports import free_port
from lab.samples import central_configs, freepbx_pjsip, secret_for
from lab.sipp import Uas, register
from lab.synchproc import SynchProcess, lab_config_for
from lab.wait import wait_until
from synch.sync.mirror import OVERLAY_FILE, overlay_aors

pytestmark = pytest.mark.asterisk


@pytest.fixture
def central(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("central", configs=central_configs())


@pytest.fixture
def branch(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("branch")


@pytest.fixture
def synch(
    tmp_path: Path,
    central: AsteriskInstance,
    branch: AsteriskInstance,
    dnsmasq: Callable[..., Dnsmasq],
) -> Iterator[SynchProcess]:
    upstream = dnsmasq({"www.example.org": "127.0.0.42"})
    config = lab_config_for(
        central, branch, branch.config_dir, [f"127.0.0.1:{upstream.port}"],
        failover={"contactnetworks": ["127.0.0.0/8"], "contactsinterval": 1},
    )  # fmt: skip
    proc = SynchProcess(config, tmp_path).start()
    yield proc
    proc.stop()


def mirror(synch: SynchProcess) -> dict[str, object]:
    found: dict[str, object] = synch.details().get("ContactMirror") or {}
    return found


def aor_option(inst: AsteriskInstance, aor: str, option: str) -> str:
    match = re.search(rf"^\s*{option}\s*:\s*(\S*)", inst.cli(f"pjsip show aor {aor}"), re.M)
    return match.group(1) if match else ""


def test_the_branch_calls_a_phone_at_its_central_contact_while_in_failover(
    synch: SynchProcess,
    central: AsteriskInstance,
    branch: AsteriskInstance,
    request: pytest.FixtureRequest,
) -> None:
    port = free_port("udp", "127.0.0.1")
    assert register(central.sip_host, central.sip_port, "1001", secret_for(1001),
                    local_port=port, expires=600).ok  # fmt: skip
    # The phone itself from now on: it answers the branch's qualify (OPTIONS) and its call.
    phone = Uas(port=port, timeout=60, max_calls=None)  # the central's MWI NOTIFYs too
    request.addfinalizer(phone.close)
    wait_until(lambda: mirror(synch).get("Contacts") == 1, 20,
               message=f"contact not learned: {synch.details()}\n{synch.log()}")  # fmt: skip
    assert mirror(synch)["Phones"] == 1 and mirror(synch)["Active"] is False
    # Normal: the branch has the synced AOR as the central has it, and no contact for it.
    assert "1001" not in branch.contacts()
    assert aor_option(branch, "1001", "maximum_expiration") == "7200"
    assert (
        (branch.config_dir / "pjsip_synch.conf")
        .read_text()
        .rstrip()
        .endswith(f"#tryinclude {OVERLAY_FILE}")
    )

    assert synch.admin("Failover")["ok"]
    wait_until(lambda: "1001" in branch.contacts(), 15,
               message=f"no contact on the branch:\n{synch.log()}")  # fmt: skip
    uri = f"sip:1001@127.0.0.1:{port}"
    assert [u for u, _ in branch.contact_details()["1001"]] == [uri]
    assert mirror(synch)["Active"] is True
    # Short, spread registrations for every synced phone (60-90 s), with or without contact.
    for aor in ("1001", "1002", "1003"):
        assert 60 <= int(aor_option(branch, aor, "maximum_expiration")) <= 90
        assert aor_option(branch, aor, "maximum_expiration") == aor_option(
            branch, aor, "default_expiration"
        )
    # The phone never registered at the branch, and the branch reaches it: a call rings it.
    answered, message = branch.originate("PJSIP/1001", ring_seconds=8)
    assert answered, f"{message}\n{branch.cli('pjsip show contacts')}"
    assert phone.numbers() == ["1001"]
    # Kept out of the history: runtime state, not configuration.
    status = subprocess_git(branch.config_dir, "status", "--porcelain", "--ignored")
    assert f"!! {OVERLAY_FILE}" in status

    # A sync that drops an account while the failover file names its AOR: that section goes
    # too, or Asterisk would refuse the whole accounts file at the reload.
    for name, text in freepbx_pjsip({"HeadOffice": [1001, 1002]}).items():
        central.write_config(name, text)
    central.reload("res_pjsip.so")
    assert synch.admin("Sync")["Result"] == "applied"
    assert overlay_aors((branch.config_dir / OVERLAY_FILE).read_text()) == {"1001", "1002"}
    assert "1003" not in branch.endpoints() and "1002" in branch.endpoints()
    assert [u for u, _ in branch.contact_details()["1001"]] == [uri]

    assert synch.admin("Normal")["ok"]
    wait_until(lambda: "1001" not in branch.contacts(), 15,
               message=f"contact still on the branch:\n{synch.log()}")  # fmt: skip
    assert aor_option(branch, "1001", "maximum_expiration") == "7200"
    assert (branch.config_dir / OVERLAY_FILE).read_text() == ""
    assert mirror(synch)["Active"] is False
    assert "failover: the branch calls 1 of 3 synced phones at their known contacts" in synch.log()


def subprocess_git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(directory), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
