"""What systemd sees: an internal error exits with a code it restarts (2 is reserved for a
refused configuration, which no restart can fix), and the watchdog is fed only while the daemon
serves (its probe loop runs and its DNS answers), not merely while its event loop turns."""

from __future__ import annotations

import configparser
import socket
import sys
import threading
import time
from pathlib import Path

from lab.ports import free_port
from lab.synchproc import SynchProcess, lab_config
from lab.wait import wait_until
from tests.adversarial.faults import INJECTED

UNIT = Path(__file__).resolve().parents[2] / "appliance" / "synch.service"


class FaultyProcess(SynchProcess):
    """`synch run` with a fault from tests.adversarial.faults."""

    def __init__(self, fault: str, config: dict[str, object], workdir: Path):
        super().__init__(config, workdir)  # type: ignore[arg-type]
        self.fault = fault

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tests.adversarial.faults", self.fault, *args,
                "-c", str(self.config_path)]  # fmt: skip


def config_for(tmp_path: Path) -> dict[str, object]:
    # Nothing listens at the central's or the branch's AMI port: probes fail, which is fine.
    return lab_config(
        central_host="127.0.0.1", central_port=free_port(), central_user="synch",
        central_secret="secret", branch_port=free_port(), branch_user="synch",
        branch_secret="secret", localconfigspath=tmp_path / "etc",
        forwarders=[f"127.0.0.1:{free_port('udp')}"],
    )  # fmt: skip


def restart_policy() -> tuple[str, set[int]]:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    service = unit["Service"]
    return service["Restart"], {int(c) for c in service["RestartPreventExitStatus"].split()}


def test_an_internal_error_exits_with_a_code_systemd_restarts(tmp_path: Path) -> None:
    synch = FaultyProcess("crash", config_for(tmp_path), tmp_path)
    synch.start(wait=False)
    assert synch.proc is not None
    code = synch.proc.wait(30)
    restart, prevented = restart_policy()
    assert restart == "on-failure"
    assert code != 0 and code not in prevented, f"exit {code}; the unit never restarts {prevented}"
    assert prevented == {2}
    assert "internal error" in synch.log() and INJECTED in synch.log()
    # A refused configuration is the one failure systemd must not retry.
    synch.config["probemonitor"] = {"interval": "soon"}  # type: ignore[index]
    synch.write_config()
    refused = synch.cli("run", timeout=30)
    assert refused.returncode == 2, refused.stderr
    assert "probemonitor.interval" in refused.stderr


def test_the_watchdog_starves_when_dns_stops_answering(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.2)
    pings: list[float] = []  # when each WATCHDOG=1 arrived
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                message = listener.recv(4096).decode()
            except TimeoutError:
                continue
            if "WATCHDOG=1" in message:
                pings.append(time.monotonic())

    def dns_silent() -> bool:
        try:
            synch.query("sip.example.local", timeout=0.3)
        except OSError:  # timed out
            return True
        return False

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    synch = FaultyProcess("dns-stops", config_for(tmp_path), tmp_path)
    synch.start(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"})
    try:
        wait_until(lambda: pings, 5, message="a watchdog ping while everything serves")
        wait_until(dns_silent, 10, message="DNS stops (the injected fault)")
        stopped = time.monotonic()
        time.sleep(4.0)
        late = [p for p in pings if p > stopped + 1.0]  # one ping may have been on its way
        assert not late, f"{len(late)} watchdog pings after DNS stopped answering"
        assert "DNS does not answer" in synch.log()
        assert synch.status()["Service"] in ("Normal", "Failover")  # the rest still runs
    finally:
        synch.stop()
        done.set()
        receiver.join()
        listener.close()
