"""The Y worker: takes stored legs to their destinations and tracks them until confirmed.

One loop (woken by the intake after each commit, else every `poll_interval` seconds) runs:

1. MSSanté legs (`accepted`): each leg message is submitted *as the lab's APP mailbox* through the
   submission rules (mssante/smtp/submission.py: sender must be an open local mailbox; each
   recipient local-and-open or in the trust space, else refused with the SMTP reply; Message-ID/Date
   hygiene; Received trace) and the same acceptance writes (mssante/smtp/delivery.py: local
   delivery with ENVELOPE/BODYSTRUCTURE, relay queue rows with NOTIFY=SUCCESS,FAILURE,DELAY and an
   ENVID, audit). Those writes and the leg transitions (`delivered` for local recipients, `queued`
   for remote ones, `failed` for refused ones) are ONE transaction: a crash leaves either nothing
   done (the leg is submitted again) or everything done (never twice).
2. DMP legs (`accepted`, due): the attempt and its next retry time are committed *before* calling
   the DmpConnector (the mox queue rule); Accepted -> `dmp-accepted`, Rejected -> `dmp-rejected`,
   TemporaryFailure -> retried on `DMP_SCHEDULE`, `dmp-rejected` after `dmp_max_attempts`.
   A crash during the call means one more call later with the same document uniqueId (the DMP
   detects the duplicate): at-least-once on the wire, exactly one tracked outcome.
3. DSNs and MDNs delivered to the lab's APP mailbox (INBOX, read past a per-folder UID cursor kept
   in the same transaction as the leg updates) are matched to their leg by Original-Envelope-Id /
   returned Message-ID (DSN, RFC 3464) or Original-Message-ID + Final-Recipient (MDN, RFC 8098).
4. `queued` legs whose relay queue rows are gone were handed over to the remote operator: `sent`.
5. Business acknowledgements (y_ack_outbox) go to the lab's MLLP ACK endpoint as ZAM^Z01/Z02/Z03
   (attempt recorded before sending; a stable MSH-10 "ZAM<id>" lets the lab drop a resent one).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.parser
import functools
import email.policy
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mssante.dmp.api import DmpAccepted, DmpAction, DmpConnector, DmpRejected, DmpRequest, DmpTemporaryFailure
from mssante.store.models import Blob, Folder, Mailbox, Message
from mssante.y.ack import AckContext, ZamEvent, build_zam
from mssante.y.ack import ZamError as WireZamError
from mssante.y.models import LEG_DMP, LEG_MSS, YAckOutbox, YDelivery, YLeg, YMailCursor
from mssante.y.reports import ReportError, parse_dsn, parse_mdn
from mssante.y.tracking import (
    ACCEPTED,
    DELIVERED,
    DMP_ACCEPTED,
    DMP_REJECTED,
    FAILED,
    QUEUED,
    READ,
    READ_ERROR,
    SENT,
    Change,
    ZamError,
    apply_many,
    aware,
    transition,
)

if TYPE_CHECKING:
    from mssante.app import Services

log = logging.getLogger("mssante.y.worker")

# Seconds to wait after the n-th failed attempt; the last value repeats (documented in docs/y-runtime.md).
DMP_SCHEDULE = (30, 120, 600, 1800, 3600)
ZAM_SCHEDULE = (10, 60, 300, 900, 3600)
SUBMIT_RETRY = 60  # a leg whose sender mailbox is missing/closed waits this long (operator misconfiguration)


def _delay(schedule: Sequence[int], attempts: int) -> dt.timedelta:
    i = min(max(attempts, 1), len(schedule)) - 1
    return dt.timedelta(seconds=schedule[i])


def envid_for(leg_message_id: str) -> str:
    """RFC 3461 §4.4 ENVID (xtext-safe): the leg message's Message-ID without brackets."""
    return leg_message_id.strip("<> ")[:100]


def prepare_leg_message(services: Services, raw: bytes, now: dt.datetime, *,
                        summarize: bool = True) -> tuple[bytes, Any, Any]:
    """Submission hygiene and trace (CPU work kept out of the write transaction). ENVELOPE and
    BODYSTRUCTURE (for IMAP) are only computed when the message is delivered locally."""
    from mssante.smtp.delivery import summarize as summarize_mime
    from mssante.smtp.message import prepare_submission, received_header

    prepared, _ = prepare_submission(raw, now=now, domain=services.config.operator.domain)
    received = received_header(
        from_helo="mllp-intake", peer_ip="127.0.0.1", by_host=services.config.hostname, protocol="ESMTPA",
        tls="internal submission by the Y intake", cert_subject=None, recipient=None,
        queue_id=secrets.token_hex(6), now=now,
    )
    full = received + prepared
    env, bs = summarize_mime(full) if summarize else (None, None)
    return full, env, bs


