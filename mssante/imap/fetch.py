"""FETCH response items from a stored message (RFC 3501 §6.4.5 / §7.4.2, RFC 3516 BINARY,
RFC 7162 MODSEQ). No I/O: sections are byte slices of the raw message found through the
offsets in the stored BODYSTRUCTURE (mssante.imap.mime)."""

from __future__ import annotations

import base64
import binascii
import quopri
from typing import Any

from mssante.imap import response
from mssante.imap.memo import Memo
from mssante.imap.mime import parse_headers
from mssante.imap.parser import FetchAtt, Section
from mssante.imap.store_types import MessageDetail

NEEDS_RAW = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY", "BINARY.SIZE"})


class FetchError(Exception):
    def __init__(self, msg: str, code: str | None = None) -> None:
        super().__init__(msg)
        self.code = code


def needs_raw(atts: list[FetchAtt]) -> bool:
    return any(a.name in NEEDS_RAW or a.section is not None for a in atts)


def sets_seen(atts: list[FetchAtt]) -> bool:
    """RFC 3501 §6.4.5: BODY[...] (not PEEK), RFC822, RFC822.TEXT and BINARY set \\Seen."""
    return any((a.name in ("BODY", "BINARY") and a.section is not None and not a.peek)
               or a.name in ("RFC822", "RFC822.TEXT") for a in atts)


def _node(bs: dict[str, Any], part: tuple[int, ...]) -> dict[str, Any]:
    node = bs
    for n in part:
        if "parts" in node:
            if n > len(node["parts"]):
                raise FetchError("no such body part")
            node = node["parts"][n - 1]
        elif "message" in node:
            inner = node["message"]
            if "parts" in inner:
                if n > len(inner["parts"]):
                    raise FetchError("no such body part")
                node = inner["parts"][n - 1]
            elif n == 1:
                node = inner
            else:
                raise FetchError("no such body part")
        elif n == 1:
            continue
        else:
            raise FetchError("no such body part")
    return node


def _header_fields(block: bytes, fields: tuple[str, ...], negate: bool) -> bytes:
    want = {f.lower() for f in fields}
    out = bytearray()
    for line in _header_lines(block):
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        if (name in want) != negate:
            out += line
    return bytes(out) + b"\r\n"


def _header_lines(block: bytes) -> list[bytes]:
    """Raw header fields with their folding and line ends kept (CRLF-normalised)."""
    lines: list[bytes] = []
    for ln in block.replace(b"\r\n", b"\n").split(b"\n"):
        if not ln:
            continue
        if ln[:1] in (b" ", b"\t") and lines:
            lines[-1] += ln + b"\r\n"
        elif b":" in ln:
            lines.append(ln + b"\r\n")
    return lines


def section_bytes(raw: bytes, bs: dict[str, Any], sec: Section) -> bytes:
    if not sec.part:
        node = bs
        if sec.text == "":
            return raw
        hdr = raw[node["hdr"][0] : node["hdr"][1]]
        if sec.text == "HEADER":
            return hdr
        if sec.text == "TEXT":
            return raw[node["body"][0] : node["body"][1]]
        return _header_fields(hdr, sec.fields, sec.text == "HEADER.FIELDS.NOT")
    node = _node(bs, sec.part)
    if sec.text == "":
        return raw[node["body"][0] : node["body"][1]]
    if sec.text == "MIME":
        return raw[node["hdr"][0] : node["hdr"][1]]
    # HEADER / TEXT / HEADER.FIELDS of an encapsulated message/rfc822 part.
    inner = node.get("message")
    if inner is None:
        raise FetchError("section applies to message/rfc822 parts only")
    hdr = raw[inner["hdr"][0] : inner["hdr"][1]]
    if sec.text == "HEADER":
        return hdr
    if sec.text == "TEXT":
        return raw[inner["body"][0] : inner["body"][1]]
    return _header_fields(hdr, sec.fields, sec.text == "HEADER.FIELDS.NOT")


def binary_bytes(raw: bytes, bs: dict[str, Any], sec: Section) -> bytes:
    """RFC 3516 §4.2: the part with its Content-Transfer-Encoding removed."""
    node = _node(bs, sec.part) if sec.part else bs
    if "parts" in node and sec.part:
        raise FetchError("BINARY of a multipart")
    data = raw[node["body"][0] : node["body"][1]] if sec.part else raw
    enc = (node.get("encoding") or "7bit").lower()
    if not sec.part:
        return data
    if enc in ("7bit", "8bit", "binary"):
        return data
    if enc == "base64":
        try:
            return base64.b64decode(b"".join(data.split()), validate=False)
        except (binascii.Error, ValueError) as e:
            raise FetchError("invalid base64 content", "UNKNOWN-CTE") from e
    if enc == "quoted-printable":
        return quopri.decodestring(data)
    raise FetchError("unknown Content-Transfer-Encoding", "UNKNOWN-CTE")


