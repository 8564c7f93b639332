"""The `ivr` command: check, simulate and test dialplans; serve calls."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from ivr.check import check_folder, unused
from ivr.config import ConfigError
from ivr.core.clock import SHANGHAI, local_date, parse_when
from ivr.core.dialplan import json_schema
from ivr.core.routing import Call
from ivr.paths import default_root
from ivr.regression import SAMPLE_CALLER, default_case_files, run_file, simulated_caller
from ivr.simulate import World, render_text, simulate

SCHEMA_FILE = Path("dialplans") / "dialplan.schema.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"configuration refused: {len(exc.problems)} error(s)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivr", description="Call controller for Fujian's 12345 government-service hotline."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a configuration folder")
    check.add_argument(
        "dir", nargs="?", type=Path, help="holds config/, dialplans/, prompts/, transfer/"
    )
    _config_option(check)
    check.set_defaults(handler=cmd_check)

    diff = sub.add_parser(
        "diff",
        help="how calls would go otherwise under a changed configuration",
        description="Simulates every number in every region, and every DID, under OLD and "
        "NEW, on the days the retired lines' windows start and end and on --at, and "
        "prints where NEW routes a call otherwise. Exit 0: no difference; 1: some; "
        "2: a folder could not be loaded.",
    )
    diff.add_argument("old", type=Path, help="the configuration folder in force")
    diff.add_argument("new", type=Path, help="the changed one")
    diff.add_argument("--at", help="a date (or date-time) to compare on too; default: today")
    diff.set_defaults(handler=cmd_diff)

    sim = sub.add_parser("simulate", help="print the path a call takes")
    _config_option(sim)
    sim.add_argument("--to", required=True, help="the dialed number")
    sim.add_argument(
        "--from",
        dest="caller",
        default=SAMPLE_CALLER,
        help=f'the caller\'s number, or "withheld" (default {SAMPLE_CALLER})',
    )
    where = sim.add_mutually_exclusive_group()
    where.add_argument("--trunk", help="the trunk the call came in on")
    where.add_argument("--region", help="the region, when the switch already knows it")
    sim.add_argument("--at", help="ISO date-time (local when no offset); default: now")
    sim.add_argument("--keys", default="", help="keys the caller presses, in order")
    sim.add_argument(
        "--dial-result",
        default="answered",
        choices=["answered", "noanswer", "busy", "failed"],
        help="outcome of the first queue or dial (later ones answer)",
    )
    sim.add_argument("--json", action="store_true", help="one JSON object")
    sim.set_defaults(handler=cmd_simulate)

    test = sub.add_parser("test", help="run dialplan regression cases")
    _config_option(test)
    test.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="case files (default: dialplans/cases/*.yaml of the configuration)",
    )
    test.add_argument("-v", "--verbose", action="store_true", help="print every case")
    test.set_defaults(handler=cmd_test)

    serve = sub.add_parser(
        "serve", help="run the FastAGI controller and the Twilio webhooks (SIGHUP reloads)"
    )
    _config_option(serve)
    serve.add_argument(
        "--agi", metavar="HOST:PORT", help="FastAGI listener (default from config/controller.yaml)"
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="/metrics, /healthz, the seat API and the Twilio webhooks "
        "(default from config/controller.yaml)",
    )
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="where call events go (default: $IVR_REDIS_URL, else config/controller.yaml)",
    )
    serve.add_argument(
        "--pretend-now",
        metavar="ISO-DATETIME",
        help="run the clock from this moment (for the lab; never in production)",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(handler=cmd_serve)

    glue = sub.add_parser(
        "asterisk-glue",
        help="write the Asterisk glue: extensions.conf, queues.conf, confbridge.conf",
    )
    _config_option(glue)
    glue.add_argument(
        "--agi-url",
        default="agi://127.0.0.1:4573",
        help="where Asterisk finds the controller (hagi:// for SRV fail-over)",
    )
    glue.add_argument(
        "--out", type=Path, help="folder to write into (default: print extensions.conf)"
    )
    glue.set_defaults(handler=cmd_glue)

    lab = sub.add_parser("lab", help="a real Asterisk with the controller, for trying changes")
    lab.add_argument("action", choices=["up", "down", "status"])
    _config_option(lab)
    lab.add_argument("--json", action="store_true", help="status as one JSON object")
    lab.add_argument(
        "--pretend-now",
        metavar="ISO-DATETIME",
        help="the controller's clock starts at this moment (e.g. inside a "
        "retired line's transition window)",
    )
    lab.set_defaults(handler=cmd_lab)

    stats = sub.add_parser("stats", help="the hotline's indicators, from the event streams")
    _config_option(stats)
    stats.add_argument(
        "--redis", metavar="URL", help="default: $IVR_REDIS_URL, else config/controller.yaml"
    )
    stats.add_argument("--region", help="one region only")
    stats.add_argument(
        "--since",
        metavar="ISO-DATETIME",
        help="calls offered from the start of that hour on (local time when no offset)",
    )
    stats.add_argument(
        "--by",
        default="region,line,hour",
        help="group by any of region, line, hour (comma-separated)",
    )
    stats.add_argument("--json", action="store_true", help="one JSON list")
    stats.set_defaults(handler=cmd_stats)

    prompts = sub.add_parser("prompts", help="the prompt catalog's audio")
    prompts_sub = prompts.add_subparsers(dest="prompts_command", required=True)
    render = prompts_sub.add_parser(
        "render", help="render placeholder audio (espeak-ng, sox) for every prompt played"
    )
    render.add_argument(
        "--config",
        type=Path,
        default=None,
        help="folder holding config/, dialplans/, prompts/, transfer/ "
        "(default: $IVR_CONFIG, else the bundled one)",
    )
    render.add_argument("--force", action="store_true", help="render every file again")
    render.set_defaults(handler=cmd_render)

    schema = sub.add_parser("schema", help="print the JSON Schema of dialplan files")
    schema.add_argument(
        "--write",
        action="store_true",
        help=f"write it to {SCHEMA_FILE} of the bundled configuration",
    )
    schema.set_defaults(handler=cmd_schema)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="folder holding config/, dialplans/, prompts/, transfer/ "
        "(default: $IVR_CONFIG, else the bundled one)",
    )


def _load(root: Path | None):
    from ivr.check import load_hotline

    return load_hotline(root or default_root())


def cmd_check(args: argparse.Namespace) -> int:
    if args.dir and args.config and args.dir.resolve() != args.config.resolve():
        print(f"two folders given ({args.dir} and --config {args.config}): give one",
              file=sys.stderr)  # fmt: skip
        return 2
    root = args.dir or args.config or default_root()
    if not root.is_dir():
        print(f"{root}: not a folder", file=sys.stderr)
        return 1
    loaded = check_folder(root)
    for problem in sorted(loaded.problems):
        print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
    errors = [p for p in loaded.problems if p.severity == "error"]
    if errors or loaded.hotline is None:
        print(
            f"{root}: {len(errors)} error(s); the configuration would be refused", file=sys.stderr
        )
        return 1
    hotline = loaded.hotline
    warnings = len(loaded.problems)
    print(
        f"{root}: ok — {len(hotline.directory.regions)} regions, "
        f"{len(hotline.directory.lines)} legacy lines, {len(hotline.flows)} flows, "
        f"{len(hotline.catalog.prompts)} prompts, {warnings} warning(s)"
    )
    for name in unused(hotline.flows):
        print(f"note: flow {name!r} is never entered")
    return 0


_DIALABLE = re.compile(r"\+?[0-9][0-9 -]*")


def cmd_diff(args: argparse.Namespace) -> int:
    from ivr.diff import differences, report

    try:
        today = local_date(parse_when(args.at)) if args.at else local_date(datetime.now(SHANGHAI))
    except ValueError as exc:
        print(f"--at: {exc}", file=sys.stderr)
        return 2
    hotlines = []
    for root in (args.old, args.new):
        loaded = check_folder(root)
        errors = [p for p in loaded.problems if p.severity == "error"]
        if errors or loaded.hotline is None:
            for problem in errors:
                print(problem, file=sys.stderr)
            print(f"{root}: {len(errors)} error(s); nothing compared", file=sys.stderr)
            return 2
        hotlines.append(loaded.hotline)
    found = differences(hotlines[0], hotlines[1], today)
    if not found:
        print("no call would go otherwise")
        return 0
    print(report(found))
    return 1


def cmd_simulate(args: argparse.Namespace) -> int:
    hotline = _load(args.config)
    if args.region and args.region not in hotline.directory.regions:
        known = ", ".join(hotline.directory.regions)
        print(f"unknown region {args.region!r} (known: {known})", file=sys.stderr)
        return 2
    try:
        now = parse_when(args.at) if args.at else datetime.now(SHANGHAI)
    except ValueError as exc:
        print(f"--at: {exc}", file=sys.stderr)
        return 2
    call = Call(
        dialed=args.to,
        now=now,
        caller=simulated_caller(args.caller),
        trunk=args.trunk,
        region=args.region,
        call_id="simulated",
    )
    if args.trunk and args.trunk not in hotline.directory.trunks:
        print(
            f"note: unknown trunk {args.trunk!r}; deciding the region without it", file=sys.stderr
        )
    if not _DIALABLE.fullmatch(args.to):
        print("--to: a number: digits, with a leading + or spaces and dashes", file=sys.stderr)
        return 2
    if any(k not in "0123456789*#" for k in args.keys):
        print("--keys: only 0-9, * and #", file=sys.stderr)
        return 2
    result = simulate(hotline, call, World(args.keys, args.dial_result))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(render_text(result))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    root = args.config or default_root()
    hotline = _load(root)
    files = args.files or default_case_files(root)
    if not files:
        print("no case files", file=sys.stderr)
        return 1
    passed = failed = 0
    problems = []
    for path in files:
        outcomes, file_problems = run_file(hotline, path)
        problems += file_problems
        for outcome in outcomes:
            if outcome.passed:
                passed += 1
                if args.verbose:
                    print(f"PASS {outcome.file}:{outcome.line} {outcome.name}")
                continue
            failed += 1
            print(f"FAIL {outcome.file}:{outcome.line} {outcome.name}")
            for failure in outcome.failures:
                print(f"     {failure}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"cases: {passed} passed, {failed} failed"
        + (f", {len(problems)} case file error(s)" if problems else "")
    )
    return 0 if failed == 0 and not problems else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from ivr import logs
    from ivr.serve import Controller, run
    from ivr.settings import host_port, load_settings, redis_url_problem

    logs.configure(args.log_level)
    root = args.config or default_root()
    settings = load_settings(root)
    try:
        address = host_port(args.agi) if args.agi else None
        http = host_port(args.http) if args.http else None
    except ValueError as exc:
        print(f"--agi/--http: {exc}", file=sys.stderr)
        return 2
    redis_url = args.redis or os.environ.get("IVR_REDIS_URL")
    problem = redis_url_problem(redis_url or settings.platform.redis_url)
    if problem:
        print(f"--redis: {problem}", file=sys.stderr)
        return 2
    try:
        pretend = parse_when(args.pretend_now) if args.pretend_now else None
    except ValueError as exc:
        print(f"--pretend-now: {exc}", file=sys.stderr)
        return 2
    if pretend:
        logging.getLogger("ivr").warning("the clock pretends it is %s", pretend.isoformat())
    try:
        controller = Controller(
            root,
            settings,
            agi_address=address,
            http_address=http,
            redis_url=redis_url,
            pretend_now=pretend,
        )
        run(controller)
    except OSError as exc:  # a listener that cannot bind, a spool that cannot be made
        print(f"ivr serve: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_glue(args: argparse.Namespace) -> int:
    from ivr.agi.glue import confbridge_conf, extensions_conf, queues_conf

    if not re.fullmatch(r"h?agi://[^/\s:]+(:[0-9]{1,5})?/?", args.agi_url):
        # Asterisk would fail every AGI() and the glue would queue every call past us.
        print(f"--agi-url: {args.agi_url!r} is not agi://HOST[:PORT] or hagi://NAME",
              file=sys.stderr)  # fmt: skip
        return 2
    hotline = _load(args.config)
    extensions = extensions_conf(hotline, args.agi_url.rstrip("/"))
    if args.out is None:
        sys.stdout.write(extensions)
        return 0
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "extensions.conf").write_text(extensions, encoding="utf-8")
        (args.out / "queues.conf").write_text(queues_conf(hotline), encoding="utf-8")
        (args.out / "confbridge.conf").write_text(confbridge_conf(), encoding="utf-8")
    except OSError as exc:
        print(f"--out: {exc.strerror or exc}: {exc.filename or args.out}", file=sys.stderr)
        return 2
    print(f"wrote extensions.conf, queues.conf and confbridge.conf into {args.out}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    import subprocess

    from ivr.lab.hotline import HotlineLab
    from ivr.lab.lab import LabError

    root = (args.config or default_root()).resolve()
    hotline_lab = HotlineLab.create(root, pretend_now=args.pretend_now)
    try:
        if args.action == "up":
            provision = Path(__file__).resolve().parents[1] / "scripts" / "provision-lab"
            if provision.exists():
                subprocess.run([str(provision), str(hotline_lab.root)], check=True)
            hotline_lab.up()
            print(
                f"lab up: SIP on 127.0.0.1:5060 (call from 127.0.0.1 for Fuzhou's trunk, "
                f"127.0.0.6 for Pingtan's, 127.0.0.7 for Ningde's), controller on "
                f"127.0.0.1:{hotline_lab.agi_port}; "
                f"`ivr lab status` shows where calls landed"
            )
            return 0
        if args.action == "down":
            hotline_lab.down()
            print("lab down")
            return 0
        status = hotline_lab.status()
    except (LabError, subprocess.CalledProcessError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
    else:
        print(
            f"root {status['root']}  SIP {status['sip']}  controller "
            f"{'running' if status['controller']['running'] else 'stopped'}"
        )
        for call in status["landed"]:
            print(f"  {call['answerer']:<8} <- {call['request_user']} (from {call['from']})")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import redis

    from ivr.indicators import Indicators, render_table
    from ivr.platform.reader import as_record, iter_events
    from ivr.settings import load_settings, redis_url_problem

    root = args.config or default_root()
    hotline = _load(root)
    by = tuple(part.strip() for part in args.by.split(",") if part.strip())
    if not by or any(part not in ("region", "line", "hour") for part in by):
        print("--by: any of region, line, hour", file=sys.stderr)
        return 2
    regions = [args.region] if args.region else sorted(hotline.directory.regions)
    if args.region and args.region not in hotline.directory.regions:
        print(f"unknown region {args.region!r}", file=sys.stderr)
        return 2
    try:
        since = parse_when(args.since) if args.since else None
    except ValueError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return 2
    url = args.redis or os.environ.get("IVR_REDIS_URL") or load_settings(root).platform.redis_url
    problem = redis_url_problem(url)
    if problem:
        print(f"--redis: {problem}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    indicators = Indicators()
    # Read from an hour before --since: a call offered just before it may end after.
    since_ms = int((since.timestamp() - 3600) * 1000) if since else 0
    try:
        for region in regions:
            for event in iter_events(client, region, since_ms=max(0, since_ms)):
                indicators.add(as_record(event))
    except redis.RedisError as exc:
        print(f"cannot read the event streams at {url}: {exc}", file=sys.stderr)
        return 1
    rows = indicators.rows(by=by, region=args.region, since=since)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    elif rows:
        print(render_table(rows, by))
    else:
        print("no ended calls in the streams for that selection")
    if indicators.open:
        print(f"({len(indicators.open)} call(s) still in progress, not counted)", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from ivr.config import load_folder
    from ivr.render import SOUNDS, render

    root = args.config or default_root()
    loaded = load_folder(root)  # rendering comes before the check that wants it
    if loaded.hotline is None:
        for problem in loaded.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        written = render(loaded.hotline, root / SOUNDS, force=args.force)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{root / SOUNDS}: {written} file(s) rendered")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), ensure_ascii=False, indent=2) + "\n"
    if args.write:
        from ivr.paths import bundled_root

        path = bundled_root() / SCHEMA_FILE
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
