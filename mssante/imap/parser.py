"""IMAP command parser (RFC 3501 §9 / RFC 9051 §9 grammar). No I/O.

`parse_command(data)` takes one whole command as framed by `framing.CommandReader`
(literals inline) and returns a `Command`. Errors are `ParseError` carrying the tag (so the
session answers "<tag> BAD ...") and never the client's bytes in a log.

The argument grammar of each command is data: `ARGUMENTS[name]` names the parse function.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mssante.imap import mutf7

MAX_DEPTH = 24  # parenthesis nesting in SEARCH and FETCH (bounded recursion)
MAX_ITEMS = 10_000  # ranges in a sequence set, keys in a search, items in a list

_EIGHT_BIT = frozenset(range(128, 256))
ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0, 33)) | {127} | _EIGHT_BIT
# astrings may carry UTF-8 (RFC 9051 §9 "astring" with UTF8-2..4); validated where decoded.
ASTRING_SPECIALS = ATOM_SPECIALS - {ord("]")} - _EIGHT_BIT
LIST_SPECIALS = ATOM_SPECIALS - {ord("%"), ord("*"), ord("]")} - _EIGHT_BIT
TAG_SPECIALS = ATOM_SPECIALS | {ord("+")}
FLAG_SPECIALS = ATOM_SPECIALS

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ParseError(ValueError):
    """Syntax error: answered '<tag> BAD <text>' (RFC 3501 §7.1.3)."""

    def __init__(self, msg: str, tag: str = "*", code: str | None = None) -> None:
        super().__init__(msg)
        self.tag = tag
        self.code = code


# A sequence set: ranges of (lo, hi); None stands for "*". SEARCHRES "$" is SeqSet(saved=True).
@dataclass(frozen=True)
class SeqSet:
    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def contains(self, n: int, star: int) -> bool:
        for lo, hi in self.ranges:
            a = star if lo is None else lo
            b = star if hi is None else hi
            if a > b:
                a, b = b, a
            if a <= n <= b:
                return True
        return False

    def expand(self, star: int, cap: int | None = None) -> list[int]:
        """All numbers (ascending, unique); star is the largest existing number."""
        out: set[int] = set()
        for lo, hi in self.ranges:
            a = star if lo is None else lo
            b = star if hi is None else hi
            if a > b:
                a, b = b, a
            if cap is not None:
                b = min(b, cap)
            out.update(range(a, b + 1))
        return sorted(out)


@dataclass(frozen=True)
class Section:
    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchAtt:
    name: str  # ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY
    # BODYSTRUCTURE UID MODSEQ BINARY BINARY.SIZE; BODY with section = BODY[...]
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


@dataclass(frozen=True)
class Command:
    tag: str
    name: str
    uid: bool = False
    args: dict[str, Any] = field(default_factory=dict)


class Cursor:
    def __init__(self, data: bytes, tag: str = "*") -> None:
        self.d = data
        self.i = 0
        self.tag = tag

    def err(self, msg: str) -> ParseError:
        return ParseError(msg, self.tag)

    def peek(self) -> int:
        return self.d[self.i] if self.i < len(self.d) else -1

    def at_end(self) -> bool:
        return self.d[self.i :] in (b"\r\n", b"\n", b"")

    def end(self) -> None:
        if not self.at_end():
            raise self.err("unexpected characters at end of command")

    def sp(self) -> None:
        if self.peek() != 32:
            raise self.err("expected a space")
        self.i += 1

    def maybe_sp(self) -> bool:
        if self.peek() == 32:
            self.i += 1
            return True
        return False

    def take(self, b: bytes) -> bool:
        if self.d[self.i : self.i + len(b)].upper() == b.upper():
            self.i += len(b)
            return True
        return False

    def expect(self, b: bytes) -> None:
        if not self.take(b):
            raise self.err(f"expected {b.decode()}")

    def _run(self, specials: frozenset[int]) -> bytes:
        j = self.i
        d = self.d
        while j < len(d) and d[j] not in specials:
            j += 1
        out = d[self.i : j]
        self.i = j
        return out

    def atom(self, specials: frozenset[int] = ATOM_SPECIALS) -> str:
        a = self._run(specials)
        if not a:
            raise self.err("expected an atom")
        return a.decode("ascii")

    def number(self) -> int:
        j = self.i
        while j < len(self.d) and 48 <= self.d[j] <= 57:
            j += 1
        if j == self.i or j - self.i > 20:
            raise self.err("expected a number")
        n = int(self.d[self.i : j])
        self.i = j
        if n > 2**63 - 1:
            raise self.err("number too large")
        return n

    def nz_number(self) -> int:
        n = self.number()
        if n == 0 or n > 0xFFFFFFFF:
            raise self.err("expected a non-zero 32-bit number")
        return n

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        d = self.d
        while True:
            if self.i >= len(d):
                raise self.err("unterminated quoted string")
            c = d[self.i]
            if c == 34:
                self.i += 1
                return bytes(out)
            if c in (13, 10, 0):
                raise self.err("unterminated quoted string")
            if c == 92:
                self.i += 1
                if self.i >= len(d) or d[self.i] not in (34, 92):
                    raise self.err("invalid escape in quoted string")
                c = d[self.i]
            out.append(c)
            self.i += 1

    def literal(self) -> bytes:
        self.expect(b"{")
        binary = False
        n = self.number()
        self.take(b"+")
        self.expect(b"}")
        if not self.take(b"\r\n"):
            self.expect(b"\n")
        if self.i + n > len(self.d):
            raise self.err("literal shorter than announced")
        out = self.d[self.i : self.i + n]
        self.i += n
        if not binary and b"\x00" in out:
            raise self.err("NUL in literal (RFC 3501 §4.3)")
        return out

    def string(self) -> bytes:
        c = self.peek()
        if c == 34:
            return self.quoted()
        if c == 123 or (c == 126 and self.d[self.i + 1 : self.i + 2] == b"{"):
            if c == 126:  # literal8 ~{n} (RFC 3516 BINARY)
                self.i += 1
                return self._literal8()
            return self.literal()
        raise self.err("expected a string")

    def _literal8(self) -> bytes:
        self.expect(b"{")
        n = self.number()
        self.take(b"+")
        self.expect(b"}")
        if not self.take(b"\r\n"):
            self.expect(b"\n")
        if self.i + n > len(self.d):
            raise self.err("literal shorter than announced")
        out = self.d[self.i : self.i + n]
        self.i += n
        return out

    def astring(self) -> bytes:
        c = self.peek()
        if c in (34, 123):
            return self.string()
        a = self._run(ASTRING_SPECIALS)
        if not a:
            raise self.err("expected an astring")
        return a

    def nstring(self) -> bytes | None:
        if self.take(b"NIL"):
            return None
        return self.string()

    def utf8(self, b: bytes) -> str:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.err("invalid UTF-8") from e

    def mailbox(self) -> str:
        raw = self.astring()
        return decode_mailbox(raw, self.tag)

    def list_mailbox(self) -> str:
        c = self.peek()
        if c in (34, 123):
            raw = self.string()
        else:
            raw = self._run(LIST_SPECIALS)
            if not raw:
                raise self.err("expected a mailbox pattern")
        return decode_mailbox(raw, self.tag, inbox=False)

    def flag(self) -> str:
        if self.peek() == 92:  # backslash
            self.i += 1
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom(FLAG_SPECIALS).capitalize()
        return self.atom(FLAG_SPECIALS)

    def flag_list(self) -> list[str]:
        self.expect(b"(")
        out: list[str] = []
        while self.peek() != 41:
            if out:
                self.sp()
            out.append(self.flag())
            if len(out) > MAX_ITEMS:
                raise self.err("too many flags")
        self.i += 1
        return out

    def seqset(self) -> SeqSet:
        if self.take(b"$"):
            return SeqSet(saved=True)
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            lo = None if self.take(b"*") else self.nz_number()
            hi = lo
            if self.take(b":"):
                hi = None if self.take(b"*") else self.nz_number()
            ranges.append((lo, hi))
            if len(ranges) > MAX_ITEMS:
                raise self.err("sequence set too long")
            if not self.take(b","):
                break
        return SeqSet(tuple(ranges))

    def date(self) -> dt.date:
        quoted = self.take(b'"')
        day = self.number()
        self.expect(b"-")
        mon = self.d[self.i : self.i + 3].decode("ascii", "replace").capitalize()
        if mon not in MONTHS:
            raise self.err("invalid month")
        self.i += 3
        self.expect(b"-")
        year = self.number()
        if quoted:
            self.expect(b'"')
        try:
            return dt.date(year, MONTHS.index(mon) + 1, day)
        except ValueError as e:
            raise self.err("invalid date") from e

    def datetime(self) -> dt.datetime:
        s = self.quoted().decode("ascii", "replace")
        try:
            return dt.datetime.strptime(s.strip(), "%d-%b-%Y %H:%M:%S %z")
        except ValueError as e:
            raise self.err("invalid date-time") from e


def decode_mailbox(raw: bytes, tag: str = "*", *, inbox: bool = True) -> str:
    try:
        s = raw.decode("ascii")
    except UnicodeDecodeError:
        # RFC 9051 / RFC 6855 clients may send UTF-8 directly.
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError("invalid mailbox name encoding", tag) from e
        return _inbox(s) if inbox else s
    try:
        name = mutf7.decode(s)
    except mutf7.MUtf7Error as e:
        raise ParseError(str(e), tag) from e
    return _inbox(name) if inbox else name


def _inbox(name: str) -> str:
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX/" + name[6:]
    return name


# --- per-command argument parsers ------------------------------------------------------------


def _none(c: Cursor) -> dict[str, Any]:
    return {}


def _login(c: Cursor) -> dict[str, Any]:
    c.sp()
    user = c.utf8(c.astring())
    c.sp()
    pw = c.utf8(c.astring())
    return {"user": user, "password": pw}


def _authenticate(c: Cursor) -> dict[str, Any]:
    c.sp()
    mech = c.atom().upper()
    initial: bytes | None = None
    if c.maybe_sp():  # RFC 4959 SASL-IR
        initial = b"" if c.take(b"=") else c._run(ATOM_SPECIALS)
    return {"mechanism": mech, "initial": initial}


def _mailbox_only(c: Cursor) -> dict[str, Any]:
    c.sp()
    return {"mailbox": c.mailbox()}


def _create(c: Cursor) -> dict[str, Any]:
    c.sp()
    name = c.mailbox()
    use: list[str] = []
    if c.maybe_sp():  # RFC 6154 CREATE-SPECIAL-USE: (USE (\Flag ...))
        c.expect(b"(")
        c.expect(b"USE")
        c.sp()
        use = c.flag_list()
        c.expect(b")")
    return {"mailbox": name, "use": use}


def _select(c: Cursor) -> dict[str, Any]:
    c.sp()
    out: dict[str, Any] = {"mailbox": c.mailbox(), "condstore": False, "qresync": None}
    if c.maybe_sp():
        c.expect(b"(")
        first = True
        while c.peek() != 41:
            if not first:
                c.sp()
            first = False
            p = c.atom().upper()
            if p == "CONDSTORE":  # RFC 7162 §3.1.8
                out["condstore"] = True
            elif p == "QRESYNC":  # RFC 7162 §3.2.5
                c.sp()
                c.expect(b"(")
                uidvalidity = c.nz_number()
                c.sp()
                modseq = c.number()
                known: SeqSet | None = None
                match: tuple[SeqSet, SeqSet] | None = None
                if c.maybe_sp():
                    if c.peek() != 40:
                        known = c.seqset()
                        c.maybe_sp()
                    if c.take(b"("):
                        s1 = c.seqset()
                        c.sp()
                        s2 = c.seqset()
                        c.expect(b")")
                        match = (s1, s2)
                c.expect(b")")
                out["qresync"] = (uidvalidity, modseq, known, match)
            else:
                raise c.err(f"unknown SELECT parameter {p}")
        c.i += 1
    return out


def _rename(c: Cursor) -> dict[str, Any]:
    c.sp()
    a = c.mailbox()
    c.sp()
    return {"old": a, "new": c.mailbox()}


def _list(c: Cursor) -> dict[str, Any]:
    c.sp()
    select_opts: list[str] = []
    if c.take(b"("):  # RFC 5258 LIST-EXTENDED selection options
        while c.peek() != 41:
            if select_opts:
                c.sp()
            select_opts.append(c.atom().upper())
        c.i += 1
        c.sp()
    ref = decode_mailbox(c.astring() if c.peek() != 34 else c.quoted(), c.tag, inbox=False)
    c.sp()
    patterns: list[str] = []
    if c.take(b"("):
        while c.peek() != 41:
            if patterns:
                c.sp()
            patterns.append(c.list_mailbox())
            if len(patterns) > 100:
                raise c.err("too many patterns")
        c.i += 1
    else:
        patterns.append(c.list_mailbox())
    ret: dict[str, Any] = {}
    if c.maybe_sp():
        c.expect(b"RETURN")
        c.sp()
        c.expect(b"(")
        while c.peek() != 41:
            if ret:
                c.sp()
            opt = c.atom().upper()
            if opt == "STATUS":  # RFC 5819 LIST-STATUS
                c.sp()
                ret["STATUS"] = _status_items(c)
            else:
                ret[opt] = True
        c.i += 1
    return {"select": select_opts, "reference": ref, "patterns": patterns, "return": ret}


def _lsub(c: Cursor) -> dict[str, Any]:
    c.sp()
    ref = decode_mailbox(c.astring(), c.tag, inbox=False)
    c.sp()
    return {"select": ["SUBSCRIBED"], "reference": ref, "patterns": [c.list_mailbox()], "return": {}, "lsub": True}


STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE",
                          "DELETED", "APPENDLIMIT"})


def _status_items(c: Cursor) -> list[str]:
    c.expect(b"(")
    items: list[str] = []
    while c.peek() != 41:
        if items:
            c.sp()
        it = c.atom().upper()
        if it not in STATUS_ITEMS:
            raise c.err(f"unknown STATUS item {it}")
        items.append(it)
        if len(items) > 20:
            raise c.err("too many STATUS items")
    c.i += 1
    if not items:
        raise c.err("empty STATUS item list")
    return items


def _status(c: Cursor) -> dict[str, Any]:
    c.sp()
    name = c.mailbox()
    c.sp()
    return {"mailbox": name, "items": _status_items(c)}


def _append(c: Cursor) -> dict[str, Any]:
    c.sp()
    name = c.mailbox()
    messages: list[tuple[list[str], dt.datetime | None, bytes]] = []
    while c.maybe_sp():  # RFC 3502 MULTIAPPEND: several messages in one command
        flags: list[str] = []
        date: dt.datetime | None = None
        if c.peek() == 40:
            flags = c.flag_list()
            c.sp()
        if c.peek() == 34:
            date = c.datetime()
            c.sp()
        if c.take(b"UTF8 ("):  # RFC 6855 UTF8 literal
            data = c.string()
            c.expect(b")")
        else:
            data = c.string()
        messages.append((flags, date, data))
    if not messages:
        raise c.err("APPEND needs a message")
    return {"mailbox": name, "messages": messages}


def _enable(c: Cursor) -> dict[str, Any]:
    caps: list[str] = []
    while c.maybe_sp():
        caps.append(c.atom().upper())
    if not caps:
        raise c.err("ENABLE needs a capability")
    return {"caps": caps}


def _id(c: Cursor) -> dict[str, Any]:
    c.sp()
    if c.take(b"NIL"):
        return {"params": None}
    c.expect(b"(")
    params: list[tuple[str, str | None]] = []
    while c.peek() != 41:
        if params:
            c.sp()
        k = c.string()
        c.sp()
        v = c.nstring()
        params.append((k.decode("utf-8", "replace"), None if v is None else v.decode("utf-8", "replace")))
        if len(params) > 30:  # RFC 2971 §3.3
            raise c.err("too many ID fields")
    c.i += 1
    return {"params": params}


def _seqset_only(c: Cursor) -> dict[str, Any]:
    c.sp()
    return {"set": c.seqset()}


def _copy(c: Cursor) -> dict[str, Any]:
    c.sp()
    s = c.seqset()
    c.sp()
    return {"set": s, "mailbox": c.mailbox()}


def _store(c: Cursor) -> dict[str, Any]:
    c.sp()
    s = c.seqset()
    c.sp()
    unchangedsince: int | None = None
    if c.take(b"("):  # RFC 7162 §3.1.3 UNCHANGEDSINCE
        c.expect(b"UNCHANGEDSINCE")
        c.sp()
        unchangedsince = c.number()
        c.expect(b")")
        c.sp()
    mode = ""
    if c.take(b"+"):
        mode = "+"
    elif c.take(b"-"):
        mode = "-"
    c.expect(b"FLAGS")
    silent = c.take(b".SILENT")
    c.sp()
    if c.peek() == 40:
        flags = c.flag_list()
    else:
        flags = [c.flag()]
        while c.maybe_sp():
            flags.append(c.flag())
    return {"set": s, "mode": mode, "silent": silent, "flags": flags, "unchangedsince": unchangedsince}


_SIMPLE_FETCH = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
                 "BODYSTRUCTURE", "UID", "MODSEQ", "BODY", "SAVEDATE", "EMAILID", "THREADID"}
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


def _section(c: Cursor, binary: bool = False) -> Section:
    c.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while 48 <= c.peek() <= 57:
        part.append(c.nz_number())
        if len(part) > MAX_DEPTH:
            raise c.err("section part too deep")
        if not c.take(b"."):
            break
    if c.peek() != 93 and not binary:
        if part and c.d[c.i - 1] != 46:
            raise c.err("expected '.' in section")
        text = c.atom(ATOM_SPECIALS | {ord("[")}).upper()
        if text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME") or (
            text == "MIME" and not part
        ):
            raise c.err("invalid section text")
        if text.startswith("HEADER.FIELDS"):
            c.sp()
            c.expect(b"(")
            names: list[str] = []
            while c.peek() != 41:
                if names:
                    c.sp()
                names.append(c.utf8(c.astring()))
                if len(names) > 1000:
                    raise c.err("too many header fields")
            c.i += 1
            if not names:
                raise c.err("empty header field list")
            fields = tuple(names)
    c.expect(b"]")
    return Section(tuple(part), text, fields)


def _partial(c: Cursor) -> tuple[int, int] | None:
    if not c.take(b"<"):
        return None
    start = c.number()
    c.expect(b".")
    n = c.nz_number()
    c.expect(b">")
    return (start, n)


def _fetch_att(c: Cursor) -> list[FetchAtt]:
    name = c.atom(ATOM_SPECIALS | {ord("["), ord("<")}).upper()
    if name in _MACROS:
        return [FetchAtt(n) for n in _MACROS[name]]
    if name in ("BODY", "BODY.PEEK") and c.peek() == 91:
        sec = _section(c)
        return [FetchAtt("BODY", sec, _partial(c), peek=name == "BODY.PEEK")]
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and c.peek() == 91:  # RFC 3516
        sec = _section(c, binary=True)
        if name == "BINARY.SIZE":
            return [FetchAtt("BINARY.SIZE", sec)]
        return [FetchAtt("BINARY", sec, _partial(c), peek=name == "BINARY.PEEK")]
    if name in _SIMPLE_FETCH:
        return [FetchAtt(name)]
    raise c.err(f"unknown FETCH item {name}")


def _fetch(c: Cursor) -> dict[str, Any]:
    c.sp()
    s = c.seqset()
    c.sp()
    atts: list[FetchAtt] = []
    if c.take(b"("):
        while c.peek() != 41:
            if atts:
                c.sp()
            atts.extend(_fetch_att(c))
            if len(atts) > 200:
                raise c.err("too many FETCH items")
        c.i += 1
    else:
        atts = _fetch_att(c)
    mods: dict[str, Any] = {}
    if c.maybe_sp():  # RFC 7162 §3.1.4.1 CHANGEDSINCE, §3.2.6 VANISHED
        c.expect(b"(")
        while c.peek() != 41:
            if mods:
                c.sp()
            m = c.atom().upper()
            if m == "CHANGEDSINCE":
                c.sp()
                mods["CHANGEDSINCE"] = c.number()
            elif m == "VANISHED":
                mods["VANISHED"] = True
            else:
                raise c.err(f"unknown FETCH modifier {m}")
        c.i += 1
    return {"set": s, "atts": atts, "modifiers": mods}


# SEARCH keys (RFC 3501 §6.4.4, RFC 9051 §6.4.4, RFC 7162 MODSEQ) ---------------------------------

_SEARCH_NOARG = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED",
                 "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
_SEARCH_STRING = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATE = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_SEARCH_FLAG = {"KEYWORD", "UNKEYWORD"}
_SEARCH_NUMBER = {"LARGER", "SMALLER", "OLDER", "YOUNGER"}


def _search_key(c: Cursor, charset: str, depth: int) -> tuple[Any, ...]:
    if depth > MAX_DEPTH:
        raise c.err("search too deeply nested")
    if c.take(b"("):
        keys = [_search_key(c, charset, depth + 1)]
        while c.maybe_sp():
            keys.append(_search_key(c, charset, depth + 1))
            if len(keys) > MAX_ITEMS:
                raise c.err("too many search keys")
        c.expect(b")")
        return ("AND", tuple(keys))
    ch = c.peek()
    if 48 <= ch <= 57 or ch in (42, 36):  # sequence set, or $ (RFC 5182 SEARCHRES)
        return ("SEQ", c.seqset())
    name = c.atom().upper()
    if name in _SEARCH_NOARG:
        return (name,)
    if name in _SEARCH_STRING:
        c.sp()
        return (name, _search_text(c, charset))
    if name in _SEARCH_DATE:
        c.sp()
        return (name, c.date())
    if name in _SEARCH_FLAG:
        c.sp()
        return (name, c.flag())
    if name in _SEARCH_NUMBER:
        c.sp()
        return (name, c.number())
    if name == "HEADER":
        c.sp()
        field_name = c.utf8(c.astring()).lower()
        c.sp()
        return (name, field_name, _search_text(c, charset))
    if name == "UID":
        c.sp()
        return ("UID", c.seqset())
    if name == "NOT":
        c.sp()
        return ("NOT", _search_key(c, charset, depth + 1))
    if name == "OR":
        c.sp()
        a = _search_key(c, charset, depth + 1)
        c.sp()
        return ("OR", a, _search_key(c, charset, depth + 1))
    if name == "MODSEQ":  # RFC 7162 §3.1.5; entry name and type are accepted and ignored
        c.sp()
        if c.peek() == 34:
            c.quoted()
            c.sp()
            c.atom()
            c.sp()
        return ("MODSEQ", c.number())
    raise c.err(f"unknown search key {name}")


def _search_text(c: Cursor, charset: str) -> str:
    raw = c.astring()
    try:
        return raw.decode("utf-8" if charset in ("UTF-8", "US-ASCII", "") else charset)
    except (LookupError, UnicodeDecodeError) as e:
        raise ParseError("invalid search string for the charset", c.tag, "BADCHARSET") from e


def _search(c: Cursor) -> dict[str, Any]:
    c.sp()
    ret: list[str] | None = None
    if c.take(b"RETURN ("):  # RFC 4731 ESEARCH
        ret = []
        while c.peek() != 41:
            if ret:
                c.sp()
            opt = c.atom().upper()
            if opt not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
                raise c.err(f"unknown SEARCH return option {opt}")
            ret.append(opt)
        c.i += 1
        c.sp()
    charset = ""
    if c.take(b"CHARSET "):
        charset = c.utf8(c.astring()).upper()
        if charset not in ("UTF-8", "US-ASCII"):
            raise ParseError("unsupported charset", c.tag, "BADCHARSET (US-ASCII UTF-8)")
        c.sp()
    keys = [_search_key(c, charset, 0)]
    while c.maybe_sp():
        keys.append(_search_key(c, charset, 0))
        if len(keys) > MAX_ITEMS:
            raise c.err("too many search keys")
    key = keys[0] if len(keys) == 1 else ("AND", tuple(keys))
    return {"return": ret, "charset": charset, "key": key}


def _sort(c: Cursor) -> dict[str, Any]:  # RFC 5256 SORT
    c.sp()
    c.expect(b"(")
    crit: list[tuple[bool, str]] = []
    rev = False
    while c.peek() != 41:
        if crit or rev:
            c.sp()
        k = c.atom().upper()
        if k == "REVERSE":
            rev = True
            continue
        if k not in ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"):
            raise c.err(f"unknown sort key {k}")
        crit.append((rev, k))
        rev = False
    c.i += 1
    if not crit:
        raise c.err("empty sort criteria")
    c.sp()
    charset = c.utf8(c.astring()).upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise ParseError("unsupported charset", c.tag, "BADCHARSET (US-ASCII UTF-8)")
    keys = []
    while c.maybe_sp():
        keys.append(_search_key(c, charset, 0))
    if not keys:
        raise c.err("SORT needs search keys")
    return {"criteria": crit, "charset": charset, "key": keys[0] if len(keys) == 1 else ("AND", tuple(keys))}


# The grammar of every command, as data: name -> argument parser (RFC 9051 §6).
ARGUMENTS: dict[str, Callable[[Cursor], dict[str, Any]]] = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none, "ID": _id,
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "ENABLE": _enable,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_only,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_only, "UNSUBSCRIBE": _mailbox_only, "LIST": _list,
    "LSUB": _lsub, "NAMESPACE": _none, "STATUS": _status, "APPEND": _append, "IDLE": _none,
    "CHECK": _none, "CLOSE": _none, "UNSELECT": _none, "EXPUNGE": _none,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "SORT": _sort,
}
UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT"})


def parse_tag(data: bytes) -> str:
    c = Cursor(data)
    try:
        return c.atom(TAG_SPECIALS)
    except ParseError:
        return "*"


def parse_command(data: bytes) -> Command:
    c = Cursor(data)
    try:
        tag = c.atom(TAG_SPECIALS)
    except ParseError as e:
        raise ParseError("missing or invalid tag", "*") from e
    c.tag = tag
    c.sp()
    name = c.atom().upper()
    uid = False
    if name == "UID":
        c.sp()
        name = c.atom().upper()
        if name not in UID_COMMANDS:
            raise c.err(f"UID {name} is not a command")
        uid = True
        if name == "EXPUNGE":  # RFC 4315 UID EXPUNGE takes a UID set
            args = _seqset_only(c)
            c.end()
            return Command(tag, name, True, args)
    fn = ARGUMENTS.get(name)
    if fn is None:
        raise c.err("unknown command")
    args = fn(c)
    c.end()
    return Command(tag, name, uid, args)
