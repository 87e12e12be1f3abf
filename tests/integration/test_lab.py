"""The test lab itself: real Asterisk 22 instances side by side, the sample central, a
namespace that goes silent, and the loopback DNS helpers.

AMI is spoken over a raw socket here on purpose: the lab must not depend on synch's own client.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from lab.asterisk import AsteriskInstance
from lab.chroot import LabError
from lab.dnsmasq import Dnsmasq, SilentUdpServer, dns_query
from lab.netns import Netns
from lab.samples import central_configs, secret_for
from lab.wait import wait_until

Factory = Callable[..., AsteriskInstance]
Message = list[tuple[str, str]]


class RawAmi:
    """Just enough AMI: send an action, read the reply that carries our ActionID."""

    def __init__(self, host: str, port: int, timeout: float = 5) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.banner = self._line()
        self.next_id = 0

    def _line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("AMI closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def _message(self) -> Message:
        fields: Message = []
        while line := self._line():
            key, _, value = line.partition(": ")
            fields.append((key, value))
        return fields

    def action(self, name: str, *headers: tuple[str, str]) -> Message:
        self.next_id += 1
        action_id = f"lab-{self.next_id}"
        lines = [("Action", name), ("ActionID", action_id), *headers]
        self.sock.sendall("".join(f"{k}: {v}\r\n" for k, v in lines).encode() + b"\r\n")
        while True:
            message = self._message()
            if ("ActionID", action_id) in message:
                return message

    def login(self, user: str, secret: str) -> Message:
        return self.action("Login", ("Username", user), ("Secret", secret), ("Events", "off"))

    def close(self) -> None:
        self.sock.close()


def ami_for(inst: AsteriskInstance, host: str | None = None) -> RawAmi:
    ami = RawAmi(host or inst.ami_host, inst.ami_port)
    assert ("Response", "Success") in ami.login(inst.ami_user, inst.ami_secret)
    return ami


def login_and_ping(inst: AsteriskInstance, host: str | None = None) -> Message:
    ami = ami_for(inst, host)
    try:
        return ami.action("Ping")
    finally:
        ami.close()


def categories(reply: Message) -> list[str]:
    return [value for key, value in reply if key.startswith("Category-")]


def lines_of(reply: Message, category: str) -> list[str]:
    index = categories(reply).index(category)
    prefix = f"Line-{index:06d}-"
    return [value for key, value in reply if key.startswith(prefix)]


def refuses(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.asterisk
def test_two_instances_at_once_each_answer_login_and_ping(asterisk_factory: Factory) -> None:
    central = asterisk_factory("central")
    branch = asterisk_factory("branch")

    assert central.ami_port != branch.ami_port
    assert central.sip_port != branch.sip_port
    assert central.host_dir != branch.host_dir
    for inst in (central, branch):
        reply = login_and_ping(inst)
        assert ("Response", "Success") in reply
        assert ("Ping", "Pong") in reply
    assert RawAmi(branch.ami_host, branch.ami_port).banner.startswith("Asterisk Call Manager/")


@pytest.mark.asterisk
def test_wrong_secret_is_refused(asterisk_factory: Factory) -> None:
    inst = asterisk_factory("branch")
    ami = RawAmi(inst.ami_host, inst.ami_port)
    try:
        reply = ami.login(inst.ami_user, "not-" + inst.ami_secret)
    finally:
        ami.close()
    assert ("Message", "Authentication failed") in reply


@pytest.mark.asterisk
def test_kill_makes_the_ami_port_refuse(asterisk_factory: Factory) -> None:
    inst = asterisk_factory("central")
    assert ("Ping", "Pong") in login_and_ping(inst)

    inst.kill()

    assert not inst.running
    assert refuses(inst.ami_host, inst.ami_port)
    inst.stop()  # idempotent after a crash
    inst.start()
    assert ("Ping", "Pong") in login_and_ping(inst)


@pytest.mark.asterisk
def test_stop_is_clean_and_idempotent(asterisk_factory: Factory) -> None:
    inst = asterisk_factory("branch")
    inst.stop()
    inst.stop()
    assert not inst.running
    assert refuses(inst.ami_host, inst.ami_port)
    assert "cleanly ending" in inst.console_log.read_text()


@pytest.mark.asterisk
def test_required_modules_are_loaded(asterisk_factory: Factory) -> None:
    inst = asterisk_factory("branch")
    shown = inst.cli("module show")
    for module in ("res_pjsip.so", "chan_pjsip.so", "app_voicemail.so", "pbx_config.so",
                   "res_pjsip_registrar.so"):
        assert module in shown
    assert "chan_iax2.so" not in shown  # fixed port 4569 would clash between instances


@pytest.mark.asterisk
def test_central_serves_the_readme_sip_additional(asterisk_factory: Factory) -> None:
    central = asterisk_factory("central", configs=central_configs())
    ami = ami_for(central)
    try:
        everything = ami.action("GetConfig", ("Filename", "sip_additional.conf"))
        head_office = ami.action("GetConfig", ("Filename", "sip_additional.conf"),
                                 ("Filter", "accountcode=^HeadOffice$"))
    finally:
        ami.close()

    assert categories(everything) == [
        "1001", "1002", "1003", "2001", "3001", "Dev_Trunk", "Prod_Trunk"]
    alice = lines_of(everything, "1001")
    assert alice[:6] == [
        "callerid=Alice <1001>", "permit=192.168.0.0/255.255.255.0", "dial=SIP/1001",
        "mailbox=1001@default", "context=from-internal-headoffice", "accountcode=HeadOffice"]
    assert f"secret={secret_for(1001)}" in alice
    assert "setvar=REALCALLERIDNUM=1001" in alice
    assert [line for line in alice if line.startswith("allow=")] == ["allow=ulaw", "allow=alaw"]
    assert categories(head_office) == ["1001", "1002", "1003"]


@pytest.mark.asterisk
def test_central_serves_and_loads_freepbx_pjsip(asterisk_factory: Factory) -> None:
    central = asterisk_factory("central", configs=central_configs())
    ami = ami_for(central)
    try:
        endpoints = ami.action("GetConfig", ("Filename", "pjsip.endpoint.conf"))
        auths = ami.action("GetConfig", ("Filename", "pjsip.auth.conf"))
    finally:
        ami.close()

    assert categories(endpoints) == [
        "1001", "1002", "1003", "2001", "3001", "Dev_Trunk", "Prod_Trunk"]
    alice = lines_of(endpoints, "1001")
    assert "auth=1001-auth" in alice
    assert "accountcode=HeadOffice" in alice
    assert "set_var=__SITE=HeadOffice" in alice
    assert "set_var=NOTE=desk 1001; HeadOffice" in alice  # `\;` comes back as `;`
    assert [line for line in alice if line.startswith("allow=")] == [
        "allow=ulaw", "allow=alaw", "allow=g722"]
    assert "outbound_auth=Dev_Trunk" in lines_of(endpoints, "Dev_Trunk")
    assert f"password={secret_for(1001)}" in lines_of(auths, "1001-auth")
    # the central really runs them, so they are valid Asterisk 22 PJSIP
    shown = central.cli("pjsip show endpoints")
    assert "1001" in shown
    assert "Prod_Trunk" in shown


@pytest.mark.asterisk
def test_write_config_then_reload_takes_effect(asterisk_factory: Factory) -> None:
    branch = asterisk_factory("branch")
    assert "9001" not in branch.cli("pjsip show endpoints")

    branch.write_config(
        "pjsip_synch.conf",
        "[9001]\ntype=endpoint\naors=9001\n\n[9001]\ntype=aor\nmax_contacts=1\n")
    branch.reload("res_pjsip.so")

    assert "9001" in branch.cli("pjsip show endpoints")
    with pytest.raises(LabError, match="chan_sip"):
        branch.reload("chan_sip.so")


@pytest.mark.asterisk
@pytest.mark.netns
def test_instance_in_namespace_goes_silent_after_drop_all(
    asterisk_factory: Factory, netns_factory: Callable[..., Netns]
) -> None:
    ns = netns_factory()
    inst = asterisk_factory(
        "central", ami_host=ns.ns_addr, sip_host=ns.ns_addr, ami_port=5038, sip_port=5060,
        netns=ns.name)
    assert ("Ping", "Pong") in login_and_ping(inst)

    ns.drop_all()
    with pytest.raises(TimeoutError):  # silent: no RST, no ICMP, just nothing
        socket.create_connection((ns.ns_addr, inst.ami_port), timeout=1.0)

    ns.restore()
    wait_until(lambda: ("Ping", "Pong") in login_and_ping(inst), timeout=10,
               message="AMI answers again after restore")


def test_dnsmasq_answers_its_records_only(dnsmasq: Callable[..., Dnsmasq]) -> None:
    server = dnsmasq({"sip.lab.test": "127.0.0.5"})
    answer = dns_query("sip.lab.test", server.port)
    unknown = dns_query("other.lab.test", server.port)

    assert answer is not None
    assert [str(rr.rdata) for rr in answer.rr] == ["127.0.0.5"]
    assert unknown is not None
    assert unknown.header.rcode == 3  # NXDOMAIN, never forwarded anywhere


def test_silent_udp_server_reads_and_never_answers() -> None:
    with SilentUdpServer() as silent:
        assert dns_query("sip.lab.test", silent.port, timeout=0.3) is None
        wait_until(lambda: silent.received == 1, timeout=2, message="datagram read")