def _relay_wakeup(services: Services) -> None:
    try:
        from mssante.smtp.delivery import relay_wakeup
    except ImportError:  # pragma: no cover
        return
    relay_wakeup(services).set()


def _request_of(leg: YLeg, cda: bytes) -> DmpRequest:
    fields = dict((leg.detail or {}).get("request", {}))
    fields["action"] = DmpAction(fields["action"])
    fields["restrictions"] = frozenset(fields.get("restrictions", ()))
    return DmpRequest(cda=cda, **fields)


_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


def report_type(raw: bytes) -> str | None:
    """'delivery-status' or 'disposition-notification' for a multipart/report, else None."""
    head = raw[: raw.find(b"\r\n\r\n") + 2] if b"\r\n\r\n" in raw[:65536] else raw[:65536]
    msg = _HEADERS.parsebytes(head)
    if msg.get_content_type() != "multipart/report":
        return None
    rt = str(msg.get_param("report-type", "") or "").lower()
    return rt if rt in ("delivery-status", "disposition-notification") else None


class YWorker:
    def __init__(
        self,
        services: Services,
        *,
        dmp: DmpConnector | None = None,
        poll_interval: float = 1.0,
        dmp_schedule: Sequence[int] = DMP_SCHEDULE,
        dmp_max_attempts: int = 8,
        dmp_timeout: float | None = None,
        zam_schedule: Sequence[int] = ZAM_SCHEDULE,
        zam_max_attempts: int = 40,
        batch: int = 100,
        submit_batch: int = 32,
        coalesce: float = 0.03,
        relay_interval: float = 5.0,
    ) -> None:
        self.services = services
        self.dmp = dmp
        self.poll_interval = poll_interval
        self.dmp_schedule = tuple(dmp_schedule)
        self.dmp_max_attempts = dmp_max_attempts
        self.dmp_timeout = dmp_timeout if dmp_timeout is not None else max(services.config.dmp.timeout, 1.0)
        self.zam_schedule = tuple(zam_schedule)
        self.zam_max_attempts = zam_max_attempts
        self.batch = batch
        # Leg messages per write transaction: small enough that intake commits (ACK AA) interleave with
        # the worker's on SQLite's single writer, large enough to share one fsync.
        self.submit_batch = submit_batch
        # After a round that was not full, wait this long before the next one: under a stream of intake
        # commits (each wakes the worker) the rounds gather several deliveries instead of one each.
        self.coalesce = coalesce
        self.full_interval = min(poll_interval, 0.2)
        # The relay hand-over check reads every `queued` leg (thousands during a remote operator's outage):
        # at most this often from the loop; the relay itself retries on a 5 s poll.
        self.relay_interval = relay_interval
        self.wakeup = services.extras.get("y_wakeup")
        if not isinstance(self.wakeup, asyncio.Event):
            self.wakeup = asyncio.Event()
            services.extras["y_wakeup"] = self.wakeup
        self._task: asyncio.Task[None] | None = None
        self._dmp_tasks: set[asyncio.Task[None]] = set()
        self._pg = services.engine.dialect.name == "postgresql"

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="y-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for t in list(self._dmp_tasks):
            t.cancel()
        for t in list(self._dmp_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _loop(self) -> None:
        assert self.wakeup is not None
        loop = asyncio.get_running_loop()
        last_full = last_relay = float("-inf")
        while True:
            woken = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.poll_interval)
                woken = True
            self.wakeup.clear()
            # A wake-up comes from an intake commit: new legs to submit. The other duties (reports, relay
            # hand-over, DMP, ZAMs) run on the poll timer and at most every `full_interval` under load.
            full = not woken or loop.time() - last_full >= self.full_interval
            try:
                if full:
                    last_full = loop.time()
                    relay = last_full - last_relay >= self.relay_interval
                    if relay:
                        last_relay = last_full
                    busy = await self.run_once(relay=relay)
                else:
                    busy = await self.submit_mss(self.services.now())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep tracking; the next round retries
                log.exception("y worker round failed")
                busy = 0
            if busy >= self.submit_batch:
                self.wakeup.set()  # more is waiting
            elif self.coalesce > 0:
                await asyncio.sleep(self.coalesce)

    async def run_once(self, *, relay: bool = True) -> int:
        """One round of every duty (the relay hand-over check if `relay`); returns how many items were
        handled (tests call it directly)."""
        now = self.services.now()
        done = await self.submit_mss(now)
        done += await self.scan_mail_entry(now)
        done += await self.start_dmp(now)
        done += await self.scan_reports(now)
        if relay:
            done += await self.check_relay(now)
        done += await self.send_zams(now)
        return done

    async def drain_dmp(self) -> None:
        """Wait for DMP calls started by `run_once` (tests)."""
        while self._dmp_tasks:
            await asyncio.gather(*list(self._dmp_tasks), return_exceptions=True)

    # --- 1. MSSanté legs ----------------------------------------------------------------------------
    async def submit_mss(self, now: dt.datetime) -> int:
        """Submit due leg messages: CPU work first (outside any transaction), then ONE transaction for the
        batch (one fsync); if that fails, each leg message alone, so one bad group blocks no other."""
        async with self.services.sessions() as s:
            rows = (await s.execute(
                select(YLeg.delivery_id, YLeg.message_id, YLeg.blob_id, YLeg.recipient)
                .where(YLeg.kind == LEG_MSS, YLeg.state == ACCEPTED, YLeg.next_attempt_at <= now)
                .order_by(YLeg.id).limit(self.batch * 4)
            )).all()
            groups: dict[tuple[int, str, int], list[str]] = {}
            for delivery_id, message_id, blob_id, rcpt in rows:
                groups.setdefault((int(delivery_id), str(message_id), int(blob_id or 0)), []).append(rcpt)
            keys = list(groups)[: self.submit_batch]
            blobs = {int(i): bytes(d) for i, d in (await s.execute(
                select(Blob.id, Blob.data).where(Blob.id.in_({k[2] for k in keys})))).all()} if keys else {}
        if not keys:
            return 0
        local_domains = self.services.config.all_local_domains

        def prepare_all() -> dict[int, tuple[bytes, Any, Any]]:
            out = {}
            for key in keys:
                has_local = any(r.rpartition("@")[2].lower() in local_domains for r in groups[key])
                out[key[2]] = prepare_leg_message(self.services, blobs[key[2]], now, summarize=has_local)
            return out

        prepared = await asyncio.to_thread(prepare_all)
        # Through the gateway's group committer, as the intake's plans: one writer per process, so that on
        # SQLite this transaction and the intake's queue up here instead of in SQLite's busy handler (which
        # sleeps 1, 2, 5, 10 ms… between tries while the other connection holds the write lock).
        from mssante.smtp.delivery import committer_for

        committer = committer_for(self.services)
        changes: list[Change] = []
        try:
            changes = await committer.submit(functools.partial(self._submit_batch, keys=keys, prepared=prepared, now=now))
        except Exception:  # noqa: BLE001 - one bad group must not block the others: each alone
            log.warning("y worker: submission batch of %d failed; each leg message alone", len(keys), exc_info=True)
            for key in keys:
                try:
                    changes += await committer.submit(functools.partial(self._submit_batch, keys=[key],
                                                                        prepared=prepared, now=now))
                except Exception:  # noqa: BLE001 - stays accepted, retried next round
                    log.exception("y delivery %s: submission failed", key[0])
        for c in changes:
            self.services.metrics.y_legs.labels(kind=LEG_MSS, state=c.target).inc()
        if changes:
            _relay_wakeup(self.services)
        return len(changes)

    async def _submit_batch(self, s: AsyncSession, *, keys: Sequence[tuple[int, str, int]],
                            prepared: dict[int, tuple[bytes, Any, Any]], now: dt.datetime) -> list[Change]:
        """Submit leg messages as the lab's APP mailbox, in the caller's transaction, with a fixed number of
        statements whatever the batch size.

        The rules of mssante/smtp/submission.py, applied in-process (no SMTP hop between two parts of one
        gateway): the sender is an open APP mailbox of ours (else the legs wait SUBMIT_RETRY seconds); local
        recipients must exist and be open (550 5.1.1); remote ones must be in the trust space (550 5.7.1,
        SPECS.md §1). Writes: local deliveries (`deliver_many`: UIDs, MODSEQ, ENVELOPE/BODYSTRUCTURE), the
        relay queue rows of `mssante.store.queue.enqueue`, the `smtp.y.accept` audit events and the leg
        transitions (`apply_many`). Returns the legs moved. A group-commit job: safe to run again after a
        rollback (it only writes through `s`)."""
        from mssante.smtp.envelope import domain_of
        from mssante.store.groupcommit import LocalDelivery, deliver_many
        from mssante.y.storage import QueuedLeg, write_submission

        # By Message-ID and delivery (their indexes), with the delivery's sender mailbox; state and kind are
        # checked below, not in SQL, so that SQLite does not walk the state index (accepted DMP legs may be many).
        q = (select(YLeg.id, YLeg.delivery_id, YLeg.message_id, YLeg.recipient, YLeg.kind, YLeg.state,
                    YDelivery.sender_mailbox)
             .join(YDelivery, YDelivery.id == YLeg.delivery_id)
             .where(YLeg.message_id.in_(sorted({k[1] for k in keys})),
                    YLeg.delivery_id.in_(sorted({k[0] for k in keys})))
             .order_by(YLeg.id))
        if self._pg:
            q = q.with_for_update(skip_locked=True, of=YLeg)
        legs: dict[tuple[int, str], list[tuple[int, str]]] = {}
        senders: dict[int, str] = {}
        wanted = {(k[0], k[1]) for k in keys}
        for leg_id, delivery_id, message_id, rcpt, kind, state, sender in (await s.execute(q)).all():
            if (int(delivery_id), str(message_id)) in wanted and kind == LEG_MSS and state == ACCEPTED:
                legs.setdefault((int(delivery_id), str(message_id)), []).append((int(leg_id), str(rcpt)))
                senders[int(delivery_id)] = str(sender)
        work = [k for k in keys if (k[0], k[1]) in legs]  # the others: another worker did them
        if not work:
            return []
        # The senders (open APP mailboxes?) and the local recipients (open mailboxes?) in one look-up.
        local_domains = self.services.config.all_local_domains
        local_rcpts = {r.lower() for k in work for _, r in legs[(k[0], k[1])] if domain_of(r.lower()) in local_domains}
        wanted_boxes = sorted(local_rcpts | {m.lower() for m in senders.values()})
        found = {str(a): (int(i), bool(e), str(kind)) for a, i, e, kind in (await s.execute(
            select(Mailbox.address, Mailbox.id, Mailbox.enabled, Mailbox.kind)
            .where(Mailbox.address.in_(wanted_boxes)))).all()}
        open_apps = {a for a, (_, enabled, kind) in found.items() if enabled and kind == "APP"}
        boxes = {a: (i, e) for a, (i, e, _) in found.items() if a in local_rcpts}
        trust = self.services.trust
        local_items: list[LocalDelivery] = []
        queued: list[tuple[tuple[int, str, int], str, list[str]]] = []  # key, sender, remote recipients
        events: list[dict[str, Any]] = []
        changes: list[Change] = []
        for key in work:
            delivery_id, message_id, _ = key
            sender = senders.get(delivery_id, "").lower()
            group = legs[(delivery_id, message_id)]
            if sender not in open_apps:
                error = f"sender mailbox {sender} is not an open APP mailbox of this operator"
                log.error("y delivery %s: %s", delivery_id, error)
                await s.execute(update(YLeg).where(YLeg.id.in_([i for i, _ in group]), YLeg.state == ACCEPTED)
                                .values(next_attempt_at=now + dt.timedelta(seconds=SUBMIT_RETRY), last_error=error[:500]))
                continue
            full, env, bs = prepared[key[2]]
            results: dict[str, tuple[str, str]] = {}
            local_ids: dict[str, int] = {}
            remote: list[str] = []
            for _, rcpt in group:
                addr = rcpt.lower()
                domain = domain_of(addr)
                if domain in local_domains:
                    box = boxes.get(addr)
                    if box is None or not box[1]:
                        results[rcpt] = (FAILED, "550 5.1.1 Mailbox unknown or closed")
                        continue
                    local_ids[rcpt] = box[0]
                    results[rcpt] = (DELIVERED, "250 2.0.0 delivered")
                elif trust is None or not trust.policy.submission(domain).accept:
                    results[rcpt] = (FAILED, f"550 5.7.1 Recipient domain {domain} is not in the MSSante trust space")
                else:
                    remote.append(addr)
                    results[rcpt] = (QUEUED, "250 2.0.0 queued")
            if local_ids:
                local_items.append(LocalDelivery(full, sorted(set(local_ids.values())), now, message_id, env, bs))
            if remote:
                queued.append((key, sender, remote))
            ev = self.services.audit.event(
                "smtp.y.accept", sender, "accepted" if local_ids or remote else "refused", mail_from=sender,
                local=sorted(local_ids), remote=remote, refused=sorted(r for r, v in results.items() if v[0] == FAILED),
                message_id=message_id, size=len(full))
            events.append({"at": ev.at, "action": ev.action, "actor": ev.actor, "outcome": ev.outcome,
                           "details": ev.details})
            for leg_id, rcpt in group:
                state, reply = results[rcpt]
                error = ZamError(reply[:3], reply[4:]) if state == FAILED else None
                changes.append(Change(leg_id, LEG_MSS, ACCEPTED, delivery_id, state, reply, error))
        if local_items:
            await deliver_many(s, local_items)
        # The relay queue rows of mssante.store.queue.enqueue and the audit events, for the whole batch.
        await write_submission(s, [QueuedLeg(prepared[k[2]][0], sender, k[1], envid_for(k[1]), tuple(remote))
                                   for k, sender, remote in queued], events, now=now)
        applied = set(await apply_many(s, changes, now=now))
        return [c for c in changes if c.leg_id in applied]

    # --- 2. DMP legs ---------------------------------------------------------------------------------
    async def start_dmp(self, now: dt.datetime) -> int:
        if self.dmp is None:
            return 0
        claimed: list[int] = []
        async with self.services.sessions() as s, s.begin():
            q = (select(YLeg).where(YLeg.kind == LEG_DMP, YLeg.state == ACCEPTED, YLeg.next_attempt_at <= now)
                 .where((YLeg.lease_until.is_(None)) | (YLeg.lease_until < now))
                 .order_by(YLeg.next_attempt_at, YLeg.id).limit(self.batch))
            if self._pg:
                q = q.with_for_update(skip_locked=True)
            for leg in (await s.scalars(q)).all():
                # Attempt and next retry recorded before the call (crash = retried, never forgotten).
                leg.attempts += 1
                leg.next_attempt_at = now + _delay(self.dmp_schedule, leg.attempts)
                leg.lease_until = now + dt.timedelta(seconds=self.dmp_timeout + 30)
                claimed.append(leg.id)
        for leg_id in claimed:
            task = asyncio.create_task(self._dmp_attempt(leg_id), name=f"y-dmp-{leg_id}")
            self._dmp_tasks.add(task)
            task.add_done_callback(self._dmp_tasks.discard)
        return len(claimed)

    async def _dmp_attempt(self, leg_id: int) -> None:
        assert self.dmp is not None
        async with self.services.sessions() as s:
            leg = await s.get(YLeg, leg_id)
            assert leg is not None
            cda = await s.scalar(select(Blob.data).where(Blob.id == leg.blob_id))
            attempts = leg.attempts
        request = _request_of(leg, bytes(cda or b""))
        try:
            outcome: Any = await asyncio.wait_for(self.dmp.send(request), self.dmp_timeout)
        except asyncio.TimeoutError:
            outcome = DmpTemporaryFailure("timeout")
        except Exception as e:  # noqa: BLE001 - a connector bug is a temporary failure, retried
            log.exception("dmp connector failed for leg %s", leg_id)
            outcome = DmpTemporaryFailure(type(e).__name__)
        now = self.services.now()
        async with self.services.sessions() as s, s.begin():
            if isinstance(outcome, DmpAccepted):
                await transition(s, leg_id, DMP_ACCEPTED, now=now, reason="RegistryResponse Success",
                                 detail={"document_unique_id": outcome.document_unique_id,
                                         "submission_set_unique_id": outcome.submission_set_unique_id})
                state = DMP_ACCEPTED
            elif isinstance(outcome, DmpRejected):
                await transition(s, leg_id, DMP_REJECTED, now=now, reason=f"{outcome.code}",
                                 error=ZamError(outcome.code, outcome.text[:200]))
                state = DMP_REJECTED
            elif attempts >= self.dmp_max_attempts:
                await transition(s, leg_id, DMP_REJECTED, now=now, reason=f"gave up after {attempts} attempts",
                                 error=ZamError("TIMEOUT", f"DMP injoignable apres {attempts} tentatives"))
                state = DMP_REJECTED
            else:
                await s.execute(update(YLeg).where(YLeg.id == leg_id, YLeg.state == ACCEPTED).values(
                    last_error=str(getattr(outcome, "reason", "temporary failure"))[:500], lease_until=None))
                state = "retry"
        self.services.metrics.y_legs.labels(kind=LEG_DMP, state=state).inc()
        self.services.metrics.dmp_calls.labels(outcome=state).inc()
        if state != "retry" and isinstance(self.wakeup, asyncio.Event):
            self.wakeup.set()  # a ZAM may be due

    # --- 3. DSNs and MDNs in the labs' APP mailboxes ----------------------------------------------
    async def _app_folders(self) -> list[int]:
        """INBOX folders of our APP mailboxes (labs; the routing mailbox excepted) holding unexamined mail.

        Every APP mailbox, not only those of config.mllp.senders: a lab using the native email entry
        receives its DSNs and MDNs the same way. One query per round, whatever the number of labs.
        """
        from sqlalchemy import func

        from mssante.y.service import routing_address

        async with self.services.sessions() as s:
            rows = (await s.execute(
                select(Folder.id)
                .join(Mailbox, Mailbox.id == Folder.mailbox_id)
                .join(Message, Message.folder_id == Folder.id)
                .outerjoin(YMailCursor, YMailCursor.folder_id == Folder.id)
                .where(Mailbox.kind == "APP", Folder.name == "INBOX",
                       Mailbox.address != routing_address(self.services),
                       Message.uid > func.coalesce(YMailCursor.last_uid, 0))
                .group_by(Folder.id)
            )).all()
        return [int(r[0]) for r in rows]

    async def scan_reports(self, now: dt.datetime) -> int:
        handled = 0
        for folder_id in await self._app_folders():
            handled += await self._scan_folder(folder_id, now)
        return handled

    async def _scan_folder(self, folder_id: int, now: dt.datetime) -> int:
        async with self.services.sessions() as s, s.begin():
            cursor = await s.scalar(select(YMailCursor).where(YMailCursor.folder_id == folder_id))
            if cursor is None:
                cursor = YMailCursor(folder_id=folder_id, last_uid=0)
                s.add(cursor)
                await s.flush()
            rows = (await s.execute(
                select(Message.uid, Blob.data).join(Blob, Blob.id == Message.blob_id)
                .where(Message.folder_id == folder_id, Message.uid > cursor.last_uid)
                .order_by(Message.uid).limit(self.batch)
            )).all()
            if not rows:
                return 0
            for uid, data in rows:
                try:
                    await self._apply_report(s, bytes(data), now)
                except ReportError:
                    log.info("unreadable report in an APP mailbox (uid %s) ignored", uid)
            cursor.last_uid = int(rows[-1][0])
        return len(rows)

    async def _apply_report(self, s: AsyncSession, raw: bytes, now: dt.datetime) -> None:
        kind = report_type(raw)
        if kind == "delivery-status":
            dsn = parse_dsn(raw)
            mids = [m for m in (dsn.original_message_id,) if m]
            for r in dsn.recipients:
                legs = await self._legs_for(s, mids, dsn.original_envelope_id, r.final_recipient, r.original_recipient)
                if r.action == "delayed":
                    continue
                target = DELIVERED if r.delivered else FAILED
                error = None if r.delivered else ZamError(str(r.smtp_code), f"{r.status} {r.diagnostic or ''}".strip()[:200])
                for leg in legs:
                    out = await transition(s, leg.id, target, now=now, reason=f"DSN {r.action} {r.status}",
                                           detail={"dsn": {"action": r.action, "status": r.status}}, error=error)
                    self.services.metrics.y_legs.labels(kind=LEG_MSS, state=target).inc()
                    log.debug("leg %s: DSN %s -> %s", leg.id, r.action, out.value)
        elif kind == "disposition-notification":
            mdn = parse_mdn(raw)
            if not mdn.original_message_id:
                raise ReportError("an MDN without Original-Message-ID cannot be matched")
            legs = await self._legs_for(s, [mdn.original_message_id], None, mdn.final_recipient, mdn.original_recipient)
            target = READ if mdn.success else READ_ERROR
            error = None if mdn.success else ZamError(mdn.error_code or "906", mdn.error_label or "Autre erreur")
            for leg in legs:
                await transition(s, leg.id, target, now=now, reason=f"MDN {mdn.disposition_type}",
                                 detail={"mdn": {"disposition": mdn.disposition_type, "error": mdn.error_code}},
                                 error=error)
                self.services.metrics.y_legs.labels(kind=LEG_MSS, state=target).inc()

    async def _legs_for(self, s: AsyncSession, message_ids: Sequence[str], envid: str | None, final: str,
                        original: str | None) -> list[YLeg]:
        ids = [m.strip() for m in message_ids if m]
        if envid:
            ids.append(f"<{envid.strip('<> ')}>")
        if not ids:
            return []
        legs = list((await s.scalars(select(YLeg).where(YLeg.kind == LEG_MSS, YLeg.message_id.in_(ids)))).all())
        who = {a.lower() for a in (final, original) if a}
        matched = [leg for leg in legs if leg.recipient.lower() in who]
        if not matched and len(legs) == 1:
            matched = legs  # one recipient: the report can only be about it (rewritten Final-Recipient)
        return matched

    # --- 3b. native email entry: messages to dmp@<our domain> ----------------------------------------
    async def scan_mail_entry(self, now: dt.datetime) -> int:
        from mssante.y.service import (
            MailEntryRefused,
            plan_mail_entry,
            routing_address,
            store_mail_entry,
        )
        from mssante.y.ins import InsEnvironment

        routing = routing_address(self.services)
        async with self.services.sessions() as s:
            folder_id = await s.scalar(select(Folder.id).join(Mailbox, Mailbox.id == Folder.mailbox_id)
                                       .where(Mailbox.address == routing, Folder.name == "INBOX"))
            if folder_id is None:
                return 0
            last = await s.scalar(select(YMailCursor.last_uid).where(YMailCursor.folder_id == folder_id)) or 0
            rows = (await s.execute(select(Message.uid, Blob.data).join(Blob, Blob.id == Message.blob_id)
                                    .where(Message.folder_id == folder_id, Message.uid > last)
                                    .order_by(Message.uid).limit(self.batch))).all()
            apps = {str(a): sid for a, sid in (await s.execute(
                select(Mailbox.address, Mailbox.structure_id).where(Mailbox.kind == "APP", Mailbox.enabled.is_(True),
                                                                    Mailbox.address != routing))).all()}
        if not rows:
            return 0
        env = InsEnvironment(self.services.config.mllp.environment)
        cfg = self.services.config

        def plan_all() -> list[tuple[int, Any, bytes]]:
            out: list[tuple[int, Any, bytes]] = []
            for uid, data in rows:
                raw = bytes(data)
                try:
                    out.append((int(uid), plan_mail_entry(raw, our_hostname=cfg.hostname, routing=routing,
                                                          environment=env, app_mailboxes=apps), raw))
                except MailEntryRefused as e:
                    out.append((int(uid), e, raw))
            return out

        planned = await asyncio.to_thread(plan_all)
        async with self.services.sessions() as s, s.begin():
            cursor = await s.scalar(select(YMailCursor).where(YMailCursor.folder_id == folder_id))
            if cursor is None:
                cursor = YMailCursor(folder_id=folder_id, last_uid=0)
                s.add(cursor)
            for uid, plan, raw in planned:
                if isinstance(plan, MailEntryRefused):
                    await self._refuse_mail_entry(s, raw, str(plan), now)
                else:
                    await store_mail_entry(s, plan, now=now, audit=self.services.audit,
                                           local_domains=cfg.all_local_domains)
                cursor.last_uid = max(cursor.last_uid, uid)
        if isinstance(self.wakeup, asyncio.Event):
            self.wakeup.set()  # DMP legs are due
        return len(planned)

    async def _refuse_mail_entry(self, s: AsyncSession, raw: bytes, reason: str, now: dt.datetime) -> None:
        """Tell a local sender why its message to dmp@ did not feed the DMP (a notice in its INBOX)."""
        import email
        import email.policy
        import email.utils

        from mssante.store.mail import deliver

        msg = email.message_from_bytes(raw, policy=email.policy.default)
        senders = [a.lower() for _, a in email.utils.getaddresses([str(v) for v in msg.get_all("From", [])]) if a]
        s.add(self.services.audit.event(
            "y.refused", senders[0] if senders else "", "AE", source="mail", reason=reason[:300],
            message_id=str(msg.get("Message-ID", ""))[:200]))
        if len(senders) != 1:
            return
        box = await s.scalar(select(Mailbox).where(Mailbox.address == senders[0]))
        if box is None:
            return
        domain = self.services.config.operator.domain
        notice = (
            f"From: Plateforme Y <mailer-daemon@{domain}>\r\nTo: <{senders[0]}>\r\n"
            f"Subject: [KO DMP] {str(msg.get('Subject', ''))[:150]}\r\n"
            f"Date: {email.utils.format_datetime(now)}\r\nMessage-ID: {email.utils.make_msgid(domain=domain)}\r\n"
            f"In-Reply-To: {str(msg.get('Message-ID', ''))[:200]}\r\nAuto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"Votre message n'a pas alimenté le DMP : {reason}\r\n"
        ).encode("utf-8")
        await deliver(s, notice, [box.id], internaldate=now)

    # --- 4. relay hand-over ---------------------------------------------------------------------------
    async def check_relay(self, now: dt.datetime) -> int:
        """`queued` legs whose relay queue rows are gone: `sent`. The queue rows are looked up by the legs'
        Message-IDs in one pass per 500 (queue_message.message_id has no index: a NOT EXISTS per leg
        scanned the whole queue once per queued leg)."""
        try:
            from mssante.store.queue import QueueMessage, QueueRecipient
        except ImportError:  # pragma: no cover
            return 0
        async with self.services.sessions() as s, s.begin():
            legs = (await s.execute(
                select(YLeg.id, YLeg.delivery_id, YLeg.message_id, YLeg.recipient)
                .where(YLeg.kind == LEG_MSS, YLeg.state == QUEUED).order_by(YLeg.id))).all()
            if not legs:
                return 0
            pending: set[tuple[str, str]] = set()
            mids = sorted({str(m) for _, _, m, _ in legs if m})
            for i in range(0, len(mids), 500):
                pending.update((str(m), str(r)) for m, r in (await s.execute(
                    select(QueueMessage.message_id, QueueRecipient.rcpt)
                    .join(QueueRecipient, QueueRecipient.queue_message_id == QueueMessage.id)
                    .where(QueueMessage.message_id.in_(mids[i:i + 500])))).all())
            gone = [Change(int(i), LEG_MSS, QUEUED, int(d), SENT, "accepted by the recipient's operator")
                    for i, d, m, r in legs if (str(m), str(r)) not in pending][: self.batch]
            moved = await apply_many(s, gone, now=now)
        for _ in moved:
            self.services.metrics.y_legs.labels(kind=LEG_MSS, state=SENT).inc()
        return len(moved)

    # --- 5. ZAM business acknowledgements ----------------------------------------------------------
    async def send_zams(self, now: dt.datetime) -> int:
        async with self.services.sessions() as s, s.begin():
            q = (select(YAckOutbox).where(YAckOutbox.sent_at.is_(None), YAckOutbox.next_attempt_at <= now,
                                          YAckOutbox.attempts < self.zam_max_attempts)
                 .order_by(YAckOutbox.id).limit(self.batch))
            if self._pg:
                q = q.with_for_update(skip_locked=True)
            due = list((await s.scalars(q)).all())
            jobs: list[tuple[int, str, bytes]] = []
            for row in due:
                row.attempts += 1
                row.next_attempt_at = now + _delay(self.zam_schedule, row.attempts)
                delivery = await s.get(YDelivery, row.delivery_id)
                leg = await s.get(YLeg, row.leg_id)
                if delivery is None or leg is None or not delivery.ack_context:
                    continue
                jobs.append((row.id, row.endpoint, zam_payload(row, delivery, leg, now)))
        if not jobs:
            return 0
        # One connection at a time per lab endpoint, in creation order (a Z02 before the Z03 of the same
        # leg); different labs in parallel.
        by_endpoint: dict[str, list[tuple[int, str, bytes]]] = {}
        for job in jobs:
            by_endpoint.setdefault(job[1], []).append(job)

        async def send_in_order(batch: list[tuple[int, str, bytes]]) -> list[tuple[int, tuple[bool, str, str | None]]]:
            return [(i, await self._send_zam(i, ep, payload)) for i, ep, payload in batch]

        done = [r for batch in await asyncio.gather(*(send_in_order(b) for b in by_endpoint.values())) for r in batch]
        async with self.services.sessions() as s, s.begin():
            for row_id, (ok, code, err) in done:
                values: dict[str, Any] = {"ack_code": code, "last_error": err}
                if ok:
                    values["sent_at"] = self.services.now()
                await s.execute(update(YAckOutbox).where(YAckOutbox.id == row_id).values(**values))
        return len(jobs)

    async def _send_zam(self, row_id: int, endpoint: str, payload: bytes) -> tuple[bool, str, str | None]:
        from mssante.config import parse_hostport
        from mssante.y.mllp import send_mllp

        host, port = parse_hostport(endpoint, "ack_endpoint")
        try:
            answer = await send_mllp(host, port, payload, timeout=10.0)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            return False, "", f"connection: {type(e).__name__}"
        code = msa_code(answer)
        # HL7 v2.5 §2.9.2: AA/CA accepted; AR/CR = try again later; AE/CE = refused (stop retrying).
        if code in ("AA", "CA"):
            return True, code, None
        if code in ("AE", "CE"):
            return True, code, "the lab refused the business acknowledgement"
        return False, code, f"answered {code or 'no MSA'}"


