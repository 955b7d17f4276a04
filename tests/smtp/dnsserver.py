"""A small real DNS server on 127.0.0.1 (UDP), answering from a dict: the relay resolves through it."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        # (name, type) -> list of rdata texts, e.g. ("op-b.test.", "MX") -> ["10 mx.op-b.test."]
        self.records: dict[tuple[str, str], list[str]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[tuple[str, str]] = []

    def add(self, name: str, rtype: str, *values: str) -> None:
        self.records.setdefault((name.lower().rstrip(".") + ".", rtype.upper()), []).extend(values)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.AA
        question = q.question[0]
        name = question.name.to_text().lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rtype))
        values = self.records.get((name, rtype))
        known = any(n == name for n, _ in self.records)
        if values:
            resp.answer.append(dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, question.rdtype, values))
        elif not known:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(resp.to_wire(), addr)

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    @classmethod
    async def start(cls) -> DnsServer:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return proto

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
