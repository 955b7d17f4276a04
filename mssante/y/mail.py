"""Build the MSSanté leg messages of a Y delivery (SPECS.md §3 message conventions).

One message per recipient group (professionals, patient), each carrying IHE_XDM.ZIP.
Pure: the Message-ID is derived from the delivery key, the Date from `now`.
"""

from __future__ import annotations

import email.policy
import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
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
    return render_leg_message(spec, now)[0]


def render_leg_message(spec: MailSpec, now: datetime) -> tuple[EmailMessage, bytes]:
    """The leg message and its bytes, rendered once (the size check needs them anyway)."""
    if not spec.recipients:
        raise MailError("a leg message needs at least one recipient")
    for addr in (spec.sender, *spec.recipients, *([spec.reply_to] if spec.reply_to else [])):
        if not valid_address(addr):
            raise MailError("invalid mail address in the leg")
    msg = EmailMessage(policy=email.policy.SMTP)  # 7-bit headers (RFC 2047), CRLF: no SMTPUTF8 needed on the relay
    local, _, domain = spec.sender.partition("@")
    msg["From"] = Address(display_name=_safe_header(spec.sender_name), username=local, domain=domain)
    msg["To"] = ", ".join(spec.recipients)
    if spec.reply_to:
        msg["Reply-To"] = spec.reply_to
    msg["Subject"] = _safe_header(
        subject(spec.document_label, spec.patient_family, spec.patient_given, spec.patient_birth_date)
    )
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id(spec.delivery_key, spec.message_id_domain)
    msg["X-MSS-CODECDA"] = ",".join(dict.fromkeys(spec.cda_codes))
    msg["X-MSS-INS"] = "O" if spec.ins_qualified else "N"
    if spec.nil:
        msg["X-MSS-NIL"] = _safe_header(spec.nil)
    if spec.no_reply and spec.group is LegGroup.PATIENT:
        msg["X-MSS-MES"] = "FIN"
    if spec.read_receipt:
        msg["Disposition-Notification-To"] = spec.sender
    msg.set_content(spec.body, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(spec.xdm, maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    # A boundary derived from the leg key keeps the output a pure function of (spec, now).
    msg.set_boundary("=_y_" + hashlib.sha256(spec.delivery_key.encode("utf-8")).hexdigest()[:32])
    raw = msg.as_bytes()
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MailError(f"leg message of {len(raw)} bytes exceeds the 25 MB MSSanté limit")
    return msg, raw


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
