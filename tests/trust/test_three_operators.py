"""Three operators on loopback and the trust authority: a newcomer joins over HTTPS, then leaves.

Everything is real: the trust-space PKI, the authority's HTTPS endpoints (join, signed list, CRLs),
each gateway's refresher pulling the signed list, and the gateways' MTAs on 127.0.0.1 deciding from it.
op-a.test and op-b.test are in the trust space; nouvel-op.test joins through the HTTP workflow
(SPECS.md §1 and §6; issue "the trust space"):

1. before approval it holds no trust-space certificate: a self-made one is refused at TLS level,
2. approval issues its SERV certificate, but the others refuse it until their next refresh (the list
   decides, not the certificate alone),
3. after the refresh both A and B accept its mail, which lands in their mailboxes,
4. `remove` revokes it and delists the domain: after the next refresh both refuse it again.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from mssante.store.base import Base
from mssante.store.db import make_engine
from mssante.store.models import Message
from mssante.trust.authority import TrustAuthority
from mssante.trust.join import load_ticket, poll_join, submit_join
from mssante.trust.listeblanche import Entry
from mssante.trust.refresh import RefreshConfig, Refresher, RefreshOutcome
from mssante.trust.routes import add_routes
from pki.tls import client_context, server_context

from ..smtp.clients import message
from ..smtp.conftest import start
from ..smtp.operators import Operator, Space, make_operator, utcnow

HOST = "autorite.test.mssante.fr"
NEW = "nouvel-op.test"


@pytest.fixture
def space(tmp_path: Path) -> Space:
    return Space.create(tmp_path / "space")


@dataclass
class Authority:
    authority: TrustAuthority
    url: str


@pytest.fixture
async def authority(tmp_path: Path, space: Space) -> AsyncIterator[Authority]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    auth = TrustAuthority(async_sessionmaker(engine, expire_on_commit=False), tmp_path / "authority", pki=space.pki)
    auth.files.init(space.pki, utcnow())
    # The space already has other operators, so one arrival or departure is not a mass change.
    for i in range(20):
        await auth.add_entry(Entry(f"op{i}.mssante.fr", f"CN=mx.op{i}.mssante.fr,O=OP{i},C=FR", None), utcnow(),
                             actor="seed")
    srv = space.pki.issue_server(HOST, domains=[], org="AUTORITE", structure_id="1", department="75",
                                 out_dir=tmp_path / "authority-https", now=utcnow())
    assert srv.key_path is not None
    app = web.Application()
    add_routes(app, publish_dir=auth.files.published, authority=auth, now=utcnow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(srv.chain_path, srv.key_path))
    await site.start()
    try:
        yield Authority(auth, f"https://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()
        await engine.dispose()


def refresher_for(op: Operator, space: Space, a: Authority) -> Refresher:
    cfg = RefreshConfig(source=a.url + "/trust/liste-blanche.xml", state_dir=op.dir / "trust",
                        ca_file=space.pki.anchors_path, tls_server_name=HOST,
                        authority_cert=a.authority.files.signer_cert)
    return Refresher(op.services.trust, cfg, now=utcnow)


def self_made_identity(directory: Path) -> tuple[Path, Path]:
    """What a would-be operator has before approval: a certificate no trust-space CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mx.{NEW}"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "NOUVEL OPERATEUR")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "self.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "self.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return directory / "self.pem", directory / "self.key"


async def send_from_newcomer(op: Operator, space: Space, cert: Path, key: Path, mid: str) -> tuple[int, str]:
    """One transaction to `op`'s MTA as nouvel-op.test's MTA would open it; returns the first refusal or 250."""
    ctx = client_context(ca_path=space.pki.anchors_path, cert_path=cert, key_path=key, check_hostname=False)
    client = aiosmtplib.SMTP(hostname=op.ip, port=op.mta_port, start_tls=False, use_tls=False, timeout=10,
                             local_hostname=f"mx.{NEW}")
    await client.connect()
    try:
        await client.starttls(tls_context=ctx)
        rcpt = f"dr.martin@{op.domain}"
        code, text = await client.mail(f"secretariat@{NEW}")
        if code != 250:
            return code, text
        code, text = await client.rcpt(rcpt)
        if code != 250:
            return code, text
        code, text = await client.data(message(f"secretariat@{NEW}", rcpt, mid=mid))
        return code, text
    except aiosmtplib.SMTPResponseException as e:
        return e.code, e.message
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError):
            client.close()


