"""IMAP lexical layer (RFC 3501 §9 / RFC 9051 §9 terminals): a Cursor over one command's bytes,
and the value types the grammar produces. No I/O. Every limit is explicit (MAX_DEPTH, MAX_ITEMS)."""

from __future__ import annotations

import datetime as dt
import re
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


def byte_class(specials: frozenset[int]) -> bytes:
    """A regex character class matching one byte not in `specials`."""
    excluded = b"".join(b"\\x%02x" % c for c in sorted(specials) if 0 <= c <= 255)
    return b"[^" + excluded + b"]" if excluded else rb"[\x00-\xff]"


# Regexes doing in C what the byte-at-a-time loops below would do in Python (same results).
_RUN_PATTERNS: dict[frozenset[int], re.Pattern[bytes]] = {}
_DIGITS = re.compile(rb"[0-9]*")
# A quoted string without escapes (the common case); anything else takes the general loop.
_PLAIN_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*)"')
# A whole sequence set (RFC 3501 "sequence-set"), checked number by number afterwards.
_SEQ_ITEM = rb"(?:\*|[0-9]+)(?::(?:\*|[0-9]+))?"
_SEQSET = re.compile(_SEQ_ITEM + rb"(?:," + _SEQ_ITEM + rb")*")
# A whole flag list, "(" [flag *(SP flag)] ")" (RFC 3501 "flag-list").
_FLAG = rb"(?:\\\*|\\?" + byte_class(FLAG_SPECIALS) + rb"+)"
_FLAG_LIST = re.compile(rb"\((?:" + _FLAG + rb"(?: " + _FLAG + rb")*)?\)")
# Printable ASCII without "&": a mailbox name that modified UTF-7 decoding leaves as it is.
_PLAIN_MAILBOX = re.compile(rb"[\x20-\x25\x27-\x7e]*")


def _run_pattern(specials: frozenset[int]) -> re.Pattern[bytes]:
    """The regex matching the longest run of bytes not in `specials` (cached per set)."""
    p = _RUN_PATTERNS.get(specials)
    if p is None:
        p = re.compile(byte_class(specials) + b"*")
        if len(_RUN_PATTERNS) < 64:  # only the module's few constant sets, in practice
            _RUN_PATTERNS[specials] = p
    return p


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
        """Consume `b` (ASCII case-insensitively) if it comes next."""
        if self.d.startswith(b, self.i) or self.d[self.i : self.i + len(b)].upper() == b.upper():
            self.i += len(b)
            return True
        return False

    def expect(self, b: bytes) -> None:
        if not self.take(b):
            raise self.err(f"expected {b.decode()}")

    def _run(self, specials: frozenset[int]) -> bytes:
        """Consume and return the longest run of bytes not in `specials` (maybe empty)."""
        pattern = _RUN_PATTERNS.get(specials) or _run_pattern(specials)
        out = pattern.match(self.d, self.i).group()
        self.i += len(out)
        return out

    def atom(self, specials: frozenset[int] = ATOM_SPECIALS) -> str:
        a = self._run(specials)
        if not a:
            raise self.err("expected an atom")
        return a.decode("ascii")

    def number(self) -> int:
        digits = _DIGITS.match(self.d, self.i).group()
        if not digits or len(digits) > 20:
            raise self.err("expected a number")
        n = int(digits)
        self.i += len(digits)
        if n > 2**63 - 1:
            raise self.err("number too large")
        return n

    def nz_number(self) -> int:
        n = self.number()
        if n == 0 or n > 0xFFFFFFFF:
            raise self.err("expected a non-zero 32-bit number")
        return n

    def quoted(self) -> bytes:
        m = _PLAIN_QUOTED.match(self.d, self.i)
        if m is not None:
            self.i = m.end()
            return m.group(1)
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
        if self.peek() == 43:  # "+": LITERAL+
            self.i += 1
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
            if self.peek() == 42:
                self.i += 1
                return "\\*"
            return "\\" + self.atom(FLAG_SPECIALS).capitalize()
        return self.atom(FLAG_SPECIALS)

    def flag_list(self) -> list[str]:
        m = _FLAG_LIST.match(self.d, self.i)
        if m is not None:
            listed = m.group()[1:-1].decode("ascii")
            flags = [_flag_name(f) for f in listed.split(" ")] if listed else []
            if len(flags) <= MAX_ITEMS:
                self.i = m.end()
                return flags
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
        if self.peek() == 36:  # "$"
            self.i += 1
            return SeqSet(saved=True)
        fast = self._seqset_fast()
        if fast is not None:
            return fast
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

    def _seqset_fast(self) -> SeqSet | None:
        """A well-formed sequence set matched with one regex; None (nothing consumed) for anything
        seqset's loop would refuse or stop early on, so that the loop gives the exact error."""
        m = _SEQSET.match(self.d, self.i)
        if m is None or self.d[m.end() : m.end() + 1] in (b",", b":"):
            return None
        ranges: list[tuple[int | None, int | None]] = []
        for item in m.group().split(b","):
            lo_s, colon, hi_s = item.partition(b":")
            lo = _seq_number(lo_s)
            hi = _seq_number(hi_s) if colon else lo
            if lo == 0 or hi == 0:
                return None
            ranges.append((lo, hi))
        if len(ranges) > MAX_ITEMS:
            return None
        self.i = m.end()
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


def _flag_name(f: str) -> str:
    """A flag as Cursor.flag reads it: system flags (and \\*) capitalized."""
    return "\\" + f[1:].capitalize() if f[:1] == "\\" else f


def _seq_number(s: bytes) -> int | None:
    """A sequence-set number as Cursor.seqset reads it: "*" is None, and 0 stands for anything
    nz_number would refuse (zero, over 32 bits, more than 20 digits)."""
    if s == b"*":
        return None
    if len(s) > 20:
        return 0
    n = int(s)
    return n if n <= 0xFFFFFFFF else 0


def decode_mailbox(raw: bytes, tag: str = "*", *, inbox: bool = True) -> str:
    if _PLAIN_MAILBOX.fullmatch(raw):  # nothing for modified UTF-7 to decode or refuse
        s = raw.decode("ascii")
        return _inbox(s) if inbox else s
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
