"""Drive the lab by hand: ``python -m ivr.lab up|down|status|call NUMBER|cdrs``.

Without ``--extensions`` the lab loads the demo dialplan beside the templates (12345:
prompt, key 0 to the emergency seat, otherwise the seat queue). Give ``down`` and
``status`` the same options as ``up``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ivr.lab.conf import LabConfig, template_dir
from ivr.lab.lab import Lab, LabError, default_root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ivr.lab", description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help=f"default {default_root()}")
    parser.add_argument("--state", type=Path, default=None, help="state folder inside root")
    parser.add_argument("--extensions", type=Path, action="append", default=[])
    parser.add_argument("--queues", type=Path, action="append", default=[])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Asterisk and the seats (restart what changed)")
    commands.add_parser("down", help="stop the seats and Asterisk")
    commands.add_parser("status", help="print the lab's state as JSON")
    commands.add_parser("cdrs", help="print the CDRs as JSON lines")
    call = commands.add_parser("call", help="place one call and print what the caller saw")
    call.add_argument("number")
    call.add_argument("--hold", type=float, default=5.0)
    call.add_argument("--dtmf", default="")
    call.add_argument("--dtmf-at", type=float, default=1.0)
    call.add_argument("--dtmf-mode", choices=("info", "rfc2833"), default="info")
    call.add_argument("--caller-id", default="13800000000")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    extensions = args.extensions or [template_dir() / "demo-extensions.conf"]
    queues = args.queues or ([template_dir() / "demo-queues.conf"] if not args.extensions else [])
    lab = Lab(args.root, args.state, LabConfig(extensions=tuple(extensions), queues=tuple(queues)))
    try:
        if args.command == "up":
            lab.up()
            print(json.dumps(lab.status(), indent=2))
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            print(json.dumps(lab.status(), indent=2))
        elif args.command == "cdrs":
            for record in lab.cdrs():
                print(json.dumps(record, ensure_ascii=False))
        elif args.command == "call":
            result = lab.call(
                args.number,
                hold=args.hold,
                dtmf=args.dtmf,
                dtmf_at=args.dtmf_at,
                dtmf_mode=args.dtmf_mode,
                caller_id=args.caller_id,
            )
            summary = {
                "number": result.number,
                "statuses": result.statuses,
                "answered": result.answered,
                "hung_up_by": result.hung_up_by,
                "dtmf_sent": result.dtmf_sent,
                "elapsed": round(result.elapsed, 3),
                "message_log": str(result.message_log),
            }
            print(json.dumps(summary, indent=2))
            return 0 if result.ok else 1
    except LabError as exc:
        print(f"ivr.lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
