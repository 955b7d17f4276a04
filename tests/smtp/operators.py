"""Test operators: a dev trust space with several gateways on loopback, each with its own store.

Used by the pytest fixtures (conftest.py), by the crash-test gateway script and by scripts/bench_smtp.py.
Everything real: PKI files, TLS, SQLite/PostgreSQL, listeners on 127.0.0.x with free ports.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mssante.app import Services
from mssante.auth.passwords import hash_password
from mssante.config import config_from_dict
from mssante.observability.audit import Audit
from mssante.observability.metrics import Metrics
from mssante.store.base import Base
from mssante.store.db import make_engine, make_sessions
from mssante.store.mail import create_mailbox
from pki.space import Issued, TrustSpacePKI
from pki.tls import client_context
from pki.validation import Validator
from mssante.trust.listeblanche import build_liste_blanche_xml, parse_liste_blanche
from mssante.trust.state import TrustState

import mssante.store.models  # noqa: F401  (tables on Base)
import mssante.store.queue  # noqa: F401

PASSPHRASE = b"test passphrase"
PASSWORD = "correct horse battery staple"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Space:
    """A dev trust space: the PKI plus the liste blanche entries published so far."""

    dir: Path
    pki: TrustSpacePKI
    entries: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, key_kind: str = "ec-p256") -> Space:
        pki = TrustSpacePKI.create(directory / "pki", PASSPHRASE, now=utcnow(), key_kind=key_kind)
        return cls(directory, pki)

    def issue_serv(self, domain: str, out: Path, key_kind: str | None = None) -> Issued:
        out.mkdir(parents=True, exist_ok=True)
        return self.pki.issue_server(f"mx.{domain}", domains=[domain], org=f"Operateur {domain}",
                                     structure_id="10000000000001", department="Paris (75)", out_dir=out,
                                     now=utcnow(), key_kind=key_kind)

    def issue_org(self, name: str, out: Path) -> Issued:
        out.mkdir(parents=True, exist_ok=True)
        return self.pki.issue_org(name, org="Laboratoire Test", structure_id="10000000000002",
                                  department="Paris (75)", out_dir=out, now=utcnow())

    def liste_xml(self) -> bytes:
        return build_liste_blanche_xml(self.entries, utcnow())

    def validator(self) -> Validator:
        return Validator.from_files(self.pki.anchors_path, self.pki.intermediates_path, self.pki.crl_paths)

    def client_ctx(self, issued: Issued | None) -> ssl.SSLContext:
        ctx = client_context(ca_path=self.pki.anchors_path,
                             cert_path=issued.chain_path if issued else None,
                             key_path=issued.key_path if issued else None, check_hostname=False)
        return ctx


@dataclass
class Operator:
    domain: str
    dir: Path
    services: Services
    serv: Issued
    ip: str = "127.0.0.1"
    listeners: list[Any] = field(default_factory=list)
    mta_port: int = 0
    sub_port: int = 0
    subs_port: int = 0

    async def add_mailbox(self, local: str, kind: str = "PER", *, password: str | None = PASSWORD,
                          owner_idnps: str | None = None, cert_sha256: str | None = None) -> int:
        async with self.services.sessions() as s, s.begin():
            box = await create_mailbox(s, f"{local}@{self.domain}", kind,
                                       password_hash=hash_password(password) if password else None,
                                       owner_idnps=owner_idnps, cert_sha256=cert_sha256)
            return int(box.id)

    async def stop(self) -> None:
        for item in reversed(self.listeners):
            await item.stop()
        self.listeners.clear()
        from mssante.smtp.delivery import close_committer

        await close_committer(self.services)  # pending commits, then the RCPT lookup connections
        await self.services.engine.dispose()


def operator_config(domain: str, directory: Path, serv: Issued, space: Space, *, ip: str = "127.0.0.1",
                    smtp: dict[str, Any] | None = None, relay: dict[str, Any] | None = None,
                    auth: dict[str, Any] | None = None, db_url: str | None = None) -> dict[str, Any]:
    return {
        "data_dir": str(directory),
        "operator": {"domain": domain, "hostname": f"mx.{domain}"},
        "database": {"url": db_url or f"sqlite+aiosqlite:///{directory / 'mssante.db'}"},
        "tls": {
            "cert": str(serv.chain_path), "key": str(serv.key_path), "anchors": str(space.pki.anchors_path),
            "intermediates": str(space.pki.intermediates_path), "crls": [str(p) for p in space.pki.crl_paths],
        },
        "listeners": {"mta": "", "submission": "", "submissions": "", "imap": "", "imaps": "", "mllp": "", "http": ""},
        "smtp": smtp or {},
        "relay": relay or {},
        "auth": auth or {},
    }


async def build_services(cfg_dict: dict[str, Any], space: Space, *, create_tables: bool = True) -> Services:
    cfg = config_from_dict(cfg_dict)
    engine = make_engine(cfg.db_url)
    if create_tables:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    sessions = make_sessions(engine)
    trust = TrustState(local_domains=sorted(cfg.all_local_domains))
    trust.install(parse_liste_blanche(space.liste_xml()), utcnow())
    services = Services(config=cfg, engine=engine, sessions=sessions, audit=Audit(sessions, utcnow), metrics=Metrics(),
                        validator=space.validator(), trust=trust)
    return services


async def make_operator(space: Space, directory: Path, domain: str, *, listed: bool = True, ip: str = "127.0.0.1",
                        db_url: str | None = None, key_kind: str | None = None, **overrides: Any) -> Operator:
    directory.mkdir(parents=True, exist_ok=True)
    serv = space.issue_serv(domain, directory / "certs", key_kind=key_kind)
    if listed:
        space.entries.append((domain, serv.subject_dn, f"Operateur {domain}"))
    cfg = operator_config(domain, directory, serv, space, ip=ip, db_url=db_url, **overrides)
    (directory / "operator.json").write_text(json.dumps(cfg))
    services = await build_services(cfg, space)
    return Operator(domain, directory, services, serv, ip=ip)


def refresh_trust(space: Space, *operators: Operator) -> None:
    """Publish the current liste blanche to every operator (what the trust refresher does)."""
    liste = parse_liste_blanche(space.liste_xml())
    for op in operators:
        op.services.trust.install(liste, utcnow())
