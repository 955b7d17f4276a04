"""iter_lines reads big chunks; it must cut lines exactly as one ``readline(MAX_LINE)`` per line did:
same line numbers, blank lines skipped, ``\\r\\n`` ends, over-long lines reported once and skipped,
a last line without an end yielded as is."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import pytest

from annuaire import reader
from annuaire.reader import Source, iter_lines


def _reference(src: Source, max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """The previous implementation (readline per line)."""
    lineno = 1
    readline = src.stream.readline
    while True:
        raw = readline(max_line)
        if not raw:
            return
        lineno += 1
        if raw[-1:] == b"\n":
            raw = raw[:-2] if raw[-2:-1] == b"\r" else raw[:-1]
            if not raw:
                continue
        elif len(raw) >= max_line:
            while raw and not raw.endswith(b"\n"):
                raw = readline(max_line)
            yield lineno, None
            continue
        yield lineno, raw


def _src(data: bytes) -> Source:
    return Source("x.txt", io.BufferedReader(io.BytesIO(data)), len(data))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(60))
def test_chunked_lines_equal_readline_per_line(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rnd = random.Random(seed)
    max_line = rnd.choice([4, 7, 16, 33])
    monkeypatch.setattr(reader, "MAX_LINE", max_line)
    monkeypatch.setattr(reader, "READ_CHUNK", rnd.choice([1, 2, 3, 5, 8, 13, 64, 1 << 20]))
    pieces = []
    for _ in range(rnd.randint(0, 40)):
        n = rnd.choice([0, 1, 2, max_line - 2, max_line - 1, max_line, max_line + 1, 3 * max_line, rnd.randint(0, 90)])
        body = bytes(rnd.choice(b"ab|\xc3\xa9\r") for _ in range(max(n, 0)))
        pieces.append(body + rnd.choice([b"\n", b"\r\n", b"\n", b"\r\r\n"]))
    data = b"".join(pieces)
    if rnd.random() < 0.5:  # a last line without its end, sometimes over-long
        data += bytes(rnd.choice(b"ab\r") for _ in range(rnd.choice([1, max_line - 1, max_line, 2 * max_line])))
    assert list(iter_lines(_src(data))) == list(_reference(_src(data), max_line))


def test_real_max_line_boundaries() -> None:
    m = reader.MAX_LINE
    data = b"a" * (m - 1) + b"\n" + b"b" * m + b"\n" + b"c" * (3 * m) + b"\r\n\n\nd|e\r\n" + b"f" * m
    got = list(iter_lines(_src(data)))
    assert got == list(_reference(_src(data), m))
    assert [n for n, _ in got] == [2, 3, 4, 7, 8] and got[1][1] is None and got[4][1] is None
