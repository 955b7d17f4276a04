"""HL7 parser core: examples, line endings, MSH rules, limits, fuzzing (only typed errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from .y_factory import oru, real_file

from mssante.y.hl7 import (
    ErrorCode,
    Hl7Error,
    Hl7Limits,
    escape,
    parse_message,
    unescape,
    validate_structure,
)


@pytest.mark.parametrize("needle", ["INIT_N3_SEGUR", "INIT_N1_N3", "MDM_CR_Radio_INIT_N1.er7", "INIT_N1_Base64"])
def test_ans_examples_parse(real_hl7: Path, needle: str) -> None:
    msg = parse_message(real_file(real_hl7, needle))
    validate_structure(msg)
    assert msg.control_id == "015"
    assert msg.first("PID") is not None and msg.all("OBX")


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_line_endings(sep: str) -> None:
    msg = parse_message(oru(sep=sep))
    assert [s.name for s in msg.segments][:3] == ["MSH", "PID", "PV1"]
    assert msg.type == "ORU^R01" and msg.structure == "ORU_R01"
    assert msg.msh.field(1) == "|" and msg.msh.field(2) == "^~\\&" and msg.msh.field(9) == "ORU^R01^ORU_R01"


def test_components_and_escapes() -> None:
    msg = parse_message(oru())
    pid = msg.first("PID")
    assert pid is not None
    assert pid.component(3, 4, sub=2) == "1.2.250.1.213.1.4.10"
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f") == "a|b^c&d~e\\f"
    assert unescape(escape("x|y^z&w~v\\u")) == "x|y^z&w~v\\u"


@pytest.mark.parametrize("msh2", ["^~\\#", "^~&\\", "^~\\&#"])
def test_wrong_encoding_characters(msh2: str) -> None:
    with pytest.raises(Hl7Error) as exc:
        parse_message(oru(msh2=msh2))
    assert exc.value.code is ErrorCode.DATA_TYPE
    assert exc.value.location is not None and exc.value.location.to_erl() == "MSH^1^2"


def test_wrong_field_separator() -> None:
    data = oru().replace(b"MSH|", b"MSH#", 1)
    with pytest.raises(Hl7Error) as exc:
        parse_message(data)
    assert exc.value.code is ErrorCode.DATA_TYPE


def test_missing_msh() -> None:
    data = oru().split(b"\r", 1)[1]
    with pytest.raises(Hl7Error) as exc:
        parse_message(data)
    assert exc.value.code is ErrorCode.SEGMENT_SEQUENCE


@pytest.mark.parametrize("segment", ["PID", "OBX", "ORC", "OBR"])
def test_missing_required_segment(segment: str) -> None:
    msg = parse_message(oru(drop=(segment,)))
    with pytest.raises(Hl7Error) as exc:
        validate_structure(msg)
    assert exc.value.code is ErrorCode.SEGMENT_SEQUENCE
    assert exc.value.location is not None and exc.value.location.segment == segment


def test_unsupported_type_and_version() -> None:
    with pytest.raises(Hl7Error) as exc:
        validate_structure(parse_message(oru().replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01")))
    assert exc.value.code is ErrorCode.UNSUPPORTED_MESSAGE_TYPE
    with pytest.raises(Hl7Error) as exc:
        validate_structure(parse_message(oru().replace(b"|P|2.5|", b"|P|2.3|")))
    assert exc.value.code is ErrorCode.UNSUPPORTED_VERSION
    with pytest.raises(Hl7Error) as exc:
        validate_structure(parse_message(oru().replace(b"ORU^R01^ORU_R01", b"ORU^R03^ORU_R01")))
    assert exc.value.code is ErrorCode.UNSUPPORTED_EVENT


def test_fifty_megabyte_obx_is_refused_before_parsing() -> None:
    huge = b"A" * (50 * 1024 * 1024)
    data = oru(raw_b64="X").replace(b"Base64^X|", b"Base64^" + huge + b"|")
    with pytest.raises(Hl7Error) as exc:
        parse_message(data)
    assert exc.value.code is ErrorCode.APPLICATION_ERROR
    assert "limit" in str(exc.value)


def test_field_and_segment_limits() -> None:
    with pytest.raises(Hl7Error) as exc:
        parse_message(oru(), Hl7Limits(max_field_bytes=100))
    assert "OBX-5" in str(exc.value)
    with pytest.raises(Hl7Error) as exc:
        parse_message(oru(), Hl7Limits(max_segments=5))
    assert "segments" in str(exc.value)
    with pytest.raises(Hl7Error):
        parse_message(b"MSH|^~\\&|a\r" + b"\r" * 100_000)


def test_bad_charset_and_undecodable_bytes() -> None:
    with pytest.raises(Hl7Error) as exc:
        parse_message(oru().replace(b"UNICODE UTF-8", b"KLINGON"))
    assert exc.value.code is ErrorCode.TABLE_VALUE_NOT_FOUND
    with pytest.raises(Hl7Error) as exc:
        parse_message(oru().replace(b"DUPONT", b"DUP\xffNT"))
    assert exc.value.code is ErrorCode.DATA_TYPE


def test_latin9_charset() -> None:
    data = oru().replace(b"UNICODE UTF-8", b"8859/15").replace(b"DUPONT", "DUPONTÉ".encode("iso8859-15"))
    pid = parse_message(data).first("PID")
    assert pid is not None and pid.component(5, 1) == "DUPONTÉ"


def test_missing_control_id() -> None:
    with pytest.raises(Hl7Error) as exc:
        parse_message(oru().replace(b"|MSG001|", b"||"))
    assert exc.value.code is ErrorCode.REQUIRED_FIELD_MISSING


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_bytes_only_typed_errors(data: bytes) -> None:
    try:
        parse_message(data)
    except Hl7Error:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="MSHPIDOBX|^~\\&\r\n 0123ABC.", max_size=60), max_size=12))
def test_fuzz_structured_only_typed_errors(parts: list[str]) -> None:
    data = ("MSH|^~\\&|" + "".join(parts)).encode()
    try:
        validate_structure(parse_message(data))
    except Hl7Error:
        pass


def test_split_segments_terminators() -> None:
    """CR, LF and CRLF end segments; VT, FF and FS inside a segment do not; blank lines are dropped."""
    from mssante.y.hl7 import Hl7Limits, split_segments

    data = b"MSH|a\r\nPID|b\x0bc\rOBX|d\x0ce\x1cf\n\r\n \t\rNTE|g\r"
    assert split_segments(data, Hl7Limits()) == [b"MSH|a", b"PID|b\x0bc", b"OBX|d\x0ce\x1cf", b"NTE|g"]
