"""Parser and framing: every grammar element, with hypothesis, plus hostile input."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssante.imap import framing, mutf7, response
from mssante.imap.parser import ARGUMENTS, ParseError, SeqSet, parse_command


# --- modified UTF-7 (RFC 3501 §5.1.3) ----------------------------------------------------------------
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), min_codepoint=0x20), max_size=40))
def test_mutf7_roundtrip(name: str) -> None:
    enc = mutf7.encode(name)
    assert all(0x20 <= ord(c) <= 0x7E for c in enc)
    assert mutf7.decode(enc) == name


@pytest.mark.parametrize("bad", ["&", "&Jjo", "&Jjo!-", "&AGE-", "&2D3-", "&Jjo-&Jjo-", "caf\xe9", "&AAA-", "\x01"])
def test_mutf7_invalid_refused(bad: str) -> None:
    with pytest.raises(mutf7.MUtf7Error):
        mutf7.decode(bad)


def test_mutf7_known_values() -> None:
    assert mutf7.encode("Éléments envoyés") == "&AMk-l&AOk-ments envoy&AOk-s"
    assert mutf7.decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert mutf7.encode("a&b") == "a&-b"


def test_invalid_mutf7_mailbox_is_bad() -> None:
    with pytest.raises(ParseError) as e:
        parse_command(b"a SELECT &Jjo\r\n")
    assert e.value.tag == "a"


# --- atoms, strings, literals ----------------------------------------------------------------------
_ASTR = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters='(){ %*"\\]'),
                min_size=1, max_size=30)


@given(_ASTR, st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))
def test_login_atom_quoted_literal(user: str, pw: str) -> None:
    quoted = '"' + pw.replace("\\", "\\\\").replace('"', '\\"') + '"'
    c = parse_command(f"t1 LOGIN {user} {quoted}\r\n".encode())
    assert c.args == {"user": user, "password": pw}
    lit = f"t2 LOGIN {user} {{{len(pw.encode())}}}\r\n{pw}\r\n".encode()
    assert parse_command(lit).args["password"] == pw


@given(st.binary(max_size=50))
def test_parser_never_crashes(data: bytes) -> None:
    try:
        parse_command(data)
    except ParseError:
        pass


@given(st.sampled_from(sorted(ARGUMENTS)), st.binary(max_size=40))
def test_every_command_total(name: str, tail: bytes) -> None:
    try:
        parse_command(b"a " + name.encode() + b" " + tail + b"\r\n")
    except ParseError:
        pass


@pytest.mark.parametrize("line", [
    b'a LOGIN "unterminated\r\n', b"a LOGIN user {10}\r\nabc\r\n", b'a LOGIN "bad\\escape" x\r\n',
    b"a FETCH 1 (" + b"(" * 100 + b"\r\n", b"a SEARCH " + b"(" * 100 + b"ALL" + b")" * 100 + b"\r\n",
    b"a SEARCH " + b"NOT " * 100 + b"ALL\r\n", b"a FETCH 0 FLAGS\r\n", b"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n",
    b"a FOO\r\n", b"a UID NOOP\r\n", b"\r\n", b"a STORE 1 FLAGS\r\n", b"a SELECT\r\n", b"a LOGIN a\x00 b\r\n",
])
def test_bad_syntax_is_parse_error(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse_command(line)


# --- sequence sets ------------------------------------------------------------------------------------
@given(st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)), min_size=1, max_size=10))
def test_seqset(ranges: list[tuple[int, int]]) -> None:
    text = ",".join(f"{a}:{b}" for a, b in ranges)
    s = parse_command(f"a UID FETCH {text} FLAGS\r\n".encode()).args["set"]
    assert s.ranges == tuple(ranges)
    for a, b in ranges:
        assert s.contains(a, 5) and s.contains(b, 5)


def test_seqset_star_and_saved() -> None:
    s = parse_command(b"a FETCH 2:* FLAGS\r\n").args["set"]
    assert s == SeqSet(((2, None),))
    assert s.expand(4) == [2, 3, 4]
    assert parse_command(b"a FETCH $ FLAGS\r\n").args["set"].saved


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=50))
def test_seqset_render_roundtrip(nums: list[int]) -> None:
    text = response.seqset(nums).decode()
    s = parse_command(f"a UID FETCH {text} FLAGS\r\n".encode()).args["set"]
    assert s.expand(1000) == sorted(set(nums))


# --- FETCH items, sections and partials ---------------------------------------------------------------
def test_fetch_items() -> None:
    c = parse_command(b"a UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (Subject From)]<0.100> BINARY[2] "
                      b"BODYSTRUCTURE MODSEQ) (CHANGEDSINCE 5 VANISHED)\r\n")
    assert c.uid and c.args["modifiers"] == {"CHANGEDSINCE": 5, "VANISHED": True}
    atts = c.args["atts"]
    assert atts[1].peek and atts[1].section.part == (1, 2) and atts[1].section.fields == ("Subject", "From")
    assert atts[1].partial == (0, 100) and atts[2].name == "BINARY"
    assert [a.name for a in parse_command(b"a FETCH 1 ALL\r\n").args["atts"]] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]


@given(st.lists(st.integers(1, 50), min_size=1, max_size=5),
       st.sampled_from(["", "HEADER", "TEXT", "MIME", "HEADER.FIELDS (A)", "HEADER.FIELDS.NOT (B C)"]))
def test_sections(parts: list[int], text: str) -> None:
    spec = ".".join(map(str, parts)) + (("." + text) if text else "")
    c = parse_command(f"a FETCH 1 BODY[{spec}]\r\n".encode())
    assert c.args["atts"][0].section.part == tuple(parts)


# --- SEARCH ------------------------------------------------------------------------------------------
def test_search_keys() -> None:
    c = parse_command(b'a UID SEARCH RETURN (MIN COUNT SAVE) CHARSET UTF-8 OR FROM "x" (SUBJECT {3}\r\n\xc3\xa9t '
                      b"SINCE 1-Jan-2026) NOT DELETED UID 1:* 2,4 LARGER 10 HEADER X-MSS-MES FIN "
                      b"KEYWORD $Foo MODSEQ 7 YOUNGER 60\r\n")
    key = c.args["key"]
    assert key[0] == "AND" and key[1][0][0] == "OR"
    assert key[1][0][2][1][0] == ("SUBJECT", "ét")
    assert key[1][0][2][1][1] == ("SINCE", dt.date(2026, 1, 1))
    assert c.args["return"] == ["MIN", "COUNT", "SAVE"]


def test_search_bad_charset() -> None:
    with pytest.raises(ParseError) as e:
        parse_command(b"a SEARCH CHARSET KOI8-R ALL\r\n")
    assert e.value.code and e.value.code.startswith("BADCHARSET")


# --- other commands ------------------------------------------------------------------------------------
def test_select_qresync_list_extended_append_store() -> None:
    c = parse_command(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n")
    assert c.args["qresync"][0] == 67890007
    c = parse_command(b'a LIST (SUBSCRIBED) "" ("INBOX" "Sent/%") RETURN (CHILDREN STATUS (MESSAGES SIZE))\r\n')
    assert c.args["patterns"] == ["INBOX", "Sent/%"] and c.args["return"]["STATUS"] == ["MESSAGES", "SIZE"]
    c = parse_command(b'a APPEND Drafts (\\Draft) " 1-Feb-2026 10:00:00 +0100" {3+}\r\nabc {2+}\r\nde\r\n')
    assert [m[2] for m in c.args["messages"]] == [b"abc", b"de"]
    c = parse_command(b"a STORE 1:3 (UNCHANGEDSINCE 12) -FLAGS.SILENT (\\seen $Label)\r\n")
    assert c.args["flags"] == ["\\Seen", "$Label"] and c.args["silent"] and c.args["mode"] == "-"
    c = parse_command(b"a AUTHENTICATE PLAIN =\r\n")
    assert c.args["initial"] == b""
    c = parse_command(b'a ID ("name" "Thunderbird" "version" NIL)\r\n')
    assert c.args["params"] == [("name", "Thunderbird"), ("version", None)]


# --- framing: sizes checked before reading --------------------------------------------------------------
def test_literal_too_big_refused_before_reading() -> None:
    r = framing.CommandReader(append_limit=1000)
    r.feed(b"a APPEND INBOX {5000}\r\n")
    ev = r.next_event()
    assert isinstance(ev, framing.Refuse) and ev.tag == "a" and b"TOOBIG" in ev.response
    assert r.buffered == 0


def test_nonsync_literal_too_big_is_discarded_not_buffered() -> None:
    r = framing.CommandReader(append_limit=1000)
    r.feed(b"a APPEND INBOX {1500+}\r\n" + b"x" * 700)
    assert r.next_event() is None and r.buffered == 0
    r.feed(b"x" * 800 + b"\r\nb NOOP\r\n")
    ev = r.next_event()
    assert isinstance(ev, framing.Refuse)
    assert r.next_event() == framing.CommandBytes(b"\r\n")
    assert r.next_event() == framing.CommandBytes(b"b NOOP\r\n")


def test_huge_nonsync_literal_is_fatal() -> None:
    r = framing.CommandReader(append_limit=1000)
    r.feed(b"a APPEND INBOX {99999999+}\r\n")
    assert isinstance(r.next_event(), framing.Fatal)


def test_sync_literal_continuation() -> None:
    r = framing.CommandReader()
    r.feed(b"a LOGIN {4}\r\n")
    assert isinstance(r.next_event(), framing.Continue)
    r.feed(b"user {4}\r\n")
    assert isinstance(r.next_event(), framing.Continue)
    r.feed(b"pass\r\n")
    assert r.next_event() == framing.CommandBytes(b"a LOGIN {4}\r\nuser {4}\r\npass\r\n")


def test_long_line_is_fatal() -> None:
    r = framing.CommandReader(max_line=100)
    r.feed(b"a " + b"x" * 200)
    assert isinstance(r.next_event(), framing.Fatal)


def test_non_append_literal_limit() -> None:
    r = framing.CommandReader(max_literal=100)
    r.feed(b"a LOGIN {1000}\r\n")
    ev = r.next_event()
    assert isinstance(ev, framing.Refuse) and ev.response.startswith(b"BAD")


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=30), max_size=10))
def test_framing_never_crashes(chunks: list[bytes]) -> None:
    r = framing.CommandReader(max_line=64, max_literal=32, append_limit=64, max_command=256)
    for c in chunks:
        r.feed(c)
        for _ in range(20):
            if r.next_event() is None:
                break
