"""Fuzz the parsers of the DMP leg: bad input gives a typed error, never another exception."""

from __future__ import annotations

from datetime import UTC, datetime

from .dmp_support import make_cda, make_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from mssante.dmp import ebrim, soap
from mssante.dmp.ins import InsError, parse_patient_id_cx
from mssante.dmp.metadata import CdaHeaderError, XdsSettings, build_submission, parse_cda_header
from mssante.dmp.registry import Caller, ReferenceRegistry, RequestRejected
from mssante.dmp.xmlsafe import UnsafeXmlError, parse_xml

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CDA = make_cda("fuzz")
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(data) - 1), st.integers(1, 40), st.binary(max_size=40)).map(
        lambda t: data[: t[0]] + t[2] + data[t[0] + t[1]:]
    )


@FUZZ
@given(st.one_of(st.binary(max_size=400), _mutations(CDA)))
def test_cda_header_parser(data: bytes) -> None:
    try:
        parse_cda_header(data)
    except CdaHeaderError:
        pass


@FUZZ
@given(st.text(max_size=80), st.binary(max_size=600))
def test_soap_parser(ctype: str, body: bytes) -> None:
    try:
        soap.parse_soap(ctype, body)
    except soap.SoapFormatError:
        pass


def _valid_mtom() -> tuple[str, bytes]:
    req = make_request(CDA)
    sub = build_submission(req, parse_cda_header(CDA), XdsSettings("1.2.3"), now=NOW)
    env = soap.build_envelope(action=soap.ACTION_ITI41, message_id="m", body=ebrim.provide_and_register(sub))
    return soap.mtom_package(env, [soap.Attachment(sub.content_id, "text/xml", CDA)], action=soap.ACTION_ITI41)


CTYPE, MTOM = _valid_mtom()


@FUZZ
@given(_mutations(MTOM))
def test_mutated_iti41_never_crashes_the_registry(body: bytes) -> None:
    registry = ReferenceRegistry()
    caller = Caller("11204598", "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH")
    try:
        msg = soap.parse_soap(CTYPE, body)
        if msg.body is None:
            return
        registry.provide_and_register(ebrim.read_submission(msg.body), msg.attachments, caller, NOW)
    except (soap.SoapFormatError, ebrim.ResponseFormatError, RequestRejected):
        pass


@FUZZ
@given(st.text(max_size=80))
def test_patient_id_parser(value: str) -> None:
    try:
        parse_patient_id_cx(value)
    except InsError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_xml_parser(data: bytes) -> None:
    try:
        root = parse_xml(data)
        etree.tostring(root)
    except UnsafeXmlError:
        pass


def _signed_vihf() -> tuple[bytes, object]:
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from mssante.dmp.vihf import VihfSubject, build_vihf

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"), x509.NameAttribute(NameOID.COMMON_NAME, "PFI")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    a = build_vihf(VihfSubject("801234534765", "X", "11204598", "SA25^1.2.250.1.71.4.2.4"),
                   patient_resource_id="279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH", cert=cert, key=key, now=NOW)
    return etree.tostring(a), cert


VIHF_BYTES, VIHF_CERT = _signed_vihf()


@FUZZ
@given(_mutations(VIHF_BYTES))
def test_mutated_vihf_is_refused_with_a_typed_error(data: bytes) -> None:
    from mssante.dmp.vihf import VihfError, verify_vihf

    try:
        verify_vihf(parse_xml(data), tls_client_cert=VIHF_CERT, now=NOW)  # type: ignore[arg-type]
    except (UnsafeXmlError, VihfError):
        pass
