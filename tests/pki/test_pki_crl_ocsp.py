"""CrlStore (large CRLs, refresh, last good kept, rollback, URLs) and OCSP checks."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.ca import RevokedEntry
from pki.crl import CrlState, CrlStore, crl_store_from_files, default_fetch
from pki.errors import MalformedInput, UnknownIssuer
from pki.ocsp import OcspChecker, OcspStatus, build_request, check_response
from pki.space import Issued, TrustSpacePKI
from pki.validation import Reason, Role, Validator


@pytest.fixture
def serv(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> Issued:
    return space.issue_server("mx.a.mssante.fr", domains=[], org="A", structure_id="1", department="75",
                              out_dir=tmp_path / "serv", now=now)


def test_crl_with_100k_serials(space: TrustSpacePKI, serv: Issued, now: datetime, tmp_path: Path) -> None:
    ca = space.organisations
    base = 10**30
    for i in range(100_000):
        ca.revoked[base + i] = RevokedEntry(base + i, x509.ReasonFlags.superseded, now)
    ca.revoked[serv.serial] = RevokedEntry(serv.serial, x509.ReasonFlags.key_compromise, now)
    crl = ca.build_crl(now, timedelta(days=1))
    path = tmp_path / "big.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    store = crl_store_from_files([space.crl_paths[0], path], [space.root.cert, ca.cert])
    lookup = store.lookup(ca.cert, now)
    assert lookup.ok and lookup.entry is not None
    assert len(lookup.entry.serials) == 100_001
    assert lookup.entry.is_revoked(base + 99_999) and not lookup.entry.is_revoked(base - 1)
    v = Validator([space.root.cert], [ca.cert], store)
    d = v.validate(serv.cert, Role.TLS_SERVER, now)
    assert d.reason is Reason.REVOKED and "keyCompromise" in d.detail


def test_refresh_keeps_last_good_until_it_expires(space: TrustSpacePKI, serv: Issued, now: datetime,
                                                  tmp_path: Path) -> None:
    org_crl = tmp_path / "org.crl"
    org_crl.write_bytes(space.crl_paths[1].read_bytes())
    store = crl_store_from_files([space.crl_paths[0], org_crl], [space.root.cert, space.organisations.cert])
    v = Validator([space.root.cert], [space.organisations.cert], store)
    assert v.validate(serv.cert, Role.TLS_SERVER, now).ok
    org_crl.write_bytes(b"truncated download")
    errors = store.refresh()
    assert [s for s, _ in errors] == [str(org_crl)]
    assert v.validate(serv.cert, Role.TLS_SERVER, now + timedelta(days=6)).ok  # last good still used
    assert v.validate(serv.cert, Role.TLS_SERVER, now + timedelta(days=8)).reason is Reason.CRL_EXPIRED
    org_crl.unlink()
    assert store.refresh()  # missing file is reported, not raised


def test_newer_crl_replaces_older_never_the_reverse(space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    old = space.crl_paths[1].read_bytes()
    space.revoke(serv.serial, "superseded", now)
    space.write_crls(now + timedelta(hours=1))
    new = space.crl_paths[1].read_bytes()
    store = CrlStore([space.root.cert, space.organisations.cert])
    store.load(new)
    store.load(old)  # a replayed older CRL must not un-revoke
    lookup = store.lookup(space.organisations.cert, now + timedelta(hours=2))
    assert lookup.ok and lookup.entry is not None and lookup.entry.is_revoked(serv.serial)


def test_crl_errors(space: TrustSpacePKI, other_space: TrustSpacePKI, now: datetime) -> None:
    strict = CrlStore([space.root.cert], require_known_issuer=True)
    with pytest.raises(UnknownIssuer):
        strict.load(other_space.crl_paths[1].read_bytes())
    with pytest.raises(MalformedInput):
        strict.load(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    lookup = strict.lookup(space.organisations.cert, now)
    assert lookup.state is CrlState.UNAVAILABLE
    # A CRL not yet valid (thisUpdate in the future) is not usable.
    store = CrlStore([space.root.cert])
    store.load(space.crl_paths[0].read_bytes())
    assert store.lookup(space.root.cert, now - timedelta(minutes=5)).state is CrlState.UNAVAILABLE


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_crl_from_url(space: TrustSpacePKI, serv: Issued, now: datetime, http_dir: tuple[str, Path]) -> None:
    base, root = http_dir
    for p in space.crl_paths:
        (root / f"{p.parent.name}.crl").write_bytes(p.read_bytes())
    urls = [f"{base}/{p.parent.name}.crl" for p in space.crl_paths]
    v = Validator.from_files(space.anchors_path, space.intermediates_path, urls)
    assert v.validate(serv.cert, Role.TLS_SERVER, now).ok
    assert v.crls is not None
    space.revoke(serv.serial, "keyCompromise", now)
    space.write_crls(now + timedelta(seconds=1))
    (root / "organisations.crl").write_bytes(space.crl_paths[1].read_bytes())
    assert v.crls.refresh() == []
    assert v.validate(serv.cert, Role.TLS_SERVER, now + timedelta(seconds=2)).reason is Reason.REVOKED
    (root / "organisations.crl").unlink()  # 404: keep the last good
    assert len(v.crls.refresh()) == 1
    assert v.validate(serv.cert, Role.TLS_SERVER, now + timedelta(seconds=2)).reason is Reason.REVOKED
    with pytest.raises(Exception, match="only http"):
        default_fetch("ftp://example/x.crl")


# -- OCSP -----------------------------------------------------------------------------------------
class Responder:
    """A tiny OCSP responder signing with the CA key (or a delegated / wrong key)."""

    def __init__(self, space: TrustSpacePKI, now: datetime) -> None:
        self.space = space
        self.now = now
        self.revoked: set[int] = set()
        self.signer_cert = space.organisations.cert
        self.signer_key: object = space.organisations.key
        self.extra_certs: list[x509.Certificate] = []
        self.next_update: timedelta | None = timedelta(hours=4)
        self.requests = 0
        self.certs: dict[int, x509.Certificate] = {}

    def __call__(self, url: str, request_der: bytes) -> bytes:
        self.requests += 1
        req = ocsp.load_der_ocsp_request(request_der)
        cert = self.certs[req.serial_number]
        status = ocsp.OCSPCertStatus.REVOKED if req.serial_number in self.revoked else ocsp.OCSPCertStatus.GOOD
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=self.space.organisations.cert, algorithm=hashes.SHA1(),  # noqa: S303 - CertID hash
            cert_status=status, this_update=self.now - timedelta(minutes=1),
            next_update=self.now + self.next_update if self.next_update else None,
            revocation_time=self.now - timedelta(minutes=2) if status is ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=x509.ReasonFlags.key_compromise if status is ocsp.OCSPCertStatus.REVOKED else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self.signer_cert)
        if self.extra_certs:
            builder = builder.certificates(self.extra_certs)
        resp = builder.sign(self.signer_key, hashes.SHA256())  # type: ignore[arg-type]
        return resp.public_bytes(serialization.Encoding.DER)


def _self_signed(key: ec.EllipticCurvePrivateKey, cn: str, now: datetime,
                 eku: list[x509.ObjectIdentifier] | None = None, issuer: tuple[x509.Name, object] | None = None
                 ) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(issuer[0] if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30)))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())  # type: ignore[arg-type]


@pytest.fixture
def responder(space: TrustSpacePKI, serv: Issued, now: datetime) -> Responder:
    r = Responder(space, now)
    r.certs = {serv.serial: serv.cert}
    return r


def _ocsp_validator(space: TrustSpacePKI, responder: Responder) -> Validator:
    checker = OcspChecker(responder, {space.organisations.cert.subject.rfc4514_string(): "http://ocsp.test/"})
    root_crls = crl_store_from_files([space.crl_paths[0]], [space.root.cert])  # only the root's CRL
    return Validator([space.root.cert], [space.organisations.cert], root_crls, ocsp=checker)


def test_ocsp_good_and_revoked(space: TrustSpacePKI, serv: Issued, now: datetime, responder: Responder) -> None:
    v = _ocsp_validator(space, responder)
    assert v.validate(serv.cert, Role.TLS_SERVER, now).ok  # no ORGANISATIONS CRL needed: OCSP says good
    assert v.validate(serv.cert, Role.TLS_SERVER, now + timedelta(hours=1)).ok
    assert responder.requests == 1  # the answer is cached until its nextUpdate (4 h)
    responder.revoked.add(serv.serial)
    responder.now = now + timedelta(hours=5)
    d = v.validate(serv.cert, Role.TLS_SERVER, now + timedelta(hours=5))
    assert responder.requests == 2
    assert d.reason is Reason.REVOKED and "OCSP" in d.detail and "keyCompromise" in d.detail


def test_ocsp_bad_or_stale_answer_falls_back_to_crl(space: TrustSpacePKI, serv: Issued, now: datetime,
                                                    responder: Responder) -> None:
    rogue = ec.generate_private_key(ec.SECP256R1())
    responder.signer_cert, responder.signer_key = _self_signed(rogue, "ROGUE OCSP", now), rogue
    v = _ocsp_validator(space, responder)
    d = v.validate(serv.cert, Role.TLS_SERVER, now)
    assert d.reason is Reason.CRL_UNAVAILABLE  # OCSP unusable and no CRL for ORGANISATIONS: fail closed
    issuer = space.organisations.cert
    result = check_response(responder("u", build_request(serv.cert, issuer)), serv.cert, issuer, now)
    assert result.status is OcspStatus.ERROR and "signature" in result.detail
    responder.signer_cert, responder.signer_key = space.organisations.cert, space.organisations.key
    late = check_response(responder("u", build_request(serv.cert, issuer)), serv.cert, issuer,
                          now + timedelta(hours=5))
    assert late.status is OcspStatus.ERROR and "expired" in late.detail
    assert check_response(b"junk", serv.cert, issuer, now).status is OcspStatus.ERROR


def test_ocsp_delegated_responder(space: TrustSpacePKI, serv: Issued, now: datetime, responder: Responder) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    delegated = _self_signed(key, "OCSP ORGANISATIONS", now, [ExtendedKeyUsageOID.OCSP_SIGNING],
                             issuer=(space.organisations.cert.subject, space.organisations.key))
    responder.signer_cert, responder.signer_key, responder.extra_certs = delegated, key, [delegated]
    issuer = space.organisations.cert
    result = check_response(responder("u", build_request(serv.cert, issuer)), serv.cert, issuer, now)
    assert result.status is OcspStatus.GOOD
    # The same responder certificate without the OCSPSigning EKU is not accepted.
    plain = _self_signed(key, "OCSP ORGANISATIONS", now, [ExtendedKeyUsageOID.CLIENT_AUTH],
                         issuer=(space.organisations.cert.subject, space.organisations.key))
    responder.signer_cert, responder.extra_certs = plain, [plain]
    result = check_response(responder("u", build_request(serv.cert, issuer)), serv.cert, issuer, now)
    assert result.status is OcspStatus.ERROR


def _crl(space: TrustSpacePKI, now: datetime, *extensions: x509.ExtensionType) -> bytes:
    ca = space.organisations
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now)
               .next_update(now + timedelta(days=1)))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=isinstance(ext, (x509.DeltaCRLIndicator,
                                                                       x509.IssuingDistributionPoint)))
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _idp(**flags: bool) -> x509.IssuingDistributionPoint:
    args = {"full_name": None, "relative_name": None, "only_contains_user_certs": False,
            "only_contains_ca_certs": False, "only_some_reasons": None, "indirect_crl": False,
            "only_contains_attribute_certs": False} | flags
    return x509.IssuingDistributionPoint(**args)  # type: ignore[arg-type]


def test_crl_scope(space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    store = CrlStore([space.root.cert, space.organisations.cert])
    with pytest.raises(MalformedInput, match="delta"):
        store.load(_crl(space, now, x509.DeltaCRLIndicator(1)))
    with pytest.raises(MalformedInput, match="indirect"):
        store.load(_crl(space, now, _idp(indirect_crl=True)))
    # A CA-only CRL (an ARL) does not cover an end-entity certificate.
    store.load(_crl(space, now, _idp(only_contains_ca_certs=True)))
    store.load(space.crl_paths[0].read_bytes())
    v = Validator([space.root.cert], [space.organisations.cert], store)
    d = v.validate(serv.cert, Role.TLS_SERVER, now)
    assert d.reason is Reason.CRL_UNAVAILABLE
    # A user-only CRL next to it does, and both are kept.
    store.load(_crl(space, now, x509.CRLNumber(5), _idp(only_contains_user_certs=True)))
    assert v.validate(serv.cert, Role.TLS_SERVER, now).ok
    assert len(store.entries()) == 3


def test_newer_crl_of_a_lazily_verified_issuer_replaces_the_installed_one(
        space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    """Issuer unknown at load time: the first CRL is verified at the first lookup, and so is a newer
    one loaded later (it must not wait forever behind the installed one)."""
    store = CrlStore()  # no issuers known: CRLs wait unverified until a lookup names their issuer
    store.load(space.crl_paths[1].read_bytes())
    first = store.lookup(space.organisations.cert, now + timedelta(minutes=1))
    assert first.ok and first.entry is not None and not first.entry.is_revoked(serv.serial)
    space.revoke(serv.serial, "keyCompromise", now)
    space.write_crls(now + timedelta(hours=1))
    store.load(space.crl_paths[1].read_bytes())
    later = store.lookup(space.organisations.cert, now + timedelta(hours=2))
    assert later.ok and later.entry is not None and later.entry.is_revoked(serv.serial)
