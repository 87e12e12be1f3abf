"""`make demo`: a lab central and branch Asterisk 22 with the original README's sample users,
a local upstream resolver, and synch between them in the foreground. Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lab.asterisk import AsteriskInstance, new_instance
from lab.dnsmasq import Dnsmasq
from lab.ports import free_port
from lab.samples import central_configs

TOKEN = "token1"
ADMIN = "demo-admin"


def _settings(central: AsteriskInstance, branch: AsteriskInstance, upstream: int) -> dict:
    return {
        "loglevel": {"default": "information"},
        "probemonitor": {"failureTolerance": 5, "aliveThreshold": 5, "errorPenaltyPoints": 1,
                         "interval": 2},
        "amiremote": {"hostname": central.ami_host, "port": central.ami_port,
                      "username": central.ami_user, "password": central.ami_secret,
                      "timeout": 1.5},
        "amilocal": {"port": branch.ami_port, "username": branch.ami_user,
                     "password": branch.ami_secret},
        "syncmanager": {"mode": "pjsip", "interval": 60, "filterkey": "accountcode",
                        "filtervalue": "^HeadOffice$",
                        "localconfigspath": str(branch.config_dir) + "/"},
        "dnsservice": {"listenaddress": "127.0.0.1", "port": free_port("both", prefer=10053),
                       "domain": "example.local", "record": "sip", "recordttl": 30,
                       "targetnormal": "127.0.0.10", "targetfailover": "127.0.0.20",
                       "forwarders": [f"127.0.0.1:{upstream}"], "defaultstate": "Failover"},
        "servicecontrol": {"token": TOKEN, "admintoken": ADMIN, "listenaddress": "127.0.0.1",
                           "port": free_port(prefer=65038)},
        "metrics": {"listenaddress": "127.0.0.1", "port": free_port(prefer=9386)},
    }


def _banner(settings: dict, config: Path, central: AsteriskInstance,
            branch: AsteriskInstance) -> str:
    dns, ctl = settings["dnsservice"]["port"], settings["servicecontrol"]["port"]
    metrics = settings["metrics"]["port"]
    script = Path(sys.executable).with_name("synch")  # the console script `make setup` made
    synch = str(script) if script.exists() else f"{sys.executable} -m synch.cli"
    return f"""
synch demo
  central Asterisk 22: AMI 127.0.0.1:{central.ami_port} (pid {central.pid}), users 1001-1003
                       HeadOffice, 2001 DevOps, 3001 Support, trunks Dev_Trunk, Prod_Trunk
  branch Asterisk 22:  AMI 127.0.0.1:{branch.ami_port}, config {branch.config_dir}
  synch config:        {config}
  sip.example.local:   127.0.0.10 = central (Normal), 127.0.0.20 = branch (Failover)

Try, in another terminal:
  dig @127.0.0.1 -p {dns} sip.example.local +short        # the central once it is Stable
  dig @127.0.0.1 -p {dns} _sip._udp.example.local SRV +short
  echo "GetStatus({TOKEN})" | nc -N 127.0.0.1 {ctl}
  echo "GetDetails({TOKEN})" | nc -N 127.0.0.1 {ctl}
  curl -s 127.0.0.1:{metrics}/metrics | grep ^synch_
  {synch} status -c {config}
  {synch} history -c {config}                   # git log of the synced accounts
  cat {branch.config_dir}/pjsip_synch.conf     # HeadOffice users only
  kill -STOP {central.pid}   # freeze the central: Failover within ~10 s
  kill -CONT {central.pid}   # thaw it: back to Normal after 5 good probes
  echo "Failover({ADMIN})" | nc -N 127.0.0.1 {ctl}   # maintenance: force; Auto({ADMIN}) undoes
Ctrl-C stops everything.
"""


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (the Asterisk lab uses a chroot)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="synch-demo-"))
    instances: list[AsteriskInstance] = []
    print("starting the lab central and branch Asterisk ...", flush=True)
    try:
        central = new_instance("demo-central", configs=central_configs())
        instances.append(central)
        central.start()
        branch = new_instance("demo-branch")
        instances.append(branch)
        branch.start()
        with Dnsmasq(records={"www.example.org": "127.0.0.42"}) as upstream:
            settings = _settings(central, branch, upstream.port)
            config = workdir / "appsettings.json"
            config.write_text(json.dumps(settings, indent=2))
            config.chmod(0o600)
            print(_banner(settings, config, central, branch), flush=True)
            proc = subprocess.Popen([sys.executable, "-m", "synch.cli", "run", "-c", str(config)])
            signal.signal(signal.SIGINT, lambda *_: proc.send_signal(signal.SIGTERM))
            signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
            code = proc.wait()
            print(f"synch exited {code}; stopping the lab ...", flush=True)
    finally:
        for inst in reversed(instances):
            inst.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
