"""SEARCH evaluation (RFC 3501 §6.4.4, RFC 9051 §6.4.4, RFC 7162 MODSEQ, RFC 5182 "$"). No I/O.

`plan(key)` says what the session must load (nothing beyond flags, the stored summary, or the
raw message); `matches(key, cand, ctx)` decides one message. String matching is case-insensitive
substring on decoded text (RFC 2047 words decoded, UTF-8), as RFC 9051 §6.4.4 asks.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.errors
import email.header
import quopri
from dataclasses import dataclass
from typing import Any

from mssante.imap.mime import parse_headers
from mssante.imap.parser import SeqSet
from mssante.imap.store_types import MessageDetail

META = 0  # flags, uid, msn, modseq
SUMMARY = 1  # internaldate, size, envelope
RAW = 2  # headers and bodies

_SUMMARY_KEYS = {"BEFORE", "ON", "SINCE", "LARGER", "SMALLER", "OLDER", "YOUNGER", "SENTBEFORE", "SENTON",
                 "SENTSINCE"}
_RAW_KEYS = {"HEADER", "BODY", "TEXT", "FROM", "TO", "CC", "BCC", "SUBJECT"}


@dataclass
class Candidate:
    uid: int
    msn: int
    flags: tuple[str, ...]
    modseq: int
    detail: MessageDetail | None = None


@dataclass
class Context:
    now: dt.datetime
    max_uid: int
    max_msn: int
    saved: list[int]


def plan(key: tuple[Any, ...]) -> int:
    op = key[0]
    if op == "AND":
        return max((plan(k) for k in key[1]), default=META)
    if op == "OR":
        return max(plan(key[1]), plan(key[2]))
    if op == "NOT":
        return plan(key[1])
    if op in _RAW_KEYS:
        return RAW
    if op in _SUMMARY_KEYS:
        return SUMMARY
    return META


def uses_modseq(key: tuple[Any, ...]) -> bool:
    op = key[0]
    if op == "AND":
        return any(uses_modseq(k) for k in key[1])
    if op == "OR":
        return uses_modseq(key[1]) or uses_modseq(key[2])
    if op == "NOT":
        return uses_modseq(key[1])
    return bool(op == "MODSEQ")


def _decode_header(v: bytes) -> str:
    s = v.decode("utf-8", "replace")
    try:
        return str(email.header.make_header(email.header.decode_header(s)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return s


def _body_text(raw: bytes, bs: dict[str, Any]) -> str:
    """The decoded text of the leaf parts (base64 / quoted-printable removed), lower-cased."""
    out: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "parts" in node:
            for p in node["parts"]:
                walk(p)
            return
        if "message" in node:
            walk(node["message"])
            return
        data = raw[node["body"][0] : node["body"][1]]
        enc = (node.get("encoding") or "").lower()
        try:
            if enc == "base64":
                data = base64.b64decode(b"".join(data.split()))
            elif enc == "quoted-printable":
                data = quopri.decodestring(data)
        except (binascii.Error, ValueError):
            pass
        charset = dict((k, v) for k, v in node.get("params", [])).get("charset", "utf-8")
        try:
            out.append(data.decode(charset, "replace"))
        except LookupError:
            out.append(data.decode("utf-8", "replace"))

    walk(bs)
    return "\n".join(out).casefold()


class _Lazy:
    """Per-message decoded texts, computed once per SEARCH."""

    def __init__(self, d: MessageDetail) -> None:
        self.d = d
        self._headers: list[tuple[str, bytes]] | None = None
        self._body: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        if self._headers is None:
            raw = self.d.raw or b""
            h = self.d.bodystructure["hdr"]
            self._headers = parse_headers(raw[h[0] : h[1]])
        return self._headers

    def header(self, name: str) -> list[str]:
        return [_decode_header(v).casefold() for n, v in self.headers() if n == name]

    def body(self) -> str:
        if self._body is None:
            self._body = _body_text(self.d.raw or b"", self.d.bodystructure)
        return self._body


def _sent_date(d: MessageDetail) -> dt.date | None:
    import email.utils

    v = d.envelope[0] if d.envelope else None
    if not v:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.date() if parsed else None


def matches(key: tuple[Any, ...], c: Candidate, ctx: Context, lazy: dict[int, _Lazy] | None = None) -> bool:
    op = key[0]
    f = c.flags
    if op == "AND":
        return all(matches(k, c, ctx, lazy) for k in key[1])
    if op == "OR":
        return matches(key[1], c, ctx, lazy) or matches(key[2], c, ctx, lazy)
    if op == "NOT":
        return not matches(key[1], c, ctx, lazy)
    if op == "ALL":
        return True
    if op == "SEQ":
        s: SeqSet = key[1]
        if s.saved:
            return c.uid in ctx.saved
        return s.contains(c.msn, ctx.max_msn)
    if op == "UID":
        s = key[1]
        if s.saved:
            return c.uid in ctx.saved
        return s.contains(c.uid, ctx.max_uid)
    flag_keys = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft", "FLAGGED": "\\Flagged",
                 "SEEN": "\\Seen"}
    if op in flag_keys:
        return flag_keys[op] in f
    if op.startswith("UN") and op[2:] in flag_keys:
        return flag_keys[op[2:]] not in f
    if op in ("NEW", "RECENT"):  # no session has \Recent here (RFC 9051 removed it)
        return False
    if op == "OLD":
        return True
    if op == "KEYWORD":
        return key[1] in f
    if op == "UNKEYWORD":
        return key[1] not in f
    if op == "MODSEQ":
        return bool(c.modseq >= key[1])
    d = c.detail
    if d is None:
        return False
    if op in ("BEFORE", "ON", "SINCE"):
        # RFC 3501: dates compare on the internal date, disregarding time and timezone.
        day = d.internaldate.date()
        return bool(day < key[1] if op == "BEFORE" else day == key[1] if op == "ON" else day >= key[1])
    if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        day2 = _sent_date(d)
        if day2 is None:
            return False
        return bool(day2 < key[1] if op == "SENTBEFORE" else day2 == key[1] if op == "SENTON" else day2 >= key[1])
    if op == "LARGER":
        return bool(d.size > key[1])
    if op == "SMALLER":
        return bool(d.size < key[1])
    if op == "OLDER":  # RFC 5032 WITHIN
        return bool((ctx.now - d.internaldate).total_seconds() >= key[1])
    if op == "YOUNGER":
        return bool((ctx.now - d.internaldate).total_seconds() <= key[1])
    if lazy is None:
        lazy = {}
    lz = lazy.get(c.uid)
    if lz is None:
        lz = lazy[c.uid] = _Lazy(d)
    if op in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
        needle = key[1].casefold()
        return any(needle in v for v in lz.header(op.lower()))
    if op == "HEADER":
        needle = key[2].casefold()
        vals = lz.header(key[1])
        return bool(vals) and (not needle or any(needle in v for v in vals))
    if op == "BODY":
        return key[1].casefold() in lz.body()
    if op == "TEXT":
        needle = key[1].casefold()
        return needle in lz.body() or any(needle in _decode_header(v).casefold() for _n, v in lz.headers())
    return False
