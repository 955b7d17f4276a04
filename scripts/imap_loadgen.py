"""A lean IMAP load generator for scripts/bench_imap.py (issue 6), in the spirit of Dovecot's imaptest.

The issue's reference figure (Dovecot, 5,440 commands/s) was measured with imaptest, a C client that
spends a few microseconds per command. An asyncio client (StreamReader + the ssl module's asyncio
protocol) spends about as much CPU per command as the server under test, so on a 2-core machine it
takes a core away from the server and measures itself. This one is a plain selector loop over
non-blocking TLS sockets: each connection is a generator that yields the command it sends and gets
back the response lines, so the Python work per command is a few list operations; TLS and the
syscalls are the ssl module's C code.

The command mix is the same as bench_imap's asyncio client (SELECT, FETCH metadata of the last 10,
FETCH one body, STORE \\Seen, APPEND, UID STORE \\Deleted, EXPUNGE; with relogin LOGOUT and a new TLS
connection every cycle), so the two can be compared. Run as `bench_imap.py loadgen --lean`.
"""

from __future__ import annotations

import random
import selectors
import sys
import socket
import ssl
import time
from collections.abc import Generator
from typing import Any

# What a session generator yields: (command line, literal or None); it receives the untagged lines.
Step = Generator[tuple[bytes, "bytes | None"], list[bytes], None]


def session(rnd: random.Random, users: int, password: bytes, relogin: bool, message: Any) -> Step:
    """One client's endless command sequence (the LOGIN is the first command of each connection)."""
    yield b'LOGIN user%d@op-a.test "%s"' % (rnd.randrange(users), password), None
    while True:
        exists = 0
        for ln in (yield b"SELECT INBOX", None):
            if ln.endswith(b" EXISTS\r\n"):
                exists = int(ln.split()[1])
        if exists:
            lo = max(1, exists - 9)
            yield b"FETCH %d:%d (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)" % (lo, exists), None
            yield b"FETCH %d BODY.PEEK[]" % rnd.randint(1, exists), None
            yield b"STORE %d +FLAGS (\\Seen)" % rnd.randint(1, exists), None
        yield b"APPEND INBOX (\\Flagged)", message(rnd.randrange(10**6), 1500)
        yield b"UID STORE * +FLAGS.SILENT (\\Deleted)", None
        yield b"EXPUNGE", None
        if relogin:
            yield b"LOGOUT", None
            return


class Client:
    """One TLS connection driven by a session generator."""

    def __init__(self, lg: LoadGen, rnd: random.Random) -> None:
        self.lg = lg
        self.rnd = rnd
        self.sock: ssl.SSLSocket | None = None
        self.buf = bytearray()
        self.lines: list[bytes] = []
        self.n = 0
        self.tag = b""
        self.gen: Step | None = None
        self.greeted = False
        self.handshaking = True

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.lg.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        self.sock = self.lg.ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        self.buf.clear()
        self.lines.clear()
        self.greeted = False
        self.handshaking = True
        self.gen = session(self.rnd, self.lg.users, self.lg.password, self.lg.relogin, self.lg.message)
        self.lg.sel.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        self.handshake()

    def handshake(self) -> None:
        assert self.sock is not None
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.lg.sel.modify(self.sock, selectors.EVENT_READ, self)
            return
        except ssl.SSLWantWriteError:
            self.lg.sel.modify(self.sock, selectors.EVENT_WRITE, self)
            return
        self.handshaking = False
        self.lg.sel.modify(self.sock, selectors.EVENT_READ, self)

    def close(self) -> None:
        if self.sock is not None:
            self.lg.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def send(self, item: tuple[bytes, bytes | None]) -> None:
        assert self.sock is not None
        line, literal = item
        self.n += 1
        self.tag = b"t%d " % self.n
        data = self.tag + line + (b" {%d+}\r\n" % len(literal) + literal if literal is not None else b"") + b"\r\n"
        self.sock.setblocking(True)  # a command is a few KB: the kernel buffer takes it at once
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def on_event(self) -> None:
        if self.handshaking:
            self.handshake()
            return
        assert self.sock is not None
        eof = False
        try:
            while True:
                chunk = self.sock.recv(262144)
                if not chunk:
                    eof = True
                    break
                self.buf += chunk
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        sock = self.sock
        self.parse()
        if eof and self.sock is sock:  # closed before the answer we wait for (LOGOUT's is handled above)
            raise ConnectionError("closed by the server")

    def parse(self) -> None:
        buf = self.buf
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = bytes(buf[pos : eol + 2])
            if line.endswith(b"}\r\n") and b"{" in line:  # a literal follows: skip it whole
                size = int(line[line.rindex(b"{") + 1 : -3])
                if len(buf) < eol + 2 + size:
                    break
                pos = eol + 2 + size
                self.lines.append(line)
                continue
            pos = eol + 2
            if not self.greeted:
                self.greeted = True
                self.advance(None)
            elif line.startswith(self.tag):
                if not line.startswith(self.tag + b"OK"):
                    raise RuntimeError(line.decode(errors="replace").strip())
                lines, self.lines = self.lines, []
                self.lg.count += 1
                self.advance(lines)
                if self.sock is None:
                    return
            else:
                self.lines.append(line)
        del buf[:pos]

    def advance(self, lines: list[bytes] | None) -> None:
        assert self.gen is not None
        try:
            item = next(self.gen) if lines is None else self.gen.send(lines)
        except StopIteration:  # LOGOUT answered: a new connection (relogin mix)
            self.close()
            if time.perf_counter() < self.lg.stop:
                self.connect()
            return
        if time.perf_counter() >= self.lg.stop:
            self.close()
            return
        self.send(item)


class LoadGen:
    def __init__(self, port: int, ctx: ssl.SSLContext, users: int, password: str, relogin: bool,
                 message: Any) -> None:
        self.port, self.ctx, self.users, self.relogin, self.message = port, ctx, users, relogin, message
        self.password = password.encode()
        self.sel = selectors.DefaultSelector()
        self.count = 0
        self.errors = 0
        self.stop = 0.0

    def run(self, clients: int, seconds: float, first: int) -> tuple[int, int, float]:
        t0 = time.perf_counter()
        self.stop = t0 + seconds
        all_clients = [Client(self, random.Random(first + k)) for k in range(clients)]
        for c in all_clients:
            c.connect()
        while time.perf_counter() < self.stop and self.sel.get_map():
            for key, _ in self.sel.select(timeout=0.5):
                c = key.data
                try:
                    c.on_event()
                except (OSError, RuntimeError, ConnectionError) as e:
                    self.errors += 1
                    if self.errors < 5:
                        print(f"  client error: {e}", file=sys.stderr, flush=True)
                    c.close()
                    if time.perf_counter() < self.stop:
                        c.connect()
        for c in all_clients:
            c.close()
        return self.count, self.errors, time.perf_counter() - t0
