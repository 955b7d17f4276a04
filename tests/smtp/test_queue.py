"""The durable relay queue and the group committer, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from mssante.store import queue as qstore
from mssante.store.base import Base
from mssante.store.db import make_engine, make_sessions
from mssante.store.groupcommit import GroupCommitter
from mssante.store.mail import create_mailbox, deliver
from mssante.store.models import Message

import mssante.store.models  # noqa: F401

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)
SCHEDULE = [60, 300]


@pytest.fixture
async def sessions(db_url: str):
    eng = make_engine(db_url)
    async with eng.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    yield make_sessions(eng)
    await eng.dispose()


async def test_claim_records_attempt_before_trying(sessions) -> None:
    async with sessions() as s, s.begin():
        await qstore.enqueue(s, b"Subject: x\r\n\r\nx\r\n", "a@op-a.test",
                        [qstore.NewRecipient("b1@op-b.test"), qstore.NewRecipient("b2@op-b.test", "rfc822;b2@op-b.test", "NEVER"),
                         qstore.NewRecipient("c@op-c.test")], now=T0, envid="E1", ret="HDRS", message_id="<m@x>")
    async with sessions() as s, s.begin():
        claims = await qstore.claim(s, "w1", now=T0, schedule=SCHEDULE)
    assert sorted((c.domain, len(c.recipients)) for c in claims) == [("op-b.test", 2), ("op-c.test", 1)]
    b = next(c for c in claims if c.domain == "op-b.test")
    assert b.envid == "E1" and b.ret == "HDRS" and {r.notify for r in b.recipients} == {None, "NEVER"}
    rows = {r.rcpt: r for r in await _list(sessions)}
    assert all(r.attempts == 1 for r in rows.values())
    assert rows["b1@op-b.test"].next_attempt_at == T0 + dt.timedelta(seconds=60)
    async with sessions() as s, s.begin():  # leased: nothing more to claim, even when due
        assert await qstore.claim(s, "w2", now=T0 + dt.timedelta(seconds=30), schedule=SCHEDULE) == []
    # A crashed worker: at the recorded retry time the rows are claimable again, attempt 2.
    async with sessions() as s, s.begin():
        again = await qstore.claim(s, "w2", now=T0 + dt.timedelta(seconds=61), schedule=SCHEDULE)
    assert sum(len(c.recipients) for c in again) == 3
    rows = {r.rcpt: r for r in await _list(sessions)}
    assert rows["c@op-c.test"].attempts == 2
    assert rows["c@op-c.test"].next_attempt_at == T0 + dt.timedelta(seconds=61 + 300)
    async with sessions() as s, s.begin():
        await qstore.mark_sent(s, [r.id for c in again for r in c.recipients])
    assert await _list(sessions) == []
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(qstore.QueueMessage)) == 0


async def test_admin_operations(sessions) -> None:
    async with sessions() as s, s.begin():
        qid = await qstore.enqueue(s, b"x\r\n", "a@op-a.test", [qstore.NewRecipient("b@op-b.test")], now=T0)
        await qstore.claim(s, "w", now=T0, schedule=SCHEDULE)
    async with sessions() as s, s.begin():
        await qstore.mark_deferred(s, [r.recipient_id for r in await qstore.list_queue(s)], "421 busy")
    async with sessions() as s, s.begin():
        assert await qstore.retry_now(s, T0 + dt.timedelta(seconds=1)) == 1
    async with sessions() as s:
        m, rcpts = await qstore.get_message(s, qid)
        assert rcpts[0].last_error == "421 busy"
    async with sessions() as s, s.begin():
        assert await qstore.drop(s, qid) == 1
    async with sessions() as s, s.begin():
        with pytest.raises(qstore.QueueError):
            await qstore.drop(s, qid)
    with pytest.raises(qstore.QueueError):
        qstore.domain_of("nodomain")


def test_retry_schedule() -> None:
    assert qstore.next_delay([60, 300], 1) == dt.timedelta(seconds=60)
    assert qstore.next_delay([60, 300], 2) == dt.timedelta(seconds=300)
    assert qstore.next_delay([60, 300], 9) == dt.timedelta(seconds=300)  # the last value repeats


async def test_concurrent_claimers_on_postgresql_never_share(pg_url: str) -> None:
    eng = make_engine(pg_url)
    async with eng.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    sessions = make_sessions(eng)
    async with sessions() as s, s.begin():
        for i in range(40):
            await qstore.enqueue(s, f"m{i}\r\n".encode(), "a@op-a.test", [qstore.NewRecipient(f"r{i}@op-b.test")], now=T0)

    async def worker(name: str) -> list[int]:
        got: list[int] = []
        while True:
            async with sessions() as s, s.begin():
                claims = await qstore.claim(s, name, now=T0, schedule=SCHEDULE, limit=3)
                await asyncio.sleep(0.01)  # hold the row locks while the other worker claims
            if not claims:
                return got
            got += [r.id for c in claims for r in c.recipients]

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    flat = [x for r in results for x in r]
    assert len(flat) == 40 and len(set(flat)) == 40  # SKIP LOCKED: each row leased once
    await eng.dispose()


async def test_group_commit_shares_transactions(sessions) -> None:
    async with sessions() as s, s.begin():
        box = await create_mailbox(s, "dr@op-a.test", "PER")
        box_id = box.id
    gc = GroupCommitter(sessions, max_batch=64)

    async def one(i: int) -> int:
        async def job(s):
            await deliver(s, f"Subject: {i}\r\n\r\nbody\r\n".encode(), [box_id], internaldate=T0)
            return i
        return await gc.submit(job)

    async def bad(s):
        raise ValueError("this job fails")

    tasks = [asyncio.create_task(one(i)) for i in range(60)]
    failing = asyncio.create_task(gc.submit(bad))
    assert sorted(await asyncio.gather(*tasks)) == list(range(60))
    with pytest.raises(ValueError):
        await failing
    assert gc.jobs == 60 and gc.batches < 60  # several deliveries per commit
    await gc.close()
    async with sessions() as s:
        uids = sorted((await s.scalars(select(Message.uid))).all())
    assert uids == list(range(1, 61))  # every acknowledged delivery committed once, UIDs dense


async def _list(sessions) -> list[qstore.QueueRow]:
    async with sessions() as s:
        return await qstore.list_queue(s)


async def test_batched_local_delivery_keeps_uid_rules(sessions) -> None:
    from mssante.store.groupcommit import LocalDelivery
    from mssante.store.models import AuditEvent, Blob, Folder

    async with sessions() as s, s.begin():
        a = (await create_mailbox(s, "a@op-a.test", "PER")).id
        b = (await create_mailbox(s, "b@op-a.test", "PER")).id
        await deliver(s, b"Subject: first\r\n\r\nx\r\n", [a], internaldate=T0)  # UID 1 in a's INBOX
    gc = GroupCommitter(sessions, max_batch=64)
    ev = __import__("mssante.observability.audit", fromlist=["Audit"]).Audit(sessions, lambda: T0)
    same = b"Subject: same\r\n\r\nshared body\r\n"
    jobs = [LocalDelivery(same, [a, b], T0, "<s@x>", None, None, ev.event("t", "x"))]
    jobs += [LocalDelivery(f"Subject: {i}\r\n\r\n{i}\r\n".encode(), [a], T0, f"<{i}@x>") for i in range(20)]
    jobs.append(LocalDelivery(b"Subject: broken\r\n\r\n", [999999], T0))  # no such mailbox
    results = await asyncio.gather(*(gc.submit(j) for j in jobs), return_exceptions=True)
    assert isinstance(results[-1], Exception) and all(isinstance(r, list) and r for r in results[:-1])
    await gc.close()
    async with sessions() as s:
        rows = (await s.execute(select(Message.folder_id, Message.uid, Message.modseq))).all()
        folders = {f.id: f for f in (await s.scalars(select(Folder).where(Folder.name == "INBOX"))).all()}
        assert await s.scalar(select(func.count()).select_from(Blob)) == 22  # "same" stored once
        assert await s.scalar(select(func.count()).select_from(AuditEvent)) == 1
    by_folder: dict[int, list[tuple[int, int]]] = {}
    for f, uid, modseq in rows:
        by_folder.setdefault(f, []).append((uid, modseq))
    for f, items in by_folder.items():
        uids = sorted(u for u, _ in items)
        assert uids == list(range(1, len(uids) + 1))  # dense, ascending, never reused
        assert len({m for _, m in items}) == len(items)  # one MODSEQ per change
        assert folders[f].uidnext == len(uids) + 1 and folders[f].highestmodseq == max(m for _, m in items)
    assert sorted(len(v) for v in by_folder.values()) == [1, 22]


async def test_relayed_content_is_removed_unless_still_used(sessions) -> None:
    from mssante.store.models import Blob

    async with sessions() as s, s.begin():
        box = (await create_mailbox(s, "dr@op-a.test", "PER")).id
        shared = b"Subject: shared\r\n\r\nx\r\n"
        await deliver(s, shared, [box], internaldate=T0)  # a local copy uses the same blob
        await qstore.enqueue(s, shared, "dr@op-a.test", [qstore.NewRecipient("b@op-b.test")], now=T0)
        await qstore.enqueue(s, b"Subject: only relayed\r\n\r\ny\r\n", "dr@op-a.test",
                             [qstore.NewRecipient("b@op-b.test"), qstore.NewRecipient("c@op-c.test")], now=T0)
    async with sessions() as s, s.begin():
        claims = await qstore.claim(s, "w", now=T0, schedule=SCHEDULE)
    only = next(c for c in claims if c.domain == "op-c.test")
    async with sessions() as s, s.begin():
        await qstore.mark_sent(s, [r.id for r in only.recipients], [only.queue_message_id])
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Blob)) == 2  # still queued for op-b
    async with sessions() as s, s.begin():
        for c in claims:
            if c.domain == "op-b.test":
                await qstore.mark_sent(s, [r.id for r in c.recipients], [c.queue_message_id])
    async with sessions() as s:
        data = list((await s.scalars(select(Blob.data))).all())
        assert data == [b"Subject: shared\r\n\r\nx\r\n"]  # the mailbox copy keeps its content
        assert await s.scalar(select(func.count()).select_from(qstore.QueueMessage)) == 0


async def test_batch_reuses_stored_content_and_notifies_each_folder(sessions, db_url: str) -> None:
    """Content already stored (a second batch with the same message) is found again, not duplicated; on
    PostgreSQL each delivered folder gets its pg_notify at commit (IMAP IDLE in other processes)."""
    from mssante.store.groupcommit import LocalDelivery
    from mssante.store.mail import NOTIFY_CHANNEL
    from mssante.store.models import Blob

    async with sessions() as s, s.begin():
        boxes = [(await create_mailbox(s, f"n{i}@op-a.test", "PER")).id for i in range(3)]
    got: list[str] = []
    listener = None
    if db_url.startswith("postgresql"):
        import asyncpg

        listener = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
        await listener.add_listener(NOTIFY_CHANNEL, lambda *a: got.append(a[3]))
    gc = GroupCommitter(sessions, max_batch=64)
    same = b"Subject: again\r\n\r\nsame body\r\n"
    first = await gc.submit(LocalDelivery(same, boxes[:2], T0, "<a@x>"))
    again = await asyncio.gather(gc.submit(LocalDelivery(same, boxes[1:], T0, "<a@x>")),
                                 gc.submit(LocalDelivery(b"Subject: other\r\n\r\nz\r\n", [boxes[0]], T0)))
    await gc.close()
    assert len(first) == 2 and len(again[0]) == 2 and len(again[1]) == 1
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Blob)) == 2
        assert await s.scalar(select(func.count()).select_from(Message)) == 5
    if listener is not None:
        for _ in range(50):
            if len(got) >= 5:
                break
            await asyncio.sleep(0.05)
        await listener.close()
        folders = sorted({f for r in (first, *again) for f in r})
        assert set(got) == {str(f) for f in folders} and len(got) == 5  # first: 2 folders, then 3


async def test_rcpt_lookups_are_shared(db_url: str) -> None:
    """Concurrent RCPT lookups: one query for the addresses asked together, closed and unknown -> None;
    the connection is opened again after a failure."""
    from mssante.smtp.delivery import MailboxLookups
    from mssante.store.models import Mailbox

    eng = make_engine(db_url)
    async with eng.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    sessions = make_sessions(eng)
    async with sessions() as s, s.begin():
        ids = [(await create_mailbox(s, f"r{i}@op-a.test", "PER")).id for i in range(5)]
        (await s.get(Mailbox, ids[4])).enabled = False
    lk = MailboxLookups(eng)
    asked = [f"r{i}@op-a.test" for i in range(5)] + ["nobody@op-a.test", "r0@op-a.test"]
    got = await asyncio.gather(*(lk.get(a) for a in asked))
    assert got == [*ids[:4], None, None, ids[0]]
    assert lk.queries <= 2  # the first query, then everything asked while it ran
    await lk.close()  # as after a broken connection: the next lookup reconnects
    assert await lk.get("r1@op-a.test") == ids[1]
    await lk.close()
    await eng.dispose()


class _Batchable:
    calls: list[int] = []

    def __init__(self, n: int, fail: bool = False) -> None:
        self.n, self.fail = n, fail

    @staticmethod
    async def run_many(session, jobs):  # type: ignore[no-untyped-def]
        from mssante.store.models import AuditEvent

        _Batchable.calls.append(len(jobs))
        session.add_all([AuditEvent(at=T0, action="t.batch", actor=str(j.n), outcome="ok") for j in jobs])
        await session.flush()
        if any(j.fail for j in jobs):
            raise ValueError("bad job")
        return [j.n * 10 for j in jobs]


async def test_batchable_jobs_share_one_call_and_fail_alone(sessions) -> None:
    from mssante.store.models import AuditEvent

    _Batchable.calls = []
    gc = GroupCommitter(sessions, max_batch=64)
    jobs = [_Batchable(i, fail=(i == 2)) for i in range(5)]
    results = await asyncio.gather(*(gc.submit(j) for j in jobs), return_exceptions=True)
    await gc.close()
    assert isinstance(results[2], ValueError)
    assert [r for i, r in enumerate(results) if i != 2] == [0, 10, 30, 40]
    assert _Batchable.calls[0] == 5  # one call for the whole batch, then each alone after the failure
    async with sessions() as s:
        actors = sorted((await s.scalars(select(AuditEvent.actor).where(AuditEvent.action == "t.batch"))).all())
    assert actors == ["0", "1", "3", "4"]  # the failed call's writes were rolled back


async def test_relay_sent_outcomes_are_batched(sessions) -> None:
    from mssante.smtp.relay import RelaySent
    from mssante.observability.audit import Audit
    from mssante.store.models import AuditEvent, Blob

    audit = Audit(sessions, lambda: T0)
    async with sessions() as s, s.begin():
        for i in range(3):
            await qstore.enqueue(s, f"Subject: {i}\r\n\r\nx\r\n".encode(), "a@op-a.test",
                                 [qstore.NewRecipient(f"b{i}@op-b.test"), qstore.NewRecipient(f"c{i}@op-c.test")],
                                 now=T0)
    async with sessions() as s, s.begin():
        claims = await qstore.claim(s, "w", now=T0, schedule=SCHEDULE)
    gc = GroupCommitter(sessions, max_batch=64)
    await asyncio.gather(*(gc.submit(RelaySent([r.id for r in c.recipients], c.queue_message_id,
                                               audit.event("smtp.relay.sent", "relay", "sent", domain=c.domain)))
                           for c in claims))
    await gc.close()
    async with sessions() as s:
        assert await qstore.depth(s) == 0
        assert await s.scalar(select(func.count()).select_from(Blob)) == 0  # finished messages' content removed
        assert await s.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.action == "smtp.relay.sent")) == 6
