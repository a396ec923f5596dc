"""Command line: parse arguments, validate the build name, hand off to one module per command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import traceback
from typing import List, Optional

from . import log, version_text
from .buildname import BadName, check_build_name
from .request import FIELDS, MAX_GROUPS, Request, group_count
from .settings import ConfigError, load, load_lenient, secrets_redactor
from .statedir import BuildDir, StateError, read_json
from .vocab import ExitCode, exit_codes_help


def _groups(text: str) -> int:
    n = group_count(text)
    if n is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sub-runs from 1 to {MAX_GROUPS}")
    return n


def _metadata_flags(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--categorize", action="store_true", help="a categorized run: post once per sub-run")
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, dest=name, required=required, metavar=name.split("_")[-1].upper()[:1] or "V",
                       help=f"{name.replace('_', ' ')} shown in the post")
    p.add_argument("--groups", type=_groups, metavar="N",
                   help="a categorized run has N sub-runs: each post says 'sub-run n of N'")


BUILD_HELP = "the run's build name, e.g. e2e-redhat9.6-ubuntu24.04-w2k25-fc"
WATCH_TEXT = """the watcher itself: decide the run's state until terminal, post once, exit

Flags left out (--categorize, --template, --config-family, --migration-style,
--integration-plugin, --scope-description, --groups) are taken from the request the start
helper recorded for the build (request.json in its state folder); a flag given here wins."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atvm_run_watcher.py",
        description="Watch one ATVM run and post exactly one Mattermost message when it finishes.",
        epilog=exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version_text())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text.split("\n")[0], description=text,
                            epilog=exit_codes_help() if name == "watch" else None,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(command_parser=sp)  # so an unknown flag is reported with this command's usage
        return sp

    w = cmd("watch", WATCH_TEXT)
    w.add_argument("--build-name", required=True, metavar="B", help=BUILD_HELP)
    _metadata_flags(w)
    w.add_argument("--dry-run", action="store_true", help="print what would be posted; post and record nothing")
    w.add_argument("--preview", metavar="FILE.html",
                   help="with --dry-run: also write the post(s) to FILE.html, laid out as Mattermost shows them")
    w.add_argument("--at-least-once", action="store_true",
                   help="resend after an uncertain delivery (may duplicate a post; default is at-most-once)")
    w.add_argument("--from-rest", help=argparse.SUPPRESS)  # only a resting watcher gives it, to itself (rest.py)

    i = cmd("inspect", "read-only: the state it would decide now, the evidence read and the rule that fired")
    i.add_argument("--build-name", required=True, metavar="B", help=BUILD_HELP)
    i.add_argument("--categorize", action="store_true", help="read it as a categorized run (one verdict per sub-run)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.add_argument("--discover", action="store_true",
                   help="list the files under the log and report folders that mention the build, which layout "
                        "setting reads each, and settings for those none reads")

    s = cmd("status", "every watched build under the state root: state, sub-runs, delivery, last update")
    s.add_argument("--build-name", help="only this build (default: every build under the state root)")
    s.add_argument("--json", action="store_true", help="the same as --format json")
    s.add_argument("--format", choices=("table", "json", "prometheus"), default="table",
                   help="prometheus: Prometheus text exposition (for node_exporter's textfile collector)")
    s.add_argument("--output", metavar="FILE", help="write to FILE, replaced atomically, instead of printing")

    c = cmd("cancel", "cancel a build: cancelled.marker + state CANCELLED; guarantees no post")
    c.add_argument("--build-name", required=True, metavar="B", help=BUILD_HELP)

    k = cmd("check", "validate the install: configuration, env-file permissions, paths, unit present")
    k.add_argument("--send-test", action="store_true",
                   help="also post one test message to the configured webhook and channel and verify the answer "
                        "(without it check never posts)")
    k.add_argument("--preflight", action="store_true",
                   help="only what would make a watcher refuse to start, printed with its fix; silent and exit 0 "
                        "when nothing would (the start helper runs it)")

    d = cmd("demo", "a simulated categorized run, a local Mattermost-compatible receiver, the real watcher")
    d.add_argument("--speed", type=float, default=1.0, help="time factor; 4 runs four times faster")
    d.add_argument("--keep", action="store_true", help="keep the demo's temporary folder")
    d.add_argument("--preview", metavar="DIR",
                   help="write each post received to DIR/post-N.html, laid out as Mattermost shows it")

    la = cmd("launch", "run an ATVM command, writing its log, pid and exit status where the watcher reads them")
    la.add_argument("--build-name", required=True, metavar="B", help=BUILD_HELP)
    la.add_argument("--group", help="this command is group G of a categorized run (its own log and outcome)")
    la.add_argument("--no-echo", action="store_true", help="write the output to the log only, not also to stdout")
    la.add_argument("--start-watcher", action="store_true",
                    help="first start the build's watcher (start-atvm-run-watcher.sh with the flags below)")
    _metadata_flags(la)
    la.add_argument("--rerun", action="store_true", help="with --start-watcher: watch a build that already finished")
    # REMAINDER: options end where the command begins, so the command's own flags (--group ...) stay its own
    la.add_argument("command_args", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                    help="the ATVM command and its arguments, after -- (everything from the command on is its own)")

    r = cmd("record-request", "record a run's request metadata for the watcher (used by the start helper)")
    r.add_argument("--build-name", required=True, metavar="B", help=BUILD_HELP)
    _metadata_flags(r)
    again = r.add_mutually_exclusive_group()
    again.add_argument("--rerun", action="store_true",
                       help="a new run of a build watched before: archive the old state and record anew")
    again.add_argument("--resume", action="store_true",
                       help="the same run, whose watcher stopped before it finished: keep what it recorded")
    return p


