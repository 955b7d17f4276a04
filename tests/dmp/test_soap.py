"""SOAP 1.2 / WS-Addressing envelopes and MTOM packaging (ITI TF-2x Appendix V)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from mssante.dmp import soap


def _body() -> etree._Element:
    return etree.Element("{urn:example}Ping")


def test_mtom_round_trip_keeps_binary_attachment_exactly() -> None:
    data = b"\r\n--not-a-boundary\r\n\x00\xff<ClinicalDocument/>"
    env = soap.build_envelope(action=soap.ACTION_ITI41, message_id="urn:uuid:1", to="https://dmp.test/repository", body=_body())
    ctype, payload = soap.mtom_package(env, [soap.Attachment("doc1@x", "text/xml", data)], action=soap.ACTION_ITI41)
    assert ctype.startswith('multipart/related; type="application/xop+xml"')
    assert 'start-info="application/soap+xml"' in ctype
    msg = soap.parse_soap(ctype, payload)
    assert msg.action == soap.ACTION_ITI41 and msg.message_id == "urn:uuid:1" and msg.to == "https://dmp.test/repository"
    assert msg.attachments == {"doc1@x": data}
    assert msg.body is not None and msg.body.tag == "{urn:example}Ping"


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_mtom_any_bytes_survive(data: bytes) -> None:
    env = soap.build_envelope(action="a", message_id="m", body=_body())
    ctype, payload = soap.mtom_package(env, [soap.Attachment("d@x", "application/octet-stream", data)], action="a")
    assert soap.parse_soap(ctype, payload).attachments["d@x"] == data


def test_plain_soap_and_fault_are_read() -> None:
    raw = soap.fault_envelope(code="Sender", subcode="wsse:FailedAuthentication", reason="VIHF refused", message_id="m2", relates_to="m1")
    msg = soap.parse_soap("application/soap+xml; charset=UTF-8", raw)
    assert msg.fault == soap.SoapFault("soap:Sender", "wsse:FailedAuthentication", "VIHF refused")
    assert msg.relates_to == "m1"


@pytest.mark.parametrize(
    ("ctype", "body", "match"),
    [
        ("text/plain", b"hello", "Content-Type"),
        ("multipart/related", b"--x\r\n\r\n", "boundary"),
        ('multipart/related; boundary="b"', b"--b\r\nContent-Type: application/xop+xml\r\n\r\n<a/>", "not closed"),
        ("application/soap+xml", b"<notsoap/>", "Envelope"),
        ("application/soap+xml", b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', "DOCTYPE"),
        ("application/soap+xml", b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>', "Body"),
    ],
)
def test_malformed_messages_are_typed_errors(ctype: str, body: bytes, match: str) -> None:
    with pytest.raises(soap.SoapFormatError, match=match):
        soap.parse_soap(ctype, body)
