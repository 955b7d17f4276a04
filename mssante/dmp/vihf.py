"""The VIHF: a signed SAML 2.0 assertion identifying who feeds the DMP (pure: `now` is a parameter).

SPECS.md §4 "The DMP leg" and ANS guide `mapping.md` ("Mapping VIHF", "Exemple du VIHF avec automate"):
Issuer = the signing certificate's DN (Format X509SubjectName), enveloped XML-DSig with the
structure's seal certificate, VIHF_Version 4.0, Authentification_Mode INDIRECTE, Ressource_URN urn:dmp,
resource-id = the patient's INS in CX form. Verification is what the reference DMP enforces.
"""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from pki.files import CERT_PARSE_ERRORS

NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_HL7 = "urn:hl7-org:v3"
FORMAT_X509 = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
AUTHN_UNSPECIFIED = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"

A_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
A_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
A_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
A_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
A_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
REQUIRED_ATTRIBUTES = (
    "VIHF_Version",
    "Authentification_Mode",
    "Identifiant_Structure",
    "Secteur_Activite",
    "Ressource_URN",
    A_SUBJECT_ID,
    A_ROLE,
    A_RESOURCE_ID,
)
VIHF_VERSION = "4.0"
ROLE_AUTOMATE = ("AUTOMATE", "1.2.250.1.213.1.1.4.6", "AUTOMATE")  # mapping.md stratégie 1 (automate)
PURPOSE_NORMAL = ("normal", "1.2.250.1.213.1.1.4.248", "Accès normal")
SIGNATURE_METHODS = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256})

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.lru_cache(maxsize=256)
def dn_string(name: x509.Name) -> str:
    """A DN the way the ANS example writes it: X.500 order, ", " separated (C=FR, ST=…, O=…, OU=…, CN=…)."""
    return ", ".join(rdn.rfc4514_string() for rdn in name.rdns)


def _norm_dn(value: str) -> str:
    return ",".join(part.strip() for part in value.split(","))


@dataclass(frozen=True)
class VihfSubject:
    """Who the DMP call is made for (mapping.md: PRT-5 of the SB participant, PRT-8 structure)."""

    name_id: str  # IDNPS of the responsible professional
    display_name: str  # subject-id: name (or software, model and service for an automaton)
    structure_id: str  # Identifiant_Structure
    secteur_activite: str  # e.g. SA25^1.2.250.1.71.4.2.4 (a PFI parameter)
    roles: tuple[tuple[str, str, str], ...] = (ROLE_AUTOMATE,)  # (code, codeSystem, displayName)
    lps_name: str = "mssante"
    lps_version: str = "0.1.0"


@dataclass(frozen=True)
class VihfClaims:
    assertion_id: str
    issuer: str
    name_id: str
    attributes: dict[str, list[str]]
    roles: tuple[str, ...]
    not_before: datetime
    not_on_or_after: datetime
    certificate: x509.Certificate

    def one(self, name: str) -> str:
        return self.attributes[name][0]