def _request(args: argparse.Namespace, settings) -> Request:
    recorded, _ = read_json(BuildDir.of(settings.state_root, args.build_name).request_file)
    base = Request.from_json(args.build_name, recorded)
    overrides = {k: getattr(args, k) for k in FIELDS}
    overrides.update(categorize=args.categorize, groups=args.groups)
    return base.merged(overrides)


def _start_args(args: argparse.Namespace) -> Optional[List[str]]:
    """The start helper's flags for ``launch --start-watcher``; None without it (the flags alone are refused)."""
    flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in FIELDS if getattr(args, name) is not None]
    flags += [f"--groups={args.groups}"] if args.groups is not None else []
    flags += [f"--{name}" for name in ("categorize", "rerun") if getattr(args, name)]
    if not args.start_watcher:
        if flags:
            raise BadName(f"{flags[0].split('=')[0]} goes with --start-watcher (it is what the watcher's post shows)")
        return None
    return flags


# Commands that need neither the webhook nor the tuning settings: a bad one is a warning for them, never a
# refusal (settings.load_lenient). A typo in the env file must not keep an operator from cancelling a run
# (cancel needs only the state root) or from seeing where it stands; watch stays strict (exit 3).
LENIENT = ("cancel", "status", "inspect")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .commands import demo

        return demo.run(args.speed, args.keep, args.preview)
    if args.command == "check":
        from .commands import check

        return check.preflight() if args.preflight else check.run(args.send_test)
    if args.command == "watch" and args.from_rest:  # back from a rest: the settings it started with, not reread
        from .commands import watch

        code = watch.resume(args.from_rest)
        if code is not None:
            return code  # else its state could not be taken back: a fresh start, as below
    if args.command in LENIENT:
        settings, problems = load_lenient()
    else:
        settings, problems = load(), []
    log.setup(settings.webhook)
    for problem in problems:
        print(f"warning: configuration: {problem}; its default is used for this command", file=sys.stderr)
    if settings.env_file_unsafe and args.command != "watch":
        print(f"warning: {settings.env_file_problem}; its settings were not read", file=sys.stderr)
    if args.command == "watch":
        from .commands import watch

        if args.preview and not args.dry_run:
            args.command_parser.error("--preview goes with --dry-run (a real watcher posts instead)")
        return watch.run(settings, _request(args, settings), args.dry_run, args.at_least_once, args.preview)
    if args.command == "launch":
        from .commands import launch

        return launch.main(settings, args.build_name, args.group, args.command_args, not args.no_echo,
                           _start_args(args))
    if args.command == "record-request":
        from .commands import record_request

        return record_request.run(settings, _request(args, settings), args.rerun, args.resume)
    if args.command == "cancel":
        from .commands import cancel

        return cancel.run(settings, args.build_name)
    if args.command == "status":
        from .commands import status

        return status.run(settings, args.build_name, args.json, args.format, args.output)
    from .commands import inspect

    if args.discover:
        return inspect.discover_files(settings, args.build_name, args.json)
    return inspect.run(settings, args.build_name, args.categorize, args.json)


def main(argv: Optional[List[str]] = None, fast_exit: bool = False) -> int:
    """The exit code. ``fast_exit`` (the entry script's): a ``watch`` ends its process here, see ``leave``."""
    for stream in (sys.stdout, sys.stderr):  # file names from disk may not be valid UTF-8
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args, unknown = parser().parse_known_args(argv)
    if unknown:  # reported by the command's own parser, so its usage (not the top-level one) is shown
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    code = _main(args)
    if fast_exit and args.command == "watch":
        leave(code)
    return code


def leave(code: int) -> None:
    """End the process now with ``code``, without the interpreter's teardown; returns when it cannot.

    A watcher that has posted has nothing left to do but exit, and the teardown (freeing every module
    and object) costs more CPU than its whole last look: in a burst of runs finishing together that CPU
    delays the watchers yet to post (docs/PERFORMANCE.md, "The burst of runs finishing together"). Its
    records are on disk by now (statedir writes them with os.write and fsync) and its locks are closed;
    what is buffered is flushed here. Only when every flush succeeds and no other thread would be
    waited for does it skip the teardown: otherwise it returns, and the normal exit reports the same
    way it always did.
    """
    try:
        for handler in logging.getLogger("atvm").handlers:
            handler.flush()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    main_thread = threading.main_thread()
    if not isinstance(code, int) or any(t is not main_thread and not t.daemon and t.is_alive()
                                        for t in threading.enumerate()):
        return
    os._exit(code & 0xFF)


def _main(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "build_name", None) is not None:
            check_build_name(args.build_name)
        return dispatch(args)
    except BadName as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except StateError as exc:
        print(f"error: state directory: {exc}", file=sys.stderr)
        return ExitCode.INTERNAL
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: a clear, secret-free report; systemd restarts
        text = secrets_redactor()(traceback.format_exc())
        print(f"error: internal error ({type(exc).__name__}); details follow\n{text}", file=sys.stderr)
        return ExitCode.INTERNAL
