"""A central (or anyone on the unencrypted AMI path) that floods synch: the real daemon keeps
every other duty at its pace, times the request out, drops the session, and stays small."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.ports import free_port
from lab.synchproc import SynchProcess, lab_config, rss_mb
from lab.wait import wait_until
from tests.adversarial.hostile_ami import (
    endless_messages,
    endless_reply,
    hostile_central,
    large_reply,
)

FLOOD_SECONDS = 8.0
# A DNS answer from the zone takes well under a millisecond; a starved daemon gives none at all
# (0.1.0: not one answer within 5 s). The bounds leave room for a machine busy with the flood.
DNS_MEDIAN_BOUND = 0.25
DNS_BOUND = 3.0
RSS_BOUND_MB = 400  # a flooded 0.1.0 grew past 1.8 GB in 12 s


def synch_against(port: int, tmp_path: Path, **overrides: dict[str, object]) -> SynchProcess:
    config = lab_config(
        central_host="127.0.0.1", central_port=port, central_user="synch",
        central_secret="secret", branch_port=free_port(), branch_user="synch",
        branch_secret="secret", localconfigspath=tmp_path / "etc",
        forwarders=[f"127.0.0.1:{free_port('udp')}"],
        **overrides,
    )  # fmt: skip
    config["probemonitor"]["interval"] = 1.0
    config["amiremote"]["timeout"] = 0.5
    config["dnsservice"]["defaultstate"] = "Normal"
    return SynchProcess(config, tmp_path)


@pytest.fixture
def flooded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SynchProcess]:
    with hostile_central(request.param) as port:
        synch = synch_against(port, tmp_path, loglevel={"default": "information"})
        synch.start()
        try:
            yield synch
        finally:
            synch.stop()


FLOODS = {
    "endless reply": {"ping": endless_reply, "corestatus": endless_reply},
    "endless unsolicited messages": {"ping": endless_messages, "corestatus": endless_messages},
}


@pytest.mark.parametrize("flooded", FLOODS.values(), ids=FLOODS.keys(), indirect=True)
def test_a_flooding_central_never_starves_the_daemon(flooded: SynchProcess) -> None:
    synch = flooded
    assert synch.proc is not None
    wait_until(lambda: synch.details()["Probes"]["error"] >= 1, 10, message="a probe ends")
    start = time.monotonic()
    probes_before = sum(synch.details()["Probes"].values())
    latencies = []
    peak_rss = 0.0
    while time.monotonic() - start < FLOOD_SECONDS:
        asked = time.monotonic()
        assert synch.resolve_a() in ("127.0.0.10", "127.0.0.20")
        latencies.append(time.monotonic() - asked)
        assert synch.status()["Monitor"] in ("Unstable", "Failed")
        peak_rss = max(peak_rss, rss_mb(synch.proc.pid))
        time.sleep(0.05)
    median, slowest = statistics.median(latencies), max(latencies)
    print(f"\nduring the flood: {len(latencies)} DNS answers, median {median * 1000:.1f} ms, "
          f"slowest {slowest * 1000:.0f} ms; peak RSS {peak_rss:.0f} MB")
    details = synch.details()
    probes = sum(details["Probes"].values()) - probes_before
    # Every probe ends at its deadline (0.5 s) and the next starts on time (1 s interval).
    assert probes >= FLOOD_SECONDS / 1.0 - 3, f"only {probes} probes in {FLOOD_SECONDS} s"
    assert details["Probes"]["success"] == 0
    assert details["LastProbe"]["Result"] == "error"
    # A central that floods is no central: the phones went to the branch.
    assert (details["Monitor"], details["Service"]) == ("Failed", "Failover")
    assert synch.resolve_a() == "127.0.0.20"
    assert median < DNS_MEDIAN_BOUND, f"DNS answers took {median:.3f} s (median) during the flood"
    assert slowest < DNS_BOUND, f"a DNS answer took {slowest:.3f} s during the flood"
    assert peak_rss < RSS_BOUND_MB, f"RSS reached {peak_rss:.0f} MB"
    assert synch.proc.poll() is None


def test_a_reply_over_the_cap_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    # A 3 MB GetConfig against a 1 MB cap; Ping and CoreStatus are answered as Asterisk would.
    with hostile_central({"getconfig": large_reply(3 * 1024 * 1024)}) as port:
        synch = synch_against(port, tmp_path, amiremote={"maxreplymb": 1})
        # The cap, not the deadline, must end the GetConfig: give a busy machine time to
        # read the first megabyte (0.5 s was sometimes too short under load).
        synch.config["probemonitor"]["interval"] = 3.0
        synch.config["amiremote"]["timeout"] = 3.0
        synch.write_config()
        synch.start()
        try:
            last = wait_until(
                lambda: synch.details()["LastSync"].get("Result") == "failed"
                and synch.details()["LastSync"],
                20,
                message="a sync attempt",
            )
            assert "GetConfig: reply larger than 1 MB" in last["Reason"], last
            assert "amiremote.maxreplymb" in last["Reason"], last
            details = synch.details()
            # The probe session is not the sync's: the central stays Stable.
            assert details["Monitor"] in ("Unstable", "Stable")
            assert details["Sync"] == "Unsynced"
            assert not (tmp_path / "etc" / "pjsip_synch.conf").exists()
        finally:
            synch.stop()
