"""Crash safety by killing the process (ARCHITECTURE.md: "tested by killing the process, not assumed").

A subprocess runs the MLLP intake and the Y worker; four LIS connections send the ANS example with
distinct control ids; the process is killed with SIGKILL while messages are in flight. Then:
- every control id that got an AA has exactly one Y delivery with all three legs;
- after a restart, resending the unacknowledged ones (what a LIS does) never duplicates a delivery;
- once the worker has finished, each MSSanté leg was submitted exactly once: one message per
  delivery in the prescriber's INBOX, one relay queue row per patient leg, no leg lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from mssante.store.models import Folder, Message
from mssante.store.queue import QueueRecipient
from mssante.y.mllp import MllpClient
from mssante.y.models import YDelivery, YLeg
from mssante.y.worker import YWorker
from .support import FakeDmp, close_services, make_services, segur_bytes, sender_entry, with_control_id

HERE = Path(__file__).parent


async def _start(db_url: str, tmp: Path) -> tuple[subprocess.Popen, int]:
    port_file = tmp / f"port-{random.randrange(1 << 30)}"
    proc = subprocess.Popen([sys.executable, str(HERE / "crash_server.py"), db_url, str(tmp), str(port_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        if port_file.exists():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        await asyncio.sleep(0.05)
    raise RuntimeError("crash server did not start")


async def _lis(port: int, ids: list[str], acked: set[str]) -> None:
    data = segur_bytes()
    try:
        client = await MllpClient.connect("127.0.0.1", port)
        for cid in ids:
            ack = await client.send(with_control_id(data, cid), timeout=30)
            if b"MSA|AA|" + cid.encode() in ack:
                acked.add(cid)
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        return


async def test_sigkill_loses_no_acknowledged_delivery_and_sends_no_leg_twice(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    await services.engine.dispose()
    ids = [f"C{i:04d}" for i in range(60)]
    acked: set[str] = set()
    proc, port = await _start(db_url, tmp_path)
    try:
        lis = [asyncio.create_task(_lis(port, ids[i::4], acked)) for i in range(4)]
        while len(acked) < 12:  # kill while messages (and leg submissions) are in flight
            await asyncio.sleep(0.01)
            if all(t.done() for t in lis):
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        await asyncio.gather(*lis)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert acked, "nothing was acknowledged before the kill"

    services = await make_services(db_url, tmp_path, senders=[sender_entry()], create=False)
    try:
        async with services.sessions() as s:
            rows = (await s.execute(select(YDelivery.control_id, func.count(YLeg.id))
                                    .join(YLeg, YLeg.delivery_id == YDelivery.id).group_by(YDelivery.control_id))).all()
        stored = {cid: n for cid, n in rows}
        for cid in acked:
            assert stored.get(cid) == 3, (cid, stored.get(cid))

        # Restart; the LIS resends what was not acknowledged; duplicates are answered, not redone.
        proc, port = await _start(db_url, tmp_path)
        try:
            again: set[str] = set()
            await _lis(port, ids, again)
            assert again == set(ids)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        # DMP calls in flight at the kill were recorded (attempt + retry time) before the call: they come
        # back at their retry time. Jump there instead of sleeping.
        later = services.now() + dt.timedelta(hours=1)
        services.now = lambda: later
        worker = YWorker(services, dmp=FakeDmp())
        for _ in range(20):
            if not await worker.run_once():
                break
            await worker.drain_dmp()
        async with services.sessions() as s:
            n = await s.scalar(select(func.count()).select_from(YDelivery))
            assert n == len(ids)
            states = dict((await s.execute(select(YLeg.state, func.count()).group_by(YLeg.state))).all())
            assert states == {"delivered": len(ids), "queued": len(ids), "dmp-accepted": len(ids)}, states
            prescriber_msgs = await s.scalar(
                select(func.count(func.distinct(Message.message_id))).select_from(Message)
                .join(Folder, Folder.id == Message.folder_id).where(Folder.name == "INBOX"))
            total_prescriber = await s.scalar(
                select(func.count()).select_from(Message).join(Folder, Folder.id == Message.folder_id)
                .where(Folder.name == "INBOX"))
            queued = await s.scalar(select(func.count()).select_from(QueueRecipient))
        assert total_prescriber == prescriber_msgs == len(ids), (total_prescriber, prescriber_msgs)
        assert queued == len(ids)
    finally:
        await close_services(services)
