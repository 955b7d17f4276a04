"""Small real-socket SMTP clients for tests: aiosmtplib, and a raw line client for protocol abuse."""

from __future__ import annotations

import asyncio
import contextlib
import ssl


class RawClient:
    """Line-level SMTP over a real socket, with STARTTLS (asyncio start_tls): for abuse tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None) -> RawClient:
        r, w = await asyncio.open_connection(host, port, ssl=ssl_ctx)
        c = cls(r, w)
        return c

    async def reply(self, timeout: float = 10.0) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("closed: " + "".join(lines))
            lines.append(line.decode())
            if line[3:4] != b"-":
                return "".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str) -> str:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def starttls(self, ctx: ssl.SSLContext) -> str:
        r = await self.cmd("STARTTLS")
        if r.startswith("220"):
            await self.writer.start_tls(ctx, server_hostname="mx")
        return r

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def message(frm: str, to: str, subject: str = "test", body: str = "Bonjour.\r\n", mid: str | None = None) -> bytes:
    head = f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
    if mid:
        head += f"Message-ID: {mid}\r\n"
    return (head + "\r\n" + body).encode()
