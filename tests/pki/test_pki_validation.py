"""pki.validation: every reason code, from real certificates and CRLs (no mocks)."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from .pki_testing import OPENSSL, CertFactory, key_usage, openssl_sha1_leaf, pem, rsa1024

from pki.crl import CrlStore
from pki.errors import CrlError
from pki.files import load_certificates
from pki.space import Issued, TrustSpacePKI
from pki.validation import Decision, Reason, Role, Validator, validate_pem_chain


@pytest.fixture
def validator(space: TrustSpacePKI) -> Validator:
    return Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)


@pytest.fixture
def serv(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> Issued:
    return space.issue_server("mx.a.mssante.fr", domains=["a.mssante.fr"], org="A", structure_id="1",
                              department="75", out_dir=tmp_path / "serv", now=now)


def _check(d: Decision, reason: Reason) -> None:
    assert d.reason is reason, d
    assert d.ok is (reason is Reason.OK)


def test_good_server_and_client(validator: Validator, serv: Issued, space: TrustSpacePKI, now: datetime,
                                tmp_path: Path) -> None:
    d = validator.validate(serv.cert, Role.TLS_SERVER, now)
    _check(d, Reason.OK)
    assert d.chain == (serv.cert, space.organisations.cert, space.root.cert)
    assert d.subject == serv.cert.subject
    _check(validator.validate(serv.cert, Role.TLS_CLIENT, now), Reason.OK)  # SERV does both (SPECS §1)
    ps = space.issue_person("810000000001", "D", "J", out_dir=tmp_path, now=now)
    _check(validator.validate(ps.cert, Role.TLS_CLIENT, now), Reason.OK)


def test_expired_and_not_yet_valid(validator: Validator, serv: Issued, space: TrustSpacePKI,
                                   factory: CertFactory, now: datetime) -> None:
    expired, _ = factory.leaf(space.organisations, not_before=now - timedelta(days=10),
                              not_after=now - timedelta(days=1))
    d = validator.validate(expired, Role.TLS_SERVER, now)
    _check(d, Reason.EXPIRED)
    assert "expired at" in d.detail
    future, _ = factory.leaf(space.organisations, not_before=now + timedelta(days=1))
    _check(validator.validate(future, Role.TLS_SERVER, now), Reason.NOT_YET_VALID)
    # The intermediate's validity counts too (every certificate of the path).
    _check(validator.validate(serv.cert, Role.TLS_SERVER, now - timedelta(hours=2)), Reason.NOT_YET_VALID)


def test_revoked(validator: Validator, serv: Issued, space: TrustSpacePKI, now: datetime) -> None:
    space.revoke(serv.serial, "keyCompromise", now)
    space.write_crls(now)
    fresh = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    d = fresh.validate(serv.cert, Role.TLS_SERVER, now)
    _check(d, Reason.REVOKED)
    assert "keyCompromise" in d.detail
    # The old validator still holds the old (good) CRL until refreshed.
    _check(validator.validate(serv.cert, Role.TLS_SERVER, now), Reason.OK)
    assert validator.crls is not None
    for p in space.crl_paths:
        validator.crls.add_source(p)
    assert validator.crls.refresh() == []
    _check(validator.validate(serv.cert, Role.TLS_SERVER, now), Reason.REVOKED)


def test_revoked_intermediate(space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    space.revoke(space.organisations.cert.serial_number, "cACompromise", now)
    space.write_crls(now)
    v = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    d = v.validate(serv.cert, Role.TLS_SERVER, now)
    _check(d, Reason.REVOKED)
    assert "ORGANISATIONS" in d.detail


def test_wrong_eku_and_key_usage(validator: Validator, space: TrustSpacePKI, tmp_path: Path, now: datetime,
                                 factory: CertFactory) -> None:
    org = space.issue_org("APP", org="O", structure_id="1", department="75", out_dir=tmp_path, now=now)
    d = validator.validate(org.cert, Role.TLS_SERVER, now)
    _check(d, Reason.WRONG_EKU)
    assert "serverAuth" in d.detail
    server_only, _ = factory.leaf(space.organisations, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    _check(validator.validate(server_only, Role.TLS_CLIENT, now), Reason.WRONG_EKU)
    no_eku, _ = factory.leaf(space.organisations, eku=None)
    _check(validator.validate(no_eku, Role.TLS_CLIENT, now), Reason.WRONG_EKU)
    bad_ku, _ = factory.leaf(space.organisations, key_usage=key_usage(content_commitment=True))
    _check(validator.validate(bad_ku, Role.TLS_CLIENT, now), Reason.WRONG_KEY_USAGE)
    _check(validator.validate(bad_ku, Role.TLS_SERVER, now), Reason.WRONG_KEY_USAGE)
    _check(validator.validate(bad_ku, Role.ANY, now), Reason.OK)


def test_weak_key(validator: Validator, space: TrustSpacePKI, factory: CertFactory, now: datetime) -> None:
    weak, _ = factory.leaf(space.organisations, key=rsa1024())
    d = validator.validate(weak, Role.TLS_SERVER, now)
    _check(d, Reason.WEAK_KEY)
    assert "1024" in d.detail
    small_curve, _ = factory.leaf(space.organisations, key=ec.generate_private_key(ec.SECP192R1()))
    _check(validator.validate(small_curve, Role.TLS_SERVER, now), Reason.WEAK_KEY)


@pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed (needed to sign with SHA-1)")
def test_weak_signature(validator: Validator, space: TrustSpacePKI, now: datetime, tmp_path: Path) -> None:
    sha1 = openssl_sha1_leaf(space.organisations, tmp_path / "sha1")
    d = validator.validate(sha1, Role.TLS_SERVER, now)
    _check(d, Reason.WEAK_SIGNATURE)
    assert "SHA1" in d.detail


def test_untrusted_root(validator: Validator, other_space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    rogue = other_space.issue_server("mx.rogue.fr", domains=[], org="R", structure_id="1", department="75",
                                     out_dir=tmp_path / "rogue", now=now)
    chain = load_certificates(rogue.chain_path)
    _check(validator.validate(rogue.cert, Role.TLS_SERVER, now, chain[1:]), Reason.UNTRUSTED_ROOT)
    # Even when the peer also sends its own root.
    d = validator.validate(rogue.cert, Role.TLS_SERVER, now, [*chain[1:], other_space.root.cert])
    _check(d, Reason.UNTRUSTED_ROOT)
    assert "ROGUE" in d.detail
    _check(validator.validate(other_space.root.cert, Role.ANY, now), Reason.UNTRUSTED_ROOT)


def test_same_names_different_keys_is_untrusted(tmp_path: Path, now: datetime, space: TrustSpacePKI) -> None:
    """A look-alike space with identical CA names: the AKI/SKI check and signatures keep it out."""
    twin = TrustSpacePKI.create(tmp_path / "twin", b"x", now=now)  # same label "DEV"
    fake = twin.issue_server("mx.a.mssante.fr", domains=[], org="A", structure_id="1", department="75",
                             out_dir=tmp_path / "twin-out", now=now)
    v = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    _check(v.validate(fake.cert, Role.TLS_SERVER, now), Reason.MISSING_INTERMEDIATE)
    _check(v.validate(fake.cert, Role.TLS_SERVER, now, [twin.organisations.cert]), Reason.UNTRUSTED_ROOT)


def test_missing_intermediate(space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    v = Validator.from_files(space.anchors_path, None, space.crl_paths)
    d = v.validate(serv.cert, Role.TLS_SERVER, now)
    _check(d, Reason.MISSING_INTERMEDIATE)
    assert "ORGANISATIONS" in d.detail
    # The intermediate sent by the peer completes the path.
    _check(v.validate(serv.cert, Role.TLS_SERVER, now, load_certificates(serv.chain_path)[1:]), Reason.OK)


def test_bad_signature(validator: Validator, space: TrustSpacePKI, factory: CertFactory, now: datetime) -> None:
    forged, _ = factory.leaf(space.organisations, signer_key=ec.generate_private_key(ec.SECP256R1()))
    _check(validator.validate(forged, Role.TLS_SERVER, now), Reason.BAD_SIGNATURE)


def test_not_a_ca(validator: Validator, space: TrustSpacePKI, factory: CertFactory, now: datetime,
                  serv: Issued, tmp_path: Path) -> None:
    # A leaf certificate used as an issuer: the signature is right but it is not a CA.
    from pki.ca import CertificateAuthority
    from pki.keys import load_private_key
    assert serv.key_path is not None
    fake_ca = CertificateAuthority("fake", tmp_path, serv.cert, load_private_key(serv.key_path))
    child, _ = factory.leaf(fake_ca)
    _check(validator.validate(child, Role.TLS_SERVER, now, [serv.cert]), Reason.NOT_A_CA)


def test_path_length(space: TrustSpacePKI, factory: CertFactory, now: datetime, tmp_path: Path) -> None:
    # A sub-CA under ORGANISATIONS (pathlen 0) must not issue.
    from pki.ca import CertificateAuthority
    sub, sub_key = factory.leaf(space.organisations, cn="SUB CA", ca_flag=True, eku=None,
                                key_usage=key_usage(key_cert_sign=True, crl_sign=True))
    sub = (x509.CertificateBuilder().subject_name(sub.subject).issuer_name(sub.issuer).public_key(sub.public_key())
           .serial_number(sub.serial_number).not_valid_before(sub.not_valid_before_utc)
           .not_valid_after(sub.not_valid_after_utc)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(sub.public_key()), critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(space.organisations.key.public_key()),
                          critical=False)
           .sign(space.organisations.key, hashes.SHA256()))
    sub_ca = CertificateAuthority("sub", tmp_path, sub, sub_key)  # type: ignore[arg-type]
    leaf, _ = factory.leaf(sub_ca)
    v = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    _check(v.validate(leaf, Role.TLS_SERVER, now, [sub]), Reason.PATH_TOO_LONG)


def test_crl_expired_unavailable_and_fail_open(space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    v = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    later = now + timedelta(days=8)  # CRLs have nextUpdate = now + 7 days
    d = v.validate(serv.cert, Role.TLS_SERVER, later)
    _check(d, Reason.CRL_EXPIRED)
    no_crl = Validator.from_files(space.anchors_path, space.intermediates_path, [])
    _check(no_crl.validate(serv.cert, Role.TLS_SERVER, now), Reason.CRL_UNAVAILABLE)
    _check(Validator(no_crl.anchors, no_crl.intermediates).validate(serv.cert, Role.TLS_SERVER, now),
           Reason.CRL_UNAVAILABLE)
    open_v = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths,
                                  fail_closed=False)
    d = open_v.validate(serv.cert, Role.TLS_SERVER, later)
    _check(d, Reason.OK)
    assert "CRL_EXPIRED" in d.detail
    _check(Validator(no_crl.anchors, no_crl.intermediates, check_revocation=False)
           .validate(serv.cert, Role.TLS_SERVER, now), Reason.OK)


def test_crl_bad_signature(space: TrustSpacePKI, serv: Issued, now: datetime, tmp_path: Path) -> None:
    """A CRL for ORGANISATIONS signed by another key: refused on load, validation says CRL_BAD_SIGNATURE."""
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    forged = (x509.CertificateRevocationListBuilder().issuer_name(space.organisations.cert.subject)
              .last_update(now).next_update(now + timedelta(days=1)).sign(wrong_key, hashes.SHA256()))
    store = CrlStore([space.root.cert, space.organisations.cert])
    store.load_file(space.crl_paths[0])
    with pytest.raises(CrlError) as err:
        store.load(forged.public_bytes(Encoding.PEM),
                   source="forged.pem")
    assert err.value.reason == "CRL_BAD_SIGNATURE"
    v = Validator([space.root.cert], [space.organisations.cert], store)
    _check(v.validate(serv.cert, Role.TLS_SERVER, now), Reason.CRL_BAD_SIGNATURE)
    # A CRL whose issuer was unknown at load time is verified lazily, with the same answer.
    lazy = CrlStore()
    lazy.load_file(space.crl_paths[0])
    lazy.load(forged.public_bytes(Encoding.DER))
    v2 = Validator([space.root.cert], [space.organisations.cert], lazy)
    _check(v2.validate(serv.cert, Role.TLS_SERVER, now), Reason.CRL_BAD_SIGNATURE)


def test_malformed(validator: Validator, serv: Issued, now: datetime) -> None:
    _check(validate_pem_chain(validator, b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
                              Role.TLS_SERVER, now), Reason.MALFORMED)
    _check(validate_pem_chain(validator, b"garbage", Role.TLS_SERVER, now), Reason.MALFORMED)
    _check(validate_pem_chain(validator, serv.chain_path.read_bytes(), Role.TLS_SERVER, now), Reason.OK)


def test_unknown_critical_extension(validator: Validator, space: TrustSpacePKI, now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(space.organisations.cert.subject)
            .issuer_name(space.organisations.cert.subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"),
                           critical=True)
            .sign(space.organisations.key, hashes.SHA256()))
    d = validator.validate(cert, Role.ANY, now)
    _check(d, Reason.MALFORMED)
    assert "1.2.3.4.5" in d.detail


def test_anchor_from_any_pem_bundle(space: TrustSpacePKI, serv: Issued, now: datetime, tmp_path: Path,
                                    other_space: TrustSpacePKI) -> None:
    """Real IGC Santé chain files are bundles with text around the blocks, in any order; DER works too."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# IGC Sante bundle\nsubject=...\n" + pem(other_space.root.cert) + b"\nnoise\n"
                       + pem(space.organisations.cert, space.root.cert))
    v = Validator.from_files(bundle, None, space.crl_paths)
    _check(v.validate(serv.cert, Role.TLS_SERVER, now), Reason.OK)
    der = tmp_path / "root.cer"
    der.write_bytes(space.root.cert.public_bytes(Encoding.DER))
    v2 = Validator.from_files(der, space.intermediates_path, space.crl_paths)
    _check(v2.validate(serv.cert, Role.TLS_SERVER, now), Reason.OK)
    if OPENSSL is not None:  # OpenSSL's "TRUSTED CERTIFICATE" form (certificate + trust settings)
        trusted = tmp_path / "trusted.pem"
        subprocess.run([OPENSSL, "x509", "-in", str(space.anchors_path), "-trustout", "-addtrust", "serverAuth",
                        "-out", str(trusted)], check=True, capture_output=True)
        assert b"TRUSTED CERTIFICATE" in trusted.read_bytes()
        v3 = Validator.from_files(trusted, space.intermediates_path, space.crl_paths)
        _check(v3.validate(serv.cert, Role.TLS_SERVER, now), Reason.OK)


