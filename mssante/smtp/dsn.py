"""Delivery status notifications (RFC 3464) in a multipart/report (RFC 6522). Pure: `now` is a parameter.

- Sent to the envelope sender; never for a null sender (RFC 3461 §6.2 / RFC 5321 §4.5.5: no bounce loops).
- The recipient's NOTIFY decides which actions are reported (RFC 3461 §4.1; `envelope.wants`).
- RET=HDRS returns the headers only, RET=FULL the whole message (RFC 3461 §4.3); absent RET we return
  headers only (the message may carry health data: return as little as possible).
- ENVID and ORCPT are echoed back as Original-Envelope-Id and Original-Recipient (RFC 3464 §2.2.1, §2.3.1).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mssante.smtp.envelope import xtext_encode
from mssante.smtp.message import format_date


@dataclass(frozen=True)
class DsnRecipient:
    final_recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded (RFC 3464 §2.3.3)
    status: str  # enhanced code, e.g. 5.1.1 (RFC 3464 §2.3.4)
    diagnostic: str | None = None  # the remote reply, "smtp; 550 5.1.1 ..." (§2.3.6)
    remote_mta: str | None = None
    original_recipient: str | None = None  # "rfc822;addr" from ORCPT
    will_retry_until: dt.datetime | None = None


_TITLES = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
}


def header_part(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


def build_dsn(
    *,
    reporting_mta: str,
    postmaster: str,
    sender: str,
    recipients: Sequence[DsnRecipient],
    original: bytes,
    now: dt.datetime,
    envid: str | None = None,
    ret: str | None = None,
    original_message_id: str | None = None,
    arrival: dt.datetime | None = None,
) -> bytes:
    if not sender:
        raise ValueError("no DSN to a null sender (RFC 3461 6.2)")
    if not recipients:
        raise ValueError("a DSN reports at least one recipient")
    action = recipients[0].action
    boundary = f"=_mssante_{secrets.token_hex(12)}"
    domain = reporting_mta
    mid = f"<dsn.{secrets.token_hex(10)}@{domain}>"
    lines = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: <{sender}>",
        f"Subject: {_TITLES.get(action, 'Delivery Status Notification')}",
        f"Date: {format_date(now)}",
        f"Message-ID: {mid}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    human = {
        "failed": "Your message could not be delivered to the following recipients:",
        "delayed": "Your message has not been delivered yet to the following recipients; delivery is still being attempted:",
        "delivered": "Your message was delivered to the following recipients:",
    }.get(action, "Delivery status of your message:")
    lines.append(human)
    lines.append("")
    for r in recipients:
        lines.append(f"  <{r.final_recipient}>: {r.status}{' ' + _one_line(r.diagnostic) if r.diagnostic else ''}")
    if original_message_id:
        lines += ["", f"Message-ID of your message: {_one_line(original_message_id)}"]
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
    # RFC 3464 §2.2: per-message fields.
    if envid:
        lines.append(f"Original-Envelope-Id: {xtext_encode(envid)}")
    lines.append(f"Reporting-MTA: dns; {reporting_mta}")
    if arrival is not None:
        lines.append(f"Arrival-Date: {format_date(arrival)}")
    for r in recipients:
        lines.append("")  # RFC 3464 §2.1: per-recipient groups separated by blank lines
        if r.original_recipient:
            atype, _, addr = r.original_recipient.partition(";")
            lines.append(f"Original-Recipient: {atype};{xtext_encode(addr)}")
        lines.append(f"Final-Recipient: rfc822; {r.final_recipient}")
        lines.append(f"Action: {r.action}")
        lines.append(f"Status: {r.status}")
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {_one_line(r.remote_mta)}")
        if r.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {_one_line(r.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {format_date(now)}")
        if r.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {format_date(r.will_retry_until)}")
    lines.append("")
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    if (ret or "HDRS") == "FULL":
        part = f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n".encode() + original
        if not part.endswith(b"\r\n"):
            part += b"\r\n"
    else:
        part = f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode() + header_part(original)
    return head + part + f"--{boundary}--\r\n".encode()


def _one_line(s: str) -> str:
    return " ".join(s.split())[:500]
