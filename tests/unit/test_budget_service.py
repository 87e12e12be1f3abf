"""The daemon's failover budget (synch/services/budget.py): read from the settings and the
synced file on disk, exported, logged once and again only when a sync changed it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from synch.config import Settings, parse_settings
from synch.metrics import Metrics
from synch.services.budget import BudgetService, site_budget
from synch.sync.outcome import Outcome, SyncResult
from tests.unit.test_config import config_text


def settings_for(etc: Path, **probemonitor: object) -> Settings:
    return parse_settings(config_text(
        syncmanager={"mode": "pjsip", "localconfigspath": str(etc)},
        dnsservice={"recordttl": 30},
        probemonitor=dict(probemonitor),
        failover={"mirrorcontacts": False},  # every term counted
    ))  # fmt: skip


def write_aors(etc: Path, maximum: int) -> None:
    path = etc / "pjsip_synch.conf"
    path.write_text(
        "[1001]\ntype=endpoint\naors=1001\n\n"
        f"[1001]\ntype=aor\nmax_contacts=1\nmaximum_expiration={maximum}\n"
    )
    # a second write within the file system's timestamp granularity must still be seen
    stamp = os.stat(path).st_mtime_ns + maximum
    os.utime(path, ns=(stamp, stamp))


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_site_budget_reads_the_synced_file(tmp_path: Path) -> None:
    assert site_budget(settings_for(tmp_path)).registration.note.startswith("no synced file yet")
    write_aors(tmp_path, 600)
    budget = site_budget(settings_for(tmp_path))
    assert budget.seconds == 19 + 30 + 600
    assert budget.registration.accounts == ("1001",)


def test_exported_at_start_and_again_after_a_sync_that_changed_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_aors(tmp_path, 7200)
    metrics = Metrics()
    service = BudgetService(settings_for(tmp_path), metrics)
    with caplog.at_level(logging.INFO, logger="synch"):
        service.refresh("at start")
    assert gauge(metrics, "synch_failover_budget_seconds") == 19 + 30 + 7200
    assert gauge(metrics, "synch_fallback_budget_seconds") == 25 + 30 + 7200
    assert gauge(metrics, "synch_failover_budget_target_seconds") == 120
    assert [gauge(metrics, "synch_failover_budget_term_seconds", term=term)
            for term in ("detection", "dns_ttl", "registration")] == [19, 30, 7200]  # fmt: skip
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("failover budget (at start): a phone may be "
                                          "unreachable for up to 7249 s")  # fmt: skip
    assert "more than probemonitor.failoverbudgettarget: set FreePBX Max Expiration" in (
        record.getMessage()
    )

    caplog.clear()
    unchanged = Outcome(SyncResult.UNCHANGED)
    with caplog.at_level(logging.INFO, logger="synch"):
        service.after_sync(unchanged)
    assert caplog.records == []  # the same budget is not logged again

    write_aors(tmp_path, 60)
    with caplog.at_level(logging.INFO, logger="synch"):
        service.after_sync(Outcome(SyncResult.APPLIED))
    assert gauge(metrics, "synch_failover_budget_seconds") == 19 + 30 + 60
    assert gauge(metrics, "synch_failover_budget_term_seconds", term="registration") == 60
    [record] = caplog.records
    assert record.levelno == logging.INFO  # within the target now
    assert record.getMessage() == (
        "failover budget (after a sync): a phone may be unreachable for up to 109 s after a cut "
        "(detection 19 s + dns_ttl 30 s + registration 60 s; target 120 s)"
    )
    details = service.details()["FailoverBudget"]
    assert isinstance(details, dict)
    assert (details["Seconds"], details["OverTarget"]) == (109, False)


def test_mirrored_contacts_zero_the_registration_term(tmp_path: Path) -> None:
    write_aors(tmp_path, 3600)
    metrics = Metrics()
    BudgetService(settings_for(tmp_path), metrics, contacts_mirrored=True).refresh("at start")
    assert gauge(metrics, "synch_failover_budget_seconds") == 19 + 30
    assert gauge(metrics, "synch_failover_budget_term_seconds", term="registration") == 0
    assert gauge(metrics, "synch_fallback_budget_seconds") == 25 + 30 + 3600


def test_no_target_is_exported_as_zero(tmp_path: Path) -> None:
    metrics = Metrics()
    BudgetService(settings_for(tmp_path, failoverbudgettarget=0), metrics).refresh("at start")
    assert gauge(metrics, "synch_failover_budget_target_seconds") == 0


def test_only_a_regular_synced_file_is_read_and_never_quoted(tmp_path: Path) -> None:
    (tmp_path / "pjsip_synch.conf").symlink_to("/dev/zero")
    budget = site_budget(settings_for(tmp_path))
    assert budget.registration.seconds == 7200
    assert "is not a regular file" in budget.registration.note
    (tmp_path / "pjsip_synch.conf").unlink()
    os.mkfifo(tmp_path / "pjsip_synch.conf")  # opening it must not wait for a writer
    assert "is not a regular file" in site_budget(settings_for(tmp_path)).registration.note
    (tmp_path / "pjsip_synch.conf").unlink()
    (tmp_path / "pjsip_synch.conf").write_text("root:secret-hash:19000:0:99999:7:::\n")
    note = site_budget(settings_for(tmp_path)).registration.note
    assert note == "the synced file does not parse" and "secret" not in note


def test_contacts_are_mirrored_by_default_in_pjsip_mode(tmp_path: Path) -> None:
    where = {"localconfigspath": str(tmp_path)}
    pjsip = parse_settings(config_text(syncmanager={"mode": "pjsip", **where}))
    assert site_budget(pjsip).contacts_mirrored is True
    sip = parse_settings(
        config_text(syncmanager={"mode": "sip", "localconfigspath": str(tmp_path)})
    )
    assert site_budget(sip).contacts_mirrored is False
