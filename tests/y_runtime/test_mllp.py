"""The MLLP decoder (pure): framing, chunk boundaries, noise, and the size limit enforced as bytes arrive."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mssante.y.mllp import SALVAGE_BYTES, Frame, MllpDecoder, Oversize, frame


def feed_all(decoder: MllpDecoder, chunks: list[bytes]) -> list[Frame | Oversize]:
    out: list[Frame | Oversize] = []
    for c in chunks:
        out += decoder.feed(c)
    return out


def test_frames_split_anywhere_are_reassembled() -> None:
    wire = frame(b"MSH|one\r") + b"\r\n" + frame(b"MSH|two\rPID|x\r")
    for cut in range(1, len(wire)):
        got = feed_all(MllpDecoder(1024), [wire[:cut], wire[cut:]])
        assert got == [Frame(b"MSH|one\r"), Frame(b"MSH|two\rPID|x\r")], cut


def test_a_lone_end_block_byte_stays_in_the_payload() -> None:
    assert MllpDecoder(100).feed(frame(b"a\x1cb")) == [Frame(b"a\x1cb")]
    d = MllpDecoder(100)
    assert d.feed(b"\x0ba\x1c") == [] and d.feed(b"b\x1c\r") == [Frame(b"a\x1cb")]


def test_noise_outside_frames_is_ignored() -> None:
    assert MllpDecoder(100).feed(b"\r\n  junk" + frame(b"x") + b"\n") == [Frame(b"x")]


def test_oversize_frame_is_discarded_while_streaming_and_the_next_one_is_read() -> None:
    d = MllpDecoder(1000)
    out: list[Frame | Oversize] = []
    out += d.feed(b"\x0bMSH|^~\\&|A|B|C|D|2025||ORU^R01|42|P|2.5\r")
    for _ in range(100):
        out += d.feed(b"A" * 10_000)
        assert d.buffered <= 1000  # never holds more than the limit
    out += d.feed(b"\x1c\r" + frame(b"MSH|small"))
    assert isinstance(out[0], Oversize) and out[0].size > 1_000_000
    assert out[0].head.startswith(b"MSH|^~\\&|A|B") and len(out[0].head) <= SALVAGE_BYTES
    assert out[1] == Frame(b"MSH|small")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300).filter(lambda b: b"\x0b" not in b and b"\x1c\r" not in b
                                                  and not b.endswith(b"\x1c")), min_size=1, max_size=5),
       st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50))
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], sizes: list[int]) -> None:
    wire = b"".join(frame(p) for p in payloads)
    chunks, i, k = [], 0, 0
    while i < len(wire):
        n = sizes[k % len(sizes)]
        chunks.append(wire[i:i + n])
        i, k = i + n, k + 1
    assert feed_all(MllpDecoder(10_000), chunks) == [Frame(p) for p in payloads]
