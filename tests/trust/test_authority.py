"""The join workflow end to end: authority over real HTTPS on 127.0.0.1, real PKI, both databases."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from mssante.store.base import Base
from mssante.store.db import make_engine
from mssante.store.models import AuditEvent
from mssante.trust.authority import (
    AuthorityError,
    AuthorityErrorCode,
    JoinSubmission,
    TrustAuthority,
)
from mssante.trust.join import JoinError, load_ticket, poll_join, submit_join
from mssante.trust.listeblanche import Entry
from mssante.trust.policy import PeerReason
from mssante.trust.refresh import RefreshConfig, Refresher, RefreshOutcome
from mssante.trust.routes import add_routes
from mssante.trust.state import TrustState
from pki.space import TrustSpacePKI
from pki.tls import server_context
from pki.validation import Role, Validator

NOW = datetime.now(UTC)
HOST = "autorite.test.mssante.fr"


@dataclass
class World:
    space: TrustSpacePKI
    authority: TrustAuthority
    url: str
    tmp: Path

    def refresher(self) -> Refresher:
        cfg = RefreshConfig(
            source=self.url + "/trust/liste-blanche.xml",
            state_dir=self.tmp / "gw-state",
            ca_file=self.space.anchors_path,
            tls_server_name=HOST,
            authority_cert=self.authority.files.signer_cert,
        )
        return Refresher(TrustState(local_domains=["gw.mssante.fr"]), cfg, now=lambda: NOW)


@pytest.fixture
async def world(tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    space = TrustSpacePKI.create(tmp_path / "space", b"pw", now=NOW)
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    authority = TrustAuthority(
        async_sessionmaker(engine, expire_on_commit=False), tmp_path / "authority", pki=space
    )
    authority.files.init(space, NOW)
    # the trust space already has operators (so one departure is not a shrink)
    for i in range(30):
        await authority.add_entry(
            Entry(f"op{i}.mssante.fr", f"CN=mx{i}.op.fr,OU={i},O=OP{i},ST=Paris (75),C=FR", None),
            NOW,
            actor="seed",
        )
    await authority.publish(NOW, actor="seed")
    srv = space.issue_server(
        HOST, domains=[], org="AUTORITE", structure_id="1", department="75", out_dir=tmp_path / "srv", now=NOW
    )
    assert srv.key_path is not None
    ctx = server_context(srv.chain_path, srv.key_path)
    app = web.Application()
    add_routes(app, publish_dir=authority.files.published, authority=authority, now=lambda: NOW)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield World(space, authority, f"https://127.0.0.1:{port}", tmp_path)
    finally:
        await runner.cleanup()
        await engine.dispose()


async def _join(w: World, token: str, domain: str = "nouvel-op.mssante.fr") -> Path:
    join_dir = w.tmp / "join" / domain
    await submit_join(
        join_dir,
        authority_url=w.url,
        token=token,
        domain=domain,
        fqdn="mx." + domain,
        org="NOUVEL OPERATEUR",
        structure_id="123456789",
        department="69",
        contact="support@nouvel-op.fr",
        ca_file=w.space.anchors_path,
        tls_server_name=HOST,
    )
    return join_dir


async def test_join_approve_publish_refresh_suspend(world: World) -> None:
    w = world
    gw = w.refresher()
    try:
        assert await gw.refresh_once() is RefreshOutcome.INSTALLED
        assert len(gw.state.liste.domains) == 30

        token = await w.authority.issue_token(NOW, note="nouvel-op", actor="admin")
        join_dir = await _join(w, token)
        ticket = load_ticket(join_dir)
        assert (join_dir / "mta.key").stat().st_mode & 0o077 == 0

        # the token is single use
        with pytest.raises(JoinError) as exc:
            await _join(w, token, "autre.mssante.fr")
        assert exc.value.code == "BAD_TOKEN"

        status = await poll_join(join_dir, ca_file=w.space.anchors_path, tls_server_name=HOST)
        assert status["status"] == "pending" and not (join_dir / "mta.pem").exists()
        pending = await w.authority.list_requests("pending")
        assert [v.request_id for v in pending] == [ticket.request_id]

        view = await w.authority.approve(ticket.request_id, NOW, actor="admin")
        assert view.status == "approved" and view.subject_dn
        status = await poll_join(join_dir, ca_file=w.space.anchors_path, tls_server_name=HOST)
        assert status["status"] == "approved"
        cert = x509.load_pem_x509_certificate((join_dir / "mta.pem").read_bytes())
        # the certificate is for the operator's own key, chains to the trust space, and is a SERV
        key_pem = (join_dir / "mta.key").read_bytes()
        from pki.keys import load_private_key

        assert load_private_key(join_dir / "mta.key").public_key() == cert.public_key() and key_pem
        validator = Validator.from_files(w.space.anchors_path, w.space.intermediates_path, w.space.crl_paths)
        assert validator.validate(cert, Role.TLS_SERVER, NOW).ok

        # every gateway picks the newcomer up on its next refresh (signed list, conditional GET)
        assert await gw.refresh_once() is RefreshOutcome.INSTALLED
        assert gw.state.policy.inbound(cert, "nouvel-op.mssante.fr", NOW).accept
        requests = gw.requests
        assert await gw.refresh_once() is RefreshOutcome.NOT_MODIFIED
        assert gw.requests == requests + 1

        # suspension: certificate revoked, domain delisted, list and CRLs republished
        await w.authority.suspend(ticket.request_id, NOW + timedelta(minutes=1), actor="admin")
        assert await gw.refresh_once() is RefreshOutcome.INSTALLED
        decision = gw.state.policy.inbound(cert, "nouvel-op.mssante.fr", NOW)
        assert decision.reason is PeerReason.DOMAIN_NOT_LISTED
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(w.space.anchors_path)))
        ) as http:
            async with http.get(w.url + "/trust/crl/organisations.pem", server_hostname=HOST) as resp:
                assert resp.status == 200
                crl = x509.load_pem_x509_crl(await resp.read())
        assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

        await w.authority.remove(ticket.request_id, NOW + timedelta(minutes=2), actor="admin")
        assert (await w.authority.list_requests("removed"))[0].request_id == ticket.request_id

        async with w.authority.sessions() as s:
            actions = [
                a for (a,) in (await s.execute(select(AuditEvent.action).order_by(AuditEvent.id))).all()
            ]
        for expected in (
            "trust.token.issue",
            "trust.join.submit",
            "trust.join.approve",
            "trust.join.suspended",
            "trust.join.removed",
            "trust.list.publish",
        ):
            assert expected in actions
    finally:
        await gw.stop()


async def test_reject_and_bad_requests(world: World) -> None:
    w = world
    token = await w.authority.issue_token(NOW, actor="admin")
    join_dir = await _join(w, token)
    ticket = load_ticket(join_dir)
    await w.authority.reject(ticket.request_id, NOW, actor="admin", note="unknown structure")
    status = await poll_join(join_dir, ca_file=w.space.anchors_path, tls_server_name=HOST)
    assert status["status"] == "rejected" and status["cert_pem"] is None
    with pytest.raises(AuthorityError) as exc:
        await w.authority.approve(ticket.request_id, NOW, actor="admin")
    assert exc.value.code is AuthorityErrorCode.CONFLICT

    # wrong poll secret looks like an unknown request
    with pytest.raises(AuthorityError) as exc:
        await w.authority.join_status(ticket.request_id, "guess")
    assert exc.value.code is AuthorityErrorCode.NOT_FOUND

    # an expired token
    old = await w.authority.issue_token(NOW - timedelta(days=30), ttl=timedelta(days=1), actor="admin")
    with pytest.raises(JoinError) as jexc:
        await _join(w, old, "tard.mssante.fr")
    assert jexc.value.code == "BAD_TOKEN"

    # a CSR whose signature does not verify, a bad domain
    fresh = await w.authority.issue_token(NOW, actor="admin")
    csr = (join_dir / "mta.csr").read_bytes()
    tampered = (
        csr.replace(csr[100:104], b"AAAA") if csr[100:104] != b"AAAA" else csr.replace(csr[100:104], b"BBBB")
    )
    sub = JoinSubmission("x.mssante.fr", "mx.x.fr", "X", "1", "75", "c@x.fr", tampered)
    with pytest.raises(AuthorityError) as exc:
        await w.authority.submit_join(fresh, sub, NOW)
    assert exc.value.code is AuthorityErrorCode.BAD_REQUEST
    sub = JoinSubmission("not a domain", "mx.x.fr", "X", "1", "75", "c@x.fr", csr)
    with pytest.raises(AuthorityError) as exc:
        await w.authority.submit_join(fresh, sub, NOW)
    assert exc.value.code is AuthorityErrorCode.BAD_REQUEST

    # raw HTTP: malformed JSON, no bearer
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(w.space.anchors_path)))
    ) as http:
        async with http.post(w.url + "/trust/join", data=b"{not json", server_hostname=HOST) as resp:
            assert resp.status == 400
        async with http.get(w.url + f"/trust/join/{ticket.request_id}", server_hostname=HOST) as resp:
            assert resp.status == 404
        async with http.get(w.url + "/trust/liste-blanche.xml", server_hostname=HOST) as resp:
            assert resp.status == 200
            last_modified = resp.headers["Last-Modified"]
        async with http.get(
            w.url + "/trust/liste-blanche.xml",
            headers={"If-Modified-Since": last_modified},
            server_hostname=HOST,
        ) as resp:
            assert resp.status == 304


async def test_import_the_real_list_and_republish_it(world: World, real_data: Path) -> None:
    from mssante.trust.listeblanche import parse_liste_blanche

    real = parse_liste_blanche((real_data / "listeblanchemssante-2025-03-13.xml").read_bytes())
    added = await world.authority.import_list(real, NOW, actor="admin")
    assert added == 6554 - 28 - 1  # duplicates and the invalid <Nom> are skipped
    published = await world.authority.publish(NOW, actor="admin")
    again = parse_liste_blanche(published.path.read_bytes())
    assert again.problems == ()  # well formed, root closed, no duplicates
    assert {d: v for d, v in again.by_domain.items() if not d.startswith("op")} == {
        d: v for d, v in real.by_domain.items() if not d.startswith("op")
    }
    assert len(again.domains) == 5001 + 30


async def test_renewal_with_the_same_subject_keeps_one_entry(world: World) -> None:
    from mssante.trust.join import prepare_csr

    a = world.authority
    ids = []
    for n in range(2):  # the operator renews: new key, same host name and organisation
        csr = prepare_csr(world.tmp / f"renew{n}", fqdn="mx.renew.fr", domain="renew.mssante.fr")
        sub = JoinSubmission("renew.mssante.fr", "mx.renew.fr", "RENEW", "42", "75", "it@renew.fr", csr)
        ticket = await a.submit_join(await a.issue_token(NOW, actor="admin"), sub, NOW)
        await a.approve(ticket.request_id, NOW, actor="admin")
        ids.append(ticket.request_id)
    assert [e.domain for e in await a.entries()].count("renew.mssante.fr") == 1
    await a.suspend(ids[0], NOW, actor="admin")  # the old certificate goes; the listing follows the new one
    assert [e.domain for e in await a.entries()].count("renew.mssante.fr") == 1
    await a.suspend(ids[1], NOW, actor="admin")
    assert "renew.mssante.fr" not in {e.domain for e in await a.entries()}
