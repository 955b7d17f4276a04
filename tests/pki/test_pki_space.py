"""TrustSpacePKI: hierarchy, profiles, key storage, CSR flows, revocation and the audit trail."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from .pki_testing import PASSPHRASE, rsa1024

from pki.ca import WeakKey
from pki.errors import BadCsrSignature, MalformedInput, SpaceError, UnknownSerial, WrongPassphrase
from pki.files import load_certificates
from pki.keys import generate_key, load_private_key
from pki.profiles import InvalidRequest, idnps_of
from pki.space import TrustSpacePKI


def _csr(key: object, cn: str = "requested.example") -> x509.CertificateSigningRequest:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()))  # type: ignore[arg-type]


def _tampered_csr_pem() -> bytes:
    """A CSR whose subject was altered after signing: parses, but the self-signature fails."""
    der = _csr(generate_key("ec-p256"), "victim.example").public_bytes(serialization.Encoding.DER)
    bad = der.replace(b"victim", b"victin")
    return x509.load_der_x509_csr(bad).public_bytes(serialization.Encoding.PEM)


def test_hierarchy_names_and_constraints(space: TrustSpacePKI) -> None:
    root = load_certificates(space.anchors_path)
    inter = load_certificates(space.intermediates_path)
    assert len(root) == 1 and len(inter) == 2
    assert root[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "AC RACINE DEV IGC-SANTE"
    names = [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in inter]
    assert names == ["AC DEV IGC-SANTE ORGANISATIONS", "AC DEV IGC-SANTE PERSONNES"]
    for c in inter:
        c.verify_directly_issued_by(root[0])
        bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == 0
        ku = c.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.crl_sign
    assert root[0].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert [p.name for p in space.crl_paths] == ["crl.pem"] * 3
    assert all(p.is_file() for p in space.crl_paths)


def test_ca_keys_are_encrypted_at_rest(space: TrustSpacePKI) -> None:
    for ca in space.authorities:
        data = ca.key_path.read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in data
        assert ca.key_path.stat().st_mode & 0o077 == 0
        with pytest.raises(WrongPassphrase):
            load_private_key(ca.key_path, b"wrong")
        with pytest.raises(WrongPassphrase):
            load_private_key(ca.key_path)
        assert load_private_key(ca.key_path, PASSPHRASE).public_key() == ca.cert.public_key()


def test_open_with_wrong_passphrase_is_a_typed_error(space: TrustSpacePKI) -> None:
    with pytest.raises(WrongPassphrase):
        TrustSpacePKI.open(space.directory, b"not the passphrase")
    reopened = TrustSpacePKI.open(space.directory, PASSPHRASE)
    assert reopened.root.cert == space.root.cert


def test_create_refuses_existing_space_and_open_missing(space: TrustSpacePKI, tmp_path: Path,
                                                        now: datetime) -> None:
    with pytest.raises(SpaceError):
        TrustSpacePKI.create(space.directory, PASSPHRASE, now=now)
    with pytest.raises(SpaceError):
        TrustSpacePKI.open(tmp_path / "nowhere", PASSPHRASE)
    with pytest.raises(SpaceError):
        TrustSpacePKI.create(tmp_path / "x", b"", now=now)


def test_serv_certificate_profile(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    issued = space.issue_server("MX1.Hopital.MSSante.fr", domains=["hopital.mssante.fr", "mx1.hopital.mssante.fr"],
                                org="CH de Test", structure_id="750000001", department="75",
                                out_dir=tmp_path / "out", now=now)
    cert = issued.cert
    # SPECS.md §6 subject DN pattern; written as the liste blanche writes it.
    assert issued.subject_dn == "CN=mx1.hopital.mssante.fr,OU=750000001,O=CH de Test,ST=Paris (75),C=FR"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx1.hopital.mssante.fr", "hopital.mssante.fr"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.serial_number > 2**100  # random, positive, ~159 bits
    assert cert.not_valid_after_utc - now == timedelta(days=3 * 365)  # SPECS.md §6: 3 years
    chain = load_certificates(issued.chain_path)
    assert chain[0] == cert and chain[1] == space.organisations.cert
    assert issued.key_path is not None and issued.key_path.stat().st_mode & 0o077 == 0
    assert load_private_key(issued.key_path).public_key() == cert.public_key()


def test_org_and_person_profiles(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    org = space.issue_org("LABO LIS", org="Laboratoire Test", structure_id="1234567890", department="2A",
                          out_dir=tmp_path, now=now)
    eku = org.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku
    assert org.subject_dn == "CN=LABO LIS,OU=1234567890,O=Laboratoire Test,ST=Corse-du-Sud (2A),C=FR"
    org.cert.verify_directly_issued_by(space.organisations.cert)

    ps = space.issue_person("810001234567", "Martin", "Claire", out_dir=tmp_path, now=now, profession="Médecin")
    ps.cert.verify_directly_issued_by(space.personnes.cert)
    assert idnps_of(ps.cert) == "810001234567"
    subj = ps.cert.subject
    assert subj.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "810001234567"
    assert subj.get_attributes_for_oid(NameOID.USER_ID)[0].value == "810001234567"
    assert subj.get_attributes_for_oid(NameOID.SURNAME)[0].value == "MARTIN"
    assert subj.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Claire"
    eku = ps.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


@pytest.mark.parametrize("kind", ["rsa2048", "ec-p256"])
def test_key_kinds(space: TrustSpacePKI, tmp_path: Path, now: datetime, kind: str) -> None:
    issued = space.issue_org("APP", org="O", structure_id="1", department="13", out_dir=tmp_path, now=now,
                             key_kind=kind)
    key = issued.cert.public_key()
    if kind == "rsa2048":
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
        assert issued.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


def test_rsa3072_space(tmp_path: Path, now: datetime) -> None:
    s = TrustSpacePKI.create(tmp_path / "rsa", PASSPHRASE, now=now, key_kind="rsa3072", label="RSA")
    key = s.root.cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072


@pytest.mark.parametrize("kwargs", [
    {"fqdn": "not a name"}, {"fqdn": "-bad.example"}, {"fqdn": "a..b"}, {"org": ""}, {"department": "999"},
    {"domains": ["bad domain"]},
])
def test_bad_issuance_arguments(space: TrustSpacePKI, tmp_path: Path, now: datetime, kwargs: dict) -> None:
    args = {"fqdn": "mx.example.fr", "domains": [], "org": "O", "structure_id": "1", "department": "75"} | kwargs
    fqdn = args.pop("fqdn")
    with pytest.raises(InvalidRequest):
        space.issue_server(fqdn, out_dir=tmp_path / "out", now=now, **args)
    assert not (tmp_path / "out").exists()


def test_csr_flow(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    key = generate_key("rsa2048")
    csr_pem = _csr(key, "ignored subject").public_bytes(serialization.Encoding.PEM)
    issued = space.issue_server("mx.csr.mssante.fr", domains=[], org="O", structure_id="1", department="75",
                                out_dir=tmp_path / "out", now=now, csr_pem=csr_pem)
    assert issued.key_path is None
    assert issued.cert.public_key() == key.public_key()
    # The profile decides the subject, not the requester.
    assert issued.subject_dn.startswith("CN=mx.csr.mssante.fr,")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mx.csr.mssante.fr-chain.pem",
                                                                     "mx.csr.mssante.fr.pem"]
    der = _csr(generate_key("ec-p256")).public_bytes(serialization.Encoding.DER)
    p = space.issue_person("810000000009", "A", "B", out_dir=tmp_path / "der", now=now, csr_pem=der)
    assert p.key_path is None


def test_csr_with_bad_self_signature_is_refused(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    with pytest.raises(BadCsrSignature, match="self-signature"):
        space.issue_org("APP", org="O", structure_id="1", department="75", out_dir=tmp_path / "out", now=now,
                        csr_pem=_tampered_csr_pem())
    assert not (tmp_path / "out").exists()
    last = space.audit.entries()[-1]
    assert last["action"] == "issue-org-csr" and last["outcome"] == "failure"


def test_csr_malformed_and_weak(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    with pytest.raises(MalformedInput):
        space.issue_org("APP", org="O", structure_id="1", department="75", out_dir=tmp_path, now=now,
                        csr_pem=b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    weak = _csr(rsa1024()).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(WeakKey):
        space.issue_org("APP", org="O", structure_id="1", department="75", out_dir=tmp_path, now=now, csr_pem=weak)


def test_revoke_and_crl(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    a = space.issue_org("A", org="O", structure_id="1", department="75", out_dir=tmp_path, now=now)
    b = space.issue_person("810000000001", "X", "Y", out_dir=tmp_path, now=now)
    space.revoke(a.serial, "keyCompromise", now)
    space.revoke(b.serial, "superseded", now)
    paths = space.write_crls(now + timedelta(minutes=1))
    crls = {p.parent.name: x509.load_pem_x509_crl(p.read_bytes()) for p in paths}
    org_crl = crls["organisations"]
    assert org_crl.is_signature_valid(space.organisations.cert.public_key())  # type: ignore[arg-type]
    entry = org_crl.get_revoked_certificate_by_serial_number(a.serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert org_crl.next_update_utc == now + timedelta(minutes=1) + timedelta(days=7)
    assert crls["personnes"].get_revoked_certificate_by_serial_number(b.serial) is not None
    assert len(crls["root"]) == 0
    number = org_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    # Revocations persist across open().
    reopened = TrustSpacePKI.open(space.directory, PASSPHRASE)
    again = x509.load_pem_x509_crl(reopened.write_crls(now)[1].read_bytes())
    assert again.get_revoked_certificate_by_serial_number(a.serial) is not None
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1


def test_revoke_unknown_serial_and_bad_reason(space: TrustSpacePKI, now: datetime, tmp_path: Path) -> None:
    with pytest.raises(UnknownSerial):
        space.revoke(12345, "keyCompromise", now)
    a = space.issue_org("A", org="O", structure_id="1", department="75", out_dir=tmp_path, now=now)
    with pytest.raises(Exception, match="unknown revocation reason"):
        space.revoke(a.serial, "because", now)


def test_revoke_an_intermediate(space: TrustSpacePKI, now: datetime) -> None:
    space.revoke(space.organisations.cert.serial_number, "cACompromise", now)
    root_crl = x509.load_pem_x509_crl(space.write_crls(now)[0].read_bytes())
    assert root_crl.get_revoked_certificate_by_serial_number(space.organisations.cert.serial_number)


def test_audit_trail(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    a = space.issue_org("A", org="O", structure_id="1", department="75", out_dir=tmp_path, now=now)
    space.revoke(a.serial, "superseded", now)
    space.write_crls(now)
    text = (space.directory / "audit.jsonl").read_text()
    assert "PRIVATE KEY" not in text and PASSPHRASE.decode() not in text
    entries = [json.loads(line) for line in text.splitlines()]
    actions = [(e["action"], e["outcome"]) for e in entries]
    assert actions[:3] == [("init-ca", "ok"), ("issue-org", "ok"), ("revoke", "ok")]
    assert [e["action"] for e in entries[3:]] == ["crl"] * 3
    for e in entries:
        assert {"time", "action", "subject", "serial", "outcome"} <= e.keys()
    assert entries[1]["serial"] == hex(a.serial) and entries[2]["serial"] == hex(a.serial)


def test_localhost_and_ip_san(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> None:
    import ipaddress
    issued = space.issue_server("localhost", domains=["127.0.0.1", "::1", "dev.mssante.test"], org="Dev",
                                structure_id="0", department="75", out_dir=tmp_path, now=now)
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "dev.mssante.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
