"""`mssante trust …`: inspect the liste blanche, check a peer, confirm a shrink, join a trust space, run an authority.

Exit status: 0 success (check-peer: accepted), 1 failure/refusal, 2 usage. Errors: one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from mssante.trust.listeblanche import ListeBlanche, ListeBlancheError, parse_liste_blanche
from mssante.trust.policy import TrustPolicy
from mssante.trust.refresh import (
    META_NAME,
    PENDING_META,
    PENDING_NAME,
    RefreshConfig,
    RefreshError,
    Refresher,
    confirm_shrink,
)
from mssante.trust.state import TrustState

Handler = Callable[[argparse.Namespace], int]


def _err(msg: str) -> int:
    print(f"mssante trust: {msg}", file=sys.stderr)
    return 1


def _now() -> datetime:
    return datetime.now(UTC)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data_dir", None) or "var")


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if getattr(args, "state_dir", None) else _data_dir(args) / "trust"


# -- show-list / check-peer ---------------------------------------------------------------------------
def _load(source: str, args: argparse.Namespace) -> tuple[ListeBlanche, bytes]:
    """Read a list from a file or URL (HTTPS with --ca-file pinned), without installing it anywhere."""
    if source.startswith(("http://", "https://")):
        cfg = RefreshConfig(
            source=source,
            state_dir=Path(os.devnull),
            ca_file=Path(args.ca_file) if args.ca_file else None,
            tls_server_name=args.tls_server_name,
            authority_cert=Path(args.authority_cert) if args.authority_cert else None,
            checksum_source=args.checksum,
        )

        async def fetch() -> bytes:
            r = Refresher(TrustState(), cfg)
            try:
                return await r.fetch()
            finally:
                await r.stop()

        data = asyncio.run(fetch())
    else:
        data = Path(source).read_bytes()
    return parse_liste_blanche(data), data


def cmd_show_list(args: argparse.Namespace) -> int:
    try:
        liste, data = _load(args.source, args)
    except ListeBlancheError as exc:
        return _err(f"list refused: {exc.code}: {exc.detail}")
    except RefreshError as exc:
        return _err(f"cannot fetch the list: {exc.code}: {exc.detail}")
    except OSError as exc:
        return _err(f"cannot read {args.source}: {exc.strerror or exc}")
    print(f"sha256: {liste.sha256}")
    print(f"generated: {liste.generated.isoformat() if liste.generated else '-'}")
    print(f"entries: {len(liste.entries)}")
    print(f"distinct domains: {len({e.domain for e in liste.entries if e.domain})}")
    print(f"indexed domains: {len(liste.by_domain)}")
    print(f"distinct DNs: {len(liste.distinct_dn_texts)} (canonical: {len(liste.distinct_dns)})")
    print(f"problems: {len(liste.problems)}")
    for p in liste.problems:
        where = f" (entry {p.entry})" if p.entry is not None else ""
        print(f"  {p.code}{where}: {p.detail}")
    return 0


def cmd_check_peer(args: argparse.Namespace) -> int:
    try:
        liste = parse_liste_blanche(Path(args.list).read_bytes())
        cert = x509.load_pem_x509_certificate(Path(args.cert).read_bytes())
    except ListeBlancheError as exc:
        return _err(f"list refused: {exc.code}: {exc.detail}")
    except ValueError:
        return _err(f"{args.cert}: not a PEM certificate")
    except OSError as exc:
        return _err(f"cannot read: {exc.filename}: {exc.strerror}")
    decision = TrustPolicy(liste).inbound(cert, args.domain, _now())
    print(f"{decision.reason}" + (f": {decision.detail}" if decision.detail else ""))
    print(f"peer DN: {decision.peer_dn}")
    return 0 if decision.accept else 1


def cmd_confirm_shrink(args: argparse.Namespace) -> int:
    try:
        path = confirm_shrink(_state_dir(args), args.sha256)
    except ValueError as exc:
        return _err(str(exc))
    print(f"confirmed: the list {args.sha256.lower()} will be installed on the next refresh ({path})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """What the refresher installed last, and any list waiting for a shrink confirmation."""
    d = _state_dir(args)
    shown = False
    for label, name in (("installed", META_NAME), ("refused by the shrink guard", PENDING_META)):
        try:
            meta = json.loads((d / name).read_text())
        except (OSError, ValueError):
            continue
        shown = True
        print(f"{label}: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items()) if k != "etag"))
        if name == PENDING_META:
            print(f"  inspect: mssante trust show-list {d / PENDING_NAME}")
            print(f"  accept:  mssante trust confirm-shrink {meta.get('sha256')}")
    if not shown:
        return _err(f"no refresher state in {d}")
    return 0


# -- join (operator side) -----------------------------------------------------------------------------
def _join_dir(args: argparse.Namespace) -> Path:
    return Path(args.join_dir) if args.join_dir else _data_dir(args) / "trust" / "join"


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return args.token or os.environ.get("MSSANTE_ENROLMENT_TOKEN")


def cmd_join(args: argparse.Namespace) -> int:
    from mssante.trust.join import JoinError, submit_join

    token = _token(args)
    if not token:
        print("mssante trust join: give --token, --token-file or MSSANTE_ENROLMENT_TOKEN", file=sys.stderr)
        return 2
    try:
        ticket = asyncio.run(
            submit_join(
                _join_dir(args),
                authority_url=args.authority_url,
                token=token,
                domain=args.domain,
                fqdn=args.fqdn or f"mx.{args.domain}",
                org=args.org,
                structure_id=args.structure_id,
                department=args.department,
                contact=args.contact,
                ca_file=Path(args.ca_file) if args.ca_file else None,
                tls_server_name=args.tls_server_name,
            )
        )
    except JoinError as exc:
        return _err(f"join refused: {exc.code}: {exc.detail}")
    print(f"join request {ticket.request_id} submitted; poll with: mssante trust join-status")
    return 0


def cmd_join_status(args: argparse.Namespace) -> int:
    from mssante.trust.join import JoinError, poll_join

    d = _join_dir(args)
    try:
        data = asyncio.run(
            poll_join(
                d, ca_file=Path(args.ca_file) if args.ca_file else None, tls_server_name=args.tls_server_name
            )
        )
    except JoinError as exc:
        return _err(f"{exc.code}: {exc.detail}")
    print(f"status: {data.get('status')}")
    if data.get("cert_pem"):
        print(f"certificate: {d / 'mta.pem'} (chain {d / 'mta-chain.pem'}, key {d / 'mta.key'})")
        print(f"subject DN: {data.get('subject_dn')}")
    if data.get("note"):
        print(f"note: {data['note']}")
    return 0 if data.get("status") in ("pending", "approved") else 1


# -- authority -----------------------------------------------------------------------------------------
def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _open_pki(args: argparse.Namespace, required: bool) -> Any:
    from pki.space import TrustSpacePKI

    dev = _data_dir(args) / "dev" / "authority"
    pki_dir = Path(args.pki_dir) if args.pki_dir else dev / "pki"
    pass_file = Path(args.passphrase_file) if args.passphrase_file else dev / "passphrase"
    if not TrustSpacePKI.exists(pki_dir):
        if required:
            raise _Fail(f"no trust-space PKI in {pki_dir} (give --pki-dir)")
        return None
    env = os.environ.get("MSSANTE_PKI_PASSPHRASE")
    if env:
        passphrase = env.encode()
    elif pass_file.exists():
        passphrase = pass_file.read_bytes().strip()
    else:
        raise _Fail("no PKI passphrase: give --passphrase-file or MSSANTE_PKI_PASSPHRASE")
    return TrustSpacePKI.open(pki_dir, passphrase)


class _Fail(Exception):
    pass


def _authority_cmd(needs_pki: bool, body: Callable[[Any, argparse.Namespace], Awaitable[int]]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.ext.asyncio import async_sessionmaker

        from mssante.store.db import make_engine
        from mssante.trust.authority import AuthorityError, TrustAuthority
        from pki.errors import PkiError

        db_url = getattr(args, "db_url", "") or ""
        if not db_url:
            return _err("no database configured (args.db_url)")
        root = Path(args.authority_dir) if args.authority_dir else _data_dir(args) / "authority"

        async def run() -> int:
            engine = make_engine(db_url)
            try:
                pki = _open_pki(args, needs_pki)
                authority = TrustAuthority(async_sessionmaker(engine, expire_on_commit=False), root, pki=pki)
                return await body(authority, args)
            finally:
                await engine.dispose()

        try:
            return asyncio.run(run())
        except AuthorityError as exc:
            return _err(f"{exc.code}: {exc.detail}")
        except (_Fail, PkiError) as exc:
            return _err(str(exc))
        except SQLAlchemyError as exc:
            return _err(f"database error ({type(exc).__name__}); are the migrations applied?")

    return handler


async def _a_init(a: Any, args: argparse.Namespace) -> int:
    path = a.files.init(a.pki, _now(), department=args.department)
    pub = await a.publish(_now(), actor=_actor())
    print(f"authority signing certificate: {path}")
    print(f"published {pub.entries} entries, sha256 {pub.sha256}")
    return 0


async def _a_token(a: Any, args: argparse.Namespace) -> int:
    token = await a.issue_token(
        _now(), note=args.note or "", ttl=timedelta(days=args.ttl_days), actor=_actor()
    )
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        print(f"one-time enrolment token written to {args.out} (valid {args.ttl_days} days)")
    else:
        print(token)  # shown once; stored only as a SHA-256
    return 0


async def _a_list(a: Any, args: argparse.Namespace) -> int:
    for v in await a.list_requests(args.status):
        print(f"{v.request_id}  {v.status:9}  {v.domain}  {v.fqdn}  {v.org}  {v.created_at:%Y-%m-%d %H:%M}")
    return 0


def _decide(op: str) -> Callable[[Any, argparse.Namespace], Awaitable[int]]:
    async def run(a: Any, args: argparse.Namespace) -> int:
        kw: dict[str, Any] = {"actor": _actor()}
        if op == "reject":
            kw["note"] = args.note or ""
        view = await getattr(a, op)(args.request_id, _now(), **kw)
        print(
            f"{view.request_id}: {view.status} ({view.domain})"
            + (f" DN {view.subject_dn}" if view.subject_dn else "")
        )
        return 0

    return run


async def _a_publish(a: Any, args: argparse.Namespace) -> int:
    pub = await a.publish(_now(), actor=_actor())
    print(f"published {pub.entries} entries to {pub.path}, sha256 {pub.sha256}")
    return 0


async def _a_import(a: Any, args: argparse.Namespace) -> int:
    try:
        liste = parse_liste_blanche(Path(args.file).read_bytes())
    except ListeBlancheError as exc:
        return _err(f"list refused: {exc.code}: {exc.detail}")
    added = await a.import_list(liste, _now(), actor=_actor())
    pub = await a.publish(_now(), actor=_actor())
    print(
        f"imported {added} entries ({len(liste.problems)} problems skipped/reported); published sha256 {pub.sha256}"
    )
    return 0


def _tls_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-file", help="trust-space root CA pinned for HTTPS")
    p.add_argument("--tls-server-name", help="name to verify in the server certificate (URL by IP address)")


def register(subparsers: Any) -> None:
    trust = subparsers.add_parser("trust", help="the trust space: liste blanche, peers, joining, authority")
    sub = trust.add_subparsers(dest="trust_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("show-list", help="parse a liste blanche (file or URL) and print counts and problems")
    p.add_argument("source", help="file path or https:// URL")
    _tls_opts(p)
    p.add_argument("--authority-cert", help="verify the detached signature SOURCE.sig (URL sources)")
    p.add_argument("--checksum", help="verify against this SHA-256 file or URL (URL sources)")
    p.set_defaults(func=cmd_show_list)

    p = sub.add_parser("check-peer", help="would a peer with this certificate be accepted for this domain?")
    p.add_argument("--list", required=True, help="liste blanche file")
    p.add_argument("--domain", required=True, help="sending domain")
    p.add_argument("--cert", required=True, help="peer certificate (PEM)")
    p.set_defaults(func=cmd_check_peer)

    p = sub.add_parser("confirm-shrink", help="accept a list refused by the shrink guard (by its SHA-256)")
    p.add_argument("sha256")
    p.add_argument("--state-dir", help="refresher state directory (default DATA_DIR/trust)")
    p.set_defaults(func=cmd_confirm_shrink)

    p = sub.add_parser("status", help="the installed list and any list refused by the shrink guard")
    p.add_argument("--state-dir", help="refresher state directory (default DATA_DIR/trust)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("join", help="ask a trust authority to join: key + CSR + join request")
    p.add_argument("--domain", required=True)
    p.add_argument("--fqdn", help="MTA host name (certificate CN; default mx.DOMAIN)")
    p.add_argument("--org", required=True, help="raison sociale")
    p.add_argument("--structure-id", required=True, help="FINESS/SIRET…")
    p.add_argument("--department", required=True, help="département code, e.g. 75")
    p.add_argument("--contact", required=True)
    p.add_argument("--authority-url", required=True)
    p.add_argument("--token", help="one-time enrolment token (prefer --token-file)")
    p.add_argument("--token-file")
    p.add_argument("--join-dir", help="default DATA_DIR/trust/join")
    _tls_opts(p)
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("join-status", help="poll the join request; fetch the certificate once approved")
    p.add_argument("--join-dir", help="default DATA_DIR/trust/join")
    _tls_opts(p)
    p.set_defaults(func=cmd_join_status)

    auth = sub.add_parser("authority", help="run a trust authority (list, tokens, join review)")
    asub = auth.add_subparsers(dest="authority_command", metavar="ACTION", required=True)

    def add(
        name: str, help_: str, needs_pki: bool, body: Callable[[Any, argparse.Namespace], Awaitable[int]]
    ) -> argparse.ArgumentParser:
        ap: argparse.ArgumentParser = asub.add_parser(name, help=help_)
        ap.add_argument("--authority-dir", help="default DATA_DIR/authority")
        ap.add_argument("--pki-dir", help="trust-space PKI (default DATA_DIR/dev/authority/pki)")
        ap.add_argument("--passphrase-file", help="PKI passphrase file (or MSSANTE_PKI_PASSPHRASE)")
        ap.set_defaults(func=_authority_cmd(needs_pki, body))
        return ap

    ap = add("init", "issue the authority's signing certificate and publish", True, _a_init)
    ap.add_argument("--department", default="75")
    ap = add("token", "issue a one-time enrolment token", False, _a_token)
    ap.add_argument("--note", default="")
    ap.add_argument("--ttl-days", type=int, default=7)
    ap.add_argument("--out", help="write the token to this file (0600) instead of stdout")
    ap = add("list", "list join requests", False, _a_list)
    ap.add_argument("--status", choices=["pending", "approved", "rejected", "suspended", "removed"])
    for op, help_ in (
        ("approve", "issue the SERV certificate, list the domain, republish"),
        ("reject", "refuse a pending request"),
        ("suspend", "revoke (certificateHold), delist, republish"),
        ("remove", "revoke (cessationOfOperation), delist, republish"),
    ):
        ap = add(op, help_, op != "reject", _decide(op))
        ap.add_argument("request_id")
        if op == "reject":
            ap.add_argument("--note", default="")
    add("publish", "export, sign and publish the list (and CRLs)", False, _a_publish)
    ap = add("import", "seed the authority's list from a liste blanche file", False, _a_import)
    ap.add_argument("file")
