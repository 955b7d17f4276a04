"""decide() on mutated messages: always a typed answer, never the internal-error path."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from .y_factory import NOW, cda, config, directory, oru, trust

from mssante.y.ack import AckCode
from mssante.y.hl7 import parse_message
from mssante.y.intake import YPlan, YRefusal, decide

BASE = oru(document=cda())
CFG = config()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(BASE)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["replace", "delete", "insert"]))
        chunk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"|", b"^", b"~", b"&", b"\\", b"\r", b"\n", b"Y", b"N", b"D"]))
        if op == "replace":
            data[pos:pos + len(chunk)] = chunk
        elif op == "delete":
            del data[pos:pos + len(chunk)]
        else:
            data[pos:pos] = chunk
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_get_a_typed_answer(data: bytes) -> None:
    d = decide(data, CFG, NOW, trust=trust, directory=directory)
    assert isinstance(d, YPlan | YRefusal)
    if isinstance(d, YRefusal):
        assert d.code is AckCode.ERROR, d.problems  # AR is reserved for our own bugs
    ack = parse_message(d.ack)
    assert ack.first("MSA") is not None


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["MSH", "PID", "PV1", "ORC", "OBR", "OBX", "PRT", "NTE"]), st.integers(1, 40),
       st.text(alphabet="ABC^~&\\|0123456789YN.@ ", max_size=30))
def test_field_substitutions_get_a_typed_answer(segment: str, field_no: int, value: str) -> None:
    lines = BASE.decode().split("\r")
    for i, line in enumerate(lines):
        if line.startswith(segment + "|"):
            fields = line.split("|")
            if field_no < len(fields) and not (segment == "MSH" and field_no == 1):
                fields[field_no] = value
            lines[i] = "|".join(fields)
            break
    d = decide("\r".join(lines).encode(), CFG, NOW, trust=trust, directory=directory)
    if isinstance(d, YRefusal):
        assert d.code is AckCode.ERROR, d.problems