def test_intermediate_as_anchor(space: TrustSpacePKI, serv: Issued, now: datetime, tmp_path: Path) -> None:
    """Pinning an intermediate (e.g. the ORGANISATIONS CA alone) is a valid configuration."""
    anchor = tmp_path / "org.pem"
    anchor.write_bytes(pem(space.organisations.cert))
    v = Validator.from_files(anchor, None, [space.crl_paths[1]])
    _check(v.validate(serv.cert, Role.TLS_SERVER, now), Reason.OK)


def test_rsa_space_and_repeated_validation(tmp_path: Path, now: datetime) -> None:
    s = TrustSpacePKI.create(tmp_path / "rsa", b"pw", now=now, key_kind="rsa2048", label="RSA")
    leaf = s.issue_server("mx.r.fr", domains=[], org="R", structure_id="1", department="75", out_dir=tmp_path,
                          now=now)
    v = Validator.from_files(s.anchors_path, s.intermediates_path, s.crl_paths)
    for _ in range(3):  # cached CA signature checks give the same answer
        _check(v.validate(leaf.cert, Role.TLS_SERVER, now), Reason.OK)


def _reissue_ca(space: TrustSpacePKI, ca_cert: x509.Certificate, not_before: datetime,
                not_after: datetime) -> x509.Certificate:
    """The same CA (name and key) re-certified by the root with other dates."""
    builder = (x509.CertificateBuilder().subject_name(ca_cert.subject).issuer_name(space.root.cert.subject)
               .public_key(ca_cert.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after))
    for ext in ca_cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(space.root.key, hashes.SHA256())