async def stored_ids(op: Operator) -> list[str]:
    async with op.services.sessions() as s:
        return [m for (m,) in (await s.execute(select(Message.message_id))).all()]


async def test_newcomer_joins_is_accepted_then_removed(tmp_path: Path, space: Space, authority: Authority) -> None:
    auth = authority.authority
    a = await make_operator(space, tmp_path / "a", "op-a.test", listed=False)
    b = await make_operator(space, tmp_path / "b", "op-b.test", listed=False)
    operators = (a, b)
    for op in operators:
        await auth.add_entry(Entry(op.domain, op.serv.subject_dn, f"Operateur {op.domain}"), utcnow(), actor="seed")
    await auth.publish(utcnow(), actor="seed")
    refreshers = [refresher_for(op, space, authority) for op in operators]
    try:
        for op in operators:
            await start(op, submission=False)
            await op.add_mailbox("dr.martin")
        for r in refreshers:
            assert await r.refresh_once() is RefreshOutcome.INSTALLED
        assert all(op.services.trust.policy.outbound("op-b.test").accept for op in operators)
        assert not a.services.trust.policy.outbound(NEW).accept

        # 1. The newcomer asks to join with a one-time token; until approval it has no SERV certificate.
        token = await auth.issue_token(utcnow(), note=NEW, actor="admin")
        join_dir = tmp_path / "nouvel-op" / "join"
        await submit_join(join_dir, authority_url=authority.url, token=token, domain=NEW, fqdn=f"mx.{NEW}",
                          org="NOUVEL OPERATEUR", structure_id="123456789", department="69",
                          contact="support@nouvel-op.test", ca_file=space.pki.anchors_path, tls_server_name=HOST)
        status = await poll_join(join_dir, ca_file=space.pki.anchors_path, tls_server_name=HOST)
        assert status["status"] == "pending" and not (join_dir / "mta.pem").exists()
        self_cert, self_key = self_made_identity(tmp_path / "nouvel-op" / "self")
        for op in operators:
            with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
                await send_from_newcomer(op, space, self_cert, self_key, "<early@nouvel-op.test>")

        # 2. Approval: the authority issues the certificate, lists the domain and republishes.
        await auth.approve(load_ticket(join_dir).request_id, utcnow(), actor="admin")
        status = await poll_join(join_dir, ca_file=space.pki.anchors_path, tls_server_name=HOST)
        assert status["status"] == "approved"
        chain, key = join_dir / "mta-chain.pem", join_dir / "mta.key"
        # ...but A and B decide from the list they hold: until they refresh, the newcomer is not listed.
        code, text = await send_from_newcomer(a, space, chain, key, "<before-refresh@nouvel-op.test>")
        assert code == 550 and "5.7.1" in text, (code, text)

        # 3. At their next refresh every gateway accepts the newcomer's mail.
        for r in refreshers:
            assert await r.refresh_once() is RefreshOutcome.INSTALLED
        for op in operators:
            assert op.services.trust.policy.outbound(NEW).accept
            code, text = await send_from_newcomer(op, space, chain, key, f"<welcome-{op.domain}@nouvel-op.test>")
            assert code == 250, (op.domain, code, text)
            assert f"<welcome-{op.domain}@nouvel-op.test>" in await stored_ids(op)

        # 4. Removal: certificate revoked, domain delisted, list republished; refused after the refresh.
        await auth.remove(load_ticket(join_dir).request_id, utcnow(), actor="admin")
        for r in refreshers:
            assert await r.refresh_once() is RefreshOutcome.INSTALLED
        for op in operators:
            assert not op.services.trust.policy.outbound(NEW).accept
            code, text = await send_from_newcomer(op, space, chain, key, f"<after-{op.domain}@nouvel-op.test>")
            assert code == 550 and "5.7.1" in text, (op.domain, code, text)
            ids = await stored_ids(op)
            assert f"<after-{op.domain}@nouvel-op.test>" not in ids
            assert ids == [f"<welcome-{op.domain}@nouvel-op.test>"]
    finally:
        for r in refreshers:
            await r.stop()
        for op in operators:
            await op.stop()
