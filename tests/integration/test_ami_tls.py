"""AMI over TLS to a real Asterisk 22 (`tlsenable=yes`) with a certificate made here (openssl
CLI): `synch run` with `tls: true` and `cafile` reaches Stable; a certificate that does not match
the host name, or one signed by a CA synch was not given, is refused and the probe error says TLS.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance, new_instance
from lab.dnsmasq import Dnsmasq
from lab.ports import free_port
from lab.synchproc import SynchProcess, synch_for
from lab.wait import wait_until

pytestmark = pytest.mark.asterisk
CERT_NAME = "localhost"  # the only name in the certificate; 127.0.0.1 is not in it


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail(
            "the openssl command is needed to make test certificates (apt-get install openssl)"
        )
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(where: Path) -> dict[str, Path]:
    """A CA, and a server certificate for DNS:localhost signed by it."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=synch test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=where)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={CERT_NAME}",
            "-keyout", "server.key", "-out", "server.csr", cwd=where)  # fmt: skip
    (where / "san.ext").write_text(f"subjectAltName=DNS:{CERT_NAME}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
            cwd=where)  # fmt: skip
    return {name: where / f"{name}" for name in ("ca.pem", "server.pem", "server.key")}


@pytest.fixture(scope="module")
def tls_central(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A central Asterisk whose AMI also listens with TLS on `tls_port`."""
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    inst = new_instance("tls-central")
    tls_port = free_port("tcp")
    for name in ("server.pem", "server.key"):
        inst.write_config(f"keys/{name}", certs[name].read_text())
    keys = inst.inside(inst.config_dir / "keys")
    manager = inst.read_config("manager.conf").replace(
        "[general]\n",
        f"[general]\ntlsenable = yes\ntlsbindaddr = 127.0.0.1:{tls_port}\n"
        f"tlscertfile = {keys}/server.pem\ntlsprivatekey = {keys}/server.key\n",
        1,
    )
    inst.write_config("manager.conf", manager)
    try:
        inst.start()
        yield inst, tls_port, certs["ca.pem"]
    finally:
        inst.stop()
        inst.remove()


@pytest.fixture
def upstream() -> Iterator[Dnsmasq]:
    with Dnsmasq(records={"www.example.org": "127.0.0.42"}) as server:
        yield server


def start_synch(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq, **amiremote: Any
) -> SynchProcess:
    return synch_for(
        tmp_path, central, upstream.port, central_host=CERT_NAME,
        amiremote={"timeout": 2.0, **amiremote}, probemonitor={"interval": 2.0},
    ).start()  # fmt: skip


def wait_until_or_false(predicate: Any, timeout: float) -> bool:
    try:
        wait_until(predicate, timeout)
    except AssertionError:
        return False
    return True


def test_tls_with_cafile_reaches_stable(
    tmp_path: Path, tls_central: Any, upstream: Dnsmasq
) -> None:
    central, tls_port, ca = tls_central
    synch = start_synch(tmp_path, central, upstream, tls=True, port=tls_port, cafile=str(ca))
    try:
        stable = lambda: synch.status()["Monitor"] == "Stable"  # noqa: E731
        if not wait_until_or_false(stable, 40):
            pytest.fail(f"not Stable over TLS; details {synch.details()}\n{synch.log()}")
        assert synch.details()["CentralReachable"] is True
    finally:
        synch.stop()


@pytest.mark.parametrize(
    ("host", "use_ca", "expected"),
    [
        ("127.0.0.1", True, "mismatch"),  # the certificate names localhost only
        (CERT_NAME, False, "certificate verify failed"),  # our CA is not a system CA
    ],
)
def test_tls_refuses_a_certificate_it_cannot_trust(
    tmp_path: Path, tls_central: Any, upstream: Dnsmasq, host: str, use_ca: bool, expected: str
) -> None:
    central, tls_port, ca = tls_central
    extra: dict[str, Any] = {"tls": True, "port": tls_port, "hostname": host}
    if use_ca:
        extra["cafile"] = str(ca)
    synch = start_synch(tmp_path, central, upstream, **extra)
    try:

        def probe_error() -> str | None:
            last = synch.details().get("LastProbe") or {}
            return str(last.get("Error") or "") or None

        error = wait_until(probe_error, 30, message="a probe error")
        assert "TLS" in error and expected in error, error
        assert synch.status()["Monitor"] != "Stable"
        assert "TLS failed" in synch.log()
    finally:
        synch.stop()
