"""Operators exchanging mail through the relay queue, routed by a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import select

from .clients import message
from .conftest import start
from .dnsserver import DnsServer
from .operators import PASSWORD, Operator, Space, make_operator, refresh_trust, utcnow
from mssante.smtp.relay import RelayWorker
from mssante.store import queue as qstore
from mssante.store.models import AuditEvent, Blob, Message


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


def common_port(ips: list[str]) -> int:
    for _ in range(50):
        s = socket.socket()
        s.bind((ips[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for ip in ips[1:]:
            t = socket.socket()
            try:
                t.bind((ip, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no common free port")


class Mesh:
    def __init__(self, dns: DnsServer, port: int, ops: dict[str, Operator]) -> None:
        self.dns, self.port, self.ops = dns, port, ops

    def worker(self, op: Operator) -> RelayWorker:
        return RelayWorker(op.services, mx_port=self.port, timeout=10)


IPS = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4", "x": "127.0.0.5"}


@pytest.fixture
async def mesh(space: Space, tmp_path: Path) -> AsyncIterator[Mesh]:
    dns = await DnsServer.start()
    port = common_port(list(IPS.values()))
    relay = {"dns_server": dns.address, "retry_schedule": [60, 600], "delay_dsn_after_minutes": 30, "max_age_hours": 2}
    ops = {
        "a": await make_operator(space, tmp_path / "a", "op-a.test", ip=IPS["a"], relay=relay),
        "b": await make_operator(space, tmp_path / "b", "op-b.test", ip=IPS["b"], relay=relay),
        "c": await make_operator(space, tmp_path / "c", "op-c.test", ip=IPS["c"], relay=relay),
        "x": await make_operator(space, tmp_path / "x", "op-x.test", ip=IPS["x"], relay=relay, listed=False),
    }
    refresh_trust(space, *ops.values())
    for op in ops.values():
        m = __import__("mssante.smtp.server", fromlist=["start_mta"])
        lst = await m.start_mta(op.services, f"{op.ip}:{port}")
        op.listeners.append(lst)
        op.mta_port = port
        await start(op, mta=False)
        dns.add(f"mx.{op.domain}", "A", op.ip)
        dns.add(op.domain, "MX", f"10 mx.{op.domain}.")
    yield Mesh(dns, port, ops)
    for op in ops.values():
        await op.stop()
    dns.stop()


async def submit(op: Operator, space: Space, frm: str, to: list[str], msg: bytes, *, user: str | None = None) -> None:
    c = aiosmtplib.SMTP(hostname=op.ip, port=op.sub_port, start_tls=True, tls_context=space.client_ctx(None), timeout=10)
    await c.connect()
    await c.login(user or frm, PASSWORD)
    await c.sendmail(frm, to, msg)
    await c.quit()


async def inbox(op: Operator, address: str) -> list[bytes]:
    async with op.services.sessions() as s:
        from mssante.store.models import Folder, Mailbox
        rows = (await s.execute(
            select(Blob.data).join(Message, Message.blob_id == Blob.id).join(Folder, Folder.id == Message.folder_id)
            .join(Mailbox, Mailbox.id == Folder.mailbox_id).where(Mailbox.address == address, Folder.name == "INBOX")
            .order_by(Message.id)
        )).all()
    return [bytes(r[0]) for r in rows]


async def queue_rows(op: Operator) -> list[qstore.QueueRow]:
    async with op.services.sessions() as s:
        return await qstore.list_queue(s)


async def test_exchange_between_operators_via_dns(mesh: Mesh, space: Space) -> None:
    a, b = mesh.ops["a"], mesh.ops["b"]
    await a.add_mailbox("dr.a")
    await b.add_mailbox("dr.b")
    await b.add_mailbox("sec.b")
    await submit(a, space, "dr.a@op-a.test", ["dr.b@op-a.test".replace("op-a", "op-b"), "sec.b@op-b.test"],
                 message("dr.a@op-a.test", "dr.b@op-b.test", mid="<x1@op-a.test>"))
    rows = await queue_rows(a)
    assert sorted(r.rcpt for r in rows) == ["dr.b@op-b.test", "sec.b@op-b.test"]
    assert await mesh.worker(a).run_once() == 2
    assert await queue_rows(a) == []
    got = await inbox(b, "dr.b@op-b.test")
    assert len(got) == 1 and b"Message-ID: <x1@op-a.test>" in got[0]
    assert len(await inbox(b, "sec.b@op-b.test")) == 1
    assert ("op-b.test.", "MX") in mesh.dns.queries  # routed through the loopback DNS server
    async with a.services.sessions() as s:
        ev = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "smtp.relay.sent"))).one()
    assert ev.details["rcpts"] == ["dr.b@op-b.test", "sec.b@op-b.test"]


async def test_background_worker_delivers(mesh: Mesh, space: Space) -> None:
    a, b = mesh.ops["a"], mesh.ops["b"]
    await a.add_mailbox("dr.a")
    await b.add_mailbox("dr.b")
    w = await RelayWorker(a.services, mx_port=mesh.port, timeout=10, poll_interval=30).start()
    try:
        for _ in range(5):
            await submit(a, space, "dr.a@op-a.test", ["dr.b@op-b.test"], message("dr.a@op-a.test", "dr.b@op-b.test"))
        for _ in range(200):  # woken by the acceptance, not by polling
            if len(await inbox(b, "dr.b@op-b.test")) == 5:
                break
            await asyncio.sleep(0.05)
        assert len(await inbox(b, "dr.b@op-b.test")) == 5
    finally:
        await w.stop()


async def test_remote_down_retried_then_delayed_then_failure_dsn(mesh: Mesh, space: Space) -> None:
    a = mesh.ops["a"]
    clock = Clock()
    a.services.now = clock
    await a.add_mailbox("dr.a")
    mesh.dns.records[("mx.op-b.test.", "A")] = ["127.0.0.9"]  # nothing listens there
    await submit(a, space, "dr.a@op-a.test", ["dr.b@op-b.test"], message("dr.a@op-a.test", "dr.b@op-b.test", mid="<d1@op-a.test>"))
    w = mesh.worker(a)
    assert await w.run_once() == 1
    (row,) = await queue_rows(a)
    assert row.attempts == 1 and row.status == "queued" and "mx.op-b.test" in (row.last_error or "")
    assert row.next_attempt_at > clock() + dt.timedelta(seconds=50)  # recorded before the attempt
    assert await w.run_once() == 0  # not due yet
    assert await inbox(a, "dr.a@op-a.test") == []
    clock.offset += dt.timedelta(minutes=31)  # past delay_dsn_after_minutes
    assert await w.run_once() == 1
    (row,) = await queue_rows(a)
    assert row.attempts == 2
    (delayed,) = await inbox(a, "dr.a@op-a.test")
    assert b"report-type=delivery-status" in delayed and b"Action: delayed" in delayed
    assert b"Final-Recipient: rfc822; dr.b@op-b.test" in delayed
    clock.offset += dt.timedelta(hours=3)  # past max_age_hours
    assert await w.run_once() == 1
    assert await queue_rows(a) == []
    dsns = await inbox(a, "dr.a@op-a.test")
    assert len(dsns) == 2 and b"Action: failed" in dsns[1]
    assert b"text/rfc822-headers" in dsns[1] and b"Message-ID: <d1@op-a.test>" in dsns[1]
    assert b"Bonjour" not in dsns[1]  # headers only (RET absent)


async def test_remote_with_unlisted_certificate_is_not_used(mesh: Mesh, space: Space) -> None:
    a, x = mesh.ops["a"], mesh.ops["x"]
    await a.add_mailbox("dr.a")
    await x.add_mailbox("dr.b")
    mesh.dns.records[("mx.op-b.test.", "A")] = [x.ip]  # op-b's MX now answers with op-x's certificate
    await submit(a, space, "dr.a@op-a.test", ["dr.b@op-b.test"], message("dr.a@op-a.test", "dr.b@op-b.test"))
    assert await mesh.worker(a).run_once() == 1
    (row,) = await queue_rows(a)
    assert row.status == "queued" and "not listed" in (row.last_error or "")
    assert await inbox(x, "dr.b@op-b.test") == []


async def test_permanent_refusal_gives_failure_dsn(mesh: Mesh, space: Space) -> None:
    a = mesh.ops["a"]
    await a.add_mailbox("dr.a")
    await submit(a, space, "dr.a@op-a.test", ["nobody@op-b.test"], message("dr.a@op-a.test", "nobody@op-b.test"))
    assert await mesh.worker(a).run_once() == 1
    assert await queue_rows(a) == []
    (dsn,) = await inbox(a, "dr.a@op-a.test")
    assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn and b"Remote-MTA: dns; mx.op-b.test" in dsn


async def test_notify_never_and_success(mesh: Mesh, space: Space) -> None:
    a, b = mesh.ops["a"], mesh.ops["b"]
    await a.add_mailbox("dr.a")
    await b.add_mailbox("dr.b")
    c = aiosmtplib.SMTP(hostname=a.ip, port=a.sub_port, start_tls=True, tls_context=space.client_ctx(None), timeout=10)
    await c.connect()
    await c.login("dr.a@op-a.test", PASSWORD)
    await c.mail("dr.a@op-a.test", options=["RET=HDRS", "ENVID=env+2B1"])
    await c.rcpt("nobody@op-b.test", options=["NOTIFY=NEVER"])
    await c.rcpt("dr.b@op-b.test", options=["NOTIFY=SUCCESS", "ORCPT=rfc822;dr.b@op-b.test"])
    await c.data(message("dr.a@op-a.test", "dr.b@op-b.test"))
    await c.quit()
    assert await mesh.worker(a).run_once() == 2
    assert await inbox(a, "dr.a@op-a.test") == []  # NEVER: no failure DSN
    # op-b delivered with NOTIFY=SUCCESS: its success DSN is queued back to op-a (null sender)
    rows = await queue_rows(b)
    assert [r.rcpt for r in rows] == ["dr.a@op-a.test"] and rows[0].mail_from == ""
    assert await mesh.worker(b).run_once() == 1
    (dsn,) = await inbox(a, "dr.a@op-a.test")
    assert b"Action: delivered" in dsn and b"Original-Envelope-Id: env+2B1" in dsn
    assert b"Original-Recipient: rfc822;dr.b@op-b.test" in dsn


async def test_one_message_to_three_operators_grouped_by_domain(mesh: Mesh, space: Space) -> None:
    a, b, c = mesh.ops["a"], mesh.ops["b"], mesh.ops["c"]
    await a.add_mailbox("dr.a")
    await a.add_mailbox("sec.a")
    for local in ("dr.b", "sec.b"):
        await b.add_mailbox(local)
    await c.add_mailbox("dr.c")
    rcpts = ["dr.b@op-b.test", "sec.b@op-b.test", "dr.c@op-c.test", "sec.a@op-a.test"]
    await submit(a, space, "dr.a@op-a.test", rcpts, message("dr.a@op-a.test", "dr.b@op-b.test", mid="<g1@op-a.test>"))
    assert len(await inbox(a, "sec.a@op-a.test")) == 1  # local copy at once
    assert await mesh.worker(a).run_once() == 3
    for op, addr in ((b, "dr.b@op-b.test"), (b, "sec.b@op-b.test"), (c, "dr.c@op-c.test")):
        (raw,) = await inbox(op, addr)
        assert b"<g1@op-a.test>" in raw
    async with a.services.sessions() as s:
        sent = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "smtp.relay.sent"))).all()
    # one SMTP transaction per domain: op-b's two recipients together
    assert sorted(tuple(e.details["rcpts"]) for e in sent) == [("dr.b@op-b.test", "sec.b@op-b.test"), ("dr.c@op-c.test",)]
    async with b.services.sessions() as s:
        acc = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "smtp.mta.accept"))).one()
    assert acc.details["local"] == ["dr.b@op-b.test", "sec.b@op-b.test"] and "mx.op-a.test" in acc.actor


async def test_two_relay_workers_share_a_postgresql_queue(space: Space, tmp_path: Path, pg_url: str) -> None:
    """Two gateway processes' workers on one PostgreSQL queue: every message delivered exactly once."""
    dns = await DnsServer.start()
    port = common_port([IPS["a"], IPS["b"]])
    relay = {"dns_server": dns.address}
    a = await make_operator(space, tmp_path / "a", "op-a.test", ip=IPS["a"], relay=relay, db_url=pg_url)
    b = await make_operator(space, tmp_path / "b", "op-b.test", ip=IPS["b"], relay=relay)
    refresh_trust(space, a, b)
    m = __import__("mssante.smtp.server", fromlist=["start_mta"])
    b.listeners.append(await m.start_mta(b.services, f"{b.ip}:{port}"))
    dns.add("mx.op-b.test", "A", b.ip)
    dns.add("op-b.test", "MX", "10 mx.op-b.test.")
    try:
        await a.add_mailbox("dr.a")
        await b.add_mailbox("dr.b")
        now = utcnow()
        async with a.services.sessions() as s, s.begin():
            for i in range(30):
                await qstore.enqueue(s, message("dr.a@op-a.test", "dr.b@op-b.test", mid=f"<pg{i}@op-a.test>"),
                                     "dr.a@op-a.test", [qstore.NewRecipient("dr.b@op-b.test")], now=now)
        workers = [RelayWorker(a.services, mx_port=port, timeout=10, batch=4) for _ in range(2)]

        async def drain(w: RelayWorker) -> int:
            total = 0
            while n := await w.run_once():
                total += n
            return total

        done = await asyncio.gather(*(drain(w) for w in workers))
        assert sum(done) == 30 and all(done)  # both took part
        got = await inbox(b, "dr.b@op-b.test")
        assert len(got) == 30 and len({g.split(b"Message-ID: ")[1][:20] for g in got}) == 30
    finally:
        await a.stop()
        await b.stop()
        dns.stop()
