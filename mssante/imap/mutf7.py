"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3). No I/O.

Decoding is strict: a name a conforming client could not have produced (unterminated
shift, bad base64, non-zero padding bits, "&-"-encodable characters inside a shift,
printable ASCII encoded in base64, two adjacent shifts) is refused, so that one mailbox
never has two spellings.
"""

from __future__ import annotations

import base64
import binascii


class MUtf7Error(ValueError):
    """An invalid modified UTF-7 mailbox name (answered with BAD)."""


def _b64enc(s: str) -> str:
    raw = s.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append("&" + _b64enc("".join(pending)) + "-")
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append("&" + _b64enc("".join(pending)) + "-")
    return "".join(out)


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def decode(name: str) -> str:
    out: list[str] = []
    i, n = 0, len(name)
    last_shift_end = -2
    while i < n:
        ch = name[i]
        o = ord(ch)
        if o < 0x20 or o > 0x7E:
            raise MUtf7Error("mailbox name has a character outside printable ASCII (RFC 3501 §5.1.3)")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        j = name.find("-", i + 1)
        if j < 0:
            raise MUtf7Error("unterminated modified UTF-7 shift in mailbox name")
        chunk = name[i + 1 : j]
        if not chunk:
            out.append("&")
            i = j + 1
            continue
        if i == last_shift_end:
            raise MUtf7Error("adjacent modified UTF-7 shifts in mailbox name")
        if any(c not in _B64 for c in chunk):
            raise MUtf7Error("invalid base64 in modified UTF-7 mailbox name")
        b64 = chunk.replace(",", "/")
        pad = (-len(b64)) % 4
        if pad == 3:
            raise MUtf7Error("invalid base64 length in modified UTF-7 mailbox name")
        try:
            raw = base64.b64decode(b64 + "=" * pad, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MUtf7Error("invalid base64 in modified UTF-7 mailbox name") from e
        if len(raw) % 2:
            raise MUtf7Error("modified UTF-7 shift is not whole UTF-16 units")
        if _b64enc_raw(raw) != chunk:
            raise MUtf7Error("non-canonical modified UTF-7 (padding bits set)")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError as e:
            raise MUtf7Error("invalid UTF-16 in modified UTF-7 mailbox name") from e
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
            raise MUtf7Error("control character in mailbox name")
        if any(0x20 <= ord(c) <= 0x7E for c in text):
            raise MUtf7Error("printable ASCII must not be base64-encoded in a mailbox name")
        out.append(text)
        i = j + 1
        last_shift_end = i
    return "".join(out)


def _b64enc_raw(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
