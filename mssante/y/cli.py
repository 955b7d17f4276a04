"""`mssante y`: show Y deliveries and the state of each leg.

    mssante y list [--since 2h|2025-06-01T00:00] [--limit N] [--json]
    mssante y status ID [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any


class UsageError(ValueError):
    pass


def parse_since(value: str, now: dt.datetime) -> dt.datetime:
    """A duration back from now (30m, 2h, 7d) or an ISO 8601 date/time (UTC when no offset)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - dt.timedelta(**{unit: int(m.group(1))})
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"--since {value!r}: expected a duration such as 2h or 7d, or an ISO date") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


async def _with_session(args: argparse.Namespace, fn: Any) -> Any:
    from mssante.store.db import make_engine, make_sessions

    engine = make_engine(args.db_url)
    try:
        async with make_sessions(engine)() as s:
            return await fn(s)
    finally:
        await engine.dispose()


def _print_legs(view: dict[str, Any]) -> None:
    print(f"Y delivery {view['id']}: {view['message_type']} {view['action']} from {view['sender']} "
          f"(control id {view['control_id']}, {view['source']}) received {view['received_at']}")
    print(f"  patient INS {view['patient_ins']}; sender mailbox {view['sender_mailbox']}")
    for w in view["warnings"]:
        print(f"  warning: {w}")
    for leg in view["leg_details"]:
        who = leg["recipient"] if leg["kind"] == "mss" else f"DMP (INS {leg['recipient']})"
        extra = f"  [{leg['last_error']}]" if leg["last_error"] else ""
        print(f"  leg {leg['id']:>5} {leg['kind']:<3} {leg['group'] or '':<7} {leg['state']:<12} {who}{extra}")
    for a in view["business_acks"]:
        status = f"sent {a['sent_at']} ({a['lab_answer']})" if a["sent_at"] else f"pending ({a['attempts']} attempts)"
        print(f"  ZAM^{a['event']} leg {a['leg']} {'Y' if a['success'] else 'N'}: {status}")


async def _status(args: argparse.Namespace) -> int:
    from mssante.y.tracking import delivery_view

    try:
        delivery_id = int(args.id)
    except ValueError:
        print(f"mssante: y status {args.id!r}: expected a delivery number", file=sys.stderr)
        return 2
    view = await _with_session(args, lambda s: delivery_view(s, delivery_id))
    if view is None:
        print(f"mssante: no Y delivery {delivery_id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
    else:
        _print_legs(view)
    return 0


async def _list(args: argparse.Namespace) -> int:
    from mssante.y.tracking import list_deliveries

    try:
        since = parse_since(args.since, dt.datetime.now(dt.timezone.utc)) if args.since else None
    except UsageError as e:
        print(f"mssante: {e}", file=sys.stderr)
        return 2
    rows = await _with_session(args, lambda s: list_deliveries(s, since=since, limit=args.limit))
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        legs = ", ".join(f"{n} {state}" for state, n in r["legs"].items())
        print(f"{r['id']:>6}  {r['received_at']}  {r['sender']:<20} {r['control_id']:<12} {r['message_type']:<8} {legs}")
    if not rows:
        print("no Y deliveries", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    y = subparsers.add_parser("y", help="Y deliveries (HL7 intake to DMP + MSSanté) and their legs")
    sub = y.add_subparsers(dest="y_command", metavar="SUBCOMMAND")
    y.set_defaults(func=lambda args: (y.print_help(sys.stderr), 2)[1])
    status = sub.add_parser("status", help="one delivery: every leg, its state history and business acks")
    status.add_argument("id", help="the delivery number (from `mssante y list`)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)
    lst = sub.add_parser("list", help="recent deliveries with a count of legs per state")
    lst.add_argument("--since", default="", help="a duration (30m, 2h, 7d) or an ISO date; default: all")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=_list)
