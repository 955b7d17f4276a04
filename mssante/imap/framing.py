"""Command framing: bytes in, complete commands (lines + literals) out. No I/O.

The reader owns the only per-connection input buffer. Every size is bounded:
- a command line (without literals) is at most `max_line` bytes;
- a literal's announced size is checked BEFORE any of it is read (RFC 7888 §4, RFC 7889
  APPENDLIMIT): a too-big synchronizing literal is refused with a tagged NO [TOOBIG] (APPEND)
  or BAD and the client never sends it; a too-big non-synchronizing literal (LITERAL+) is read
  and thrown away without buffering (up to `discard_cap`) and then refused, or beyond the cap
  the connection is closed.
- a whole command (line bytes + literals other than APPEND's) is at most `max_command`.

Events returned by `next_event()`:
  CommandBytes(data)       a whole command, literals inline as "{n}\r\n<n bytes>"
  Continue()               send "+ " so the client sends its synchronizing literal
  Refuse(tag, response)    send this tagged response; the command is dropped
  Fatal(reason)            send BYE and close
  None                     more data needed
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 7888 §4 LITERAL-: non-synchronizing literals above 4096 bytes are not allowed; we
# advertise LITERAL+ and accept any size within the limits below.
_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n$")
_TAG_CMD = re.compile(rb"^([^ \r\n]{1,64}) +(?:(UID) +)?([A-Za-z]{1,32})", re.IGNORECASE)


@dataclass(frozen=True)
class CommandBytes:
    data: bytes


@dataclass(frozen=True)
class Continue:
    pass


@dataclass(frozen=True)
class Refuse:
    tag: str
    response: bytes  # e.g. b"NO [TOOBIG] message too big", without the tag


@dataclass(frozen=True)
class Fatal:
    reason: str


Event = CommandBytes | Continue | Refuse | Fatal


class CommandReader:
    def __init__(
        self,
        *,
        max_line: int = 64 * 1024,
        max_literal: int = 64 * 1024,
        append_limit: int = 25 * 1024 * 1024,
        max_command: int = 1024 * 1024,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.append_limit = append_limit
        self.max_command = max_command
        self.discard_cap = 2 * append_limit
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._size = 0
        self._literal_left = 0  # bytes of a literal still to collect
        self._discard_left = 0  # bytes of a refused non-synchronizing literal to skip
        self._discard_refusal: Refuse | None = None
        self._line_start = 0  # search offset for the next LF
        self.waiting_literal = False  # a "+" was sent and the literal has not arrived yet

    def feed(self, data: bytes) -> None:
        if self._discard_left:
            skip = min(self._discard_left, len(data))
            self._discard_left -= skip
            data = data[skip:]
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._size

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._literal_left = 0

    def _limit_for(self, first_line: bytes) -> tuple[str, str, int]:
        m = _TAG_CMD.match(first_line)
        if not m:
            return "*", "", self.max_literal
        tag = m.group(1).decode("ascii", "replace")
        name = m.group(3).upper().decode("ascii")
        return tag, name, self.append_limit if name == "APPEND" else self.max_literal

    def next_event(self) -> Event | None:
        if self._discard_left:
            return None
        if self._discard_refusal is not None:
            ev, self._discard_refusal = self._discard_refusal, None
            return ev
        if self._literal_left:
            if len(self._buf) < self._literal_left:
                return None
            n = self._literal_left
            self._parts.append(bytes(self._buf[:n]))
            del self._buf[:n]
            self._literal_left = 0
            self._line_start = 0
            self.waiting_literal = False
        nl = self._buf.find(b"\n", self._line_start)
        if nl < 0:
            self._line_start = len(self._buf)
            if len(self._buf) > self.max_line:
                return Fatal("command line too long")
            return None
        self._line_start = 0
        line = bytes(self._buf[: nl + 1])
        del self._buf[: nl + 1]
        if len(line) > self.max_line:
            self._reset()
            return Fatal("command line too long")
        first = self._parts[0] if self._parts else line
        tag, name, limit = self._limit_for(first)
        m = _LITERAL_AT_END.search(line)
        if m is None:
            self._parts.append(line)
            data = b"".join(self._parts)
            self._reset()
            return CommandBytes(data)
        size = int(m.group(1))
        nonsync = bool(m.group(2))
        counted = 0 if name == "APPEND" else size
        if size > limit or self._size + len(line) + counted > self.max_command:
            self._reset()
            # RFC 7889 §4 / RFC 4469: APPEND over the limit is NO [TOOBIG]; others BAD.
            resp = (b"NO [TOOBIG] message exceeds APPENDLIMIT" if name == "APPEND"
                    else b"BAD [TOOBIG] literal too large")
            if not nonsync:
                return Refuse(tag, resp)
            if size > self.discard_cap:
                return Fatal("non-synchronizing literal too large")
            skip = min(size, len(self._buf))
            del self._buf[:skip]
            self._discard_left = size - skip
            # The rest of the command after the literal is thrown away line by line by the
            # parser failing; simplest and bounded: drop through the end of the current line.
            self._discard_refusal = Refuse(tag, resp)
            if self._discard_left:
                return None
            ev, self._discard_refusal = self._discard_refusal, None
            return ev
        self._parts.append(line)
        self._size += len(line) + counted
        self._literal_left = size
        if size == 0:
            return self.next_event()
        if not nonsync:
            self.waiting_literal = True
            return Continue()
        return self.next_event()

    def next_line(self) -> bytes | None:
        """A raw line (AUTHENTICATE continuation, IDLE's DONE), without literal processing."""
        nl = self._buf.find(b"\n")
        if nl < 0:
            if len(self._buf) > self.max_line:
                raise OverflowError("line too long")
            return None
        line = bytes(self._buf[: nl + 1])
        del self._buf[: nl + 1]
        return line
