"""Message header handling at acceptance: pure functions over raw bytes (no I/O, `now` is a parameter).

- Received trace field (RFC 5321 §4.4) with the TLS details and the peer certificate subject.
- Submission hygiene (RFC 6409 §8): add Message-ID (§8.3) and Date (§8.2) when missing, strip Bcc
  (RFC 5322 §3.6.3), keep every X-MSS-* header (SPECS.md §3) untouched.
- The From header addresses, for the "send only as your own mailboxes" rule (issue 5).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import secrets
from dataclasses import dataclass


class MessageFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Header:
    name: str  # as written
    raw: bytes  # the whole field, folded lines and CRLF included

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> str:
        v = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        return v.decode("utf-8", "replace").replace("\r\n", "").strip()


def split_message(raw: bytes) -> tuple[list[Header], bytes]:
    """Header fields and the body (after the blank line). A message with no blank line is all header."""
    end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):
        head, body = b"", raw[2:]
    elif end < 0:
        head, body = raw, b""
    else:
        head, body = raw[: end + 2], raw[end + 4:]
    fields: list[Header] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            prev = fields[-1]
            fields[-1] = Header(prev.name, prev.raw + line + b"\r\n")
            continue
        name = line.split(b":", 1)[0]
        if b":" not in line or not name or any(c <= 32 or c >= 127 for c in name):
            raise MessageFormatError("malformed header field")
        fields.append(Header(name.decode("ascii"), line + b"\r\n"))
    return fields, body


def join_message(fields: list[Header], body: bytes) -> bytes:
    return b"".join(f.raw for f in fields) + b"\r\n" + body


def first(fields: list[Header], name: str) -> str | None:
    n = name.lower()
    for f in fields:
        if f.lname == n:
            return f.value
    return None


def message_id_of(fields: list[Header]) -> str | None:
    mid = first(fields, "Message-ID")
    return mid[:998] if mid else None


def from_addresses(fields: list[Header]) -> list[str]:
    """Addresses of the From (and Sender) fields, lower-cased."""
    values = [f.value for f in fields if f.lname in ("from", "sender")]
    return [a.lower() for _, a in email.utils.getaddresses(values) if a]


def new_message_id(domain: str) -> str:
    return f"<{secrets.token_hex(12)}@{domain}>"


def format_date(now: dt.datetime) -> str:
    return email.utils.format_datetime(now.astimezone(dt.timezone.utc))


def received_header(*, from_helo: str, peer_ip: str, by_host: str, protocol: str, tls: str, cert_subject: str | None,
                    recipient: str | None, queue_id: str, now: dt.datetime) -> bytes:
    """RFC 5321 §4.4 Received: from/by/with/id/for; TLS details in a comment (RFC 8314 §4.3 style)."""
    cert = f" peer-cert={cert_subject!r}" if cert_subject else ""
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    text = (
        f"Received: from {_clean(from_helo)} ([{peer_ip}])\r\n"
        f"\t({_clean(tls)}{_clean(cert)})\r\n"
        f"\tby {by_host} (mssante) with {protocol} id {queue_id}{for_clause};\r\n"
        f"\t{format_date(now)}\r\n"
    )
    return text.encode("utf-8")


_COMMENT_UNSAFE = str.maketrans("", "", "\r\n()\\")


def _clean(s: str) -> str:
    # A comment cannot hold CR/LF or unbalanced parentheses.
    return s.translate(_COMMENT_UNSAFE)[:300]


def prepare_submission(raw: bytes, *, now: dt.datetime, domain: str) -> tuple[bytes, str]:
    """RFC 6409 §8 hygiene: add Message-ID and Date if missing, strip Bcc. Returns (message, message_id)."""
    fields, body = split_message(raw)
    fields = [f for f in fields if f.lname != "bcc"]
    mid = message_id_of(fields)
    if mid is None:
        mid = new_message_id(domain)
        fields.append(Header("Message-ID", f"Message-ID: {mid}\r\n".encode()))
    if first(fields, "Date") is None:
        fields.append(Header("Date", f"Date: {format_date(now)}\r\n".encode()))
    return join_message(fields, body), mid
