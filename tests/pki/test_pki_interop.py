"""Interop: ``openssl verify`` and a real Python ssl handshake agree with pki.validation.

Same chains, same CRLs, three judges:
- good chain: accepted by openssl (with -crl_check_all), by the TLS handshake, and by us;
- revoked leaf: rejected by openssl with CRL checking (and by ssl with VERIFY_CRL_CHECK_LEAF) and by us;
- untrusted root: rejected by all three; wrong purpose and expired CRL: openssl and us.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from .pki_testing import OPENSSL

from pki.files import load_certificates
from pki.space import Issued, TrustSpacePKI
from pki.tls import client_context, peer_certificate, server_context
from pki.validation import Reason, Role, Validator

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")


def openssl_verify(space: TrustSpacePKI, leaf: Path, *, purpose: str, at: datetime | None = None,
                   anchors: Path | None = None, crls: list[Path] | None = None) -> tuple[bool, str]:
    argv = [str(OPENSSL), "verify", "-x509_strict", "-crl_check_all", "-purpose", purpose,
            "-CAfile", str(anchors or space.anchors_path), "-untrusted", str(space.intermediates_path)]
    for crl in crls if crls is not None else space.crl_paths:
        argv += ["-CRLfile", str(crl)]
    if at is not None:
        argv += ["-attime", str(int(at.timestamp()))]
    proc = subprocess.run([*argv, str(leaf)], capture_output=True, text=True, timeout=60)
    return proc.returncode == 0, proc.stdout + proc.stderr


@dataclass
class HandshakeResult:
    client_error: Exception | None
    server_error: Exception | None
    peer: x509.Certificate | None

    @property
    def ok(self) -> bool:
        return self.client_error is None and self.server_error is None


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> HandshakeResult:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]
    box: dict[str, object] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(20)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                box["peer"] = peer_certificate(tls)
                box["version"] = tls.version()
                tls.sendall(b"220 ok\r\n")
        except (ssl.SSLError, OSError) as exc:
            box["server_error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_error: Exception | None = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            if tls.recv(8) != b"220 ok\r\n":
                raise ssl.SSLError("no greeting")
    except (ssl.SSLError, OSError) as exc:
        client_error = exc
    thread.join(30)
    listener.close()
    return HandshakeResult(client_error, box.get("server_error"), box.get("peer"))  # type: ignore[arg-type]


@pytest.fixture
def mx(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> Issued:
    return space.issue_server("mx.a.mssante.fr", domains=["a.mssante.fr"], org="A", structure_id="1",
                              department="75", out_dir=tmp_path / "mx", now=now)


@pytest.fixture
def peer(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> Issued:
    return space.issue_server("mx.b.mssante.fr", domains=["b.mssante.fr"], org="B", structure_id="2",
                              department="69", out_dir=tmp_path / "peer", now=now)


def _validator(space: TrustSpacePKI) -> Validator:
    return Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)


def test_good_chain_accepted_by_all(space: TrustSpacePKI, mx: Issued, peer: Issued, now: datetime) -> None:
    assert openssl_verify(space, mx.cert_path, purpose="sslserver")[0]
    assert openssl_verify(space, peer.cert_path, purpose="sslclient")[0]
    v = _validator(space)
    assert v.validate(mx.cert, Role.TLS_SERVER, now).ok
    assert v.validate(peer.cert, Role.TLS_CLIENT, now).ok
    assert mx.key_path is not None and peer.key_path is not None
    server = server_context(mx.chain_path, mx.key_path, client_ca_path=space.anchors_path, require_client_cert=True)
    client = client_context(ca_path=space.anchors_path, cert_path=peer.chain_path, key_path=peer.key_path)
    result = handshake(server, client, "mx.a.mssante.fr")
    assert result.ok, result
    assert result.peer == peer.cert
    # The gateway then applies our rules to the peer certificate the handshake gave it.
    assert v.validate(result.peer, Role.TLS_CLIENT, now).ok


def test_revoked_rejected_by_openssl_ssl_and_us(space: TrustSpacePKI, mx: Issued, peer: Issued,
                                                now: datetime, tmp_path: Path) -> None:
    space.revoke(peer.serial, "keyCompromise", now)
    space.write_crls(now)
    ok, output = openssl_verify(space, peer.cert_path, purpose="sslclient")
    assert not ok and "revoked" in output
    assert _validator(space).validate(peer.cert, Role.TLS_CLIENT, now).reason is Reason.REVOKED
    # ssl with CRL checking of the leaf refuses the revoked client certificate too.
    assert mx.key_path is not None and peer.key_path is not None
    server = server_context(mx.chain_path, mx.key_path, client_ca_path=space.anchors_path, require_client_cert=True)
    server.load_verify_locations(cafile=str(space.crl_paths[1]))
    server.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    client = client_context(ca_path=space.anchors_path, cert_path=peer.chain_path, key_path=peer.key_path)
    result = handshake(server, client, "mx.a.mssante.fr")
    assert result.server_error is not None and "revoked" in str(result.server_error)


def test_untrusted_root_rejected_by_all(space: TrustSpacePKI, other_space: TrustSpacePKI, mx: Issued,
                                        tmp_path: Path, now: datetime) -> None:
    rogue = other_space.issue_server("mx.rogue.fr", domains=[], org="R", structure_id="9", department="75",
                                     out_dir=tmp_path / "rogue", now=now)
    ok, output = openssl_verify(space, rogue.chain_path, purpose="sslclient",
                                crls=[*space.crl_paths, *other_space.crl_paths])
    assert not ok and "unable to get" in output
    v = _validator(space)
    assert v.validate(rogue.cert, Role.TLS_CLIENT, now,
                      load_certificates(rogue.chain_path)[1:]).reason is Reason.UNTRUSTED_ROOT
    assert mx.key_path is not None and rogue.key_path is not None
    # A rogue client towards our server.
    server = server_context(mx.chain_path, mx.key_path, client_ca_path=space.anchors_path, require_client_cert=True)
    client = client_context(ca_path=space.anchors_path, cert_path=rogue.chain_path, key_path=rogue.key_path)
    result = handshake(server, client, "mx.a.mssante.fr")
    assert result.server_error is not None and "certificate" in str(result.server_error).lower()
    # Our client towards a rogue server.
    rogue_server = server_context(rogue.chain_path, rogue.key_path)
    result = handshake(rogue_server, client_context(ca_path=space.anchors_path), "mx.rogue.fr")
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)


def test_wrong_purpose_and_expired_crl(space: TrustSpacePKI, tmp_path: Path, mx: Issued, now: datetime) -> None:
    org = space.issue_org("APP", org="O", structure_id="3", department="13", out_dir=tmp_path / "org", now=now)
    ok, output = openssl_verify(space, org.cert_path, purpose="sslserver")
    assert not ok and "purpose" in output
    v = _validator(space)
    assert v.validate(org.cert, Role.TLS_SERVER, now).reason is Reason.WRONG_EKU
    later = now + timedelta(days=8)  # CRLs' nextUpdate is 7 days ahead
    ok, output = openssl_verify(space, mx.cert_path, purpose="sslserver", at=later)
    assert not ok and "CRL has expired" in output
    assert v.validate(mx.cert, Role.TLS_SERVER, later).reason is Reason.CRL_EXPIRED


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_settings(mx: Issued, space: TrustSpacePKI) -> None:
    assert mx.key_path is not None
    ctx = server_context(mx.chain_path, mx.key_path)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    for cipher in ctx.get_ciphers():
        assert cipher["aead"], cipher["name"]
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["name"].startswith("ECDHE-")
    # A TLS 1.1 client cannot connect.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(space.anchors_path))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    result = handshake(ctx, old, "mx.a.mssante.fr")
    assert result.client_error is not None
    # Optional client certificate: a client without one is accepted, the peer certificate is None.
    opt = server_context(mx.chain_path, mx.key_path, client_ca_path=space.anchors_path)
    result = handshake(opt, client_context(ca_path=space.anchors_path), "a.mssante.fr")
    assert result.ok and result.peer is None
