"""SOAP 1.2 envelopes with WS-Addressing and WS-Security, and MTOM/XOP packaging (pure).

ITI TF-2x Appendix V (Web Services for IHE Transactions): SOAP 1.2, WS-Addressing Action /
MessageID / To, MTOM (multipart/related; type="application/xop+xml") for ITI-41.
The VIHF travels in wsse:Security (SPECS.md §4).
"""

from __future__ import annotations

import base64
import secrets
import urllib.parse
from dataclasses import dataclass, field
from email.message import Message

from lxml import etree

from .xmlsafe import UnsafeXmlError, parse_xml

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"

ACTION_ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
ACTION_ITI57_RESPONSE = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
ACTION_ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_ITI18_RESPONSE = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"

MAX_PARTS = 16


class SoapFormatError(ValueError):
    """A message that is not a SOAP 1.2 envelope we can read (bad MIME, bad XML, no Body)."""


@dataclass(frozen=True)
class Attachment:
    content_id: str  # without <>
    content_type: str
    data: bytes


@dataclass(frozen=True)
class SoapFault:
    code: str  # soap:Sender / soap:Receiver
    subcode: str  # e.g. wsse:FailedAuthentication
    reason: str


@dataclass
class SoapMessage:
    envelope: etree._Element
    action: str
    message_id: str
    to: str
    relates_to: str
    security: etree._Element | None
    body: etree._Element | None  # first child of soap:Body
    fault: SoapFault | None
    attachments: dict[str, bytes] = field(default_factory=dict)


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def build_envelope(
    *,
    action: str,
    message_id: str,
    body: etree._Element,
    to: str | None = None,
    relates_to: str | None = None,
    security: etree._Element | None = None,
) -> bytes:
    env = etree.Element(_q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA})
    header = etree.SubElement(env, _q(NS_SOAP, "Header"))
    must = {_q(NS_SOAP, "mustUnderstand"): "true"}
    etree.SubElement(header, _q(NS_WSA, "Action"), must).text = action
    etree.SubElement(header, _q(NS_WSA, "MessageID")).text = message_id
    if relates_to:
        etree.SubElement(header, _q(NS_WSA, "RelatesTo")).text = relates_to
    else:
        reply = etree.SubElement(header, _q(NS_WSA, "ReplyTo"))
        etree.SubElement(reply, _q(NS_WSA, "Address")).text = ANONYMOUS
    if to:
        etree.SubElement(header, _q(NS_WSA, "To"), must).text = to
    if security is not None:
        sec = etree.SubElement(header, _q(NS_WSSE, "Security"), must, nsmap={"wsse": NS_WSSE})
        sec.append(security)
    etree.SubElement(env, _q(NS_SOAP, "Body")).append(body)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def fault_envelope(*, code: str, subcode: str, reason: str, message_id: str, relates_to: str = "") -> bytes:
    """soap:Fault; subcode is a QName string such as 'wsse:FailedAuthentication'."""
    env = etree.Element(_q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA, "wsse": NS_WSSE})
    header = etree.SubElement(env, _q(NS_SOAP, "Header"))
    etree.SubElement(header, _q(NS_WSA, "Action")).text = "http://www.w3.org/2005/08/addressing/soap/fault"
    etree.SubElement(header, _q(NS_WSA, "MessageID")).text = message_id
    if relates_to:
        etree.SubElement(header, _q(NS_WSA, "RelatesTo")).text = relates_to
    f = etree.SubElement(etree.SubElement(env, _q(NS_SOAP, "Body")), _q(NS_SOAP, "Fault"))
    c = etree.SubElement(f, _q(NS_SOAP, "Code"))
    etree.SubElement(c, _q(NS_SOAP, "Value")).text = f"soap:{code}"
    etree.SubElement(etree.SubElement(c, _q(NS_SOAP, "Subcode")), _q(NS_SOAP, "Value")).text = subcode
    r = etree.SubElement(f, _q(NS_SOAP, "Reason"))
    t = etree.SubElement(r, _q(NS_SOAP, "Text"))
    t.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    t.text = reason
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def mtom_package(envelope: bytes, attachments: list[Attachment], *, action: str) -> tuple[str, bytes]:
    """(Content-Type header, body) of an MTOM/XOP multipart/related message (W3C XOP, SOAP MTOM)."""
    boundary = "MIMEBoundary_" + secrets.token_hex(16)
    start = "<root.message@mssante.dmp>"
    out = [
        f"--{boundary}\r\n".encode(),
        b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n',
        b"Content-Transfer-Encoding: binary\r\n",
        f"Content-ID: {start}\r\n\r\n".encode(),
        envelope,
    ]
    for a in attachments:
        out += [
            f"\r\n--{boundary}\r\n".encode(),
            f"Content-Type: {a.content_type}\r\n".encode(),
            b"Content-Transfer-Encoding: binary\r\n",
            f"Content-ID: <{a.content_id}>\r\n\r\n".encode(),
            a.data,
        ]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    ctype = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="{start}"; start-info="application/soap+xml"; action="{action}"'
    )
    return ctype, b"".join(out)