def test_another_path_is_tried_when_the_first_fails(space: TrustSpacePKI, serv: Issued, now: datetime) -> None:
    old = _reissue_ca(space, space.organisations.cert, now - timedelta(days=400), now - timedelta(days=1))
    only_old = Validator([space.root.cert], [old], Validator.from_files(
        space.anchors_path, None, space.crl_paths).crls)
    _check(only_old.validate(serv.cert, Role.TLS_SERVER, now), Reason.EXPIRED)
    both = Validator([space.root.cert], [old, space.organisations.cert], only_old.crls)
    d = both.validate(serv.cert, Role.TLS_SERVER, now)
    _check(d, Reason.OK)
    assert d.chain[1] == space.organisations.cert


def test_naive_now_is_utc(validator: Validator, serv: Issued, now: datetime) -> None:
    _check(validator.validate(serv.cert, Role.TLS_SERVER, now.replace(tzinfo=None)), Reason.OK)


def test_many_lookalike_intermediates_are_bounded(validator: Validator, space: TrustSpacePKI, serv: Issued,
                                                  now: datetime) -> None:
    """A peer sending dozens of CAs with the intermediate's name costs a bounded amount of work."""
    fakes = []
    for _ in range(40):
        key = ec.generate_private_key(ec.SECP256R1())
        fakes.append(x509.CertificateBuilder().subject_name(space.organisations.cert.subject)
                     .issuer_name(space.organisations.cert.subject).public_key(key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(key, hashes.SHA256()))
    forged, _ = CertFactory(now).leaf(space.organisations, signer_key=ec.generate_private_key(ec.SECP256R1()))
    d = validator.validate(forged, Role.TLS_SERVER, now, fakes)
    assert not d.ok and d.reason in (Reason.BAD_SIGNATURE, Reason.PATH_TOO_LONG, Reason.UNTRUSTED_ROOT)
    # The genuine leaf still validates whatever junk comes with it.
    _check(validator.validate(serv.cert, Role.TLS_SERVER, now, fakes[:8]), Reason.OK)
