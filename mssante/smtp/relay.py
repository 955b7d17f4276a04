"""The relay: delivers queued mail to the other operators of the trust space (SPECS.md §1).

Loop: claim due recipients (the claim records the attempt and its next retry time first), group them by
domain, route (static route or MX via dnspython), then for each domain open one connection and send the
messages one after the other (one SMTP transaction per message, all its recipients of that domain).

Outbound TLS is mandatory (SPECS.md §1): STARTTLS, our SERV certificate as client certificate, the
remote chain checked by ssl against the trust-space anchors, then by pki (role TLS server, EKU,
revocation), then its subject DN must be listed for the recipient domain. Any failure there is
temporary (retried on the schedule); there is never a plaintext fallback.

Results, each in one transaction with its audit event: 2xx -> done; 5xx -> failure DSN; 4xx or any
connection/TLS/DNS trouble -> retry at the recorded time, a delayed DSN once after
relay.delay_dsn_after_minutes, and a failure DSN when the message is older than relay.max_age_hours.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosmtplib
from sqlalchemy import insert

from mssante.smtp.delivery import committer_for, deliver_notification, postmaster, relay_wakeup
from mssante.smtp.dsn import DsnRecipient, build_dsn
from mssante.smtp.envelope import wants, xtext_encode
from mssante.smtp.routing import RouteError, Router, Target
from mssante.store import queue as qstore
from mssante.store.models import AuditEvent

log = logging.getLogger("mssante.smtp.relay")


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt for one recipient."""

    recipient: qstore.ClaimedRecipient
    kind: str  # "sent" | "temporary" | "permanent"
    status: str  # enhanced status code
    diagnostic: str  # the remote reply or our reason
    remote_mta: str | None = None
    dsn_relayed: bool = True  # the remote takes over DSN duty (it advertised DSN)


PRELOAD_MAX = 256 * 1024  # messages up to this size are read in one query per connection
PRELOAD_TOTAL = 16 * 1024 * 1024  # at most this much preloaded per connection


class Temporary(Exception):
    pass


def _reply_status(code: int, message: str) -> str:
    words = message.split()
    if words and words[0].count(".") == 2 and words[0][0] in "245":
        return words[0]
    return f"{str(code)[0]}.0.0"


