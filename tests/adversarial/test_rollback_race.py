"""`synch rollback` while the daemon's sync is half-way through a slow GetConfig: the rollback
must stand. The daemon takes its decision to write under the lock the rollback takes too."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lab.synchproc import SynchProcess, lab_config
from lab.wait import wait_until
from tests.adversarial.fake_central import FakeCentral
from tests.integration.test_sync_real import git, ok
from tests.unit.fake_ami import FakeAmi

V1 = {"HeadOffice": [1001, 1002]}
V2 = {"HeadOffice": [1001, 1002, 1003]}
V3 = {"HeadOffice": [1001, 1002, 1003, 1004]}


def test_a_rollback_during_a_slow_fetch_is_not_undone(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    with FakeCentral(V1) as central, FakeAmi() as branch:
        config = lab_config(
            central_host="127.0.0.1", central_port=central.port, central_user="synch",
            central_secret="secret", branch_port=branch.port, branch_user="synch",
            branch_secret="secret", localconfigspath=etc, forwarders=["127.0.0.1:9"],
        )  # fmt: skip
        config["amiremote"]["timeout"] = 5.0
        config["probemonitor"]["interval"] = 5.0
        synch = SynchProcess(config, tmp_path).start()
        try:
            wait_until(lambda: synch.details()["LastSync"].get("Result") == "applied", 20)
            first = git(etc, "rev-parse", "HEAD").strip()
            v1_text = (etc / "pjsip_synch.conf").read_text()
            central.set_sites(V2)
            assert synch.admin("Sync")["Result"] == "applied"

            # The central changes again, and its GetConfig now takes two seconds.
            central.set_sites(V3)
            central.delay["getconfig"] = 2.0
            fetches = central.get_configs()
            answer: dict[str, Any] = {}
            sync = threading.Thread(target=lambda: answer.update(synch.admin("Sync")))
            sync.start()
            wait_until(lambda: central.get_configs() > fetches, 10, message="fetch under way")
            rolled = synch.cli("rollback", first[:10])
            assert "automatic sync paused" in ok(rolled)
            sync.join(30)
            assert not sync.is_alive()
        finally:
            synch.stop()
    # The cycle that was fetching saw the pause under the lock and wrote nothing.
    assert answer["Result"] == "skipped", answer
    assert "paused" in answer["Reason"], answer
    assert (etc / "pjsip_synch.conf").read_text() == v1_text
    assert git(etc, "log", "-1", "--format=%s").startswith("rollback: ")
    assert git(etc, "status", "--porcelain") == ""
