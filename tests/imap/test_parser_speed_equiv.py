"""The parser's regex fast paths (sequence sets, flag lists, plain FETCH item lists, STORE items,
quoted strings) against plain reference readings of the same grammar rules, on generated input:
a fast path must accept exactly what the rule accepts, with the same result, and leave everything
else to the general code (which gives the error)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssante.imap.lexer import MAX_ITEMS
from mssante.imap.parser import ParseError, parse_command


def ref_seqset(text: str) -> tuple[tuple[int | None, int | None], ...] | None:
    """RFC 3501 sequence-set as the parser reads it; None if not one."""
    ranges = []
    for item in text.split(","):
        ends = item.split(":")
        if len(ends) > 2:
            return None
        values = []
        for e in ends:
            if e == "*":
                values.append(None)
            elif e.isdigit() and e.isascii() and len(e) <= 20 and 0 < int(e) <= 0xFFFFFFFF:
                values.append(int(e))
            else:
                return None
        ranges.append((values[0], values[-1]))
    return tuple(ranges) if len(ranges) <= MAX_ITEMS else None


_NUM = st.one_of(st.integers(0, 2**33).map(str), st.sampled_from(["*", "", "0", "00", "007", "4294967295", "4294967296",
                                                                    "9" * 20, "0" * 20 + "1", "0" * 19 + "1"]))
_SET = st.lists(st.tuples(_NUM, st.sampled_from(["", ":", "::"]), _NUM), min_size=1, max_size=6).map(
    lambda items: ",".join(a + sep + (b if sep else "") for a, sep, b in items))


@settings(max_examples=400)
@given(_SET, st.sampled_from(["", ",", ":", "*", "x"]))
def test_seqset_matches_reference(text: str, tail: str) -> None:
    text += tail
    want = ref_seqset(text)
    try:
        got = parse_command(f"t STORE {text} FLAGS (\\Seen)\r\n".encode()).args["set"].ranges
    except ParseError as e:
        assert want is None and e.tag == "t"
        return
    assert got == want


@pytest.mark.parametrize(("text", "msg"), [
    ("0", "expected a non-zero 32-bit number"), ("4294967296", "expected a non-zero 32-bit number"),
    ("99999999999999999999", "number too large"), ("0" * 20 + "1", "expected a number"),
    ("1,", "expected a number"), ("1:", "expected a number"), ("1:2:3", "expected a space"),
    (",".join(["1"] * (MAX_ITEMS + 1)), "sequence set too long"), ("*5", "expected a space"),
])
def test_seqset_errors(text: str, msg: str) -> None:
    with pytest.raises(ParseError, match=msg):
        parse_command(f"t FETCH {text} FLAGS\r\n".encode())


_FLAG_ATOM = st.text(st.sampled_from("aSeEnN$_-.1\\*%]("), min_size=0, max_size=6)


def ref_flags(items: list[str]) -> list[str] | None:
    """RFC 3501 flag-list contents as the parser reads them (system flags capitalized)."""
    if items == [""]:  # "()"
        return []
    out = []
    for f in items:
        if f == "\\*":
            out.append(f)
            continue
        body = f[1:] if f.startswith("\\") else f
        if not body or any(ch in '(){ %*"\\]' for ch in body):
            return None
        out.append("\\" + body.capitalize() if f.startswith("\\") else body)
    return out


@settings(max_examples=400)
@given(st.lists(_FLAG_ATOM, max_size=5))
def test_flag_list_matches_reference(items: list[str]) -> None:
    want = ref_flags(items)
    try:
        got = parse_command(f"t STORE 1 +FLAGS ({' '.join(items)})\r\n".encode()).args["flags"]
    except ParseError:
        assert want is None
        return
    assert got == want


_PLAIN = ["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
          "BODYSTRUCTURE", "UID", "MODSEQ", "BODY", "SAVEDATE", "EMAILID", "THREADID"]
_ITEM = st.one_of(st.sampled_from([*_PLAIN, "FAST", "BODY[]", "BODY.PEEK[]<0.10>", "RFC822.SIZ", "UIDS", "BODY[", ""]),
                  st.sampled_from(_PLAIN).map(str.lower))


@settings(max_examples=400)
@given(st.lists(_ITEM, max_size=6), st.sampled_from([" ", "  "]))
def test_fetch_items_match_reference(items: list[str], sep: str) -> None:
    valid = sep == " " and all(i.upper() in _PLAIN for i in items)
    try:
        atts = parse_command(f"t FETCH 1 ({sep.join(items)})\r\n".encode()).args["atts"]
    except ParseError:
        assert not valid
        return
    if valid:
        assert [(a.name, a.section, a.partial, a.peek) for a in atts] == [(i.upper(), None, None, False) for i in items]


def test_fetch_item_limit() -> None:
    assert len(parse_command(b"t FETCH 1 (" + b" ".join([b"UID"] * 200) + b")\r\n").args["atts"]) == 200
    with pytest.raises(ParseError, match="too many FETCH items"):
        parse_command(b"t FETCH 1 (" + b" ".join([b"UID"] * 201) + b")\r\n")


@pytest.mark.parametrize(("item", "want"), [
    ("FLAGS", ("", False)), ("+flags", ("+", False)), ("-FLAGS.silent", ("-", True)), ("+FLAGS.SILENT", ("+", True)),
    ("FLAGS.SILENTX", None), ("*FLAGS", None), ("+FLAG", None), ("+-FLAGS", None),
])
def test_store_item(item: str, want: tuple[str, bool] | None) -> None:
    line = f"t STORE 1 {item} (\\Seen)\r\n".encode()
    if want is None:
        with pytest.raises(ParseError):
            parse_command(line)
    else:
        args = parse_command(line).args
        assert (args["mode"], args["silent"]) == want


@given(st.text(st.characters(min_codepoint=1, max_codepoint=0x7E), max_size=12))
def test_quoted_matches_reference(pw: str) -> None:
    """A quoted string with or without escapes; CR, LF and NUL never inside one."""
    quoted = '"' + pw.replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        got = parse_command(f"t LOGIN u {quoted}\r\n".encode()).args["password"]
    except ParseError:
        assert any(ch in pw for ch in "\r\n")
        return
    assert got == pw


def test_flag_list_limit() -> None:
    flags = parse_command(b"t STORE 1 FLAGS (" + b" ".join([b"a"] * MAX_ITEMS) + b")\r\n").args["flags"]
    assert len(flags) == MAX_ITEMS
    with pytest.raises(ParseError, match="too many flags"):
        parse_command(b"t STORE 1 FLAGS (" + b" ".join([b"a"] * (MAX_ITEMS + 1)) + b")\r\n")
