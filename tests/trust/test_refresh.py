from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mssante.trust.listeblanche import build_liste_blanche_xml, parse_liste_blanche
from mssante.trust.policy import PeerReason
from mssante.trust.refresh import (
    PENDING_NAME,
    RefreshConfig,
    RefreshErrorCode,
    Refresher,
    RefreshOutcome,
    confirm_shrink,
)
from mssante.trust.state import TrustState
from pki.keys import load_private_key
from pki.space import TrustSpacePKI
from pki.tls import server_context

from .certs import cert_for, name

NOW = datetime.now(UTC)  # real TLS checks validity against the wall clock


def make_list(n: int, *, dn: str = "CN=mx.op.fr,OU=1,O=OP,ST=Paris (75),C=FR") -> bytes:
    return build_liste_blanche_xml([(f"d{i}.mssante.fr", dn, "") for i in range(n)], NOW)


@dataclass
class Server:
    """A liste blanche distribution point over real HTTPS (certificate from the trust-space PKI)."""

    body: bytes
    sig: bytes = b""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        if request.path.endswith(".sig"):
            return web.Response(body=self.sig)
        if request.path.endswith(".sha256"):
            return web.Response(text=hashlib.sha256(self.body).hexdigest() + "  liste.xml\n")
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=self.body, headers={"ETag": etag}, content_type="application/xml")


@pytest.fixture
def space(tmp_path: Path) -> TrustSpacePKI:
    return TrustSpacePKI.create(tmp_path / "space", b"pw", now=NOW)


@pytest.fixture
async def https(tmp_path: Path, space: TrustSpacePKI) -> AsyncIterator[Callable[[bytes], Server]]:
    issued = space.issue_server(
        "trust.test.mssante.fr",
        domains=[],
        org="AUTORITE",
        structure_id="1",
        department="75",
        out_dir=tmp_path / "srv",
        now=NOW,
    )
    assert issued.key_path is not None
    ctx = server_context(issued.chain_path, issued.key_path)
    runners: list[web.AppRunner] = []

    async def start(body: bytes) -> Server:
        srv = Server(body)
        app = web.Application()
        app.router.add_get("/{tail:.*}", srv.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        runners.append(runner)
        srv.runner = runner
        port = runner.addresses[0][1]
        srv.url = f"https://127.0.0.1:{port}/liste.xml"
        return srv

    yield start  # type: ignore[misc]
    for r in runners:
        await r.cleanup()


def refresher(tmp_path: Path, source: str, space: TrustSpacePKI, **kw: object) -> Refresher:
    cfg = RefreshConfig(
        source=source,
        state_dir=tmp_path / "state",
        ca_file=space.anchors_path,
        tls_server_name="trust.test.mssante.fr",
        **kw,  # type: ignore[arg-type]
    )
    return Refresher(TrustState(), cfg, now=lambda: NOW)


async def test_https_conditional_refresh_costs_one_request(
    tmp_path: Path, space: TrustSpacePKI, https
) -> None:  # type: ignore[no-untyped-def]
    srv = await https(make_list(50))
    r = refresher(tmp_path, srv.url, space)
    try:
        assert await r.refresh_once() is RefreshOutcome.INSTALLED
        assert len(r.state.liste.domains) == 50
        before = len(srv.requests)
        assert await r.refresh_once() is RefreshOutcome.NOT_MODIFIED
        assert len(srv.requests) == before + 1
        assert srv.requests[-1][1].get("If-None-Match")
        # a changed list is installed on the next refresh
        srv.body = make_list(52)
        assert await r.refresh_once() is RefreshOutcome.INSTALLED
        assert len(r.state.liste.domains) == 52
        assert r.failures == 0 and r.successes == 2 and r.not_modified == 1
    finally:
        await r.stop()


async def test_https_with_another_ca_is_refused(tmp_path: Path, space: TrustSpacePKI, https) -> None:  # type: ignore[no-untyped-def]
    srv = await https(make_list(5))
    other = TrustSpacePKI.create(tmp_path / "other", b"pw", now=NOW)
    r = Refresher(
        TrustState(),
        RefreshConfig(
            srv.url, tmp_path / "st", ca_file=other.anchors_path, tls_server_name="trust.test.mssante.fr"
        ),
        now=lambda: NOW,
    )
    try:
        assert await r.refresh_once() is RefreshOutcome.FAILED
        assert r.last_error is RefreshErrorCode.UNREACHABLE and not r.state.loaded
    finally:
        await r.stop()


def _sign(space: TrustSpacePKI, tmp_path: Path) -> tuple[Path, Callable[[bytes], bytes]]:
    issued = space.issue_org(
        "AUTORITE LISTE BLANCHE",
        org="AUTORITE",
        structure_id="1",
        department="75",
        out_dir=tmp_path / "auth",
        now=NOW,
    )
    assert issued.key_path is not None
    key = load_private_key(issued.key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return issued.cert_path, lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))


