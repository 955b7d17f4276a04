"""Parse incoming delivery reports for leg matching: DSN (RFC 3464) and MDN (RFC 8098).

The PFI turns a DSN into ZAM^Z02 and an MDN into ZAM^Z03 (profils-messages.md, "Evènements
déclenchants des messages d'accusés métier"). MSSanté MDN errors carry
`processed/Error: <code>^<libellé>` (struct-msg-mdn.md). Pure functions of the message bytes.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message

MAX_REPORT_BYTES = 30 * 1024 * 1024


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class RecipientStatus:
    final_recipient: str
    original_recipient: str | None
    action: str  # failed / delayed / delivered / relayed / expanded
    status: str  # RFC 3463 enhanced status, e.g. 5.1.1
    diagnostic: str | None
    smtp_code: int  # for ZAM ERR-5 (SMTPERRORCODE): from Diagnostic-Code, else from the status class

    @property
    def delivered(self) -> bool:
        return self.action in ("delivered", "relayed", "expanded")

    @property
    def final(self) -> bool:
        return self.action != "delayed"


@dataclass(frozen=True)
class DeliveryReport:
    original_envelope_id: str | None
    original_message_id: str | None  # from the returned headers
    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]


@dataclass(frozen=True)
class DispositionReport:
    original_message_id: str | None
    final_recipient: str
    original_recipient: str | None
    action_mode: str  # automatic-action / manual-action
    sending_mode: str
    disposition_type: str  # displayed / processed / deleted / dispatched
    error_code: str | None  # e.g. "902" from "processed/Error: 902^..."
    error_label: str | None

    @property
    def success(self) -> bool:
        return self.error_code is None and self.disposition_type in ("displayed", "processed", "dispatched")


def _load(data: bytes) -> Message:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError("report too large")
    return email.message_from_bytes(data, policy=email.policy.default)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    _, _, addr = str(value).partition(";")
    addr = (addr or str(value)).strip().strip("<>")
    return addr or None


def _fields_blocks(part: Message) -> list[Message]:
    """The per-message and per-recipient header blocks of a delivery-status or MDN part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    raw = payload if isinstance(payload, str) else ""
    blocks = [b for b in re.split(r"\r?\n\s*\r?\n", raw.strip()) if b.strip()]
    return [email.message_from_string(b + "\n", policy=email.policy.default) for b in blocks]


def _report_part(msg: Message, report_type: str, content_type: str) -> tuple[Message, Message | None]:
    if msg.get_content_type() != "multipart/report" or msg.get_param("report-type") != report_type:
        raise ReportError(f"not a multipart/report; report-type={report_type}")
    status_part: Message | None = None
    returned: Message | None = None
    for part in msg.iter_parts() if isinstance(msg, EmailMessage) else []:
        ctype = part.get_content_type()
        if ctype == content_type and status_part is None:
            status_part = part
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers") and returned is None:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                returned = inner[0]
            elif isinstance(inner, str):
                returned = email.message_from_string(inner, policy=email.policy.default)
    if status_part is None:
        raise ReportError(f"no {content_type} part")
    return status_part, returned


def _smtp_code(status: str, diagnostic: str | None) -> int:
    if diagnostic:
        m = re.search(r"\b([245]\d\d)\b", diagnostic)
        if m:
            return int(m.group(1))
    if status.startswith("2"):
        return 250
    return 451 if status.startswith("4") else 554


def parse_dsn(data: bytes) -> DeliveryReport:
    msg = _load(data)
    part, returned = _report_part(msg, "delivery-status", "message/delivery-status")
    blocks = _fields_blocks(part)
    if not blocks:
        raise ReportError("empty delivery-status")
    head, per_rcpt = blocks[0], blocks[1:]
    recipients: list[RecipientStatus] = []
    for b in per_rcpt:
        final = _address(b.get("Final-Recipient"))
        action = str(b.get("Action", "")).strip().lower()
        status = str(b.get("Status", "")).strip().split(" ")[0]
        if not final or not action or not re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status):
            raise ReportError("per-recipient fields need Final-Recipient, Action and Status")
        diag = b.get("Diagnostic-Code")
        diag_text = str(diag).partition(";")[2].strip() if diag else None
        recipients.append(RecipientStatus(final, _address(b.get("Original-Recipient")), action, status, diag_text,
                                          _smtp_code(status, diag_text)))
    if not recipients:
        raise ReportError("no per-recipient fields")
    envid = head.get("Original-Envelope-Id")
    return DeliveryReport(
        original_envelope_id=str(envid).strip() if envid else None,
        original_message_id=str(returned.get("Message-ID")).strip() if returned is not None and returned.get("Message-ID") else None,
        reporting_mta=_address(head.get("Reporting-MTA")),
        recipients=tuple(recipients),
    )


_DISPOSITION = re.compile(
    r"\s*(?P<action>[\w-]+)\s*/\s*(?P<sending>[\w-]+)\s*;\s*(?P<type>[\w-]+)\s*(?:/\s*(?P<modifiers>.*))?$",
    re.IGNORECASE | re.DOTALL,
)


def parse_mdn(data: bytes) -> DispositionReport:
    msg = _load(data)
    part, returned = _report_part(msg, "disposition-notification", "message/disposition-notification")
    blocks = _fields_blocks(part)
    fields: dict[str, str] = {}
    for b in blocks:
        for k, v in b.items():
            fields.setdefault(k.lower(), " ".join(str(v).split()))
    disposition = fields.get("disposition")
    final = _address(fields.get("final-recipient"))
    if not disposition or not final:
        raise ReportError("an MDN needs Disposition and Final-Recipient")
    m = _DISPOSITION.match(disposition)
    if not m:
        raise ReportError("unreadable Disposition field")
    code: str | None = None
    label: str | None = None
    modifiers = m.group("modifiers") or ""
    em = re.search(r"error\s*:?\s*(?P<code>[^\^\s|]+)(?:\^(?P<label>[^\^|]*))?", modifiers, re.IGNORECASE)
    if em:
        code, label = em.group("code"), (em.group("label") or "").strip() or None
    elif modifiers.strip().lower().startswith("error"):
        code = "906"
    original_id = fields.get("original-message-id")
    if not original_id and returned is not None and returned.get("Message-ID"):
        original_id = str(returned.get("Message-ID"))
    return DispositionReport(
        original_message_id=original_id.strip() if original_id else None,
        final_recipient=final,
        original_recipient=_address(fields.get("original-recipient")),
        action_mode=m.group("action").lower(),
        sending_mode=m.group("sending").lower(),
        disposition_type=m.group("type").lower(),
        error_code=code,
        error_label=label,
    )
