"""Read receipts through services.extras["imap.read_receipts"] (an asyncio.Queue) over a real socket,
and the audit trail entry; the MDN itself is left to the client (docs/imap.md)."""

from __future__ import annotations

import asyncio
import imaplib

from sqlalchemy import select

from .conftest import ADDRESS, PASSWORD, Certs, Env, fast_settings, message

from mssante.imap.server import start_imap
from mssante.imap.session import ReadReceipt
from mssante.store.models import AuditEvent


async def test_queue_in_services_extras(env: Env, certs: Certs) -> None:
    queue: asyncio.Queue[ReadReceipt] = asyncio.Queue()
    env.services.extras["imap.read_receipts"] = queue
    listener = await start_imap(env.services, host="127.0.0.1", port=0, implicit_tls=True,
                                ssl_context=certs.server_context(), settings=fast_settings())
    try:
        await env.deliver(message("please confirm", extra="Disposition-Notification-To: Labo <labo@op-b.test>\r\n"))

        def read() -> None:
            m = imaplib.IMAP4_SSL("localhost", listener.port, ssl_context=certs.client_context())
            m.login(ADDRESS, PASSWORD)
            m.select("INBOX")
            m.fetch("1", "(BODY[])")  # sets \Seen
            m.logout()

        await asyncio.to_thread(read)
        ev = await asyncio.wait_for(queue.get(), 10)
        assert ev.mailbox == ADDRESS and ev.uid == 1 and ev.notify_to == "Labo <labo@op-b.test>"
        assert ev.message_id and queue.empty()
    finally:
        await listener.stop()
    async with env.services.sessions() as s:
        rows = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "imap.read_receipt_requested"))).all()
    assert len(rows) == 1 and rows[0].actor == ADDRESS
