"""Stream records out of an extraction file (.txt, or .txt members inside a .zip).

Memory stays bounded: one line at a time, each line capped. A zip is checked while it is
being inflated (ratio and absolute size), never trusting its declared sizes, so a zip bomb
is refused before it can allocate anything large. Encoding errors, a truncated archive or a
wrong header raise :class:`FormatError`, which aborts that file only.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from annuaire.formats import FormatError, Layout, detect_layout

MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Zip-bomb guard: inflated bytes may not exceed ``max_ratio`` x compressed, nor ``max_bytes``."""

    max_ratio: int = 200          # real extractions compress about 10-20:1
    max_bytes: int = 8 * 1024**3  # the largest real member is ~1 GiB
    max_members: int = 32


class _GuardedStream(io.RawIOBase):
    """Counts inflated bytes from a zip member and aborts past the limits (checked per chunk)."""

    def __init__(self, inner: IO[bytes], compressed: int, name: str, limits: Limits) -> None:
        self._inner = inner
        self._limit = min(limits.max_bytes, max(compressed, 1) * limits.max_ratio)
        self._name = name
        self._ratio = limits.max_ratio
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b)
        want = min(len(view), 1 << 16)
        try:
            data = self._inner.read(want)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise FormatError(f"{self._name}: damaged or truncated archive ({exc})") from None
        n = len(data)
        self.produced += n
        if self.produced > self._limit:
            raise FormatError(f"{self._name}: refused, inflates beyond {self._limit} bytes "
                              f"(ratio limit {self._ratio}:1): possible zip bomb")
        view[:n] = data
        return n


@dataclass
class Source:
    """One logical extraction file: a plain .txt or one member of a zip."""

    name: str
    stream: IO[bytes]
    size: int  # uncompressed size, for progress only (declared for zip members)
    counter: _GuardedStream | None = None

    @property
    def bytes_read(self) -> int:
        if self.counter is not None:
            return self.counter.produced
        return self.stream.tell()


def open_sources(path: Path, limits: Limits | None = None) -> Iterator[Source]:
    """Yield each extraction inside ``path``. Raises FormatError for an unusable archive."""
    limits = limits or Limits()
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    with open(path, "rb") as probe:
        magic = probe.read(4)
    if magic.startswith(b"PK") or path.suffix.lower() == ".zip":
        if not zipfile.is_zipfile(path):
            raise FormatError(f"{path.name}: damaged or truncated archive (no central directory)")
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise FormatError(f"{path.name}: damaged or truncated archive ({exc})") from None
        with zf:
            members = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".txt")]
            if not members:
                raise FormatError(f"{path.name}: archive holds no .txt extraction")
            if len(zf.infolist()) > limits.max_members:
                raise FormatError(f"{path.name}: refused, more than {limits.max_members} members")
            for info in members:
                if info.file_size > limits.max_bytes or (
                        info.file_size > max(info.compress_size, 1) * limits.max_ratio):
                    raise FormatError(f"{path.name}:{info.filename}: refused, declared size "
                                      f"{info.file_size} exceeds the limits (ratio {limits.max_ratio}:1, "
                                      f"{limits.max_bytes} bytes): possible zip bomb")
                try:
                    inner = zf.open(info)
                except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                    raise FormatError(f"{path.name}:{info.filename}: unreadable member ({exc})") from None
                counter = _GuardedStream(inner, info.compress_size, f"{path.name}:{info.filename}", limits)
                buffered = io.BufferedReader(counter, buffer_size=1 << 20)
                try:
                    yield Source(f"{path.name}:{info.filename}", buffered, info.file_size, counter)
                finally:
                    inner.close()
    else:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            yield Source(path.name, fh, size)


def read_header(src: Source) -> Layout:
    raw = src.stream.readline(MAX_LINE)
    if not raw:
        raise FormatError(f"{src.name}: empty file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{src.name}: line 1 is not UTF-8 (the extractions are UTF-8)") from None
    try:
        return detect_layout(text)
    except FormatError as exc:
        raise FormatError(f"{src.name}: {exc}") from None


READ_CHUNK = 1 << 20


def iter_lines(src: Source) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line_number, raw bytes without the line end)``, or ``(line_number, None)`` for a line
    longer than MAX_LINE (skipped). Blank lines are skipped. Nothing is decoded here: see
    :func:`decode_fields` (the importer's fast path hashes the bytes of unchanged rows only).

    Reads READ_CHUNK bytes at a time and splits them (one C call per MiB instead of a ``readline``
    per line); memory stays bounded: a partial line longer than MAX_LINE is reported and dropped
    without being buffered. A line ends at ``\n`` (a ``\r`` before it is dropped); a last line
    without an end is yielded as is."""
    lineno = 1
    read = src.stream.read
    tail = b""
    skipping = False  # inside an over-long line already reported: drop bytes up to its end
    while chunk := read(READ_CHUNK):
        if tail:
            chunk = tail + chunk
        lines = chunk.split(b"\n")
        tail = lines.pop()
        for raw in lines:
            if skipping:
                skipping = False
                continue
            lineno += 1
            if len(raw) >= MAX_LINE:
                yield lineno, None
                continue
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            if raw:
                yield lineno, raw
        if skipping:
            tail = b""
        elif len(tail) >= MAX_LINE:  # an over-long line still going on: report it now, drop the rest
            lineno += 1
            yield lineno, None
            tail, skipping = b"", True
    if tail:
        yield lineno + 1, tail


def decode_fields(src: Source, lineno: int, raw: bytes) -> list[str]:
    """Decode one line (without its line end) and split it; the trailing ``|`` adds no field.

    A line that is not UTF-8 aborts the whole file (FormatError): a wrong encoding is a
    file-level fault, not a row-level one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{src.name}: line {lineno} is not UTF-8 (wrong encoding, file refused)") \
            from None
    parts = text.split("|")
    if parts[-1] == "":
        parts.pop()
    return parts


TOO_LONG = f"line longer than {MAX_LINE} bytes"


def iter_records(src: Source) -> Iterator[tuple[int, list[str] | str]]:
    """Yield ``(line_number, fields)``, or ``(line_number, reason)`` for a line too long.

    The first data line is line 2. A line that is not UTF-8 aborts the whole file
    (FormatError): a wrong encoding is a file-level fault, not a row-level one.
    """
    for lineno, raw in iter_lines(src):
        if raw is None:
            yield lineno, TOO_LONG
        else:
            yield lineno, decode_fields(src, lineno, raw)
