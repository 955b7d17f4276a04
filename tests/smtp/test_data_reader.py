"""The DATA reader's fast path (chunks ending at ".CRLF", checked as a whole) against the line-by-line
reference (`_read_data_lines`, the rules of RFC 5321 §2.3.8 / §4.5.2 / §4.5.3.1.6 and our limits): the same
message or the same refusal, and the bytes after the end of data (pipelined commands) left unread."""

from __future__ import annotations

import asyncio
import random

import pytest

from mssante.smtp import replies
from mssante.smtp.protocol import GatewaySMTP, Limits

LIMITS = Limits(max_message_size=200_000, max_line_length=1000, max_header_size=4_000)


class _Conn:
    def __init__(self, data: bytes, limits: Limits) -> None:
        self._reader = asyncio.StreamReader(limit=1024)
        self._reader.feed_data(data)
        self._reader.feed_eof()
        self.limits = limits

    async def _read_data_lines(self, head: bytes) -> tuple[bytes, str | None]:
        return await GatewaySMTP._read_data_lines(self, head)  # type: ignore[arg-type]


async def _run(data: bytes, fast: bool, limits: Limits = LIMITS) -> tuple[tuple[bytes, str | None] | str, bytes]:
    conn = _Conn(data, limits)
    try:
        if fast:
            result: tuple[bytes, str | None] | str = await GatewaySMTP._read_data(conn)  # type: ignore[arg-type]
        else:
            result = await GatewaySMTP._read_data_lines(conn, b"")  # type: ignore[arg-type]
    except ConnectionResetError:
        result = "reset"
    rest = conn._reader._buffer  # noqa: SLF001
    return result, bytes(rest)


LINES = [b"Subject: x\r\n", b"\r\n", b"plain text\r\n", b"ends with a dot.\r\n", b"..stuffed\r\n", b".\r\n",
         b"..\r\n", b"...\r\n", b"bare lf\n", b"bare\rcr\r\n", b"\n", b".\n", b"x" * 998 + b"\r\n",
         b"y" * 999 + b"\r\n", b"To: <a@b>\r\n", b"\r\n.\r\n", b"a\r\n.\r\n.\r\n"]


@pytest.mark.parametrize("seed", range(300))
async def test_fast_path_matches_line_reader(seed: int) -> None:
    rnd = random.Random(seed)
    body = b"".join(rnd.choice(LINES) for _ in range(rnd.randint(0, 40)))
    if rnd.random() < 0.2:
        body += b"z" * rnd.randint(1, 70_000) + b"\r\n"  # chunks that overrun the reader's bound
    data = body + b".\r\n" + b"MAIL FROM:<next@op-b.test>\r\n"
    assert await _run(data, True) == await _run(data, False)


async def test_size_limit_and_chunk_boundaries() -> None:
    line = b"." + b"d" * 76 + b"\r\n"
    for n in (10, 2000, 2550, 2700, 3000):  # around 200 000 octets: the fast path hands over to the line reader
        data = b"Subject: big\r\n\r\n" + line * n + b".\r\n" + b"QUIT\r\n"
        fast, ref = await _run(data, True), await _run(data, False)
        assert fast == ref
        assert fast[1] == b"QUIT\r\n"
        if n == 2550:  # over the limit before unstuffing, under it after: accepted, as by the line reader
            assert fast[0][1] is None and len(fast[0][0]) <= LIMITS.max_message_size
    big = b"Subject: big\r\n\r\n" + line * 3000 + b".\r\n"
    assert (await _run(big, True))[0] == (b"", replies.TOO_BIG)


async def test_empty_message_and_leading_dot() -> None:
    assert await _run(b".\r\nRSET\r\n", True) == ((b"", None), b"RSET\r\n")
    assert (await _run(b"..x\r\n.\r\n", True))[0] == (b".x\r\n", None)


async def test_eof_during_data() -> None:
    assert (await _run(b"Subject: x\r\n\r\nno end", True))[0] == "reset"
