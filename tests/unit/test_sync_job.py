"""SyncJob and rollback with in-process AMI doubles and the real git: every outcome, the
journal that makes a killed cycle recoverable, and the CoreStatus shortcut."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from synch.ami import AmiReply, AmiResponseError, AmiTransportError
from synch.config import AmiSettings, Settings, SyncManagerSettings
from synch.sync import job as job_module
from synch.sync.conftext import parse_conf_text
from synch.sync.job import SyncJob
from synch.sync.policy import without_dropped
from synch.sync.rollback import RollbackError, rollback
from synch.sync.store import PENDING

CENTRAL = "10.0.0.254"


def endpoint(ext: int, site: str = "HeadOffice", extra: str = "") -> str:
    return (
        f"[{ext}]\ntype=endpoint\ntransport=0.0.0.0-udp\naors={ext}\nauth={ext}-auth\n"
        f"allow=ulaw\nallow=alaw\ncontext=from-internal\naccountcode={site}\n"
        f"set_var=__SITE={site}\n{extra}"
    )


def pjsip_files(
    sites: Mapping[str, Sequence[int]], password: Mapping[int, str] | None = None
) -> dict[str, str]:
    password = password or {}
    exts = [(e, s) for s, es in sites.items() for e in es]
    return {
        "pjsip.endpoint.conf": "\n".join(endpoint(e, s) for e, s in exts),
        "pjsip.aor.conf": "\n".join(f"[{e}]\ntype=aor\nmax_contacts=1\n" for e, _ in exts),
        "pjsip.auth.conf": "\n".join(
            f"[{e}-auth]\ntype=auth\nauth_type=userpass\nusername={e}\n"
            f"password={password.get(e, f'pw{e}')}\n"
            for e, _ in exts
        ),
    }


class FakeCentral:
    """GetConfig of .conf texts as Asterisk answers it (templates flattened and left out)."""

    name = "central"

    def __init__(self, files: dict[str, str]):
        self.files = dict(files)
        self.reload_time = "10:00:00"
        self.calls: Counter[str] = Counter()
        self.headers: dict[str, list[tuple[str, str]]] = {}

    def action(
        self, action: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> AmiReply:
        self.calls[action] += 1
        if action == "CoreStatus":
            return AmiReply((("Response", "Success"), ("CoreReloadDate", "2026-01-01"),
                             ("CoreReloadTime", self.reload_time)))
        assert action == "GetConfig", action
        name = (headers or {})["Filename"]
        if name not in self.files:
            raise AmiResponseError("GetConfig refused: Config file not found",
                                   action=action, message="Config file not found")
        if name in self.headers:
            return AmiReply((("Response", "Success"), *self.headers[name]))
        out: list[tuple[str, str]] = [("Response", "Success")]
        cats = [c for c in parse_conf_text(self.files[name]) if not c.is_template]
        for i, cat in enumerate(cats):
            out.append((f"Category-{i:06d}", cat.name))
            out.extend((f"Line-{i:06d}-{j:06d}", f"{k}={v}") for j, (k, v) in enumerate(cat.lines))
        return AmiReply(tuple(out))

    def reload(self, second: str) -> None:
        self.reload_time = second

    def close(self) -> None:
        pass


class FakeBranch:
    name = "branch"

    def __init__(self) -> None:
        self.reloads: list[str] = []
        self.refuse: str | None = None

    def action(
        self, action: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> AmiReply:
        assert action == "Reload"
        if self.refuse:
            raise AmiResponseError(f"branch AMI: Reload refused: {self.refuse}", action=action,
                                   message=self.refuse)
        self.reloads.append((headers or {})["Module"])
        return AmiReply((("Response", "Success"), ("Message", "Module Reloaded")))

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_job(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch, clock: Clock | None = None,
    **sync: object,
) -> SyncJob:
    sm: dict[str, object] = {
        "mode": "pjsip", "localfilename": "pjsip_synch.conf", "filterkey": "accountcode",
        "filtervalue": "^HeadOffice$", "localconfigspath": str(tmp_path / "etc"),
        "fullcheckevery": 4, **sync,
    }
    settings = Settings(amiremote=AmiSettings(hostname=CENTRAL),
                        syncmanager=SyncManagerSettings(**sm))  # type: ignore[arg-type]
    return SyncJob(settings, central, branch, clock=clock or Clock())  # type: ignore[arg-type]


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                          check=True).stdout


def log(job: SyncJob) -> list[str]:
    if not (job.directory / ".git").exists():
        return []
    return git(job.directory, "log", "--format=%s").splitlines()


SITES = {"HeadOffice": [1001, 1002, 1003], "DevOps": [2001]}


@pytest.fixture
def central() -> FakeCentral:
    return FakeCentral(pjsip_files(SITES))


@pytest.fixture
def branch() -> FakeBranch:
    return FakeBranch()


def test_first_sync_writes_commits_and_reloads(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    outcome = job.run()
    assert outcome.result == "applied", outcome.reason
    assert outcome.accounts == 3
    assert log(job) == [f"sync: +1001 +1002 +1003 from {CENTRAL} (pjsip)"]
    body = git(job.directory, "log", "-1", "--format=%b")
    assert "pjsip.endpoint.conf,pjsip.aor.conf,pjsip.auth.conf" in body
    assert "accountcode =~ ^HeadOffice$" in body
    assert branch.reloads == ["res_pjsip.so"]
    config = parse_conf_text(job.path.read_text())
    assert [(c.name, c.type) for c in config][:3] == [
        ("1001", "endpoint"), ("1001", "aor"), ("1001-auth", "auth")]
    assert "2001" not in config.names()
    first = config.find("1001", "endpoint")
    assert first is not None
    assert first.values("allow") == ["ulaw", "alaw"]
    assert first.get("set_var") == "__SITE=HeadOffice"
    assert first.get("transport") is None  # the branch's own transport serves it
    assert not job.store.reload_owed


def test_add_remove_change_is_one_commit_and_unchanged_makes_none(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    assert job.run().result == "applied"
    central.files = pjsip_files({"HeadOffice": [1001, 1003, 1004]}, password={1001: "new"})
    central.reload("10:05:00")
    outcome = job.run()
    assert outcome.result == "applied", outcome.reason
    assert log(job)[0] == f"sync: +1004 -1002 ~1001 from {CENTRAL} (pjsip)"
    assert len(log(job)) == 2
    assert job.run(full=True).result == "unchanged"
    assert len(log(job)) == 2
    assert branch.reloads == ["res_pjsip.so"] * 2


def test_unchanged_central_is_not_fetched_once_its_mark_is_confirmed(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    clock = Clock()
    job = make_job(tmp_path, central, branch, clock)
    assert job.run().result == "applied"
    fetched = central.calls["GetConfig"]
    # Same second as the first look: a reload in that second would not show. Fetch again.
    assert job.run().result == "unchanged"
    assert central.calls["GetConfig"] == 2 * fetched
    clock.now += 2
    assert job.run().result == "unchanged"  # confirms the mark
    assert central.calls["GetConfig"] == 3 * fetched
    for _ in range(2):  # fullcheckevery=4: three cheap cycles...
        outcome = job.run()
        assert outcome.result == "skipped", outcome
    assert job.run().result == "skipped"
    assert central.calls["GetConfig"] == 3 * fetched
    assert job.run().result == "unchanged"  # ...then a full look anyway
    assert central.calls["GetConfig"] == 4 * fetched
    central.reload("10:09:00")
    central.files["pjsip.auth.conf"] = central.files["pjsip.auth.conf"].replace(
        "password=pw1002", "password=changed")
    outcome = job.run()
    assert outcome.result == "applied" and outcome.change is not None
    assert outcome.change.changed == ("1002",)
    assert job.run(force=True).result == "unchanged"  # force and full always fetch


def test_the_daemons_cycle_waits_out_the_second_of_a_new_mark_and_fetches_once(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    """After a reload (or a restart) of the central, one full fetch per branch, not two."""
    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    settings = make_job(tmp_path, central, branch).settings
    job = SyncJob(settings, central, branch, clock=clock, sleep=sleep)  # type: ignore[arg-type]
    assert job.run(settle=True).result == "applied"
    assert slept == [1.0]
    fetched = central.calls["GetConfig"]
    assert job.run(settle=True).result == "skipped"  # confirmed by the first fetch
    assert central.calls["GetConfig"] == fetched and slept == [1.0]
    clock.now += 300
    central.reload("10:05:00")
    assert job.run(settle=True).result == "unchanged"
    assert job.run(settle=True).result == "skipped"
    assert central.calls["GetConfig"] == 2 * fetched and slept == [1.0, 1.0]
    clock.now += 0.4
    central.reload("10:06:00")
    job.run(settle=True)
    assert slept[-1] == pytest.approx(1.0)  # counted from the moment this mark was first seen


def test_guard_refuses_losing_the_sites_users_until_forced(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    before = job.path.read_text()
    central.files = pjsip_files({"DevOps": [2001]})
    outcome = job.run()
    assert outcome.result == "guarded"
    assert "refusing to remove all 3 synced accounts" in outcome.reason
    assert job.path.read_text() == before and len(log(job)) == 1
    central.files = pjsip_files({"HeadOffice": [1001], "DevOps": [2001]})
    outcome = job.run()
    assert outcome.result == "guarded" and "67% > maxremovepercent 50%" in outcome.reason
    forced = job.run(force=True)
    assert forced.result == "applied"
    assert "Forced past the remove guard" in git(job.directory, "log", "-1", "--format=%b")
    assert job.run().result == "unchanged"  # accepted once, and that is now the baseline


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "Config file not found"),
        ({"pjsip.endpoint.conf": "; nothing but comments\n"}, "has no sections"),
        ({"pjsip.endpoint.conf": endpoint(1001) + "\\#exec /bin/sh -c id=1\n"},
         "key '#exec /bin/sh -c id' is not a plain Asterisk identifier"),
        ({"pjsip.endpoint.conf": endpoint(1001) + "\\[1002]=x\n"},
         "key '[1002]' is not a plain"),
    ],
    ids=["missing", "empty", "exec-key", "section-key"],
)
def test_bad_central_input_fails_and_touches_nothing(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch,
    files: dict[str, str], reason: str,
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    before, head = job.path.read_bytes(), git(job.directory, "rev-parse", "HEAD")
    good = dict(central.files)
    central.files = {k: v for k, v in good.items() if k != "pjsip.endpoint.conf"}
    central.files.update(files)
    outcome = job.run()
    assert outcome.result == "failed" and reason in outcome.reason, outcome.reason
    assert job.path.read_bytes() == before
    assert git(job.directory, "rev-parse", "HEAD") == head
    assert git(job.directory, "status", "--porcelain") == ""
    assert branch.reloads == ["res_pjsip.so"]


def test_section_name_with_a_bracket_is_refused(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    # A real Asterisk cannot produce it; a compromised central (or a proxy) can.
    central.headers["pjsip.endpoint.conf"] = [
        ("Category-000000", "1001]\n[evil"), ("Line-000000-000000", "type=endpoint"),
        ("Line-000000-000001", "accountcode=HeadOffice"),
    ]
    outcome = make_job(tmp_path, central, branch).run()
    assert outcome.result == "failed"
    assert "name is not a plain Asterisk identifier" in outcome.reason
    assert not (tmp_path / "etc" / "pjsip_synch.conf").exists()


def test_truncated_reply_fails(tmp_path: Path, central: FakeCentral, branch: FakeBranch) -> None:
    central.headers["pjsip.endpoint.conf"] = [
        ("Category-000000", "1001"), ("Line-000000-000000", "type=endpoint"),
        ("Line-000000-000002", "accountcode=HeadOffice"),
    ]
    outcome = make_job(tmp_path, central, branch).run()
    assert outcome.result == "failed" and "truncated" in outcome.reason


def test_filter_matching_nothing_is_a_warning_on_a_first_sync(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    outcome = make_job(tmp_path, central, branch, filtervalue="^Nowhere$").run()
    assert outcome.result == "applied"
    assert any("matches none of the 4 sections" in w for w in outcome.warnings)


def test_refused_reload_keeps_the_file_and_is_retried_even_after_a_restart(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    branch.refuse = "Authentication failed"
    job = make_job(tmp_path, central, branch)
    outcome = job.run()
    assert outcome.result == "failed"
    assert outcome.reason.startswith("reload failed: res_pjsip.so on the branch:")
    assert job.path.exists() and len(log(job)) == 1 and job.store.reload_owed
    assert job.run().result == "failed"  # still refused: still owed
    restarted = make_job(tmp_path, central, branch)
    branch.refuse = None
    assert restarted.run().result == "unchanged"
    assert branch.reloads == ["res_pjsip.so"] and not restarted.store.reload_owed
    assert restarted.run(full=True).result == "unchanged"
    assert branch.reloads == ["res_pjsip.so"]  # nothing owed any more


def test_only_failures_of_the_central_are_marked_as_such(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    """The schedule backs off after the central's failures only (synch.sync.schedule)."""
    job = make_job(tmp_path, central, branch)
    refused = central.files.pop("pjsip.aor.conf")  # GetConfig answers an error
    outcome = job.run()
    assert outcome.result == "failed" and outcome.central_failed
    assert outcome.reason.startswith("central pjsip.aor.conf: GetConfig refused")
    central.files["pjsip.aor.conf"] = refused

    def no_answer(*_: object, **__: object) -> AmiReply:
        raise AmiTransportError("central AMI 10.0.0.254:5038: no answer within 4 s (waiting)")

    central.action = no_answer  # type: ignore[method-assign]
    outcome = job.run()
    assert outcome.result == "failed" and outcome.central_failed
    assert "no answer within 4 s" in outcome.reason
    del central.action
    branch.refuse = "Permission denied"  # the branch's reload: not the central's doing
    outcome = job.run()
    assert outcome.result == "failed" and not outcome.central_failed
    central.headers["pjsip.endpoint.conf"] = [
        ("Category-000000", "1001]\n[evil"), ("Line-000000-000000", "type=endpoint"),
        ("Line-000000-000001", "accountcode=HeadOffice"),
    ]
    outcome = make_job(tmp_path / "other", central, branch).run()
    assert outcome.result == "failed" and not outcome.central_failed  # refused content