async def test_signature_verified_and_mismatch_keeps_last_good(
    tmp_path: Path,
    space: TrustSpacePKI,
    https,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    cert_path, sign = _sign(space, tmp_path)
    good = make_list(20)
    srv = await https(good)
    srv.sig = sign(good)
    r = refresher(tmp_path, srv.url, space, authority_cert=cert_path)
    try:
        assert await r.refresh_once() is RefreshOutcome.INSTALLED
        srv.body = make_list(21)  # new list, old signature
        with caplog.at_level(logging.WARNING, logger="mssante.trust.refresh"):
            assert await r.refresh_once() is RefreshOutcome.FAILED
        assert r.last_error is RefreshErrorCode.SIGNATURE_MISMATCH and r.failures == 1
        assert len(r.state.liste.domains) == 20
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "mssante.trust.refresh"]
        assert len(lines) == 1 and "d0.mssante.fr" not in lines[0]
        srv.sig = b""
        assert await r.refresh_once() is RefreshOutcome.FAILED
        srv.sig = sign(srv.body)
        assert await r.refresh_once() is RefreshOutcome.INSTALLED
        assert len(r.state.liste.domains) == 21
    finally:
        await r.stop()


async def test_checksum_file(tmp_path: Path, space: TrustSpacePKI, https) -> None:  # type: ignore[no-untyped-def]
    srv = await https(make_list(3))
    r = refresher(tmp_path, srv.url, space, checksum_source=srv.url + ".sha256")
    try:
        assert await r.refresh_once() is RefreshOutcome.INSTALLED
    finally:
        await r.stop()
    path = tmp_path / "l.xml"
    path.write_bytes(make_list(4))
    (tmp_path / "l.xml.sha256").write_text("0" * 64 + "  l.xml\n")
    r2 = refresher(tmp_path, str(path), space, checksum_source=str(tmp_path / "l.xml.sha256"))
    assert await r2.refresh_once() is RefreshOutcome.FAILED
    assert r2.last_error is RefreshErrorCode.CHECKSUM_MISMATCH


async def test_unreachable_url_keeps_last_good(tmp_path: Path, space: TrustSpacePKI, https) -> None:  # type: ignore[no-untyped-def]
    srv = await https(make_list(10))
    r = refresher(tmp_path, srv.url, space)
    try:
        assert await r.refresh_once() is RefreshOutcome.INSTALLED
    finally:
        await r.stop()
    # same state dir, server gone: a restarted gateway starts from the cached list
    assert srv.runner is not None
    await srv.runner.cleanup()
    restarted = refresher(tmp_path, srv.url, space)
    try:
        assert restarted.load_cached()
        assert len(restarted.state.liste.domains) == 10
        assert await restarted.refresh_once() is RefreshOutcome.FAILED
        assert restarted.last_error is RefreshErrorCode.UNREACHABLE and restarted.failures == 1
        assert len(restarted.state.liste.domains) == 10
    finally:
        await restarted.stop()
    # a cache written for another source is not used
    other = refresher(tmp_path, "https://127.0.0.1:9/liste.xml", space)
    assert not other.load_cached() and not other.state.loaded