def _content_type(value: str) -> Message:
    m = Message()
    m["content-type"] = value
    return m


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii"))
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise SoapFormatError("multipart body is not closed by its boundary")
    parts: list[tuple[dict[str, str], bytes]] = []
    for piece in pieces[1:-1]:
        line_end = piece.find(b"\r\n")
        if line_end < 0 or piece[:line_end].strip(b" \t"):
            raise SoapFormatError("malformed multipart delimiter line")
        rest = piece[line_end + 2 :]
        head_end = rest.find(b"\r\n\r\n")
        if head_end < 0:
            raise SoapFormatError("multipart part without a header/body separator")
        headers: dict[str, str] = {}
        last = ""
        for raw in rest[:head_end].decode("latin-1").split("\r\n"):
            if raw[:1] in (" ", "\t") and last:
                headers[last] += " " + raw.strip()
                continue
            name, sep, value = raw.partition(":")
            if not sep:
                raise SoapFormatError("malformed part header")
            last = name.strip().lower()
            headers[last] = value.strip()
        data = rest[head_end + 4 :]
        cte = headers.get("content-transfer-encoding", "binary").lower()
        if cte == "base64":
            try:
                data = base64.b64decode(b"".join(data.split()), validate=True)
            except ValueError:
                raise SoapFormatError("bad base64 part") from None
        elif cte not in ("binary", "8bit", "7bit"):
            raise SoapFormatError(f"unsupported Content-Transfer-Encoding {cte}")
        parts.append((headers, data))
        if len(parts) > MAX_PARTS:
            raise SoapFormatError("too many MIME parts")
    return parts


def _text(root: etree._Element, path: str) -> str:
    el = root.find(path)
    return (el.text or "").strip() if el is not None else ""


def parse_soap(content_type: str, body: bytes) -> SoapMessage:
    """Read a SOAP 1.2 message, plain (application/soap+xml) or MTOM (multipart/related)."""
    ct = _content_type(content_type)
    attachments: dict[str, bytes] = {}
    if ct.get_content_type() == "multipart/related":
        boundary = ct.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise SoapFormatError("multipart/related without a boundary")
        parts = _split_multipart(body, boundary)
        start = ct.get_param("start")
        root_index = 0
        if isinstance(start, str) and start:
            ids = [h.get("content-id", "") for h, _ in parts]
            if start not in ids:
                raise SoapFormatError("the start part is missing")
            root_index = ids.index(start)
        root_headers, xml = parts[root_index]
        if _content_type(root_headers.get("content-type", "")).get_content_type() not in (
            "application/xop+xml",
            "application/soap+xml",
        ):
            raise SoapFormatError("the root part is not application/xop+xml")
        for i, (h, data) in enumerate(parts):
            if i != root_index:
                cid = h.get("content-id", "").strip()
                if not (cid.startswith("<") and cid.endswith(">")):
                    raise SoapFormatError("attachment without a Content-ID")
                attachments[urllib.parse.unquote(cid[1:-1])] = data
    elif ct.get_content_type() in ("application/soap+xml", "text/xml", "application/xml"):
        xml = body
    else:
        raise SoapFormatError(f"unexpected Content-Type {ct.get_content_type()}")
    try:
        env = parse_xml(xml)
    except UnsafeXmlError as exc:
        raise SoapFormatError(str(exc)) from None
    if env.tag != _q(NS_SOAP, "Envelope"):
        raise SoapFormatError("not a SOAP 1.2 Envelope")
    header = env.find(_q(NS_SOAP, "Header"))
    body_el = env.find(_q(NS_SOAP, "Body"))
    if body_el is None:
        raise SoapFormatError("SOAP Body is missing")
    first = next((c for c in body_el if isinstance(c.tag, str)), None)
    fault = None
    if first is not None and first.tag == _q(NS_SOAP, "Fault"):
        fault = SoapFault(
            code=_text(first, f"{_q(NS_SOAP, 'Code')}/{_q(NS_SOAP, 'Value')}"),
            subcode=_text(first, f"{_q(NS_SOAP, 'Code')}/{_q(NS_SOAP, 'Subcode')}/{_q(NS_SOAP, 'Value')}"),
            reason=_text(first, f"{_q(NS_SOAP, 'Reason')}/{_q(NS_SOAP, 'Text')}"),
        )
    security = None
    h = header if header is not None else etree.Element("none")
    sec = h.find(_q(NS_WSSE, "Security"))
    if sec is not None:
        security = sec.find(_q(NS_SAML, "Assertion"))
    return SoapMessage(
        envelope=env,
        action=_text(h, _q(NS_WSA, "Action")),
        message_id=_text(h, _q(NS_WSA, "MessageID")),
        to=_text(h, _q(NS_WSA, "To")),
        relates_to=_text(h, _q(NS_WSA, "RelatesTo")),
        security=security,
        body=first,
        fault=fault,
        attachments=attachments,
    )