def test_sip_mode_reports_the_missing_chan_sip(tmp_path: Path, branch: FakeBranch) -> None:
    central = FakeCentral({"sip_additional.conf": "[1001]\naccountcode=HeadOffice\n"
                           "setvar=A=B\nallow=ulaw\nallow=alaw\n"})
    branch.refuse = "No such module"
    job = make_job(tmp_path, central, branch, mode="sip", localfilename="sip_synch.conf")
    outcome = job.run()
    assert outcome.result == "failed"
    assert "reload failed: chan_sip.so" in outcome.reason and "No such module" in outcome.reason
    assert "[1001]\naccountcode=HeadOffice\nsetvar=A=B\nallow=ulaw\nallow=alaw\n" in (
        job.path.read_text())


def test_sync_killed_between_write_and_commit_is_finished_next_cycle(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    central.files = pjsip_files({"HeadOffice": [1001, 1002, 1003, 1004]})

    def killed(*args: object) -> str:
        raise KeyboardInterrupt  # stands for SIGKILL right after the rename

    monkeypatch.setattr(job.history, "commit_files", killed)
    with pytest.raises(KeyboardInterrupt):
        job.run()
    monkeypatch.undo()
    assert "[1004]" in job.path.read_text() and job.store.reload_owed
    restarted = make_job(tmp_path, central, branch)
    outcome = restarted.run()
    assert outcome.result == "unchanged"
    assert log(restarted)[0] == f"sync: +1004 from {CENTRAL} (pjsip)"
    assert "interrupted" in git(restarted.directory, "log", "-1", "--format=%b")
    assert branch.reloads == ["res_pjsip.so"] * 2 and not restarted.store.reload_owed
    assert git(restarted.directory, "status", "--porcelain") == ""


def test_local_edits_are_committed_first(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    (job.directory / "extensions.conf").write_text("[from-internal]\n")
    job.path.write_text(job.path.read_text() + "\n[hand-made]\ntype=aor\n")
    assert job.run().result == "applied"  # the hand edit to our file is overwritten...
    assert log(job)[:2] == [
        f"sync: no account changes from {CENTRAL} (pjsip)",
        "local edits: extensions.conf, pjsip_synch.conf",  # ...after being kept in history
    ]
    assert "[hand-made]" not in job.path.read_text()


def test_dry_run_writes_nothing(tmp_path: Path, central: FakeCentral, branch: FakeBranch) -> None:
    job = make_job(tmp_path, central, branch)
    outcome = job.run(dry_run=True)
    assert outcome.result == "dry-run"
    assert outcome.diff.startswith("--- a/pjsip_synch.conf\n+++ b/pjsip_synch.conf\n")
    assert "+password=pw1001" in outcome.diff
    assert not job.directory.exists() and branch.reloads == []


def test_paused_sync_is_skipped_unless_forced(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    job.history.pause("rolled back to abc")
    central.files = pjsip_files({"HeadOffice": [1001, 1002, 1003, 1004]})
    outcome = job.run()
    assert outcome.result == "skipped" and "rolled back to abc" in outcome.reason
    assert job.run(force=True).result == "applied"


def test_rollback_restores_commits_reloads_and_pauses(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    first = job.path.read_text()
    rev = git(job.directory, "rev-parse", "--short", "HEAD").strip()
    central.files = pjsip_files({"HeadOffice": [1001, 1002, 1003, 1004]})
    job.run()
    commit = rollback(job, rev)
    assert job.path.read_text() == first
    assert log(job)[0].startswith(f"rollback: pjsip_synch.conf to {rev}")
    assert git(job.directory, "rev-parse", "HEAD").strip() == commit
    assert job.history.paused is not None and branch.reloads[-1] == "res_pjsip.so"
    assert job.run().result == "skipped"
    job.history.resume()
    assert job.run().result == "applied"
    with pytest.raises(RollbackError, match="unknown revision"):
        rollback(job, "nosuchrev")


def test_rollback_without_history_is_refused(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    with pytest.raises(RollbackError, match="no history yet"):
        rollback(make_job(tmp_path, central, branch), "HEAD")


def test_a_bug_fails_the_cycle_instead_of_raising(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise TypeError("surprise")

    monkeypatch.setattr(job_module, "render", broken)
    outcome = make_job(tmp_path, central, branch).run()
    assert outcome.result == "failed" and "internal error: TypeError: surprise" in outcome.reason


def test_unwritable_directory_fails_without_half_a_file(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    (tmp_path / "etc").write_text("a file where the directory should be")
    outcome = make_job(tmp_path, central, branch).run()
    assert outcome.result == "failed" and outcome.reason.startswith("cannot write")


def test_without_transport_touches_endpoints_only() -> None:
    config = parse_conf_text(
        "[1001]\ntype=endpoint\ntransport=0.0.0.0-udp\nallow=ulaw\n"
        "[t]\ntype=transport\ntransport=udp\n"
    )
    out = without_dropped(config, "pjsip")
    assert out.categories[0].lines == (("type", "endpoint"), ("allow", "ulaw"))
    assert out.categories[1] is config.categories[1]


def test_journal_is_json_with_the_commit_message(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    branch.refuse = "Permission denied"
    job = make_job(tmp_path, central, branch)
    job.run()
    raw = job.history.read_state(PENDING)
    assert raw is not None
    journal = json.loads(raw)
    assert journal["subject"].startswith("sync: +1001")
    assert [len(d) for d in journal["files"].values()] == [64]


def test_temp_files_of_a_killed_write_are_cleaned_up(
    tmp_path: Path, central: FakeCentral, branch: FakeBranch
) -> None:
    job = make_job(tmp_path, central, branch)
    job.run()
    stale = [job.directory / ".pjsip_synch.conf.k1ll3d.tmp",
             job.directory / ".git" / f".{PENDING}.x.tmp"]
    for path in stale:
        path.write_text("half")
    other = job.directory / ".other.conf.x.tmp"
    other.write_text("not ours")
    job.run(full=True)
    assert [p.exists() for p in stale] == [False, False] and other.exists()
