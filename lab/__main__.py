"""`python -m lab build|start-sample|clean`: manage the Asterisk test lab by hand."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from lab import asterisk, chroot, netns, samples


def _build(_: argparse.Namespace) -> int:
    root = chroot.lab_root()
    print(f"lab chroot ready: {root}")
    print(f"  {chroot.asterisk_version(root)}")
    return 0


def _start_sample(args: argparse.Namespace) -> int:
    """A central with the sample configs, running until Ctrl-C: for poking at by hand."""
    inst = asterisk.new_instance(
        "sample-central", ami_port=args.ami_port, sip_port=args.sip_port,
        configs=samples.central_configs(),
    )
    inst.start()
    print(f"central up in {inst.boot_seconds:.2f}s, dir {inst.host_dir}")
    print(f"  AMI {inst.ami_host}:{inst.ami_port} user {inst.ami_user} secret {inst.ami_secret}")
    print(f"  SIP udp {inst.sip_host}:{inst.sip_port}")
    print(f"  CLI: chroot {inst.root} asterisk -C {inst.conf} -r")
    print("Ctrl-C stops it")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    inst.remove()
    return 0


def _clean(_: argparse.Namespace) -> int:
    asterisk.prune_stale(chroot.lab_root())
    with netns.locked():
        removed = netns.prune_stale()
    print(f"removed stale instances and namespaces {removed or ''}".strip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (about a minute) or verify the Asterisk chroot"
                   ).set_defaults(func=_build)
    sample = sub.add_parser("start-sample", help="run a central with the sample configs")
    sample.add_argument("--ami-port", type=int, default=None)
    sample.add_argument("--sip-port", type=int, default=None)
    sample.set_defaults(func=_start_sample)
    sub.add_parser("clean", help="remove instances and namespaces left by killed test runs"
                   ).set_defaults(func=_clean)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except chroot.LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
