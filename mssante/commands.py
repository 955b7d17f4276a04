"""The lead commands: init, serve, and mailbox management."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mssante.auth.passwords import generate_password, hash_password


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create a working dev operator (idempotent)")
    p.add_argument("--domain", default=None, help="the operator's mail domain (default op-a.test)")
    p.add_argument("--authority", type=Path, default=None,
                   help="join the dev trust space created by `init` in this other data directory")
    p.add_argument("--ports-offset", type=int, default=0, help="shift every listener port by N")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="run every listener (initialises ./var on first run)")
    p.add_argument("--ports-offset", type=int, default=0,
                   help="on the first run, shift every listener port of the dev operator by N")
    p.set_defaults(func=cmd_serve)

    m = sub.add_parser("mailbox", help="manage this operator's mailboxes").add_subparsers(dest="mailbox_cmd", metavar="ACTION")
    p = m.add_parser("add", help="create a mailbox")
    p.add_argument("address")
    p.add_argument("--type", dest="kind", choices=["PER", "ORG", "APP", "CAB"], required=True)
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--idnps", default=None, help="owner's IDNPS (PER/CAB)")
    p.add_argument("--structure", default=None, help="owning structure id (ORG/APP)")
    p.add_argument("--cert", type=Path, default=None, help="client certificate (PEM) for SASL EXTERNAL")
    p.add_argument("--no-password", action="store_true", help="create without an application password")
    p.set_defaults(func=cmd_mailbox_add)
    p = m.add_parser("list", help="list mailboxes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mailbox_list)
    p = m.add_parser("passwd", help="set a new application password (generated unless --stdin)")
    p.add_argument("address")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_mailbox_passwd)
    p = m.add_parser("disable", help="disable a mailbox (kept, refused for delivery and login)")
    p.add_argument("address")
    p.set_defaults(func=cmd_mailbox_disable)


async def cmd_init(args: argparse.Namespace) -> int:
    from mssante.cli import CliError
    from mssante.devspace import InitError, init_operator

    domain = args.domain
    if domain is None:
        existing = args.data_dir / "mssante.toml"
        if existing.exists():
            from mssante.config import load_config

            domain = load_config(existing).operator.domain
        else:
            domain = "op-a.test"
    try:
        res = await init_operator(args.data_dir, domain, authority_dir=args.authority, ports_offset=args.ports_offset)
    except InitError as e:
        raise CliError(str(e)) from None
    state = "created" if res.created else "already initialised"
    print(f"operator {domain} {state} in {res.data_dir}")
    print(f"  config:   {res.config_path}")
    print(f"  accounts: {res.accounts_path}")
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    from mssante.cli import resolve_config
    from mssante.devspace import init_operator
    from mssante.observability.logs import setup_logging
    from mssante.runtime import serve_forever

    if args.config_path is None and not (args.data_dir / "mssante.toml").exists():
        # First run on the embedded default: create a dev operator and its dev trust space.
        res = await init_operator(args.data_dir, "op-a.test", ports_offset=args.ports_offset)
        print(f"initialised a dev operator in {res.data_dir} (accounts: {res.accounts_path})", flush=True)
    cfg = resolve_config(args)
    setup_logging(cfg.logging.level, cfg.logging.json)
    return await serve_forever(cfg)


async def _sessions(args: argparse.Namespace) -> Any:
    from mssante.store import migrate
    from mssante.store.db import make_engine, make_sessions

    engine = make_engine(args.db_url)
    await migrate.upgrade(engine)
    return engine, make_sessions(engine)


async def _audit(sessions: Any, action: str, **fields: Any) -> None:
    from mssante.observability.audit import Audit

    await Audit(sessions, lambda: dt.datetime.now(dt.timezone.utc)).record(action, actor="cli:" + getpass.getuser(), **fields)


async def cmd_mailbox_add(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from mssante.cli import CliError
    from mssante.store.mail import MailboxError, create_mailbox

    cert_sha = cert_subject = None
    if args.cert is not None:
        try:
            cert = x509.load_pem_x509_certificate(args.cert.read_bytes())
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read certificate {args.cert}: {e}") from None
        cert_sha = cert.fingerprint(hashes.SHA256()).hex()
        cert_subject = cert.subject.rfc4514_string()
    password = None if args.no_password else generate_password()
    engine, sessions = await _sessions(args)
    try:
        async with sessions() as s, s.begin():
            box = await create_mailbox(
                s, args.address, args.kind, display_name=args.name, owner_idnps=args.idnps, structure_id=args.structure,
                password_hash=hash_password(password) if password else None, cert_sha256=cert_sha, cert_subject=cert_subject,
            )
        await _audit(sessions, "mailbox.add", mailbox=box.address, type=box.kind)
    except MailboxError as e:
        raise CliError(str(e)) from None
    finally:
        await engine.dispose()
    print(f"created {box.address} ({box.kind})")
    if password:
        print(f"application password (shown once): {password}")
    return 0


async def cmd_mailbox_list(args: argparse.Namespace) -> int:
    from mssante.store.models import Mailbox

    engine, sessions = await _sessions(args)
    try:
        async with sessions() as s:
            rows = (await s.scalars(select(Mailbox).order_by(Mailbox.address))).all()
    finally:
        await engine.dispose()
    items = [
        {"address": b.address, "type": b.kind, "name": b.display_name, "idnps": b.owner_idnps,
         "structure": b.structure_id, "enabled": b.enabled, "password": b.password_hash is not None,
         "certificate": b.cert_sha256 is not None}
        for b in rows
    ]
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
    else:
        for i in items:
            state = "enabled" if i["enabled"] else "disabled"
            print(f"{i['address']:40} {i['type']:3} {state:8} {i['name']}")
    return 0


async def _find(sessions: Any, address: str) -> Any:
    from mssante.cli import CliError
    from mssante.store.mail import mailbox_by_address

    async with sessions() as s:
        box = await mailbox_by_address(s, address)
    if box is None:
        raise CliError(f"no mailbox {address}")
    return box


async def cmd_mailbox_passwd(args: argparse.Namespace) -> int:
    from mssante.cli import CliError
    from mssante.store.models import Mailbox

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = generate_password()
    try:
        hashed = hash_password(password)
    except ValueError as e:
        raise CliError(str(e)) from None
    engine, sessions = await _sessions(args)
    try:
        box = await _find(sessions, args.address)
        async with sessions() as s, s.begin():
            (await s.get(Mailbox, box.id)).password_hash = hashed  # type: ignore[union-attr]
        await _audit(sessions, "mailbox.passwd", mailbox=box.address)
    finally:
        await engine.dispose()
    if not args.stdin:
        print(f"application password for {box.address} (shown once): {password}")
    else:
        print(f"password set for {box.address}")
    return 0


async def cmd_mailbox_disable(args: argparse.Namespace) -> int:
    from mssante.store.models import Mailbox

    engine, sessions = await _sessions(args)
    try:
        box = await _find(sessions, args.address)
        async with sessions() as s, s.begin():
            row = await s.get(Mailbox, box.id)
            assert row is not None
            row.enabled = False
            row.disabled_at = dt.datetime.now(dt.timezone.utc)
        await _audit(sessions, "mailbox.disable", mailbox=box.address)
    finally:
        await engine.dispose()
    print(f"disabled {box.address}")
    return 0
