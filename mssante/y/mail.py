"""Build the MSSanté leg messages of a Y delivery (SPECS.md §3 message conventions).

One message per recipient group (professionals, patient), each carrying IHE_XDM.ZIP.
Pure: the Message-ID is derived from the delivery key, the Date from `now`.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # SPECS.md §2: total message limit 25 MB
DEFAULT_PATIENT_DOMAIN = "patient.mssante.fr"
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")

DEFAULT_BODY_PS = (
    "Bonjour,\n\nVous trouverez ci-joint un document médical concernant votre patient(e), "
    "au format IHE XDM (IHE_XDM.ZIP).\n\nCe message a été envoyé automatiquement par la messagerie sécurisée de santé.\n"
)
DEFAULT_BODY_PATIENT = (
    "Bonjour,\n\nUn nouveau document de santé vous a été envoyé. Vous le trouverez en pièce jointe "
    "(IHE_XDM.ZIP).\n\nCe message a été envoyé automatiquement : merci de ne pas y répondre.\n"
)
DEFAULT_BODY_REPLACE = "Ce document remplace une version transmise précédemment.\n"
DEFAULT_BODY_DELETE = "Le document transmis précédemment a été supprimé par son auteur et ne doit plus être utilisé.\n"


class LegGroup(enum.Enum):
    PS = "ps"
    PATIENT = "patient"


class MailError(ValueError):
    pass


@dataclass(frozen=True)
class MailSpec:
    group: LegGroup
    sender: str  # the APP mailbox of the sending structure (mapping-mss.md: FROM)
    sender_name: str
    recipients: tuple[str, ...]
    document_label: str  # <libellé> of the subject
    patient_family: str
    patient_given: str
    patient_birth_date: str  # YYYYMMDD
    body: str
    xdm: bytes
    cda_codes: tuple[str, ...]  # X-MSS-CODECDA
    ins_qualified: bool  # X-MSS-INS O/N
    nil: str  # X-MSS-NIL, the sending software's referencing id
    no_reply: bool  # X-MSS-MES: FIN (patients only)
    reply_to: str | None
    read_receipt: bool  # ACK_LECTURE_MSS -> Disposition-Notification-To
    delivery_key: str  # stable id of this leg, seeds the Message-ID
    message_id_domain: str


def valid_address(addr: str) -> bool:
    return bool(_ADDRESS.fullmatch(addr)) and len(addr) <= 254


def patient_address(ins: str, domain: str = DEFAULT_PATIENT_DOMAIN) -> str:
    """SPECS.md §2: patient mailboxes are <INS, 15 digits>@patient.mssante.fr."""
    if not re.fullmatch(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}", ins.upper()):
        raise MailError("a patient address is built from a 15-character INS")
    return f"{ins.upper()}@{domain}"


def birth_date_fr(value: str) -> str:
    if len(value) >= 8 and value[:8].isdigit():
        return f"{value[6:8]}/{value[4:6]}/{value[0:4]}"
    return value


def subject(label: str, family: str, given: str, birth_date: str) -> str:
    """`XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>` (SPECS.md §3)."""
    parts = [label.strip(), family.strip().upper(), given.strip(), birth_date_fr(birth_date)]
    return "XDM/1.0/DDM+" + " ".join(p for p in parts if p)


def message_id(delivery_key: str, domain: str) -> str:
    digest = hashlib.sha256(delivery_key.encode("utf-8")).hexdigest()[:32]
    return f"<y.{digest}@{domain}>"


def _safe_header(value: str) -> str:
    return re.sub(r"[\r\n\x00]+", " ", value).strip()


def build_leg_message(spec: MailSpec, now: datetime) -> EmailMessage:
    """The leg message as an EmailMessage (parsed from `render_leg_message`; tests and tools)."""
    parsed = email.message_from_bytes(render_leg_message(spec, now), policy=email.policy.SMTP)
    assert isinstance(parsed, EmailMessage)
    return parsed


_SPECIALS = set('()<>[]:;@\\,."')
_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B encoded-words of at most 75 characters, split on character boundaries."""
    words: list[str] = []
    chunk = ""
    for ch in text:
        if len((chunk + ch).encode("utf-8")) > 45:  # 45 bytes -> 60 base64 characters + 12 = 72
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words]


