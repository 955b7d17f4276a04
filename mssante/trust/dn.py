"""Canonical distinguished names, for matching liste blanche DNs against certificate subjects.

The liste blanche writes DNs as strings (RFC 4514 style, most specific first: ``CN=…,OU=…,O=…,ST=…,C=FR``);
a peer presents an X.509 certificate whose subject is a SEQUENCE of RDNs, country first. Both become a
`DistinguishedName`: a tuple of RDNs in certificate order, each RDN a sorted tuple of (OID, normalised value).

Matching follows RFC 5280 §7.1 (which points to RFC 4518 string preparation), simplified to what the
trust space needs: NFKC, every Unicode space (NBSP included, RFC 4518 §2.2) mapped to U+0020, case folded,
insignificant spaces removed (leading/trailing, runs collapsed to one: RFC 4518 §2.6.1). Values the real
list writes in RFC 2253 quoted form (``O="C H U  DE  LIMOGES"``, as Java's X500Principal prints values
with runs of spaces) are unquoted. A ``"`` in the middle of an unquoted value (``O=CRLCC "PAUL STRAUSS"``,
seen in the real list) is taken literally, as the certificate carries it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from cryptography import x509


class DnSyntaxError(ValueError):
    """The DN string cannot be parsed (RFC 4514 §3 grammar, leniently read)."""


# RFC 4514 §3 keywords, plus the ones IGC Santé and common tools print. Keys are upper-cased.
_KEYWORDS: dict[str, str] = {
    "CN": "2.5.4.3",
    "SN": "2.5.4.4",
    "SURNAME": "2.5.4.4",
    "SERIALNUMBER": "2.5.4.5",
    "C": "2.5.4.6",
    "L": "2.5.4.7",
    "ST": "2.5.4.8",
    "S": "2.5.4.8",
    "STREET": "2.5.4.9",
    "O": "2.5.4.10",
    "OU": "2.5.4.11",
    "T": "2.5.4.12",
    "TITLE": "2.5.4.12",
    "POSTALCODE": "2.5.4.17",
    "GN": "2.5.4.42",
    "GIVENNAME": "2.5.4.42",
    "INITIALS": "2.5.4.43",
    "GENERATIONQUALIFIER": "2.5.4.44",
    "DNQUALIFIER": "2.5.4.46",
    "PSEUDONYM": "2.5.4.65",
    "ORGANIZATIONIDENTIFIER": "2.5.4.97",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "E": "1.2.840.113549.1.9.1",
    "EMAIL": "1.2.840.113549.1.9.1",
    "DC": "0.9.2342.19200300.100.1.25",
    "UID": "0.9.2342.19200300.100.1.1",
}
# Short names for display (the canonical key uses OIDs).
_SHORT: dict[str, str] = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.42": "GN",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_OID_RE = re.compile(r"^(?:OID\.)?([0-2](?:\.(?:0|[1-9][0-9]*))+)$", re.IGNORECASE)
_KEYWORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_HEX = "0123456789abcdefABCDEF"
# RFC 4518 §2.2: these map to SPACE; §2.6.1: runs of SPACE are insignificant.
_SPACES_RE = re.compile(r"[\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")

# Cc except TAB/LF/CR (those are spaces, mapped above).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

RDN = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class DistinguishedName:
    """A DN in canonical form: RDNs in certificate order (C first), attributes sorted within an RDN."""

    rdns: tuple[RDN, ...]
    key: str  # canonical string of `rdns`, used as the index key (str hashes are cached)
    reversed_key: str  # key of the RDNs in the opposite order (a DN written country first)
    text: str  # RFC 4514 display, most specific first (normalised values, so lower case)

    @classmethod
    def from_rdns(cls, rdns: tuple[RDN, ...]) -> DistinguishedName:
        rev = tuple(reversed(rdns))
        text = ",".join("+".join(f"{_SHORT.get(oid, oid)}={_escape(v)}" for oid, v in rdn) for rdn in rev)
        return cls(rdns, _key(rdns), _key(rev), text)

    def reversed(self) -> DistinguishedName:
        return DistinguishedName.from_rdns(tuple(reversed(self.rdns)))

    def __str__(self) -> str:
        return self.text


_SPECIAL_RE = re.compile(r'[,+"\\<>;=]')


def _escape(value: str) -> str:
    """RFC 4514 §2.4 escaping (values are normalised, so no leading/trailing space to protect)."""
    if _SPECIAL_RE.search(value):
        value = _SPECIAL_RE.sub(lambda m: "\\" + m.group(), value)
    return "\\" + value if value.startswith("#") else value


def _key(rdns: tuple[RDN, ...]) -> str:
    return ",".join("+".join(f"{oid}={_escape(v)}" for oid, v in rdn) for rdn in rdns)


def normalise_value(value: str) -> str:
    """RFC 5280 §7.1 / RFC 4518 caseIgnoreMatch preparation, simplified (see module docstring)."""
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)
    value = _CONTROL_RE.sub("", value)  # RFC 4518 §2.2: control characters are ignored
    return _SPACES_RE.sub(" ", value).strip().casefold()


def attribute_oid(attr_type: str) -> str:
    """Map an attribute type (keyword, case-insensitive, or dotted OID) to its dotted OID."""
    t = attr_type.strip()
    m = _OID_RE.match(t)
    if m:
        return m.group(1)
    oid = _KEYWORDS.get(t.upper())
    if oid is None:
        if not _KEYWORD_RE.match(t):
            raise DnSyntaxError(f"invalid attribute type {t!r}")
        raise DnSyntaxError(f"unknown attribute type {t!r}")
    return oid


def _decode_ber_string(raw: bytes) -> str:
    """Decode the BER of a `#hex` value (RFC 4514 §2.4) when it is a directory string."""
    if len(raw) < 2:
        raise DnSyntaxError("hex value too short")
    tag, length = raw[0], raw[1]
    pos = 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(raw) < 2 + n:
            raise DnSyntaxError("bad BER length in hex value")
        length = int.from_bytes(raw[2 : 2 + n], "big")
        pos = 2 + n
    content = raw[pos:]
    if len(content) != length:
        raise DnSyntaxError("BER length mismatch in hex value")
    try:
        if tag in (0x0C,):  # UTF8String
            return content.decode("utf-8")
        if tag in (0x13, 0x16, 0x1A):  # PrintableString, IA5String, VisibleString
            return content.decode("ascii")
        if tag == 0x14:  # TeletexString: latin-1 as every tool does
            return content.decode("latin-1")
        if tag == 0x1E:  # BMPString
            return content.decode("utf-16-be")
        if tag == 0x1C:  # UniversalString
            return content.decode("utf-32-be")
    except UnicodeDecodeError as exc:
        raise DnSyntaxError("undecodable string in hex value") from exc
    # Not a string: compare the encoding itself (RFC 4514 §2.4), in a form no string can take.
    return "#" + raw.hex()


def _parse_value(s: str, i: int) -> tuple[str, int]:
    """Parse one attribute value starting at s[i]; return (raw value, index of the separator or end)."""
    n = len(s)
    if i < n and s[i] == "#":  # RFC 4514 §2.4 hexstring
        j = i + 1
        while j < n and s[j] in _HEX:
            j += 1
        hexpart = s[i + 1 : j]
        k = j
        while k < n and s[k] == " ":
            k += 1
        if k < n and s[k] not in ",+":
            raise DnSyntaxError("garbage after hex value")
        if not hexpart or len(hexpart) % 2:
            raise DnSyntaxError("odd or empty hex value")
        return _decode_ber_string(bytes.fromhex(hexpart)), k
    if i < n and s[i] == '"':  # RFC 2253 §4 quoted value (the real list uses it)
        out: list[str] = []
        j = i + 1
        while True:
            if j >= n:
                raise DnSyntaxError("unterminated quoted value")
            c = s[j]
            if c == "\\":
                ch, j = _unescape(s, j)
                out.append(ch)
                continue
            if c == '"':
                j += 1
                break
            out.append(c)
            j += 1
        while j < n and s[j] == " ":
            j += 1
        if j < n and s[j] not in ",+":
            raise DnSyntaxError("garbage after quoted value")
        return "".join(out), j
    out = []
    pending = bytearray()  # consecutive \XX escapes form UTF-8 sequences (RFC 4514 §2.4)
    j = i
    while j < n:
        c = s[j]
        if c == "\\":
            pair = s[j + 1 : j + 3]
            if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                pending.append(int(pair, 16))
                j += 3
                continue
            if pending:
                out.append(_utf8(pending))
                pending.clear()
            ch, j = _unescape(s, j)
            out.append(ch)
            continue
        if pending:
            out.append(_utf8(pending))
            pending.clear()
        if c in ",+":
            break
        out.append(c)
        j += 1
    if pending:
        out.append(_utf8(pending))
    return "".join(out), j


def _utf8(b: bytearray) -> str:
    try:
        return bytes(b).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DnSyntaxError("hex escapes are not UTF-8") from exc


def _unescape(s: str, j: int) -> tuple[str, int]:
    if j + 1 >= len(s):
        raise DnSyntaxError("trailing backslash")
    return s[j + 1], j + 2


def _strip_unescaped(text: str) -> str:
    """Strip surrounding spaces, but keep a trailing space escaped as ``\\ `` (RFC 4514 §2.4)."""
    s = text.lstrip()
    core = s.rstrip()
    backslashes = len(core) - len(core.rstrip("\\"))
    if backslashes % 2 == 1 and len(core) < len(s):
        core += s[len(core)]
    return core


def parse_dn(text: str) -> DistinguishedName:
    """Parse an RFC 4514 string (most specific RDN first) into certificate order.

    Accepts spaces around separators (``CN=a, OU=b``), RFC 2253 quoted values, ``#hex`` BER values,
    multi-valued RDNs (``+``), keywords in any case and dotted OIDs (``OID.2.5.4.3`` too).
    """
    s = _strip_unescaped(text)
    if not s:
        raise DnSyntaxError("empty DN")
    rdns: list[RDN] = []
    current: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while True:
        eq = s.find("=", i)
        if eq < 0:
            raise DnSyntaxError("attribute without '='")
        attr = s[i:eq]
        if "," in attr or "+" in attr:
            raise DnSyntaxError("attribute without '='")
        oid = attribute_oid(attr)
        j = eq + 1
        while j < n and s[j] == " ":
            j += 1
        raw, j = _parse_value(s, j)
        value = normalise_value(raw)
        current.append((oid, value))
        if j >= n:
            rdns.append(tuple(sorted(current)))
            break
        sep = s[j]
        if sep == ",":
            rdns.append(tuple(sorted(current)))
            current = []
        i = j + 1
        while i < n and s[i] == " ":
            i += 1
        if i >= n:
            raise DnSyntaxError("DN ends with a separator")
    for rdn in rdns:
        if len({oid for oid, _ in rdn}) != len(rdn):
            raise DnSyntaxError("repeated attribute type inside one RDN")
    # RFC 4514 §2.1: the string lists the RDNs in reverse of the ASN.1 sequence.
    return DistinguishedName.from_rdns(tuple(reversed(rdns)))


def dn_from_name(name: x509.Name) -> DistinguishedName:
    """Canonical form of a certificate's subject or issuer (already in certificate order)."""
    rdns: list[RDN] = []
    for rdn in name.rdns:
        attrs = []
        for attr in rdn:
            v = attr.value
            value = normalise_value(v) if isinstance(v, str) else "#" + bytes(v).hex()
            attrs.append((attr.oid.dotted_string, value))
        rdns.append(tuple(sorted(attrs)))
    return DistinguishedName.from_rdns(tuple(rdns))
