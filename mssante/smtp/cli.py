"""`mssante queue ...`: inspect and operate the relay queue (list, show, retry, flush, drop).

The top-level CLI sets args.db_url / args.data_dir / args.config_path (CONTRACTS.md). Every change
(retry, flush, drop) is written to the audit trail with the operator's login name as actor.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from mssante.observability.audit import Audit
from mssante.store import queue as qstore
from mssante.store.db import make_engine, make_sessions


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _run(args: argparse.Namespace, body: Callable[[Any, Audit], Awaitable[int]]) -> int:
    url = getattr(args, "db_url", "")
    if not url:
        print("error: no database configured (use --data-dir or --config)", file=sys.stderr)
        return 2

    async def main() -> int:
        engine = make_engine(url)
        try:
            sessions = make_sessions(engine)
            return await body(sessions, Audit(sessions, _now))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except qstore.QueueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a database that cannot be opened, a missing table: one clear line
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1


def _cmd_list(args: argparse.Namespace) -> int:
    async def body(sessions: Any, audit: Audit) -> int:
        async with sessions() as s:
            rows = await qstore.list_queue(s, limit=args.limit)
        if not rows:
            print("queue is empty")
            return 0
        print(f"{'ID':>6} {'RCPT#':>6} {'ATT':>3} {'NEXT ATTEMPT (UTC)':<20} {'SIZE':>8}  FROM -> TO  [LAST ERROR]")
        for r in rows:
            err = f"  [{(r.last_error or '')[:60]}]" if r.last_error else ""
            print(f"{r.queue_message_id:>6} {r.recipient_id:>6} {r.attempts:>3} "
                  f"{r.next_attempt_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {r.size:>8}  "
                  f"<{r.mail_from}> -> <{r.rcpt}>{err}")
        return 0

    return _run(args, body)


def _cmd_show(args: argparse.Namespace) -> int:
    async def body(sessions: Any, audit: Audit) -> int:
        async with sessions() as s:
            found = await qstore.get_message(s, args.id)
        if found is None:
            raise qstore.QueueError(f"no queued message {args.id}")
        m, rcpts = found
        print(f"queue message {m.id}")
        print(f"  from:        <{m.mail_from}>")
        print(f"  message-id:  {m.message_id or '-'}")
        print(f"  size:        {m.size}")
        print(f"  created:     {m.created_at}")
        print(f"  envid/ret:   {m.envid or '-'} / {m.ret or '-'}")
        print(f"  submitted by {m.actor or '-'}")
        for r in rcpts:
            print(f"  rcpt <{r.rcpt}> status={r.status} attempts={r.attempts} next={r.next_attempt_at} "
                  f"notify={r.notify or 'default'} last_error={r.last_error or '-'}")
        return 0

    return _run(args, body)


def _cmd_retry(args: argparse.Namespace) -> int:
    async def body(sessions: Any, audit: Audit) -> int:
        async with sessions() as s, s.begin():
            n = await qstore.retry_now(s, _now(), args.id)
            s.add(audit.event("queue.retry", _actor(), "ok", queue_message=args.id, recipients=n))
        if n == 0:
            raise qstore.QueueError(f"no queued message {args.id}")
        print(f"{n} recipient(s) of message {args.id} due now")
        return 0

    return _run(args, body)


def _cmd_flush(args: argparse.Namespace) -> int:
    async def body(sessions: Any, audit: Audit) -> int:
        async with sessions() as s, s.begin():
            n = await qstore.retry_now(s, _now(), None)
            s.add(audit.event("queue.flush", _actor(), "ok", recipients=n))
        print(f"{n} recipient(s) due now (a running relay worker picks them up at its next pass)")
        return 0

    return _run(args, body)


def _cmd_drop(args: argparse.Namespace) -> int:
    async def body(sessions: Any, audit: Audit) -> int:
        async with sessions() as s, s.begin():
            n = await qstore.drop(s, args.id)
            s.add(audit.event("queue.drop", _actor(), "ok", queue_message=args.id, recipients=n))
        print(f"dropped message {args.id} ({n} recipient(s)); no DSN is sent")
        return 0

    return _run(args, body)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("queue", help="inspect and operate the relay queue")
    sub = p.add_subparsers(dest="queue_command", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", help="list queued recipients, next attempt first")
    ls.add_argument("--limit", type=int, default=1000)
    ls.set_defaults(func=_cmd_list)
    sh = sub.add_parser("show", help="show one queued message and its recipients")
    sh.add_argument("id", type=int, help="queue message id (first column of 'list')")
    sh.set_defaults(func=_cmd_show)
    rt = sub.add_parser("retry", help="make one message due now")
    rt.add_argument("id", type=int)
    rt.set_defaults(func=_cmd_retry)
    fl = sub.add_parser("flush", help="make every queued recipient due now")
    fl.set_defaults(func=_cmd_flush)
    dr = sub.add_parser("drop", help="delete a queued message without DSN (audited)")
    dr.add_argument("id", type=int)
    dr.set_defaults(func=_cmd_drop)
