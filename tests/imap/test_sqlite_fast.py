"""The fast paths of SqlStorage (SQLite: mssante.imap.sqlite_fast / store_sqlite; PostgreSQL:
store_pg): same rows as the ORM; on SQLite group commit with one savepoint per operation and
fallbacks from the loop's connection."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3

import pytest
from sqlalchemy import select

from .conftest import Env, message

from mssante.imap import fetch as fetchmod
from mssante.imap import response, store_sqlite
from mssante.imap.parser import FetchAtt
from mssante.imap.mime import summarize
from mssante.imap.sqlite_fast import SqliteRunner
from mssante.imap.store import SqlStorage, StoreError
from mssante.store.models import AuditEvent, Blob, Folder, Message


async def _inbox(st: SqlStorage, env: Env) -> int:
    f = await st.folder(env.mailbox_id, "INBOX")
    assert f is not None
    return f.id


async def test_fast_path_is_used_and_rows_match_the_orm(env: Env) -> None:
    """On both backends (store_sqlite / store_pg)."""
    st = SqlStorage(env.services.sessions)
    assert st._fast is not None
    fid = await _inbox(st, env)
    raw = message("Résultat", extra="Disposition-Notification-To: <a@op-b.test>\r\n")
    when = dt.datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    uid, modseq = await st.append(fid, raw, ["\\flagged", "$Label"], when)
    async with env.services.sessions() as s:
        m = await s.scalar(select(Message).where(Message.folder_id == fid, Message.uid == uid))
        assert m is not None
        env_json, bs_json = summarize(raw)
        assert m.envelope == env_json and m.bodystructure == bs_json
        assert m.flags == "$Label \\Flagged" and m.modseq == modseq and m.size == len(raw)
        assert m.internaldate.replace(tzinfo=dt.timezone.utc) == when
        f = await s.scalar(select(Folder).where(Folder.id == fid))
        assert f is not None and f.uidnext == uid + 1 and f.highestmodseq == modseq
        assert (await s.scalar(select(Blob.data).where(Blob.id == m.blob_id))) == raw
    # A message delivered through the ORM reads the same through the fast path.
    uid2 = await env.deliver(raw)
    a, b = await st.details(fid, [uid, uid2], raw=True)
    assert a.envelope == b.envelope and a.bodystructure == b.bodystructure and a.raw == b.raw == raw
    assert a.internaldate == when and a.internaldate.tzinfo is not None
    res = await st.store_flags(fid, [uid, uid2], "+", ["\\Seen"], None)
    assert [m.uid for m in res.changed] == [uid, uid2] and len(res.first_seen) == 2
    # ENVELOPE's wire form is cached by the stored JSON text: same bytes as rendering it afresh.
    d1 = (await st.details(fid, [uid], raw=False))[0]
    assert d1.envelope_key is not None
    first = fetchmod.render(1, d1, [FetchAtt("ENVELOPE")], add_uid=False, add_modseq=False)
    again = fetchmod.render(1, (await st.details(fid, [uid], raw=False))[0], [FetchAtt("ENVELOPE")],
                            add_uid=False, add_modseq=False)
    assert first == again and response.envelope(d1.envelope) in first
    assert fetchmod._ENVELOPES[d1.envelope_key] == response.envelope(d1.envelope)
    status = await st.status(fid)
    assert (status.messages, status.unseen, status.deleted, status.size) == (2, 0, 0, 2 * len(raw))
    await st.aclose()


async def test_expunge_commits_its_audit_events(env: Env) -> None:
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    uids = [await env.deliver(message(f"m{i}")) for i in range(3)]
    await st.store_flags(fid, uids[:2], "+", ["\\Deleted"], None)
    audit = env.services.audit
    gone, modseq = await st.expunge(fid, None, events=lambda us: [audit.event("imap.expunge", "x", "ok",
                                                                              count=len(us))])
    assert gone == uids[:2] and modseq > 0
    changes = await st.changes_since(fid, modseq - 1)
    assert changes is not None and changes.expunged == uids[:2]
    async with env.services.sessions() as s:
        ev = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "imap.expunge"))).all()
        assert len(ev) == 1 and ev[0].details == {"count": 2} and ev[0].at is not None
    await st.aclose()


async def test_a_failing_operation_does_not_fail_its_batch(env_sqlite: Env) -> None:
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)

    def boom(c: sqlite3.Connection) -> None:
        c.execute("UPDATE folder SET uidnext = uidnext + 1000 WHERE id = ?", (fid,))
        raise RuntimeError("bug after a write")

    results = await asyncio.gather(
        st.append(fid, message("a"), [], dt.datetime.now(dt.timezone.utc)),
        st._fast.write(boom),
        st.append(fid, message("b"), [], dt.datetime.now(dt.timezone.utc)),
        st.store_flags(fid + 999, [1], "+", ["\\Seen"], None),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError) and isinstance(results[3], StoreError)
    (u1, _m1), (u2, _m2) = results[0], results[2]
    assert u2 == u1 + 1  # the failed operation's write was rolled back alone
    f = await st.folder(env.mailbox_id, "INBOX")
    assert f is not None and f.uidnext == u2 + 1
    assert [m.uid for m in await st.messages(fid)] == [u1, u2]
    await st.aclose()


async def test_big_folders_and_bodies_are_read_off_the_loop(env_sqlite: Env, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    uids = [await env.deliver(message(f"m{i}")) for i in range(4)]
    monkeypatch.setattr(store_sqlite, "INLINE_ROWS", 2)
    monkeypatch.setattr(store_sqlite, "INLINE_BYTES", 10)
    threaded: list[str] = []
    real = SqliteRunner.read

    async def spy(self: SqliteRunner, fn, *args, inline: bool = False):  # type: ignore[no-untyped-def]
        if not inline:
            threaded.append(fn.__name__)
        return await real(self, fn, *args, inline=inline)

    monkeypatch.setattr(SqliteRunner, "read", spy)
    opened = await st.open_folder(env.mailbox_id, "INBOX")
    assert opened is not None and [m.uid for m in opened[1]] == uids
    got = await st.details(fid, uids[:1], raw=True)
    assert got[0].raw is not None and got[0].raw.startswith(b"From:")
    assert threaded == ["messages", "details"]
    await st.aclose()


async def test_a_folder_that_once_held_many_messages_is_still_opened_on_the_loop(
        env_sqlite: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline bound is the number of messages now, not UIDNEXT (which only grows)."""
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    uids = [await env.deliver(message(f"m{i}")) for i in range(5)]
    await st.store_flags(fid, uids[:3], "+", ["\\Deleted"], None)
    await st.expunge(fid, None)
    monkeypatch.setattr(store_sqlite, "INLINE_ROWS", 2)
    threaded: list[str] = []
    real = SqliteRunner.read

    async def spy(self: SqliteRunner, fn, *args, inline: bool = False, snapshot: bool = True):  # type: ignore[no-untyped-def]
        if not inline:
            threaded.append(fn.__name__)
        return await real(self, fn, *args, inline=inline, snapshot=snapshot)

    monkeypatch.setattr(SqliteRunner, "read", spy)
    st._views = type(st._views)()  # no cached view: the folder is read
    opened = await st.open_folder(env.mailbox_id, "INBOX")
    assert opened is not None and opened[0].uidnext - 1 == 5
    assert [m.uid for m in opened[1]] == uids[3:] and threaded == []
    await env.deliver(message("one more"))  # 3 messages > 2: now read off the loop
    st._views = type(st._views)()
    opened = await st.open_folder(env.mailbox_id, "INBOX")
    assert opened is not None and len(opened[1]) == 3 and threaded == ["messages"]
    await st.aclose()


