"""The submission policy: professionals and software sending mail (SPECS.md §2, RFC 6409).

- AUTH over TLS only (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, EXTERNAL), then MAIL (530 5.7.0 otherwise);
- an identity sends only as its own or delegated mailboxes, in the envelope and in From/Sender (550 5.7.1);
- every recipient is local (existing and open, 550 5.1.1) or in the trust space (550 5.7.1 otherwise),
  refused at RCPT with the reason;
- hygiene (RFC 6409 §8): Message-ID and Date added if missing, Bcc removed, X-MSS-* kept;
- local recipients are delivered now, remote ones queued for the relay, in one transaction.
"""

from __future__ import annotations

import secrets
from typing import Any

from mssante.smtp.delivery import Acceptance, accept, local_mailbox
from mssante.smtp.envelope import Transaction, domain_of
from mssante.smtp.message import (
    MessageFormatError,
    from_addresses,
    prepare_submission,
    received_header,
    split_message,
)
from mssante.smtp.protocol import GatewaySMTP
from mssante.smtp.replies import AUTH_REQUIRED, SmtpReply


class SubmissionPolicy:
    listener = "submission"
    protocol_name = "ESMTPSA"  # RFC 3848

    def __init__(self, services: Any) -> None:
        self.services = services
        self.audit = services.audit
        self.local_domains = services.config.all_local_domains

    def tls_established(self, conn: GatewaySMTP) -> None:
        return None

    async def _refuse(self, conn: GatewaySMTP, tx: Transaction, reason: str, reply: str) -> None:
        ident = conn.gsession.identity
        await self.audit.record("smtp.submission.refuse", ident.login if ident else "", "refused",
                                mail_from=tx.mail.address, reason=reason, peer=conn.peer_ip)
        if self.services.metrics is not None:
            self.services.metrics.smtp_messages.labels(self.listener, "refused").inc()
        raise SmtpReply(reply)

    async def mail(self, conn: GatewaySMTP, tx: Transaction) -> str:
        ident = conn.gsession.identity
        if ident is None:
            raise SmtpReply(AUTH_REQUIRED)
        if not tx.mail.address:
            await self._refuse(conn, tx, "NULL_SENDER", "550 5.7.1 A null sender is not allowed on submission")
        if not ident.may_send_as(tx.mail.address):
            await self._refuse(conn, tx, "NOT_YOUR_MAILBOX",
                               f"550 5.7.1 Sender <{tx.mail.address}> is not one of your mailboxes")
        tx.actor = ident.login
        return "250 2.1.0 Sender OK"

    async def rcpt(self, conn: GatewaySMTP, tx: Transaction, index: int) -> str:
        rp = tx.recipients[index]
        addr = rp.address.lower()
        domain = domain_of(addr)
        if domain in self.local_domains:
            box = await local_mailbox(self.services, addr)
            if box is None:
                raise SmtpReply("550 5.1.1 Mailbox unknown or closed")
            tx.local_ids[addr] = box
            return "250 2.1.5 Recipient OK"
        decision = self.services.trust.policy.submission(domain)
        if not decision.ok:  # SPECS.md §1: operators exchange mail only with each other
            raise SmtpReply(f"550 5.7.1 Recipient domain {domain} is not in the MSSante trust space")
        tx.remote.append(rp.address)
        return "250 2.1.5 Recipient OK (will relay)"

    async def data(self, conn: GatewaySMTP, tx: Transaction, raw: bytes) -> str:
        s = conn.gsession
        ident = s.identity
        assert ident is not None
        now = self.services.now()
        try:
            fields, _ = split_message(raw)
            prepared, mid = prepare_submission(raw, now=now, domain=self.services.config.operator.domain)
        except MessageFormatError:
            raise SmtpReply("550 5.6.0 Malformed message header") from None
        authors = from_addresses(fields)
        if not authors:
            raise SmtpReply("550 5.6.0 Message has no From header")
        for a in authors:
            if not ident.may_send_as(a):
                await self._refuse(conn, tx, "FROM_NOT_YOURS", f"550 5.7.1 From <{a}> is not one of your mailboxes")
        qid = secrets.token_hex(6)
        received = received_header(
            from_helo=s.host_name or "unknown", peer_ip=conn.peer_ip, by_host=self.services.config.hostname,
            protocol=self.protocol_name, tls=f"{s.tls_version} cipher {s.tls_cipher}; auth={ident.method}",
            cert_subject=None, recipient=None, queue_id=qid, now=now,
        )
        full = received + prepared
        await accept(self.services, Acceptance(
            raw=full, mail_from=tx.mail.address, local=dict(tx.local_ids), recipients=tx.recipients,
            remote=list(tx.remote), envid=tx.mail.envid, ret=tx.mail.ret, message_id=mid, actor=ident.login,
            listener=self.listener, peer=conn.peer_ip, queue_id=qid, extra_audit={"auth": ident.method},
        ))
        if self.services.metrics is not None:
            self.services.metrics.smtp_messages.labels(self.listener, "accepted").inc()
        return f"250 2.0.0 OK queued as {qid}"