class VihfError(ValueError):
    """A VIHF that must be refused; `reason` is a short stable code for tests and audit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.astimezone(UTC).microsecond // 1000:03d}Z"


def _parse_ts(value: str | None, what: str) -> datetime:
    if not value:
        raise VihfError("conditions", f"{what} is missing")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise VihfError("conditions", f"{what} is not a dateTime") from None


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _attribute(stmt: etree._Element, name: str, value: str | None = None) -> etree._Element:
    a = etree.SubElement(stmt, _q(NS_SAML, "Attribute"), Name=name)
    v = etree.SubElement(a, _q(NS_SAML, "AttributeValue"))
    if value is not None:
        v.text = value
    return v


def _coded_value(parent: etree._Element, tag: str, code: tuple[str, str, str]) -> None:
    etree.SubElement(
        parent,
        _q(NS_HL7, tag),
        {
            "code": code[0],
            "codeSystem": code[1],
            "displayName": code[2],
            _q(NS_XSI, "type"): "CE",
        },
        nsmap={None: NS_HL7},
    )


def build_vihf(
    subject: VihfSubject,
    *,
    patient_resource_id: str,
    cert: x509.Certificate,
    key: SigningKey,
    now: datetime,
    validity: timedelta = timedelta(minutes=5),
    secret_connection: bool = False,
    assertion_id: str | None = None,
    inclusive_ns_prefixes: list[str] | None = None,
) -> etree._Element:
    """Build and sign the assertion (enveloped signature right after Issuer, as SAML requires)."""
    aid = assertion_id or f"_{uuid.uuid4()}"
    a = etree.Element(
        _q(NS_SAML, "Assertion"),
        nsmap={"saml2": NS_SAML, "xsi": NS_XSI},
        ID=aid,
        IssueInstant=_ts(now),
        Version="2.0",
    )
    issuer = etree.SubElement(a, _q(NS_SAML, "Issuer"), Format=FORMAT_X509)
    issuer.text = dn_string(cert.subject)
    etree.SubElement(a, _q(NS_DS, "Signature"), nsmap={"ds": NS_DS}, Id="placeholder")
    subj = etree.SubElement(a, _q(NS_SAML, "Subject"))
    etree.SubElement(subj, _q(NS_SAML, "NameID")).text = subject.name_id
    # mapping.md: NotBefore/NotOnOrAfter optional; we always bound the token to a few minutes.
    etree.SubElement(a, _q(NS_SAML, "Conditions"), NotBefore=_ts(now - timedelta(seconds=30)), NotOnOrAfter=_ts(now + validity))
    authn = etree.SubElement(a, _q(NS_SAML, "AuthnStatement"), AuthnInstant=_ts(now))
    ctx = etree.SubElement(authn, _q(NS_SAML, "AuthnContext"))
    etree.SubElement(ctx, _q(NS_SAML, "AuthnContextClassRef")).text = AUTHN_UNSPECIFIED
    stmt = etree.SubElement(a, _q(NS_SAML, "AttributeStatement"))
    _attribute(stmt, "VIHF_Version", VIHF_VERSION)
    _attribute(stmt, "Authentification_Mode", "INDIRECTE")
    _attribute(stmt, "Secteur_Activite", subject.secteur_activite)
    _attribute(stmt, A_RESOURCE_ID, patient_resource_id)
    _attribute(stmt, "Ressource_URN", "urn:dmp")
    _attribute(stmt, A_SUBJECT_ID, subject.display_name)
    _attribute(stmt, "Identifiant_Structure", subject.structure_id)
    _attribute(stmt, "LPS_Nom", subject.lps_name)
    _attribute(stmt, "LPS_Version", subject.lps_version)
    _coded_value(_attribute(stmt, A_PURPOSE), "PurposeOfUse", PURPOSE_NORMAL)
    roles = etree.SubElement(stmt, _q(NS_SAML, "Attribute"), Name=A_ROLE)
    for role in subject.roles:
        _coded_value(etree.SubElement(roles, _q(NS_SAML, "AttributeValue")), "Role", role)
    if secret_connection:  # CONNEXION_SECRETE flag (SPECS.md §4) [unverified value form]
        _coded_value(
            _attribute(stmt, A_CONFIDENTIALITY), "ConfidentialityCode", ("CONNEXION_SECRETE", "1.2.250.1.213.1.1.4.13", "Connexion secrète")
        )
    method = SignatureMethod.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else SignatureMethod.RSA_SHA256
    signer = XMLSigner(
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed: etree._Element = signer.sign(
        a, key=key, cert=[cert], reference_uri=aid, id_attribute="ID", inclusive_ns_prefixes=inclusive_ns_prefixes
    )
    return signed


def _embedded_certificate(assertion: etree._Element) -> x509.Certificate:
    sigs = assertion.findall(_q(NS_DS, "Signature"))
    if len(sigs) != 1:
        raise VihfError("signature", "exactly one ds:Signature child of the Assertion is required")
    certs = sigs[0].findall(f"{_q(NS_DS, 'KeyInfo')}/{_q(NS_DS, 'X509Data')}/{_q(NS_DS, 'X509Certificate')}")
    if len(certs) != 1 or not (certs[0].text or "").strip():
        raise VihfError("signature", "KeyInfo must carry exactly one X509Certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((certs[0].text or "").split()), validate=True))
    except CERT_PARSE_ERRORS:  # binascii.Error is a ValueError
        raise VihfError("signature", "embedded certificate is not a valid DER certificate") from None


def verify_vihf(
    assertion: etree._Element,
    *,
    tls_client_cert: x509.Certificate,
    now: datetime,
    chain_ok: Callable[[x509.Certificate], bool] | None = None,
    skew: timedelta = timedelta(seconds=60),
    required: Sequence[str] = REQUIRED_ATTRIBUTES,
) -> VihfClaims:
    """Verify signature, signer, issuer, validity window and required attributes; return the claims.

    The signing certificate must be the TLS client certificate, or carry the same subject and
    chain to the anchors (`chain_ok`): a structure may sign with a distinct seal certificate.
    Claims are read only from the element the signature covers (no wrapping tricks).
    """
    if assertion.tag != _q(NS_SAML, "Assertion"):
        raise VihfError("format", "the WS-Security header carries no saml2:Assertion")
    cert = _embedded_certificate(assertion)
    same = cert.public_bytes(serialization.Encoding.DER) == tls_client_cert.public_bytes(serialization.Encoding.DER)
    if not same and (cert.subject != tls_client_cert.subject or chain_ok is None or not chain_ok(cert)):
        raise VihfError("signer", "the VIHF is not signed by the TLS client's structure certificate")
    config = SignatureConfiguration(
        require_x509=True,
        expect_references=1,
        signature_methods=SIGNATURE_METHODS,
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
        location="./",
    )
    try:
        result = XMLVerifier().verify(assertion, x509_cert=cert, id_attribute="ID", expect_config=config)
    except (InvalidSignature, InvalidInput) as exc:
        raise VihfError("signature", f"XML signature does not verify ({type(exc).__name__})") from None
    except Exception as exc:  # schema-invalid signature, unsupported transform...: fail closed, typed
        raise VihfError("signature", f"XML signature cannot be processed ({type(exc).__name__})") from None
    signed = result.signed_xml  # type: ignore[union-attr]
    if signed is None or signed.tag != _q(NS_SAML, "Assertion") or signed.get("ID") != assertion.get("ID"):
        raise VihfError("signature", "the signature does not cover the Assertion itself")
    issuer = signed.find(_q(NS_SAML, "Issuer"))
    if issuer is None or issuer.get("Format") != FORMAT_X509:
        raise VihfError("issuer", "Issuer with Format X509SubjectName is required")
    if _norm_dn(issuer.text or "") != _norm_dn(dn_string(tls_client_cert.subject)):
        raise VihfError("issuer", "Issuer is not the TLS client certificate's DN")
    cond = signed.find(_q(NS_SAML, "Conditions"))
    nb = _parse_ts(cond.get("NotBefore") if cond is not None else None, "NotBefore")
    noa = _parse_ts(cond.get("NotOnOrAfter") if cond is not None else None, "NotOnOrAfter")
    if now + skew < nb:
        raise VihfError("not-yet-valid", "the VIHF is not valid yet")
    if now - skew >= noa:
        raise VihfError("expired", "the VIHF has expired")
    name_id = signed.find(f"{_q(NS_SAML, 'Subject')}/{_q(NS_SAML, 'NameID')}")
    if name_id is None or not (name_id.text or "").strip():
        raise VihfError("attributes", "Subject/NameID is missing")
    attrs: dict[str, list[str]] = {}
    roles: list[str] = []
    for at in signed.iter(_q(NS_SAML, "Attribute")):
        name = at.get("Name", "")
        for v in at.findall(_q(NS_SAML, "AttributeValue")):
            coded = next(iter(v), None)
            text = coded.get("code", "") if coded is not None else (v.text or "").strip()
            if text:
                attrs.setdefault(name, []).append(text)
                if name == A_ROLE:
                    roles.append(text)
    missing = [n for n in required if not attrs.get(n)]
    if missing:
        raise VihfError("attributes", f"missing VIHF attributes: {', '.join(missing)}")
    checks = {"VIHF_Version": VIHF_VERSION, "Authentification_Mode": "INDIRECTE", "Ressource_URN": "urn:dmp"}
    for n, expected in checks.items():
        if attrs[n][0] != expected:
            raise VihfError("attributes", f"{n} must be {expected}")
    return VihfClaims(
        assertion_id=signed.get("ID", ""),
        issuer=issuer.text or "",
        name_id=(name_id.text or "").strip(),
        attributes=attrs,
        roles=tuple(roles),
        not_before=nb,
        not_on_or_after=noa,
        certificate=cert,
    )