async def test_inline_read_falls_back_when_busy(env_sqlite: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_sqlite
    st = SqlStorage(env.services.sessions)

    def busy(self: SqliteRunner, fn: object, args: object, snapshot: bool = True) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SqliteRunner, "_inline_call", busy)
    f = await st.folder(env.mailbox_id, "INBOX")
    assert f is not None and f.name == "INBOX"
    await st.aclose()
    with pytest.raises(RuntimeError):
        await st.folder(env.mailbox_id, "INBOX")


async def test_select_reuses_an_unchanged_folder_view(env: Env) -> None:
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    uids = [await env.deliver(message(f"m{i}")) for i in range(3)]
    a = await st.open_folder(env.mailbox_id, "INBOX")
    b = await st.open_folder(env.mailbox_id, "INBOX")
    assert a is not None and b is not None and a[1] == b[1] and a[1] is not b[1]
    assert all(x is y for x, y in zip(a[1], b[1], strict=True))  # shared, immutable MessageMeta
    # Any change (flags, delivery, expunge) bumps HIGHESTMODSEQ: the next SELECT reads afresh.
    await st.store_flags(fid, uids[:1], "+", ["\\Deleted"], None)
    c = await st.open_folder(env.mailbox_id, "INBOX")
    assert c is not None and c[1][0].flags == ("\\Deleted",) and c[0].highestmodseq > a[0].highestmodseq
    await st.expunge(fid, None)
    new = await env.deliver(message("late"))
    d = await st.open_folder(env.mailbox_id, "INBOX")
    assert d is not None and [m.uid for m in d[1]] == [*uids[1:], new]
    # Another mailbox never sees this one's view.
    other = await st.open_folder(env.other_id, "INBOX")
    assert other is not None and other[1] == []
    await st.aclose()