def _section_name(sec: Section) -> bytes:
    spec = ".".join(str(p) for p in sec.part)
    if sec.text:
        spec = f"{spec}.{sec.text}" if spec else sec.text
    out = spec.encode()
    if sec.fields:
        out += b" (" + b" ".join(response.string(f) if not f.isascii() or not f.replace("-", "").isalnum()
                                 else f.encode() for f in sec.fields) + b")"
    return out


def _partial(data: bytes, p: tuple[int, int] | None) -> tuple[bytes, bytes]:
    if p is None:
        return data, b""
    start, n = p
    return data[start : start + n], b"<%d>" % start


_ENVELOPES: Memo[str, bytes] = Memo(20_000)  # stored ENVELOPE JSON text -> its wire form


def _envelope(d: MessageDetail) -> bytes:
    key = d.envelope_key
    if key is None:
        return response.envelope(d.envelope)
    wire = _ENVELOPES.get(key)
    return wire if wire is not None else _ENVELOPES.put(key, response.envelope(d.envelope))


def render(msn: int, d: MessageDetail, atts: list[FetchAtt], *, add_uid: bool, add_modseq: bool,
           flags: tuple[str, ...] | None = None) -> bytes:
    """One '* n FETCH (...)' response."""
    items: list[bytes] = []
    names = {a.name for a in atts}
    fl = d.flags if flags is None else flags
    if add_uid and "UID" not in names:
        items.append(b"UID %d" % d.uid)
    raw = d.raw or b""
    for a in atts:
        if a.name == "UID":
            items.append(b"UID %d" % d.uid)
        elif a.name == "FLAGS":
            items.append(b"FLAGS " + response.flags(fl))
        elif a.name == "INTERNALDATE":
            items.append(b"INTERNALDATE " + response.internaldate(d.internaldate))
        elif a.name == "RFC822.SIZE":
            items.append(b"RFC822.SIZE %d" % d.size)
        elif a.name == "ENVELOPE":
            items.append(b"ENVELOPE " + _envelope(d))
        elif a.name == "BODYSTRUCTURE":
            items.append(b"BODYSTRUCTURE " + response.bodystructure(d.bodystructure, True))
        elif a.name == "BODY" and a.section is None:
            items.append(b"BODY " + response.bodystructure(d.bodystructure, False))
        elif a.name == "MODSEQ":
            items.append(b"MODSEQ (%d)" % d.modseq)
        elif a.name == "RFC822":
            items.append(b"RFC822 " + response.literal(raw))
        elif a.name == "RFC822.HEADER":
            items.append(b"RFC822.HEADER " + response.literal(section_bytes(raw, d.bodystructure, Section(text="HEADER"))))
        elif a.name == "RFC822.TEXT":
            items.append(b"RFC822.TEXT " + response.literal(section_bytes(raw, d.bodystructure, Section(text="TEXT"))))
        elif a.name == "BODY" and a.section is not None:
            # BODY[] is the whole message: no need to decode the stored structure for it.
            whole = not a.section.part and a.section.text == ""
            data, origin = _partial(raw if whole else section_bytes(raw, d.bodystructure, a.section), a.partial)
            items.append(b"BODY[" + _section_name(a.section) + b"]" + origin + b" " + response.literal(data))
        elif a.name == "BINARY" and a.section is not None:
            data, origin = _partial(binary_bytes(raw, d.bodystructure, a.section), a.partial)
            lit = response.literal8(data) if b"\x00" in data else response.literal(data)
            items.append(b"BINARY[" + _section_name(a.section) + b"]" + origin + b" " + lit)
        elif a.name == "BINARY.SIZE" and a.section is not None:
            items.append(b"BINARY.SIZE[" + _section_name(a.section) + b"] %d"
                         % len(binary_bytes(raw, d.bodystructure, a.section)))
        elif a.name == "SAVEDATE":
            items.append(b"SAVEDATE NIL")
    if add_modseq and "MODSEQ" not in names:
        items.append(b"MODSEQ (%d)" % d.modseq)
    return b"* %d FETCH (" % msn + b" ".join(items) + b")\r\n"


def header_value(raw: bytes, bs: dict[str, Any], name: str) -> list[bytes]:
    hdr = raw[bs["hdr"][0] : bs["hdr"][1]]
    return [v for n, v in parse_headers(hdr) if n == name]
