"""The sync engine against a real central and branch Asterisk 22: what lands in the branch's
file, what the branch then serves to a phone (sipp), the git history, the guard, bad input,
refused reloads, and processes killed in the middle of a sync.

`synch sync` runs as a subprocess (it must be monkey-patched, pytest is not); cycles that need
one long-lived SyncJob (the CoreStatus shortcut) run in a small driver subprocess.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance, running_instance
from lab.ports import free_port
from lab.samples import ORIGINAL_README_SIP_ADDITIONAL, PJSIP_KINDS, freepbx_pjsip, secret_for
from lab.sipp import register
from lab.synchproc import SynchProcess, lab_config_for
from lab.wait import wait_until
from synch.sync.conftext import parse_conf_text
from synch.sync.model import ConfigFile

pytestmark = pytest.mark.asterisk

Factory = Callable[..., AsteriskInstance]
REPO = Path(__file__).resolve().parents[2]
SYNCED = "pjsip_synch.conf"

# -- a generated FreePBX-style central ----------------------------------------------------------

SITE_NAMES = ("HeadOffice", "DevOps", "Support", "Sales", "Plant", "Remote")


def site_extensions(per_site: int) -> dict[str, list[int]]:
    return {name: [1000 * (i + 1) + n for n in range(per_site)]
            for i, name in enumerate(SITE_NAMES)}


# FreePBX keeps hand-written additions in the *_custom files it includes first, and appends
# `(+)` sections from *_custom_post: a template, endpoints inheriting it, one appended codec.
ENDPOINT_CUSTOM = """\
[phone-defaults](!)
type=endpoint
transport=0.0.0.0-udp
context=from-internal
disallow=all
allow=ulaw
allow=g722
direct_media=no
set_var=__FROM_TEMPLATE=yes

[7001](phone-defaults)
aors=7001
auth=7001-auth
accountcode=HeadOffice
callerid=Lobby <7001>

[7002](phone-defaults)
aors=7002
auth=7002-auth
accountcode=DevOps
"""


def freepbx_central(sites: dict[str, list[int]], custom: bool = True) -> dict[str, str]:
    """FreePBX's generated files for `sites`; `custom`: plus the template and (+) additions."""
    files = freepbx_pjsip(sites)
    if not custom:
        return files
    # FreePBX names its transport in every extension; the lab's own is `transport-udp`.
    files["pjsip.endpoint.conf"] = files["pjsip.endpoint.conf"].replace(
        "type=endpoint\naors=", "type=endpoint\ntransport=0.0.0.0-udp\naors="
    ) + "\n#include pjsip.endpoint_custom_post.conf\n"
    files["pjsip.endpoint_custom.conf"] = ENDPOINT_CUSTOM
    files["pjsip.endpoint_custom_post.conf"] = "[1001](+)\nallow=opus\n"
    files["pjsip.aor_custom.conf"] = "".join(
        f"[{e}]\ntype=aor\nmax_contacts=1\n\n" for e in (7001, 7002))
    files["pjsip.auth_custom.conf"] = "".join(
        f"[{e}-auth]\ntype=auth\nauth_type=userpass\nusername={e}\npassword={secret_for(e)}\n\n"
        for e in (7001, 7002))
    files["sip_additional.conf"] = ORIGINAL_README_SIP_ADDITIONAL
    return files


def set_sites(central: AsteriskInstance, sites: dict[str, list[int]]) -> None:
    """Give the running `central` FreePBX's PJSIP files for `sites` (no custom additions)."""
    files = freepbx_central(sites, custom=False)
    for kind in PJSIP_KINDS:
        central.write_config(f"pjsip.{kind}.conf", files[f"pjsip.{kind}.conf"])
    central.reload("res_pjsip.so")


BIG_SITES = site_extensions(60)  # 360 extensions, 60 of them HeadOffice
HEADOFFICE = [str(e) for e in BIG_SITES["HeadOffice"]] + ["7001"]


@pytest.fixture(scope="module")
def big_central(lab: Path) -> Iterator[AsteriskInstance]:
    with running_instance("sync-central", configs=freepbx_central(BIG_SITES)) as inst:
        yield inst


@pytest.fixture(scope="module")
def branch(lab: Path) -> Iterator[AsteriskInstance]:
    """A branch whose own config dir is the synced one (pjsip.conf includes pjsip_synch.conf)."""
    with running_instance("sync-branch") as inst:
        yield inst


@pytest.fixture(scope="module")
def reloader(lab: Path) -> Iterator[AsteriskInstance]:
    """A branch that only answers reloads, for tests that sync into a scratch directory."""
    with running_instance("sync-reloader") as inst:
        yield inst


