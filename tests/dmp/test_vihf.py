"""VIHF building and verification (mapping.md "Mapping VIHF"), with keys made by `cryptography` directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from mssante.dmp.vihf import (
    A_RESOURCE_ID,
    FORMAT_X509,
    VihfError,
    VihfSubject,
    build_vihf,
    dn_string,
    verify_vihf,
)
from mssante.dmp.xmlsafe import parse_xml

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
PATIENT = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
SUBJECT = VihfSubject("801234534765", "CAMPARINI Marcel", "11204598", "SA25^1.2.250.1.71.4.2.4")
NS = {"saml2": "urn:oasis:names:tc:SAML:2.0:assertion", "ds": "http://www.w3.org/2000/09/xmldsig#"}


def _cert(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str = "PFI LABO") -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Hauts-de-Seine (92)"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Laboratoire des charmes"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "11204598"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365)).sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ec_material() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    k = ec.generate_private_key(ec.SECP256R1())
    return k, _cert(k)


def _wire(el: etree._Element) -> etree._Element:
    return parse_xml(etree.tostring(el))


def test_ecdsa_vihf_round_trip(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    # Shape: Issuer first, then the signature (SAML 2.0 schema order), X509Data with the certificate.
    children = [etree.QName(c).localname for c in a]
    assert children[:3] == ["Issuer", "Signature", "Subject"]
    issuer = a.find("saml2:Issuer", NS)
    assert issuer is not None and issuer.get("Format") == FORMAT_X509
    assert issuer.text == "C=FR, ST=Hauts-de-Seine (92), O=Laboratoire des charmes, OU=11204598, CN=PFI LABO"
    assert a.xpath("ds:Signature/ds:SignedInfo/ds:SignatureMethod/@Algorithm", namespaces=NS) == [
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    ]
    assert a.xpath("ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", namespaces=NS)
    claims = verify_vihf(a, tls_client_cert=cert, now=NOW + timedelta(minutes=2))
    assert claims.name_id == "801234534765"
    assert claims.one("VIHF_Version") == "4.0"
    assert claims.one("Authentification_Mode") == "INDIRECTE"
    assert claims.one("Ressource_URN") == "urn:dmp"
    assert claims.one("Identifiant_Structure") == "11204598"
    assert claims.one(A_RESOURCE_ID) == PATIENT
    assert claims.roles == ("AUTOMATE",)
    assert claims.not_on_or_after == NOW + timedelta(minutes=5)


def test_rsa_sha256_signature_verifies() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _cert(key)
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    assert a.xpath("ds:Signature/ds:SignedInfo/ds:SignatureMethod/@Algorithm", namespaces=NS) == [
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    ]
    verify_vihf(a, tls_client_cert=cert, now=NOW)


def test_tampered_assertion_fails_signature(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    raw = etree.tostring(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    forged = raw.replace(b"279035121518989", b"185029911234512")
    with pytest.raises(VihfError) as exc:
        verify_vihf(parse_xml(forged), tls_client_cert=cert, now=NOW)
    assert exc.value.reason == "signature"


def test_expired_and_not_yet_valid(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    with pytest.raises(VihfError) as exc:
        verify_vihf(a, tls_client_cert=cert, now=NOW + timedelta(minutes=7))
    assert exc.value.reason == "expired"
    with pytest.raises(VihfError) as exc:
        verify_vihf(a, tls_client_cert=cert, now=NOW - timedelta(minutes=10))
    assert exc.value.reason == "not-yet-valid"


def test_signer_must_be_the_tls_client(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    other_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _cert(other_key, cn="AUTRE PFI")
    with pytest.raises(VihfError) as exc:
        verify_vihf(a, tls_client_cert=stranger, now=NOW)
    assert exc.value.reason == "signer"


def test_seal_certificate_with_same_subject_needs_chain_check(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    _, tls_cert = ec_material
    seal_key = ec.generate_private_key(ec.SECP256R1())
    seal = _cert(seal_key)  # same subject, another key: a distinct seal certificate
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=seal, key=seal_key, now=NOW))
    with pytest.raises(VihfError):
        verify_vihf(a, tls_client_cert=tls_cert, now=NOW)
    with pytest.raises(VihfError):
        verify_vihf(a, tls_client_cert=tls_cert, now=NOW, chain_ok=lambda c: False)
    assert verify_vihf(a, tls_client_cert=tls_cert, now=NOW, chain_ok=lambda c: True).name_id == "801234534765"


def test_issuer_must_be_the_certificate_dn(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    a = build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW)
    raw = etree.tostring(a)
    # The Issuer is covered by the signature, so any change breaks it before the issuer check.
    with pytest.raises(VihfError):
        verify_vihf(parse_xml(raw.replace(b"CN=PFI LABO<", b"CN=PFI EVIL<")), tls_client_cert=cert, now=NOW)
    assert dn_string(cert.subject).startswith("C=FR, ST=")


def test_missing_attribute_is_refused(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    with pytest.raises(VihfError) as exc:
        verify_vihf(a, tls_client_cert=cert, now=NOW, required=("VIHF_Version", "LPS_ID_HOMOLOGATION_DMP"))
    assert exc.value.reason == "attributes"


def test_wrapped_unsigned_assertion_is_refused(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    """An attacker moves a valid signature onto a forged assertion with another ID: refused."""
    key, cert = ec_material
    good = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    forged = _wire(build_vihf(SUBJECT, patient_resource_id="185029911234512^^^&1.2.250.1.213.1.4.10&ISO^NH",
                              cert=cert, key=key, now=NOW))
    forged_sig = forged.find("ds:Signature", NS)
    good_sig = good.find("ds:Signature", NS)
    assert forged_sig is not None and good_sig is not None
    forged.replace(forged_sig, good_sig)
    with pytest.raises(VihfError):
        verify_vihf(parse_xml(etree.tostring(forged)), tls_client_cert=cert, now=NOW)


def test_secret_connection_adds_confidentiality_attribute(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW, secret_connection=True))
    claims = verify_vihf(a, tls_client_cert=cert, now=NOW)
    assert claims.attributes["urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"] == ["CONNEXION_SECRETE"]


def test_inclusive_namespaces_transform_is_a_typed_refusal(ec_material: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    """The ANS example signs with an InclusiveNamespaces PrefixList. signxml's schema check refuses that
    transform element; the reference DMP must answer with a typed refusal, never crash (docs/dmp.md)."""
    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW,
                         inclusive_ns_prefixes=["ds", "saml2", "xsi"]))
    assert a.xpath("//*[local-name()='InclusiveNamespaces']/@PrefixList") == ["ds saml2 xsi"]
    with pytest.raises(VihfError) as exc:
        verify_vihf(a, tls_client_cert=cert, now=NOW)
    assert exc.value.reason == "signature"


def test_embedded_x509_v2_certificate_is_a_typed_refusal(ec_material: tuple[ec.EllipticCurvePrivateKey,
                                                                            x509.Certificate]) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for a version-2 certificate: a VIHF
    carrying one gets the usual signature refusal, not an unexpected exception."""
    import base64

    from cryptography.hazmat.primitives import serialization

    key, cert = ec_material
    a = _wire(build_vihf(SUBJECT, patient_resource_id=PATIENT, cert=cert, key=key, now=NOW))
    der = cert.public_bytes(serialization.Encoding.DER)
    v2 = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x01", 1)  # [0] EXPLICIT INTEGER 2 -> 1
    assert v2 != der
    node = a.xpath("ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", namespaces=NS)[0]
    node.text = base64.b64encode(v2).decode()
    with pytest.raises(VihfError) as e:
        verify_vihf(a, tls_client_cert=cert, now=NOW + timedelta(minutes=2))
    assert e.value.reason == "signature" and "not a valid DER certificate" in e.value.detail