def _tokens(value: str, phrase: bool = False) -> list[str]:
    """The header value as foldable tokens: ASCII words as they are, each run of words with non-ASCII
    characters (or, in a phrase, RFC 5322 specials) as RFC 2047 encoded-words (adjacent encoded-words
    are joined by their decoder, so the spaces of a run are encoded inside it)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.extend(_encoded_words(" ".join(run)))
            run.clear()

    for word in value.split(" "):
        if not word:
            continue
        if not word.isascii() or (phrase and any(c in _SPECIALS for c in word)) or "=?" in word or len(word) > 900:
            run.append(word)
        else:
            flush()
            out.append(word)
    flush()
    return out


def _header(name: str, tokens: list[str]) -> bytes:
    """`Name: tokens` folded before a token when a line would exceed 78 characters (RFC 5322 §2.2.3)."""
    lines = [f"{name}:"]
    for tok in tokens:
        if len(lines[-1]) + 1 + len(tok) > _LINE and lines[-1] != f"{name}:":
            lines.append(" " + tok)
        else:
            lines[-1] += " " + tok
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _text(name: str, value: str) -> bytes:
    return _header(name, _tokens(_safe_header(value)))


def _mailbox_header(name: str, display_name: str, address: str) -> bytes:
    display = _safe_header(display_name)
    if not display:
        return _header(name, [address])
    if display.isascii() and not any(c in _SPECIALS for c in display):
        return _header(name, [*display.split(), f"<{address}>"])
    if display.isascii():  # a quoted-string (RFC 5322 §3.2.4)
        quoted = display.replace("\\", "\\\\").replace('"', '\\"')
        return _header(name, [f'"{quoted}"', f"<{address}>"])
    return _header(name, [*_tokens(display, phrase=True), f"<{address}>"])


def _crlf_lines(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _base64_crlf(data: bytes) -> bytes:
    """The bytes of `_crlf_lines(base64.encodebytes(data))` (76-character lines, each ended by CRLF), with one
    encoder call instead of one per 57-byte line and no replace passes over the result."""
    if not data:
        return b""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


def render_leg_message(spec: MailSpec, now: datetime) -> bytes:
    """The leg message's bytes: 7-bit headers (RFC 2047 encoded-words), CRLF line ends, multipart/mixed
    with the body (text/plain, quoted-printable) and IHE_XDM.ZIP (base64), so that the relay needs no
    SMTPUTF8 nor 8BITMIME. Rendered directly (no email package round trip): a pure function of
    (spec, now); the boundary is derived from the leg key."""
    if not spec.recipients:
        raise MailError("a leg message needs at least one recipient")
    for addr in (spec.sender, *spec.recipients, *([spec.reply_to] if spec.reply_to else [])):
        if not valid_address(addr):
            raise MailError("invalid mail address in the leg")
    boundary = "=_y_" + hashlib.sha256(spec.delivery_key.encode("utf-8")).hexdigest()[:32]
    head = [
        _mailbox_header("From", spec.sender_name, spec.sender),
        _header("To", [f"{a}," for a in spec.recipients[:-1]] + [spec.recipients[-1]]),
    ]
    if spec.reply_to:
        head.append(_header("Reply-To", [spec.reply_to]))
    head += [
        _text("Subject", subject(spec.document_label, spec.patient_family, spec.patient_given, spec.patient_birth_date)),
        _header("Date", format_datetime(now).split(" ")),
        _header("Message-ID", [message_id(spec.delivery_key, spec.message_id_domain)]),
        _text("X-MSS-CODECDA", ",".join(dict.fromkeys(spec.cda_codes))),
        _header("X-MSS-INS", ["O" if spec.ins_qualified else "N"]),
    ]
    if spec.nil:
        head.append(_text("X-MSS-NIL", spec.nil))
    if spec.no_reply and spec.group is LegGroup.PATIENT:
        head.append(_header("X-MSS-MES", ["FIN"]))
    if spec.read_receipt:
        head.append(_header("Disposition-Notification-To", [spec.sender]))
    head.append(b"MIME-Version: 1.0\r\n")
    head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'.encode("ascii"))
    text = spec.body.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    body_qp = _crlf_lines(binascii.b2a_qp(text.encode("utf-8"), istext=True))
    delimiter = f"--{boundary}\r\n".encode("ascii")
    raw = b"".join([
        *head, b"\r\n",
        delimiter,
        b'Content-Type: text/plain; charset="utf-8"\r\n',
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        body_qp, b"\r\n",
        delimiter,
        b"Content-Type: application/zip\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b'Content-Disposition: attachment; filename="IHE_XDM.ZIP"\r\n\r\n',
        _base64_crlf(spec.xdm), b"\r\n",
        f"--{boundary}--\r\n".encode("ascii"),
    ])
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MailError(f"leg message of {len(raw)} bytes exceeds the 25 MB MSSanté limit")
    return raw


def body_for(group: LegGroup, given: str | None, action: str) -> str:
    """The CORPSMAIL_* text when given, else our default (ANS guide: a default body is required
    for replacement and deletion)."""
    if given and given.strip():
        text = given.strip() + "\n"
    else:
        text = DEFAULT_BODY_PS if group is LegGroup.PS else DEFAULT_BODY_PATIENT
    if action == "replace":
        text += "\n" + DEFAULT_BODY_REPLACE
    elif action == "delete":
        text += "\n" + DEFAULT_BODY_DELETE
    return text
