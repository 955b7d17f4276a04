"""The inbound MTA policy: mail from other operators of the trust space (SPECS.md §1).

- STARTTLS before MAIL (RFC 3207 §4, 530 5.7.0) — enforced by the protocol;
- a client certificate, validated by pki (chain, EKU clientAuth, revocation), is required;
- its subject DN must be listed in the liste blanche for the envelope sender's domain, checked on every
  MAIL with the *current* policy (a delisting applies to open connections at their next transaction);
- recipients must be existing, open local mailboxes (550 5.1.1); other domains are never relayed (550 5.7.1);
- accepted = committed (delivery.accept), with a Received field naming the TLS version, cipher and
  the peer certificate's subject.
"""

from __future__ import annotations

import secrets
from typing import Any

from mssante.smtp.certcache import cert_cache_for
from mssante.smtp.delivery import Acceptance, accept, local_mailbox
from mssante.smtp.envelope import Transaction, domain_of
from mssante.smtp.message import MessageFormatError, message_id_of, received_header, split_message
from mssante.smtp.protocol import GatewaySMTP
from mssante.smtp.replies import SmtpReply


class InboundPolicy:
    listener = "mta"
    protocol_name = "ESMTPS"

    def __init__(self, services: Any) -> None:
        self.services = services
        self.audit = services.audit
        self.local_domains = services.config.all_local_domains

    def tls_established(self, conn: GatewaySMTP) -> None:
        from pki.validation import Role

        s = conn.gsession
        if s.peer_cert is not None and self.services.validator is not None:
            # Per connection; pki's decision is reused for the same certificate while provably unchanged
            # (same validator and CRLs, within the path's and the CRLs' validity): see certcache.
            s.cert_decision = cert_cache_for(self.services).validate(
                self.services.validator, s.peer_cert, Role.TLS_CLIENT, self.services.now())

    @staticmethod
    def _peer_dn(conn: GatewaySMTP) -> str:
        """The peer certificate's subject DN (RFC 4514), computed once per connection."""
        s = conn.gsession
        if s.peer_cert is None:
            return ""
        dn = s.peer_dn
        if dn is None:
            dn = s.peer_dn = s.peer_cert.subject.rfc4514_string()
        return dn

    async def _refuse(self, conn: GatewaySMTP, tx: Transaction, reason: str, reply: str) -> None:
        dn = self._peer_dn(conn)
        await self.audit.record("smtp.mta.refuse", dn, "refused", mail_from=tx.mail.address, reason=reason,
                                peer=conn.peer_ip)
        if self.services.metrics is not None:
            self.services.metrics.smtp_messages.labels(self.listener, "refused").inc()
        raise SmtpReply(reply)

    async def mail(self, conn: GatewaySMTP, tx: Transaction) -> str:
        s = conn.gsession
        # SPECS.md §1: the peer presents an IGC Santé SERV certificate that chains, is valid and not revoked.
        if s.peer_cert is None:
            await self._refuse(conn, tx, "NO_CERTIFICATE",
                               "550 5.7.1 A trust-space client certificate is required (mutual TLS)")
        d = s.cert_decision
        if d is None or not d.ok:
            reason = getattr(getattr(d, "reason", None), "value", "NOT_VALIDATED")
            await self._refuse(conn, tx, str(reason), f"550 5.7.1 Client certificate refused: {reason}")
        policy = self.services.trust.policy  # the current list, read once per transaction
        now = self.services.now()
        if tx.mail.address:
            decision = policy.inbound(s.peer_cert, domain_of(tx.mail.address), now)
        else:
            # Null sender (a DSN from a peer): the DN must be listed for the domain of its HELO name
            # or one of its parents (mx.op-b.test -> op-b.test).
            decision = None
            labels = (s.host_name or "").lower().split(".")
            for i in range(len(labels) - 1):
                decision = policy.inbound(s.peer_cert, ".".join(labels[i:]), now)
                if decision.ok:
                    break
            if decision is None:
                decision = policy.inbound(s.peer_cert, "", now)
        if not decision.ok:
            await self._refuse(conn, tx, str(decision.reason.value),
                               f"550 5.7.1 Certificate DN not listed in the liste blanche for this sender domain "
                               f"({decision.reason.value})")
        tx.actor = self._peer_dn(conn)
        return "250 2.1.0 Sender OK"

    async def rcpt(self, conn: GatewaySMTP, tx: Transaction, index: int) -> str:
        rp = tx.recipients[index]
        addr = rp.address.lower()
        if domain_of(addr) not in self.local_domains:
            raise SmtpReply(f"550 5.7.1 Relaying denied: {domain_of(addr)} is not hosted here")
        box = await local_mailbox(self.services, addr)
        if box is None:
            raise SmtpReply("550 5.1.1 Mailbox unknown or closed")
        tx.local_ids[addr] = box
        return "250 2.1.5 Recipient OK"

    async def data(self, conn: GatewaySMTP, tx: Transaction, raw: bytes) -> str:
        s = conn.gsession
        try:
            mid = message_id_of(split_message(raw)[0])
        except MessageFormatError:
            # A relaying MTA does not repair or refuse content (RFC 5321 §2.3.9 / §7.9): keep it as it came.
            mid = None
        qid = secrets.token_hex(6)
        now = self.services.now()
        received = received_header(
            from_helo=s.host_name or "unknown", peer_ip=conn.peer_ip, by_host=self.services.config.hostname,
            protocol=self.protocol_name, tls=f"{s.tls_version} cipher {s.tls_cipher}",
            cert_subject=tx.actor, recipient=tx.recipients[0].address if len(tx.recipients) == 1 else None,
            queue_id=qid, now=now,
        )
        full = received + raw
        await accept(self.services, Acceptance(
            raw=full, mail_from=tx.mail.address, local=dict(tx.local_ids), recipients=tx.recipients,
            envid=tx.mail.envid, ret=tx.mail.ret, message_id=mid, actor=tx.actor, listener=self.listener,
            peer=conn.peer_ip, queue_id=qid,
        ))
        if self.services.metrics is not None:
            self.services.metrics.smtp_messages.labels(self.listener, "accepted").inc()
        return f"250 2.0.0 OK queued as {qid}"
