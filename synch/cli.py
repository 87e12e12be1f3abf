"""Command line: `synch run|status|check-config|sync|history|rollback|resume`.

gevent must patch the standard library before anything else imports it (pyst2's threads
become greenlets), hence the first statement.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from synch import __version__, exitcodes  # noqa: E402
from synch.config import (  # noqa: E402
    ConfigError,
    Settings,
    config_path,
    describe_problems,
    file_mode_warning,
    load_settings,
)
from synch.logsetup import setup_logging  # noqa: E402

if TYPE_CHECKING:
    from synch.sync.job import SyncJob

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = exitcodes.OK, exitcodes.FAILED, exitcodes.CONFIG


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(config_path(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as err:
        print(f"{path}: {len(err.problems)} problem(s):", file=sys.stderr)
        print(describe_problems(err), file=sys.stderr)
        return EXIT_CONFIG
    warning = file_mode_warning(path)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    ds = settings.dnsservice
    print(
        f"{path}: OK (central {settings.amiremote.hostname}:{settings.amiremote.port}, "
        f"{ds.fqdn} -> {ds.targetnormal} / {ds.targetfailover}, mode {settings.syncmanager.mode})"
    )
    from synch.services.budget import site_budget

    budget = site_budget(settings)
    print("\n".join(budget.lines()), flush=True)
    if budget.over_target:
        print(f"warning: {budget.warning()}", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from synch.daemon import Daemon, StartupError

    try:
        settings = _load(args)
    except ConfigError as err:
        setup_logging()
        print(f"{config_path(args.config)}: configuration refused:", file=sys.stderr)
        print(describe_problems(err), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.loglevel.default)
    warning = file_mode_warning(settings.source)
    if warning:
        import logging

        logging.getLogger("synch").warning("%s", warning)
    try:
        return Daemon(settings).run()
    except StartupError as err:
        import logging

        logging.getLogger("synch").critical("fatal: %s", err)
        return EXIT_FAILED


def _ask(settings: Settings, line: str, timeout: float = 5.0) -> str:
    sc = settings.servicecontrol
    host = "127.0.0.1" if sc.listenaddress in ("0.0.0.0", "::") else sc.listenaddress
    with socket.create_connection((host, sc.port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def cmd_status(args: argparse.Namespace) -> int:
    settings = _load(args)
    token = settings.servicecontrol.token
    try:
        reply = _ask(settings, f"GetDetails({token})")
    except OSError as exc:
        sc = settings.servicecontrol
        print(f"synch is not answering on {sc.listenaddress}:{sc.port}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(reply, end="")
        return EXIT_OK
    try:
        details = json.loads(reply)
    except ValueError:
        details = None
    if not isinstance(details, dict):  # e.g. "Token error. Bye bye!": the token is wrong
        print(f"synch answered: {reply.strip()}", file=sys.stderr)
        return EXIT_FAILED
    from synch.statustext import describe

    print("\n".join(describe(details)))
    return EXIT_OK


def _as_owner(settings: Settings) -> int | None:
    """Run as root: become the owner of the config directory (see synch.privileges). None to
    go on, or the exit code after saying why not."""
    from synch.privileges import PrivilegeError, become_owner

    try:
        become_owner(Path(settings.syncmanager.localconfigspath))
    except PrivilegeError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return None


def _sync_job(settings: Settings) -> "SyncJob":
    from synch.ami.client import client_for
    from synch.services.syncing import make_sync_job

    central = client_for(settings.amiremote, name="central")
    branch = client_for(settings.amilocal, name="branch")
    return make_sync_job(settings, central, branch)


def cmd_sync(args: argparse.Namespace) -> int:
    settings = _load(args)
    setup_logging("warning")
    job = _sync_job(settings)
    refused = _as_owner(settings)
    if refused is not None:
        return refused
    try:
        outcome = job.run(force=args.force, dry_run=args.dry_run, full=True)
    finally:
        job.central.close()
        job.branch.close()
    if outcome.result == "dry-run":
        print(outcome.diff, end="")
        if outcome.reason:
            print(f"the remove guard would refuse this: {outcome.reason}", file=sys.stderr)
        print(
            f"dry run: {outcome.change} ({outcome.accounts} accounts); nothing written",
            file=sys.stderr,
        )
        return EXIT_OK
    detail = outcome.reason or str(outcome.change or "")
    print(
        f"sync {outcome.result}"
        + (f": {detail}" if detail else "")
        + (f" (commit {outcome.commit[:10]})" if outcome.commit else "")
    )
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if outcome.result == "guarded":
        print("run `synch sync --force` to accept this change once", file=sys.stderr)
    return EXIT_OK if outcome.result in ("applied", "unchanged", "skipped") else EXIT_FAILED


def cmd_history(args: argparse.Namespace) -> int:
    from synch.gitlog import ConfigHistory, HistoryError

    settings = _load(args)
    refused = _as_owner(settings)
    if refused is not None:
        return refused
    history = ConfigHistory(settings.syncmanager.localconfigspath)
    files = None if args.all else [settings.syncmanager.localfilename]
    try:
        entries = history.history(files, limit=args.limit)
        paused = history.paused
    except HistoryError as exc:
        print(f"history: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not entries:
        print(f"no history yet in {history.path}", file=sys.stderr)
        return EXIT_OK
    for entry in entries:
        print(f"{entry.commit[:10]}  {entry.date}  {entry.author:<8} {entry.subject}")
    if paused:
        print(f"\nautomatic sync is paused: {paused} (`synch resume` to continue)")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from synch.sync.rollback import RollbackError, rollback

    settings = _load(args)
    setup_logging("warning")
    job = _sync_job(settings)
    refused = _as_owner(settings)
    if refused is not None:
        return refused
    try:
        commit = rollback(job, args.rev)
    except RollbackError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        job.branch.close()
    print(
        f"rolled back {settings.syncmanager.localfilename} to {args.rev} (commit {commit[:10]}); "
        "automatic sync paused until `synch resume`"
    )
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from synch.gitlog import ConfigHistory, HistoryError

    settings = _load(args)
    refused = _as_owner(settings)
    if refused is not None:
        return refused
    history = ConfigHistory(settings.syncmanager.localconfigspath)
    try:
        resumed = history.exists and history.resume()
    except HistoryError as exc:
        print(f"resume: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not resumed:
        print("automatic sync was not paused")
        return EXIT_OK
    print("automatic sync resumed: the next cycle brings the branch back in line with the central")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synch", description="Branch-site survivability for Asterisk/FreePBX."
    )
    parser.add_argument("--version", action="version", version=f"synch {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="appsettings.json (default: $SYNCH_CONFIG, then /etc/synch/appsettings.json)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the daemon in the foreground").set_defaults(
        func=cmd_run
    )
    p = sub.add_parser(
        "status", parents=[common], help="ask the running daemon for its state, in sentences"
    )
    p.add_argument("--json", action="store_true", help="print the raw GetDetails JSON")
    p.set_defaults(func=cmd_status)
    sub.add_parser(
        "check-config", parents=[common], help="validate the configuration (exit 2 on problems)"
    ).set_defaults(func=cmd_check_config)
    p = sub.add_parser("sync", parents=[common], help="sync once now (see --dry-run)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the diff it would apply; write nothing"
    )
    p.add_argument("--force", action="store_true", help="accept a change the remove guard refused")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("history", parents=[common], help="the history of the synced file")
    p.add_argument("-n", "--limit", type=int, default=30, help="entries to show (default 30)")
    p.add_argument("--all", action="store_true", help="every commit, local edits included")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser(
        "rollback",
        parents=[common],
        help="restore the synced file as of REV and pause automatic sync",
    )
    p.add_argument("rev", metavar="REV", help="a commit from `synch history`")
    p.set_defaults(func=cmd_rollback)
    sub.add_parser(
        "resume", parents=[common], help="resume automatic sync after a rollback"
    ).set_defaults(func=cmd_resume)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as err:
        print(
            f"{config_path(getattr(args, 'config', None))}: configuration refused:", file=sys.stderr
        )
        print(describe_problems(err), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