# -- helpers ------------------------------------------------------------------------------------


def settings_for(
    central: AsteriskInstance, branch: AsteriskInstance, directory: Path, **sync: Any
) -> dict[str, Any]:
    config = lab_config_for(central, branch, directory, [f"127.0.0.1:{free_port('both')}"])
    config["probemonitor"]["interval"] = 10
    config["amiremote"]["timeout"] = 10
    config["amilocal"]["timeout"] = 10
    config["syncmanager"].update(sync)
    return config


class Synch:
    """`synch COMMAND -c FILE` runs against one settings file."""

    def __init__(self, config: dict[str, Any], workdir: Path):
        self.proc = SynchProcess(config, workdir)
        self.directory = Path(config["syncmanager"]["localconfigspath"])
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def config(self) -> dict[str, Any]:
        return self.proc.config

    def update(self, section: str, **values: Any) -> None:
        self.proc.config[section].update(values)
        self.proc.write_config()

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.proc.cli(*args)

    @property
    def file(self) -> Path:
        return self.directory / self.config["syncmanager"].get("localfilename", SYNCED)

    def git(self, *args: str) -> str:
        return git(self.directory, *args)


def git(directory: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(
        ["git", "-c", f"safe.directory={directory}", "-C", str(directory), *args],
        capture_output=True, text=True, check=False,
    )
    if check and out.returncode:
        raise AssertionError(f"git {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def sections(config: ConfigFile, type_: str) -> set[str]:
    return {c.name for c in config if c.type == type_}


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# -- pjsip mode on the big central, then a phone on the branch --------------------------------


def test_pjsip_site_is_synced_reloaded_and_phones_register(
    tmp_path: Path, big_central: AsteriskInstance, branch: AsteriskInstance
) -> None:
    synch = Synch(settings_for(big_central, branch, branch.config_dir), tmp_path)
    # A wrong branch password first: the file is written and committed, the reload refused.
    synch.update("amilocal", password="not-the-branch-secret")
    refused = synch("sync")
    assert refused.returncode == 1
    assert "sync failed: reload failed: res_pjsip.so on the branch" in refused.stdout
    assert "Authentication failed" in refused.stdout
    assert synch.file.exists() and branch.endpoints() == set()
    assert synch.git("log", "-1", "--format=%s").startswith("sync: +1000 +1001")
    # Right password: nothing new to write, but the owed reload happens.
    synch.update("amilocal", password=branch.ami_secret)
    assert ok(synch("sync")).startswith("sync unchanged")

    config = parse_conf_text(synch.file.read_text())
    assert sections(config, "endpoint") == set(HEADOFFICE)
    assert sections(config, "aor") == set(HEADOFFICE)
    assert sections(config, "auth") == {f"{e}-auth" for e in HEADOFFICE}
    assert len(config) == 3 * len(HEADOFFICE)  # exactly these, each once
    ep = config.find("1001", "endpoint")
    assert ep is not None
    assert ep.values("allow") == ["ulaw", "alaw", "g722", "opus"]  # duplicates and (+) kept
    assert ep.values("set_var") == ["__SITE=HeadOffice", "NOTE=desk 1001; HeadOffice"]
    assert "set_var=NOTE=desk 1001\\; HeadOffice\n" in synch.file.read_text()
    lobby = config.find("7001", "endpoint")
    assert lobby is not None and lobby.get("direct_media") == "no"  # from the template
    assert lobby.get("set_var") == "__FROM_TEMPLATE=yes"
    text = synch.file.read_text()
    assert "\ntransport=" not in text and "categoryname" not in text
    assert "phone-defaults" not in text and "Trunk" not in text

    assert branch.endpoints() == set(HEADOFFICE)
    phone = register(branch.sip_host, branch.sip_port, "1001", secret_for(1001))
    assert phone.ok, phone.output
    lobby_phone = register(branch.sip_host, branch.sip_port, "7001", secret_for(7001))
    assert lobby_phone.ok, lobby_phone.output
    other_site = register(branch.sip_host, branch.sip_port, "2001", secret_for(2001))
    assert not other_site.ok, "a DevOps phone must not register at the HeadOffice branch"
    wrong = register(branch.sip_host, branch.sip_port, "1001", "not-the-password")
    assert not wrong.ok
    assert ok(synch("sync")).startswith("sync unchanged")


def test_sip_mode_writes_whole_values_and_reports_missing_chan_sip(
    tmp_path: Path, big_central: AsteriskInstance, reloader: AsteriskInstance
) -> None:
    synch = Synch(settings_for(big_central, reloader, tmp_path / "etc", mode="sip",
                               localfilename="sip_synch.conf"), tmp_path)
    result = synch("sync")
    assert result.returncode == 1
    assert "sync failed: reload failed: chan_sip.so on the branch" in result.stdout
    assert "No such module" in result.stdout
    text = synch.file.read_text()
    central = parse_conf_text(ORIGINAL_README_SIP_ADDITIONAL)
    expected = [c for c in central if c.get("accountcode") == "HeadOffice"]
    assert [(c.name, c.lines) for c in parse_conf_text(text)] == [
        (c.name, c.lines) for c in expected]
    assert "setvar=REALCALLERIDNUM=1001\n" in text  # whole, not cut at the second '='
    assert "allow=ulaw\nallow=alaw\n" in text and "callgroup=\n" in text
    assert "categoryname" not in text
    assert synch.git("log", "--format=%s").splitlines() == [
        "sync: +1001 +1002 +1003 from 127.0.0.1 (sip)"]


# -- a long-lived job: one commit per change, no GetConfig while the central is unchanged ------

DRIVER = r"""
from gevent import monkey
monkey.patch_all()
import json, sys
from collections import Counter
from synch.ami.client import AmiClient
from synch.config import load_settings
from synch.sync.job import SyncJob

settings = load_settings(sys.argv[1])
calls = Counter()

class Counting(AmiClient):
    def action(self, action, headers=None, timeout=None):
        calls[action] += 1
        return super().action(action, headers, timeout)

ar, al = settings.amiremote, settings.amilocal
job = SyncJob(
    settings,
    Counting(ar.hostname, ar.port, ar.username, ar.password, timeout=ar.timeout),
    AmiClient(al.hostname, al.port, al.username, al.password, timeout=al.timeout, name="branch"),
)
for line in sys.stdin:
    before = dict(calls)
    outcome = job.run(**json.loads(line))
    print(json.dumps({
        "result": outcome.result, "reason": outcome.reason, "commit": outcome.commit,
        "change": str(outcome.change) if outcome.change else None,
        "calls": {k: v - before.get(k, 0) for k, v in calls.items() if v - before.get(k, 0)},
    }), flush=True)
"""


class JobDriver:
    def __init__(self, config_path: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(config_path)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def run(self, **kwargs: bool) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(kwargs) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise AssertionError(f"driver died: {self.proc.communicate()[1]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def test_changes_make_one_commit_and_an_unchanged_central_is_not_fetched(
    tmp_path: Path, asterisk_factory: Factory, reloader: AsteriskInstance
) -> None:
    sites = {"HeadOffice": [1001, 1002, 1003], "DevOps": [2001]}
    central = asterisk_factory("sync-changes", configs=freepbx_central(sites))
    synch = Synch(settings_for(central, reloader, tmp_path / "etc"), tmp_path)
    driver = JobDriver(synch.proc.config_path)
    try:
        first = driver.run()
        assert first["result"] == "applied", first
        assert first["calls"]["GetConfig"] == 3
        # Every look fetches in full until a look a second after the mark was first seen
        # confirms it; from then on an unchanged central costs one CoreStatus.
        skipped = wait_until(lambda: (r := driver.run())["result"] == "skipped" and r, 10,
                             interval=0.2, message="the central's reload mark is confirmed")
        assert skipped["calls"] == {"CoreStatus": 1}
        again = driver.run()
        assert again["result"] == "skipped" and "GetConfig" not in again["calls"]
        commits = synch.git("rev-list", "--count", "HEAD")

        changed = freepbx_central({"HeadOffice": [1001, 1003, 1004], "DevOps": [2001]})
        changed["pjsip.auth.conf"] = changed["pjsip.auth.conf"].replace(
            f"password={secret_for(1001)}", "password=NewSecret1001")
        for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
            central.write_config(name, changed[name])
        central.reload("res_pjsip.so")
        applied = driver.run()
        assert applied["result"] == "applied", applied
        assert applied["change"] == "+1004 -1002 ~1001"
        assert int(synch.git("rev-list", "--count", "HEAD")) == int(commits) + 1
        assert synch.git("log", "-1", "--format=%s").strip() == (
            "sync: +1004 -1002 ~1001 from 127.0.0.1 (pjsip)")
        assert "password=NewSecret1001" in synch.file.read_text()
        after = driver.run()
        assert after["result"] in ("unchanged", "skipped") and after["commit"] is None
        assert int(synch.git("rev-list", "--count", "HEAD")) == int(commits) + 1
    finally:
        driver.close()


# -- the guard, seen through the daemon ----------------------------------------------------------


def test_guard_trips_when_the_central_loses_the_site_and_force_accepts_once(
    tmp_path: Path, asterisk_factory: Factory
) -> None:
    full = {"HeadOffice": [1001, 1002, 1003], "DevOps": [2001]}
    central = asterisk_factory("guard-central", configs=freepbx_central(full, custom=False))
    site_branch = asterisk_factory("guard-branch")
    config = settings_for(central, site_branch, site_branch.config_dir)
    config["probemonitor"].update(interval=0.5)
    config["amiremote"]["timeout"] = 0.4
    daemon = SynchProcess(config, tmp_path)
    daemon.start()
    try:
        wait_until(lambda: daemon.status()["Sync"] == "Synced", 15,
                   message=f"first sync; log:\n{daemon.log()}")
        assert site_branch.endpoints() == {"1001", "1002", "1003"}

        lost = freepbx_central({"DevOps": [2001]}, custom=False)
        for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
            central.write_config(name, lost[name])
        central.reload("res_pjsip.so")
        reply = daemon.admin("Sync")
        assert reply["Result"] == "guarded", reply
        assert daemon.status()["Sync"] == "Unsynced"
        details = daemon.details()["LastSync"]
        assert details["Result"] == "guarded"
        assert "refusing to remove all 3 synced accounts" in details["Reason"]
        # The branch keeps its users: phones still register.
        assert site_branch.endpoints() == {"1001", "1002", "1003"}
        phone = register(site_branch.sip_host, site_branch.sip_port, "1002", secret_for(1002))
        assert phone.ok, phone.output

        forced = daemon.cli("sync", "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert forced.stdout.startswith("sync applied: -1001 -1002 -1003")
        assert "Forced past the remove guard" in git(site_branch.config_dir, "log", "-1")
        assert site_branch.endpoints() == set()
        assert daemon.admin("Sync")["Result"] in ("unchanged", "skipped")
        # Once: the users come back, and losing them again trips the guard again.
        restored = freepbx_central(full, custom=False)
        for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
            central.write_config(name, restored[name])
        central.reload("res_pjsip.so")
        assert daemon.admin("Sync")["Result"] == "applied"
        for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
            central.write_config(name, lost[name])
        central.reload("res_pjsip.so")
        assert daemon.admin("Sync")["Result"] == "guarded"
    finally:
        daemon.stop()


# -- bad input from the central, an unwritable directory ---------------------------------------

BAD_ENDPOINTS = {
    "missing": (None, "Config file not found"),
    "empty": ("", "has no sections"),
    "invalid": ("[1001\ntype=endpoint\n", "Config file has invalid format"),
    "exec-key": ("[1001]\ntype=endpoint\naccountcode=HeadOffice\n\\#exec /bin/touch /x=1\n",
                 "key '#exec /bin/touch /x' is not a plain Asterisk identifier"),
    "section-key": ("[1001]\ntype=endpoint\naccountcode=HeadOffice\n\\[evil]=1\n",
                    "key '[evil]' is not a plain Asterisk identifier"),
}


def test_bad_central_input_leaves_the_branch_file_and_git_untouched(
    tmp_path: Path, asterisk_factory: Factory, reloader: AsteriskInstance
) -> None:
    sites = {"HeadOffice": [1001, 1002], "DevOps": [2001]}
    good = freepbx_central(sites)
    central = asterisk_factory("bad-central", configs=good)
    synch = Synch(settings_for(central, reloader, tmp_path / "etc"), tmp_path)
    ok(synch("sync"))
    before = synch.file.read_bytes()
    head = synch.git("rev-parse", "HEAD")
    for case, (text, reason) in BAD_ENDPOINTS.items():
        target = central.config_dir / "pjsip.endpoint.conf"
        if text is None:
            target.unlink()
        else:
            central.write_config("pjsip.endpoint.conf", text)
        result = synch("sync")
        assert result.returncode == 1, (case, result.stdout, result.stderr)
        assert result.stdout.startswith("sync failed: "), (case, result.stdout)
        assert reason in result.stdout, (case, result.stdout)
        assert synch.file.read_bytes() == before, case
        assert synch.git("rev-parse", "HEAD") == head, case
        assert synch.git("status", "--porcelain") == "", case
        central.write_config("pjsip.endpoint.conf", good["pjsip.endpoint.conf"])


def test_read_only_directory_fails_and_writes_nothing(
    tmp_path: Path, asterisk_factory: Factory, reloader: AsteriskInstance
) -> None:
    central = asterisk_factory("ro-central", configs=freepbx_central({"HeadOffice": [1001]}))
    synch = Synch(settings_for(central, reloader, tmp_path / "etc"), tmp_path)
    ok(synch("sync"))
    before = synch.file.read_bytes()
    head = synch.git("rev-parse", "HEAD")
    more = freepbx_central({"HeadOffice": [1001, 1002]})
    for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
        central.write_config(name, more[name])
    # Root ignores file modes: a read-only bind mount really refuses.
    etc = str(synch.directory)
    subprocess.run(["mount", "--bind", etc, etc], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", etc], check=True)
        result = synch("sync")
    finally:
        subprocess.run(["umount", etc], check=True)
    assert result.returncode == 1
    assert "sync failed: cannot write" in result.stdout
    assert "Read-only file system" in result.stdout
    assert synch.file.read_bytes() == before
    assert synch.git("rev-parse", "HEAD") == head
    assert [p.name for p in synch.directory.glob(".*.tmp")] == []
    assert ok(synch("sync")).startswith("sync applied: +1002")


# -- SIGKILL at random points of a sync ----------------------------------------------------------


def group_gone(group: int) -> bool:
    """No process of process group `group` runs any more (zombies aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return False
    return True


def stamp(path: Path) -> tuple[int, int] | None:
    """Identifies one version of a file that is replaced by rename (None: no file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def test_sync_killed_at_random_points_leaves_old_or_new_file_and_sound_git(
    tmp_path: Path, asterisk_factory: Factory, reloader: AsteriskInstance
) -> None:
    many = list(range(10000, 10800))
    variants = [
        freepbx_central({"HeadOffice": many, "DevOps": [2001]}),
        freepbx_central({"HeadOffice": many[:600] + list(range(12000, 12200))}),
    ]
    central = asterisk_factory("kill-central", configs=variants[0])
    synch = Synch(settings_for(central, reloader, tmp_path / "etc", maxremovepercent=100),
                  tmp_path)

    def use(variant: int) -> None:
        for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
            central.write_config(name, variants[variant][name])

    texts = []
    for variant in (0, 1):
        use(variant)
        ok(synch("sync"))
        texts.append(synch.file.read_text())
    assert texts[0] != texts[1] and len(texts[0]) > 400_000
    started = time.monotonic()
    use(0)
    ok(synch("sync"))
    span = time.monotonic() - started  # one whole run, start-up included
    journal = synch.directory / ".git" / "synch-pending"

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    seen = {"old": 0, "new": 0, "journal": 0, "uncommitted": 0}
    for round_ in range(16):
        current = texts.index(synch.file.read_text())
        use(1 - current)  # always something to write
        before = stamp(journal)  # a killed round may have left it: wait for a new one
        # Its own process group: the kill takes its git children too, as systemd's kill of
        # the service's cgroup would (a git left running would race with the fsck below).
        proc = subprocess.Popen(synch.proc.command("sync"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        # The point is a kill at an arbitrary moment: half the rounds anywhere in the run,
        # half within the write/commit/reload phase, which starts with the journal.
        if round_ % 2:
            deadline = time.monotonic() + 3 * span
            while (
                stamp(journal) in (None, before) and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.25))
        else:
            time.sleep(rng.uniform(0.1, 1.0) * span)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_until(partial(group_gone, proc.pid), 10, message="the killed sync's git ends")
        text = synch.file.read_text()
        where = f"round {round_} (seed {seed})"
        assert text in texts, f"{where}: a mix of old and new"
        seen["new" if texts.index(text) != current else "old"] += 1
        seen["journal"] += journal.exists()
        seen["uncommitted"] += bool(synch.git("status", "--porcelain"))
        fsck = subprocess.run(["git", "-c", f"safe.directory={synch.directory}", "-C",
                               str(synch.directory), "fsck", "--strict", "--no-dangling"],
                              capture_output=True, text=True, check=False)
        assert fsck.returncode == 0, f"{where}: {fsck.stderr}"
    # Some kills must have hit the write phase, or this test proved little.
    assert seen["new"] and seen["old"] and seen["journal"], (seen, seed)

    # The next sync repairs whatever the last kill left: committed, reloaded, no leftovers.
    use(1)
    result = synch("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert synch.file.read_text() == texts[1]
    assert synch.git("status", "--porcelain") == ""
    assert synch.git("show", f"HEAD:{SYNCED}") == texts[1]
    assert not (synch.directory / ".git" / "synch-pending").exists()
    assert [p.name for p in synch.directory.glob(".*.tmp")] == []
    subjects = synch.git("log", "--format=%s").splitlines()
    assert all(s.startswith(("sync: ", "initial: ", "local edits: ")) for s in subjects)
    assert not any(s.startswith("local edits: ") and SYNCED in s for s in subjects), (
        f"an interrupted sync's file was committed as a local edit (seed {seed}): {subjects}")
