"""Response rendering: IMAP data items to wire bytes (RFC 3501 §4, §7). No I/O."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from mssante.imap import mutf7
from mssante.imap.memo import Memo

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_QUOTED_OK = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}
_QUOTABLE = re.compile(rb'[\x20\x21\x23-\x5b\x5d-\x7e]*\Z')  # exactly the bytes of _QUOTED_OK


def string(v: str | bytes | None) -> bytes:
    """A string as quoted when safe, else as a literal (RFC 3501 §4.3); None as NIL."""
    if v is None:
        return b"NIL"
    b = v.encode("utf-8") if isinstance(v, str) else v
    if len(b) < 200 and _QUOTABLE.match(b):
        return b'"' + b + b'"'
    if b"\x00" in b:
        b = b.replace(b"\x00", b"")
    return b"{%d}\r\n" % len(b) + b


def literal(b: bytes) -> bytes:
    return b"{%d}\r\n" % len(b) + b


def literal8(b: bytes) -> bytes:
    return b"~{%d}\r\n" % len(b) + b


def quoted_always(v: str) -> bytes:
    b = v.encode("utf-8")
    if _QUOTABLE.match(b):
        return b'"' + b + b'"'
    return literal(b)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name, modified-UTF-7 encoded unless UTF8=ACCEPT is enabled (RFC 3501 §5.1.3)."""
    if name == "INBOX":
        return b"INBOX"
    return quoted_always(name if utf8 else mutf7.encode(name))


def flags(fl: Iterable[str]) -> bytes:
    return b"(" + " ".join(fl).encode("utf-8") + b")"


_DATES: Memo[tuple[dt.datetime, dt.timedelta | None], bytes] = Memo(20_000)  # (date, UTC offset) -> wire form


def internaldate(d: dt.datetime) -> bytes:
    # Keyed with the offset too: datetimes of the same instant in two zones compare equal.
    key = (d, d.utcoffset())
    wire = _DATES.get(key)
    return wire if wire is not None else _DATES.put(key, _internaldate(d))


def _internaldate(d: dt.datetime) -> bytes:
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    off = d.utcoffset() or dt.timedelta(0)
    mins = int(off.total_seconds()) // 60
    sign = "+" if mins >= 0 else "-"
    mins = abs(mins)
    s = f'"{d.day:2d}-{MONTHS[d.month - 1]}-{d.year:04d} {d.hour:02d}:{d.minute:02d}:{d.second:02d} {sign}{mins // 60:02d}{mins % 60:02d}"'
    return s.encode("ascii")


def seqset(nums: Iterable[int]) -> bytes:
    """Sorted numbers as a compact sequence set ("1:3,7")."""
    out: list[str] = []
    start = prev = None
    for n in sorted(set(nums)):
        if start is None:
            start = prev = n
        elif prev is not None and n == prev + 1:
            prev = n
        else:
            out.append(f"{start}" if start == prev else f"{start}:{prev}")
            start = prev = n
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}:{prev}")
    return ",".join(out).encode("ascii")


def _addrs(v: Any) -> bytes:
    if not v:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(string(x) for x in a) + b")" for a in v) + b")"


def envelope(e: list[Any]) -> bytes:
    """ENVELOPE from the stored JSON (mime.summarize)."""
    date, subject, frm, sender, reply_to, to, cc, bcc, irt, mid = e
    return b"(" + b" ".join([
        string(date), string(subject), _addrs(frm), _addrs(sender), _addrs(reply_to),
        _addrs(to), _addrs(cc), _addrs(bcc), string(irt), string(mid),
    ]) + b")"


def _params(p: list[list[str]]) -> bytes:
    if not p:
        return b"NIL"
    return b"(" + b" ".join(string(k.upper()) + b" " + string(v) for k, v in p) + b")"


def _disposition(d: Any) -> bytes:
    if not d:
        return b"NIL"
    return b"(" + string(d[0].upper()) + b" " + _params(d[1]) + b")"


def bodystructure(b: dict[str, Any], extended: bool = True) -> bytes:
    """BODY / BODYSTRUCTURE from the stored JSON (RFC 3501 §7.4.2, RFC 9051 §7.5.2)."""
    if "parts" in b:
        out = b"(" + b"".join(bodystructure(p, extended) for p in b["parts"]) + b" " + string(b["subtype"].upper())
        if extended:
            out += b" " + _params(b["params"]) + b" " + _disposition(b.get("disposition")) + b" " + string(
                b.get("language")) + b" " + string(b.get("location"))
        return out + b")"
    fields = [
        string(b["type"].upper()), string(b["subtype"].upper()), _params(b["params"]), string(b.get("id")),
        string(b.get("description")), string((b.get("encoding") or "7bit").upper()), b"%d" % int(b.get("size", 0)),
    ]
    if b["type"] == "message" and b["subtype"] == "rfc822" and "message" in b:
        fields += [envelope(b["envelope"]), bodystructure(b["message"], extended), b"%d" % int(b.get("lines", 0))]
    elif b["type"] == "text":
        fields.append(b"%d" % int(b.get("lines", 0)))
    if extended:
        fields += [string(b.get("md5")), _disposition(b.get("disposition")), string(b.get("language")),
                   string(b.get("location"))]
    return b"(" + b" ".join(fields) + b")"


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    c = f"[{code}] " if code else ""
    return f"{tag} {status} {c}{text}\r\n".encode()


def untagged(line: bytes | str) -> bytes:
    if isinstance(line, str):
        line = line.encode()
    return b"* " + line + b"\r\n"