async def test_a_lost_transaction_fails_its_whole_batch_and_nothing_unacknowledged_is_kept(env_sqlite: Env) -> None:
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)

    def lose(c: sqlite3.Connection) -> None:
        c.execute("ROLLBACK")  # as SQLite does by itself on an I/O error or a full disk
        raise sqlite3.OperationalError("disk I/O error")

    now = dt.datetime.now(dt.timezone.utc)
    raws = [message(f"x{i}") for i in range(4)]
    results = await asyncio.gather(st.append(fid, raws[0], [], now), st.append(fid, raws[1], [], now),
                                   st._fast.write(lose), st.append(fid, raws[2], [], now),
                                   st.append(fid, raws[3], [], now), return_exceptions=True)
    assert isinstance(results[2], StoreError) and results[2].code == "SERVERBUG"
    kept = {u for u, _m in (r for r in results if isinstance(r, tuple))}
    for r in results:
        assert isinstance(r, tuple) or (isinstance(r, StoreError) and r.code == "SERVERBUG")
    # Exactly the acknowledged appends are there, and the writer goes on working.
    assert {m.uid for m in await st.messages(fid)} == kept
    uid, _modseq = await st.append(fid, message("after"), [], now)
    assert uid in {m.uid for m in await st.messages(fid)}
    await st.aclose()


async def test_writes_run_on_the_loop_and_commit_in_batches(env_sqlite: Env) -> None:
    """Operations queued in one loop iteration share one transaction (committed off the loop)."""
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    runner = st._fast
    before = runner.batches
    now = dt.datetime.now(dt.timezone.utc)
    done = await asyncio.gather(*(st.append(fid, message(f"m{i}"), [], now) for i in range(10)))
    assert len({u for u, _m in done}) == 10
    assert runner.batches - before == 1 and runner._iw is not None and runner._iw.fallbacks == 0
    assert runner._writer is None  # the writer thread was never needed
    await st.aclose()


