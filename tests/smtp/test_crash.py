"""Crash safety: kill -9 a gateway under load, restart it; every message that got 250 is stored exactly once.

The gateway runs in a subprocess (gateway_main.py) on SQLite with synchronous=FULL; concurrent clients
send uniquely identified messages and remember which ones were acknowledged. After several random
kills, each acknowledged Message-ID is in the store exactly once, and no message is stored twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import aiosmtplib
from sqlalchemy import select

from .operators import Operator, Space, make_operator, refresh_trust
from mssante.store.models import Message

SCRIPT = Path(__file__).with_name("gateway_main.py")
ROUNDS = 4
CLIENTS = 8


async def start_gateway(op: Operator, liste: Path) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), str(op.dir / "operator.json"), str(liste), "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.startswith(b"READY "), line
    return proc, int(line.split()[1])


async def client(port: int, space: Space, issued, acked: list[str], tag: str) -> None:
    i = 0
    while True:
        try:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10, local_hostname="mx.op-b.test")
            await c.connect()
            await c.starttls(tls_context=space.client_ctx(issued))
            while True:
                mid = f"<{tag}.{i}@op-b.test>"
                i += 1
                msg = f"From: <sec@op-b.test>\r\nTo: <dr@op-a.test>\r\nMessage-ID: {mid}\r\nSubject: n\r\n\r\nx\r\n"
                await c.sendmail("sec@op-b.test", ["dr@op-a.test"], msg.encode())
                acked.append(mid)  # only after the 250
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            return


async def test_kill_9_under_load_loses_and_duplicates_nothing(space: Space, tmp_path: Path) -> None:
    a = await make_operator(space, tmp_path / "a", "op-a.test")
    b = await make_operator(space, tmp_path / "b", "op-b.test")
    refresh_trust(space, a, b)
    await a.add_mailbox("dr")
    await a.services.engine.dispose()
    liste = tmp_path / "liste.xml"
    liste.write_bytes(space.liste_xml())
    rng = random.Random(5)
    acked: list[str] = []
    for r in range(ROUNDS):
        proc, port = await start_gateway(a, liste)
        tasks = [asyncio.create_task(client(port, space, b.serv, acked, f"r{r}c{k}")) for k in range(CLIENTS)]
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        await asyncio.gather(*tasks)
    print(f"acked {len(acked)} messages over {ROUNDS} kills")
    assert len(acked) > 50  # the load was real
    async with a.services.sessions() as s:
        stored = Counter((await s.scalars(select(Message.message_id))).all())
    missing = [m for m in acked if stored[m] != 1]
    assert missing == []
    assert max(stored.values()) == 1  # never stored twice
    await a.services.engine.dispose()