class RelayWorker:
    def __init__(
        self,
        services: Any,
        *,
        router: Router | None = None,
        mx_port: int = 25,
        poll_interval: float = 5.0,
        lease_seconds: float = 600.0,
        timeout: float = 60.0,
        batch: int = 200,
    ) -> None:
        cfg = services.config
        self.services = services
        self.router = router or Router(static_routes=cfg.relay.static_routes, dns_server=cfg.relay.dns_server,
                                       port=mx_port, routes_file=cfg.relay.routes_file)
        self.owner = f"relay-{secrets.token_hex(6)}"
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.timeout = timeout
        self.batch = batch
        self.schedule = list(cfg.relay.retry_schedule)
        self.max_age = dt.timedelta(hours=cfg.relay.max_age_hours)
        self.delay_after = dt.timedelta(minutes=cfg.relay.delay_dsn_after_minutes)
        self.per_domain = max(1, cfg.relay.per_domain_concurrency)
        self.workers = asyncio.Semaphore(max(1, cfg.relay.workers))
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._tls: ssl.SSLContext | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> RelayWorker:
        self._task = asyncio.create_task(self._loop(), name="relay")
        return self

    async def stop(self) -> None:
        self._stopping = True
        relay_wakeup(self.services).set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        wake = relay_wakeup(self.services)
        while not self._stopping:
            wake.clear()
            try:
                n = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay pass failed")
                n = 0
            if n == 0:
                try:
                    await asyncio.wait_for(wake.wait(), self.poll_interval)
                except asyncio.TimeoutError:
                    pass

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            from pki.tls import client_context

            t = self.services.config.tls
            # Hostname checks are replaced by the liste blanche DN check (SPECS.md §1).
            self._tls = client_context(ca_path=t.anchors, cert_path=t.cert, key_path=t.key, check_hostname=False)
            if t.intermediates:
                self._tls.load_verify_locations(cafile=t.intermediates)
        return self._tls

    # --- one pass --------------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim what is due and try it; returns the number of recipients attempted."""
        now = self.services.now()
        async with self.services.sessions() as s, s.begin():
            claims = await qstore.claim(s, self.owner, now=now, schedule=self.schedule, lease_seconds=self.lease_seconds,
                                   limit=self.batch)
        if not claims:
            return 0
        by_domain: dict[str, list[qstore.Claim]] = {}
        for c in claims:
            by_domain.setdefault(c.domain, []).append(c)
        tasks = []
        for domain, items in by_domain.items():
            chunks = [items[i:: self.per_domain] for i in range(min(self.per_domain, len(items)))]
            tasks += [asyncio.create_task(self._deliver_domain(domain, chunk)) for chunk in chunks]
        await asyncio.gather(*tasks)
        if self.services.metrics is not None:
            async with self.services.sessions() as s:
                self.services.metrics.queue_depth.set(await qstore.depth(s))
        return sum(len(c.recipients) for c in claims)

    async def _deliver_domain(self, domain: str, claims: list[qstore.Claim]) -> None:
        async with self.workers:
            try:
                smtp, target = await self._connect(domain)
            except RouteError as e:
                kind = "permanent" if e.permanent else "temporary"
                status = "5.1.2" if e.permanent else "4.4.3"
                for c in claims:
                    await self._record(c, [Outcome(r, kind, status, str(e)) for r in c.recipients])
                return
            except Temporary as e:
                for c in claims:
                    await self._record(c, [Outcome(r, "temporary", "4.4.1", str(e)) for r in c.recipients])
                return
            # Small messages of this connection are read in one query; big ones when their turn comes.
            small = [c.blob_id for c in claims if c.size <= PRELOAD_MAX]
            async with self.services.sessions() as s:
                blobs = await qstore.load_blobs(s, small[: max(1, PRELOAD_TOTAL // PRELOAD_MAX)]) if small else {}
            # Outcomes are committed (group commit) while the next message is sent: the connection does not
            # wait for each commit. Delivery stays at-least-once: a crash before an outcome's commit makes
            # that message be sent again at its recorded retry time. All outcomes are committed before
            # this returns.
            records: list[asyncio.Task[None]] = []
            try:
                for i, c in enumerate(claims):
                    try:
                        outcomes = await self._send(smtp, target, c, blobs.pop(c.blob_id, None))
                    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
                        records.append(asyncio.create_task(self._record(c, [
                            Outcome(r, "temporary", "4.4.2", f"connection lost: {type(e).__name__}", target.host)
                            for r in c.recipients])))
                        rest = [r.id for cc in claims[i + 1:] for r in cc.recipients]
                        async with self.services.sessions() as s, s.begin():
                            await qstore.release_unattempted(s, rest, self.services.now())
                        return
                    records.append(asyncio.create_task(self._record(c, outcomes)))
            finally:
                try:
                    await smtp.quit()
                except Exception:
                    smtp.close()
                failures = [r for r in await asyncio.gather(*records, return_exceptions=True)
                            if isinstance(r, BaseException)]
                if failures:  # not recorded: retried at the time the claim wrote (at-least-once)
                    log.warning("relay to %s: %d outcome(s) could not be recorded (%s)", domain, len(failures),
                                type(failures[0]).__name__)

    async def _connect(self, domain: str) -> tuple[aiosmtplib.SMTP, Target]:
        from pki.tls import peer_certificate
        from pki.validation import Role

        targets = await self.router.route(domain)
        errors: list[str] = []
        for t in targets:
            smtp = aiosmtplib.SMTP(hostname=t.address, port=t.port, local_hostname=self.services.config.hostname,
                                   start_tls=False, use_tls=False, timeout=self.timeout)
            try:
                await smtp.connect()
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise Temporary(f"{t.host} does not offer STARTTLS")  # never plaintext (SPECS.md §1)
                await smtp.starttls(tls_context=self.tls_context(), server_hostname=t.host)
                now = self.services.now()
                cert = peer_certificate(smtp.get_transport_info("ssl_object"))
                if cert is None:
                    raise Temporary(f"{t.host} presented no certificate")
                d = self.services.validator.validate(cert, Role.TLS_SERVER, now)
                if not d.ok:
                    raise Temporary(f"{t.host} certificate refused: {d.reason.value}")
                policy = self.services.trust.policy
                if not policy.outbound(domain).ok:
                    raise Temporary(f"{domain} is not in the liste blanche")
                peer = policy.outbound_peer(cert, domain, now)
                if not peer.ok:
                    raise Temporary(f"{t.host} certificate DN not listed for {domain} ({peer.reason.value})")
                await smtp.ehlo()
                return smtp, t
            except (Temporary, aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                errors.append(str(e) if isinstance(e, Temporary) else f"{t.host}: {type(e).__name__}")
                smtp.close()
                continue
        raise Temporary("; ".join(errors) or f"no route to {domain}")

    async def _send(self, smtp: aiosmtplib.SMTP, target: Target, c: qstore.Claim, raw: bytes | None) -> list[Outcome]:
        if raw is None:
            async with self.services.sessions() as s:
                raw = await qstore.load_blob(s, c.blob_id)
        dsn_ok = smtp.supports_extension("dsn")
        opts: list[str] = []
        if smtp.supports_extension("size"):
            opts.append(f"SIZE={len(raw)}")
        if not raw.isascii():
            if not smtp.supports_extension("8bitmime"):  # RFC 6152 §3: no 8-bit data to a 7-bit server
                return [Outcome(r, "permanent", "5.6.3", "remote does not accept 8-bit data", target.host)
                        for r in c.recipients]
            opts.append("BODY=8BITMIME")
        if dsn_ok:
            if c.ret:
                opts.append(f"RET={c.ret}")
            if c.envid:
                opts.append(f"ENVID={xtext_encode(c.envid)}")
        try:
            await smtp.mail(c.mail_from, options=opts)
        except aiosmtplib.SMTPSenderRefused as e:
            kind = "permanent" if e.code >= 500 else "temporary"
            await _rset(smtp)
            return [Outcome(r, kind, _reply_status(e.code, e.message), f"{e.code} {e.message}", target.host)
                    for r in c.recipients]
        outcomes: dict[int, Outcome] = {}
        accepted: list[qstore.ClaimedRecipient] = []
        for r in c.recipients:
            ropts: list[str] = []
            if dsn_ok:
                if r.notify:
                    ropts.append(f"NOTIFY={r.notify}")
                if r.orcpt:
                    atype, _, addr = r.orcpt.partition(";")
                    ropts.append(f"ORCPT={atype};{xtext_encode(addr)}")
            try:
                await smtp.rcpt(r.rcpt, options=ropts)
                accepted.append(r)
            except aiosmtplib.SMTPRecipientRefused as e:
                kind = "permanent" if e.code >= 500 else "temporary"
                outcomes[r.id] = Outcome(r, kind, _reply_status(e.code, e.message), f"{e.code} {e.message}", target.host)
        if accepted:
            try:
                resp = await smtp.data(raw)
                for r in accepted:
                    outcomes[r.id] = Outcome(r, "sent", _reply_status(resp.code, resp.message),
                                             f"{resp.code} {resp.message}", target.host, dsn_ok)
            except aiosmtplib.SMTPDataError as e:
                kind = "permanent" if e.code >= 500 else "temporary"
                for r in accepted:
                    outcomes[r.id] = Outcome(r, kind, _reply_status(e.code, e.message), f"{e.code} {e.message}",
                                             target.host)
        else:
            await _rset(smtp)
        return [outcomes[r.id] for r in c.recipients]

    # --- bookkeeping -----------------------------------------------------------------------------------
    async def _record(self, c: qstore.Claim, outcomes: Sequence[Outcome]) -> None:
        services = self.services
        now = services.now()
        expired = now - c.created_at >= self.max_age
        delay_due = now - c.created_at >= self.delay_after
        sent = [o for o in outcomes if o.kind == "sent"]
        failed = [o for o in outcomes if o.kind == "permanent" or (o.kind == "temporary" and expired)]
        deferred = [o for o in outcomes if o.kind == "temporary" and not expired]
        delayed_dsn = [o for o in deferred if delay_due and not o.recipient.delay_notified
                       and wants(o.recipient.notify, "DELAY")]
        relayed_dsn = [o for o in sent if not o.dsn_relayed and wants(o.recipient.notify, "SUCCESS")]
        if sent and not failed and not deferred and not relayed_dsn:
            # The common case: written with the other "sent" outcomes of the batch by one set of statements.
            await committer_for(services).submit(RelaySent(
                [o.recipient.id for o in sent], c.queue_message_id,
                services.audit.event("smtp.relay.sent", "relay", "sent", domain=c.domain,
                                     rcpts=[o.recipient.rcpt for o in sent], message_id=c.message_id,
                                     remote_mta=sent[0].remote_mta, queue_message=c.queue_message_id)))
            if services.metrics is not None:
                services.metrics.relay_attempts.labels("sent").inc(len(sent))
            return

        # Through the group committer: concurrent deliveries (one per connection) share one commit.
        async def job(s: Any) -> None:
            raw: bytes | None = None
            if c.mail_from and (failed or delayed_dsn or relayed_dsn):
                raw = await qstore.load_blob(s, c.blob_id)
            if sent:
                await qstore.mark_sent(s, [o.recipient.id for o in sent], [c.queue_message_id])
                s.add(services.audit.event("smtp.relay.sent", "relay", "sent", domain=c.domain,
                                           rcpts=[o.recipient.rcpt for o in sent], message_id=c.message_id,
                                           remote_mta=sent[0].remote_mta, queue_message=c.queue_message_id))
            if failed:
                notify = [o for o in failed if wants(o.recipient.notify, "FAILURE")]
                if raw is not None and notify:
                    await self._notify(s, c, raw, notify, "failed", now)
                await qstore.mark_failed(s, [o.recipient.id for o in failed], [c.queue_message_id])
                s.add(services.audit.event("smtp.relay.failed", "relay", "failed", domain=c.domain,
                                           rcpts=[o.recipient.rcpt for o in failed], message_id=c.message_id,
                                           reason=failed[0].diagnostic[:300], expired=expired,
                                           queue_message=c.queue_message_id))
            if deferred:
                if raw is not None and delayed_dsn:
                    await self._notify(s, c, raw, delayed_dsn, "delayed", now)
                notified = {o.recipient.id for o in delayed_dsn}
                plain = [o.recipient.id for o in deferred if o.recipient.id not in notified]
                if notified:
                    await qstore.mark_deferred(s, list(notified), deferred[0].diagnostic, delay_notified=True)
                if plain:
                    await qstore.mark_deferred(s, plain, deferred[0].diagnostic)
                s.add(services.audit.event("smtp.relay.deferred", "relay", "deferred", domain=c.domain,
                                           rcpts=[o.recipient.rcpt for o in deferred], message_id=c.message_id,
                                           reason=deferred[0].diagnostic[:300], attempts=deferred[0].recipient.attempts,
                                           queue_message=c.queue_message_id))
            if raw is not None and relayed_dsn:
                await self._notify(s, c, raw, relayed_dsn, "relayed", now)

        await committer_for(services).submit(job)
        m = services.metrics
        if m is not None:
            for kind, items in (("sent", sent), ("failed", failed), ("deferred", deferred)):
                if items:
                    m.relay_attempts.labels(kind).inc(len(items))

    async def _notify(self, s: Any, c: qstore.Claim, raw: bytes, outcomes: Sequence[Outcome], action: str,
                      now: dt.datetime) -> None:
        until = c.created_at + self.max_age if action == "delayed" else None
        dsn = build_dsn(
            reporting_mta=self.services.config.hostname, postmaster=postmaster(self.services), sender=c.mail_from,
            recipients=[DsnRecipient(o.recipient.rcpt, action, o.status if action != "relayed" else "2.0.0",
                                     o.diagnostic, o.remote_mta, o.recipient.orcpt, until) for o in outcomes],
            original=raw, now=now, envid=c.envid, ret=c.ret, original_message_id=c.message_id,
            arrival=c.created_at,
        )
        await deliver_notification(s, self.services, dsn, c.mail_from)


@dataclass
class RelaySent:
    """A group-commit job: these recipients of one queued message were accepted by the next hop."""

    recipient_ids: list[int]
    queue_message_id: int
    audit: Any  # AuditEvent

    @staticmethod
    async def run_many(session: Any, jobs: Sequence[RelaySent]) -> list[None]:
        """All the "sent" outcomes of a batch with one set of statements (mark_sent takes lists)."""
        await qstore.mark_sent(session, [r for j in jobs for r in j.recipient_ids],
                               sorted({j.queue_message_id for j in jobs}))
        conn = await session.connection()
        await conn.execute(insert(AuditEvent), [
            {"at": e.at, "action": e.action, "actor": e.actor, "outcome": e.outcome, "details": e.details}
            for e in (j.audit for j in jobs)])
        return [None] * len(jobs)

    async def __call__(self, session: Any) -> None:
        await self.run_many(session, [self])


async def _rset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except aiosmtplib.SMTPException:
        pass


async def start_relay_worker(services: Any, *, mx_port: int = 25, poll_interval: float = 5.0) -> RelayWorker:
    """The relay worker (Stoppable). Several may run, in one or several processes (PostgreSQL)."""
    return await RelayWorker(services, mx_port=mx_port, poll_interval=poll_interval).start()