async def test_a_store_that_changes_nothing_takes_no_write_transaction(env_sqlite: Env) -> None:
    """Marking read what is already read is answered from a read: it neither waits for a held
    write lock nor commits; a STORE that changes a flag does wait (it must be durable first)."""
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    now = dt.datetime.now(dt.timezone.utc)
    uid, _m = await st.append(fid, message("seen"), ["\\Seen"], now)
    batches = st._fast.batches
    other = sqlite3.connect(env.services.engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        res = await asyncio.wait_for(st.store_flags(fid, [uid], "+", ["\\Seen"], None), 5)
        assert res.changed == [] and res.modified == [] and res.first_seen == []
        res = await asyncio.wait_for(st.store_flags(fid, [uid], "+", ["\\Seen"], 0), 5)
        assert res.modified == [uid] and res.changed == []  # UNCHANGEDSINCE fails: no write either
        change = asyncio.ensure_future(st.store_flags(fid, [uid], "-", ["\\Seen"], None))
        await asyncio.sleep(0.3)
        assert not change.done()  # a real change waits for the lock
    finally:
        other.execute("COMMIT")
        other.close()
    res = await asyncio.wait_for(change, 30)
    assert [m.uid for m in res.changed] == [uid] and res.changed[0].flags == ()
    assert st._fast.batches > batches  # only the real change committed
    await st.aclose()


async def test_a_held_write_lock_sends_the_batch_to_the_writer_thread(env_sqlite: Env) -> None:
    """Another writer holds SQLite's lock: the loop does not wait for it; the writer thread does,
    and the callers are answered once their transaction committed after the lock was released."""
    env = env_sqlite
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    path = env.services.engine.url.database
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    now = dt.datetime.now(dt.timezone.utc)
    task = asyncio.gather(*(st.append(fid, message(f"w{i}"), [], now) for i in range(3)))
    await asyncio.sleep(0.3)
    assert not task.done()  # not acknowledged while it cannot be durable
    assert st._fast._iw.fallbacks >= 1
    other.execute("COMMIT")
    other.close()
    uids = {u for u, _m in await asyncio.wait_for(task, 30)}
    assert uids <= {m.uid for m in await st.messages(fid)} and len(uids) == 3
    await st.aclose()


async def test_several_processes_take_turns_on_the_lock_file(env_sqlite: Env) -> None:
    """With `shared` (imap.processes > 1) a write waits for the lock file another process holds,
    on the commit thread, never on the loop; writes queued meanwhile join its batch."""
    import fcntl
    import os

    env = env_sqlite
    st = SqlStorage(env.services.sessions, shared=True)
    fid = await _inbox(st, env)
    path = env.services.engine.url.database
    fd = os.open(path + ".imap-write-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "the other process"
    now = dt.datetime.now(dt.timezone.utc)
    task = asyncio.gather(*(st.append(fid, message(f"locked{i}"), [], now) for i in range(2)))
    await asyncio.sleep(0.05)
    task2 = asyncio.ensure_future(st.append(fid, message("queued meanwhile"), [], now))
    ticks = 0
    for _ in range(20):  # the loop keeps running meanwhile
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 20 and not task.done() and not task2.done()
    batches = st._fast.batches
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    uids = {u for u, _m in await asyncio.wait_for(task, 30)} | {(await asyncio.wait_for(task2, 30))[0]}
    assert uids <= {m.uid for m in await st.messages(fid)} and len(uids) == 3
    iw = st._fast._iw
    assert st._fast.batches == batches + 1 and iw.lock_waits == 1 and iw.fallbacks == 0
    assert st._fast._writer is None  # the loop did the work; only the wait was on a thread
    await st.aclose()


async def test_a_failed_begin_answers_its_batch_and_releases_the_lock_file(env_sqlite: Env) -> None:
    """An I/O error at BEGIN (not a busy lock) fails that batch only, and the lock file is free
    for the other processes at once (a held lock would stop every IMAP process's writes)."""
    import fcntl
    import os

    env = env_sqlite
    st = SqlStorage(env.services.sessions, shared=True)
    fid = await _inbox(st, env)
    now = dt.datetime.now(dt.timezone.utc)
    await st.append(fid, message("first"), [], now)
    iw = st._fast._iw
    real = iw._conn

    class FailingBegin:
        def execute(self, sql: str, *a: object) -> object:
            if sql == "BEGIN IMMEDIATE":
                iw._conn = real  # once
                raise sqlite3.DatabaseError("disk I/O error")
            return real.execute(sql, *a)

    iw._conn = FailingBegin()
    with pytest.raises(sqlite3.DatabaseError):
        await asyncio.wait_for(st.append(fid, message("lost"), [], now), 30)  # answered, not left waiting
    fd = os.open(env.services.engine.url.database + ".imap-write-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises BlockingIOError otherwise
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    uid, _m = await st.append(fid, message("after"), [], now)
    assert uid in {m.uid for m in await st.messages(fid)}
    await st.aclose()


async def test_a_message_stored_without_its_summary_gets_one_computed(env: Env) -> None:
    """ENVELOPE/BODYSTRUCTURE missing from the row (an older delivery path): computed from the blob,
    the same on both fast paths and the ORM path (store.row_detail)."""
    from sqlalchemy import update

    raw = message("Sans résumé")
    uid = await env.deliver(raw)
    async with env.services.sessions() as s, s.begin():
        await s.execute(update(Message).where(Message.uid == uid).values(envelope=None, bodystructure=None))
    st = SqlStorage(env.services.sessions)
    fid = await _inbox(st, env)
    want_env, want_bs = summarize(raw)
    for raw_too in (False, True):
        (d,) = await st.details(fid, [uid], raw=raw_too, summary=True)
        assert d.envelope == want_env and d.bodystructure == want_bs and d.envelope_key is None
        assert d.raw == (raw if raw_too else None)
    fast, st._fast = st._fast, None  # the SQLAlchemy path
    (d,) = await st.details(fid, [uid], raw=False, summary=True)
    assert d.envelope == want_env and d.bodystructure == want_bs and d.raw is None
    st._fast = fast
    await st.aclose()
