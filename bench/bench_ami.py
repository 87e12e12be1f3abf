"""GetConfig of a large file: synch.ami vs plain pyst2 vs a bare socket, in one run.

    .venv/bin/python bench/bench_ami.py                 # starts a lab Asterisk (root, chroot)
    .venv/bin/python bench/bench_ami.py --peers 10000 --rounds 3
    .venv/bin/python bench/bench_ami.py --host H --port P --user U --secret S --file F

Without --host it starts an instance from the test lab with a generated FreePBX-style
sip_additional.conf of --peers sections (a third of them accountcode=HeadOffice).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asterisk.manager import Manager  # noqa: E402

from synch.ami import get_config  # noqa: E402
from synch.ami.client import AmiClient  # noqa: E402

FILTER = "accountcode=^HeadOffice$"


def via_synch(host: str, port: int, user: str, secret: str, name: str, flt: str | None) -> int:
    client = AmiClient(host, port, user, secret, timeout=120, name="bench")
    try:
        return len(get_config(client, name, flt).headers)
    finally:
        client.close()


def via_pyst2(host: str, port: int, user: str, secret: str, name: str, flt: str | None) -> int:
    manager = Manager()
    manager.connect(host, port)
    try:
        manager.login(user, secret)
        action = {"Action": "GetConfig", "Filename": name}
        if flt:
            action["Filter"] = flt
        return len(manager.send_action(action).response)
    finally:
        manager.close()


def via_socket(host: str, port: int, user: str, secret: str, name: str, flt: str | None) -> int:
    """Lower bound: write both actions, read 256 KiB chunks until the GetConfig reply ends."""
    extra = f"Filter: {flt}\r\n" if flt else ""
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(
            f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: off\r\n"
            f"ActionID: l\r\n\r\nAction: GetConfig\r\nFilename: {name}\r\n{extra}"
            "ActionID: g\r\n\r\n".encode()
        )
        data = bytearray()
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                raise ConnectionError("closed before the end of the GetConfig reply")
            data += chunk
            start = data.find(b"ActionID: g\r\n")
            if start >= 0 and data.find(b"\r\n\r\n", start) >= 0:
                return data.count(b"\r\n", start)


Reader = Callable[[str, int, str, str, str, "str | None"], int]


def measure(reader: Reader, rounds: int, *args: object) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        reader(*args)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return {"best": min(times), "median": statistics.median(times)}


def wire_bytes(host: str, port: int, user: str, secret: str, name: str, flt: str | None) -> int:
    client = AmiClient(host, port, user, secret, timeout=120)
    try:
        reply = get_config(client, name, flt)
        return sum(len(k) + len(v) + 4 for k, v in reply.headers)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--user", default="synch")
    parser.add_argument("--secret", default="")
    parser.add_argument("--file", default="sip_additional.conf")
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()

    instance = None
    if opts.host is None:
        from lab.asterisk import new_instance
        from lab.samples import chan_sip_peers

        instance = new_instance("bench-ami", configs={opts.file: chan_sip_peers(opts.peers)})
        instance.start()
        opts.host, opts.port = instance.ami_host, instance.ami_port
        opts.user, opts.secret = instance.ami_user, instance.ami_secret
    try:
        results: dict[str, object] = {"peers": opts.peers, "rounds": opts.rounds}
        for label, flt in (("full", None), ("filtered", FILTER)):
            args = (opts.host, opts.port, opts.user, opts.secret, opts.file, flt)
            row: dict[str, object] = {"bytes": wire_bytes(*args)}  # type: ignore[arg-type]
            for name, reader in (("socket", via_socket), ("synch", via_synch),
                                 ("pyst2", via_pyst2)):  # fmt: skip
                row[name] = measure(reader, opts.rounds, *args)
            results[label] = row
            print(f"{label}: {row['bytes'] / 1e6:.1f} MB", file=sys.stderr)
            for name in ("socket", "synch", "pyst2"):
                timing = row[name]
                assert isinstance(timing, dict)
                print(f"  {name:7s} best {timing['best']:.3f} s  median {timing['median']:.3f} s",
                      file=sys.stderr)  # fmt: skip
        print(json.dumps(results))
    finally:
        if instance is not None:
            instance.remove()


if __name__ == "__main__":
    main()