def msa_code(answer: bytes) -> str:
    for line in answer.replace(b"\n", b"\r").split(b"\r"):
        if line.startswith(b"MSA|"):
            return line.split(b"|")[1].decode("ascii", "replace")[:2]
    return ""


def zam_payload(row: YAckOutbox, delivery: YDelivery, leg: YLeg, now: dt.datetime) -> bytes:
    ctx = AckContext(**(delivery.ack_context or {}))
    event = ZamEvent(row.event)
    error = None if row.success else WireZamError(row.error_code or "906", row.error_label or "Autre erreur")
    needs_recipient = event is not ZamEvent.RECEPTION_DMP
    return build_zam(ctx, event, success=row.success, control_id=f"ZAM{row.id}", now=now,
                     recipient_id=leg.recipient_id if needs_recipient else "",
                     recipient_address=leg.recipient if needs_recipient else "", error=error)


async def start_y_worker(services: Services, *, dmp: DmpConnector | None = None, poll_interval: float = 1.0) -> YWorker:
    """Start the worker (the `Stoppable` of the listener contract)."""
    worker = YWorker(services, dmp=dmp, poll_interval=poll_interval)
    worker.start()
    services.extras["y_worker"] = worker
    return worker


def leg_age(leg: YLeg, now: dt.datetime) -> float:
    at = aware(leg.state_at)
    return (now - at).total_seconds() if at is not None else 0.0