async def test_shrink_guard_refuses_a_truncated_list_until_confirmed(
    tmp_path: Path, space: TrustSpacePKI
) -> None:
    path = tmp_path / "liste.xml"
    path.write_bytes(make_list(1000))
    r = refresher(tmp_path, str(path), space)
    assert await r.refresh_once() is RefreshOutcome.INSTALLED
    # the mirror incident: ~600 entries left
    path.write_bytes(make_list(600))
    assert await r.refresh_once() is RefreshOutcome.REFUSED_SHRINK
    assert len(r.state.liste.domains) == 1000 and r.refused_shrink == 1
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert r.pending_shrink_sha256 == sha
    # kept for inspection; the same list again is refused without being parsed again
    assert (tmp_path / "state" / PENDING_NAME).read_bytes() == path.read_bytes()
    assert await r.refresh_once() is RefreshOutcome.REFUSED_SHRINK and r.refused_shrink == 2
    confirm_shrink(tmp_path / "state", sha)
    assert await r.refresh_once() is RefreshOutcome.INSTALLED
    assert len(r.state.liste.domains) == 600 and r.pending_shrink_sha256 is None
    assert not (tmp_path / "state" / PENDING_NAME).exists()
    # a loss within the allowed share passes without confirmation
    path.write_bytes(make_list(560))
    assert await r.refresh_once() is RefreshOutcome.INSTALLED


async def test_real_list_truncated_to_600_entries_is_refused(
    tmp_path: Path, space: TrustSpacePKI, real_data: Path
) -> None:
    real = (real_data / "listeblanchemssante-2025-03-13.xml").read_bytes()
    path = tmp_path / "liste.xml"
    path.write_bytes(real)
    r = refresher(tmp_path, str(path), space)
    assert await r.refresh_once() is RefreshOutcome.INSTALLED
    full = parse_liste_blanche(real)
    truncated = build_liste_blanche_xml(full.entries[:600], NOW)
    path.write_bytes(truncated)
    assert await r.refresh_once() is RefreshOutcome.REFUSED_SHRINK
    assert len(r.state.liste.domains) == 5001
    # a file cut in the middle of a <Domaine> fails outright, last good kept
    path.write_bytes(real[: len(real) // 3])
    assert await r.refresh_once() is RefreshOutcome.FAILED
    assert r.last_error is RefreshErrorCode.INVALID_LIST


async def test_delisted_domain_refused_after_next_refresh(tmp_path: Path, space: TrustSpacePKI) -> None:
    dn = "CN=mx.op.fr,OU=1,O=OP,ST=Paris (75),C=FR"
    path = tmp_path / "liste.xml"
    path.write_bytes(build_liste_blanche_xml([(f"d{i}.mssante.fr", dn, "") for i in range(20)], NOW))
    r = refresher(tmp_path, str(path), space)
    await r.refresh_once()
    peer = cert_for(name("mx.op.fr", "1", "OP", "Paris (75)"))
    assert r.state.policy.inbound(peer, "d0.mssante.fr", NOW).accept
    path.write_bytes(build_liste_blanche_xml([(f"d{i}.mssante.fr", dn, "") for i in range(1, 20)], NOW))
    assert await r.refresh_once() is RefreshOutcome.INSTALLED
    assert r.state.policy.inbound(peer, "d0.mssante.fr", NOW).reason is PeerReason.DOMAIN_NOT_LISTED
    assert r.state.policy.inbound(peer, "d1.mssante.fr", NOW).accept


async def test_start_and_stop_loop(tmp_path: Path, space: TrustSpacePKI) -> None:
    path = tmp_path / "liste.xml"
    path.write_bytes(make_list(3))
    r = refresher(tmp_path, str(path), space, interval_s=3600.0)
    await r.start()
    assert r.state.loaded
    await r.stop()
