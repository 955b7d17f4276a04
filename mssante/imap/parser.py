"""IMAP command parser (RFC 3501 §9 / RFC 9051 §9 grammar). No I/O.

`parse_command(data)` takes one whole command as framed by `framing.CommandReader`
(literals inline) and returns a `Command`. Errors are `ParseError` carrying the tag (so the
session answers "<tag> BAD ...") and never the client's bytes in a log.

The argument grammar of each command is data: `ARGUMENTS[name]` names the parse function.
The terminals (atoms, strings, literals, sequence sets, dates) live in mssante.imap.lexer.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from mssante.imap.lexer import (
    ATOM_SPECIALS,
    MAX_DEPTH,
    MAX_ITEMS,
    TAG_SPECIALS,
    Command,
    Cursor,
    FetchAtt,
    ParseError,
    Section,
    SeqSet,
    byte_class,
    decode_mailbox,
)

__all__ = ["ARGUMENTS", "UID_COMMANDS", "Command", "Cursor", "FetchAtt", "ParseError", "Section", "SeqSet",
           "decode_mailbox", "parse_command", "parse_tag"]

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


_STORE_ITEM = re.compile(rb"([+-]?)FLAGS(\.SILENT)? ", re.IGNORECASE)  # ["+"/"-"] "FLAGS" [".SILENT"] SP


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
    m = _STORE_ITEM.match(c.d, c.i)
    if m is not None:
        c.i = m.end()
        mode = m.group(1).decode("ascii")
        silent = m.group(2) is not None
    else:  # the same steps one by one, for their errors
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
# FetchAtt is frozen: the plain items are built once and shared by every command.
_SIMPLE_ATTS = {name: FetchAtt(name) for name in _SIMPLE_FETCH}
_MACRO_ATTS = {macro: [_SIMPLE_ATTS[name] for name in names] for macro, names in _MACROS.items()}
_WHOLE_MESSAGE = Section()
_WHOLE_BODY = {peek: FetchAtt("BODY", _WHOLE_MESSAGE, peek=peek) for peek in (False, True)}  # BODY[], BODY.PEEK[]
# A parenthesized list of plain items only, e.g. "(UID FLAGS RFC822.SIZE)": one regex instead of _fetch_att each.
_SIMPLE_NAME = b"(?:" + b"|".join(re.escape(n.encode()) for n in sorted(_SIMPLE_FETCH, key=len, reverse=True)) + b")"
_SIMPLE_ATT_LIST = re.compile(rb"\(" + _SIMPLE_NAME + rb"(?: " + _SIMPLE_NAME + rb")*\)", re.IGNORECASE)
_SECTION_TEXT_SPECIALS = ATOM_SPECIALS | {ord("[")}
_FETCH_ATT_SPECIALS = ATOM_SPECIALS | {ord("["), ord("<")}


def _section(c: Cursor, binary: bool = False) -> Section:
    if c.d.startswith(b"[]", c.i):
        c.i += 2
        return _WHOLE_MESSAGE
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
        text = c.atom(_SECTION_TEXT_SPECIALS).upper()
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
    name = c.atom(_FETCH_ATT_SPECIALS).upper()
    att = _SIMPLE_ATTS.get(name)
    if att is not None and (name != "BODY" or c.peek() != 91):  # BODY[...] is read below
        return [att]
    if name in _MACRO_ATTS:
        return list(_MACRO_ATTS[name])
    if name in ("BODY", "BODY.PEEK") and c.peek() == 91:
        sec = _section(c)
        partial = _partial(c)
        if sec is _WHOLE_MESSAGE and partial is None:
            return [_WHOLE_BODY[name == "BODY.PEEK"]]
        return [FetchAtt("BODY", sec, partial, peek=name == "BODY.PEEK")]
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and c.peek() == 91:  # RFC 3516
        sec = _section(c, binary=True)
        if name == "BINARY.SIZE":
            return [FetchAtt("BINARY.SIZE", sec)]
        return [FetchAtt("BINARY", sec, _partial(c), peek=name == "BINARY.PEEK")]
    raise c.err(f"unknown FETCH item {name}")


def _fetch(c: Cursor) -> dict[str, Any]:
    c.sp()
    s = c.seqset()
    c.sp()
    atts: list[FetchAtt] = []
    m = _SIMPLE_ATT_LIST.match(c.d, c.i)
    if m is not None and m.group().count(b" ") < 200:  # at most 200 items, as below
        c.i = m.end()
        atts = [_SIMPLE_ATTS[n] for n in m.group()[1:-1].decode("ascii").upper().split(" ")]
    elif c.take(b"("):
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


def _thread(c: Cursor) -> dict[str, Any]:  # RFC 5256 THREAD
    c.sp()
    algo = c.atom().upper()
    if algo != "ORDEREDSUBJECT":
        raise c.err(f"unsupported threading algorithm {algo}")
    c.sp()
    charset = c.utf8(c.astring()).upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise ParseError("unsupported charset", c.tag, "BADCHARSET (US-ASCII UTF-8)")
    keys = []
    while c.maybe_sp():
        keys.append(_search_key(c, charset, 0))
    if not keys:
        raise c.err("THREAD needs search keys")
    return {"algorithm": algo, "charset": charset, "key": keys[0] if len(keys) == 1 else ("AND", tuple(keys))}


# The grammar of every command, as data: name -> argument parser (RFC 9051 §6).
ARGUMENTS: dict[str, Callable[[Cursor], dict[str, Any]]] = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none, "ID": _id,
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "ENABLE": _enable,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_only,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_only, "UNSUBSCRIBE": _mailbox_only, "LIST": _list,
    "LSUB": _lsub, "NAMESPACE": _none, "STATUS": _status, "APPEND": _append, "IDLE": _none,
    "CHECK": _none, "CLOSE": _none, "UNSELECT": _none, "EXPUNGE": _none,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "SORT": _sort,
    "THREAD": _thread,
}
UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"})


def parse_tag(data: bytes) -> str:
    c = Cursor(data)
    try:
        return c.atom(TAG_SPECIALS)
    except ParseError:
        return "*"


# "<tag> <name>", what parse_command's atom(TAG_SPECIALS), sp(), atom() read, in one regex.
_TAG_AND_NAME = re.compile(b"(" + byte_class(TAG_SPECIALS) + b"+) (" + byte_class(ATOM_SPECIALS) + b"+)")


def parse_command(data: bytes) -> Command:
    c = Cursor(data)
    m = _TAG_AND_NAME.match(data)
    if m is not None:
        tag = m.group(1).decode("ascii")
        name = m.group(2).decode("ascii").upper()
        c.tag = tag
        c.i = m.end()
    else:  # the same steps one by one, for their errors
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
