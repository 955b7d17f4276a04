"""HL7 acknowledgements sent back to the lab: the ACK (AA/AE/AR + ERR) and the business
acknowledgements ZAM^Z01/Z02/Z03^ZAM_Z01 (ANS guide profils-messages.md, "Le message
d'acquittement" and "Description des messages HL7 d'accusés métier"; ack-metier-zam.md).

Shapes follow the real examples (ack.hl7, Message_metier_*). Segments end with CR, as MLLP
traffic does. Every value is escaped; exception text never reaches the peer: the ERR-8 user
message is the typed error's own message (which names fields, never values).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mssante.y.hl7 import ENCODING_CHARACTERS, Message, Problem, escape

PROFILE = "2.1^CISIS_CDA_HL7_V2"  # MSH-21 of the ZAM messages


class AckCode(enum.Enum):
    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


@dataclass(frozen=True)
class AckContext:
    """What an answer needs from the original message's MSH (swapped on the way back)."""

    sending_application: str  # original MSH-3 (raw HD, escaped form kept)
    sending_facility: str  # original MSH-4
    receiving_application: str  # original MSH-5
    receiving_facility: str  # original MSH-6
    trigger_event: str  # original MSH-9.2 (R01, T02...)
    control_id: str  # original MSH-10
    processing_id: str  # original MSH-11
    version: str  # original MSH-12
    charset: str  # original MSH-18 as written (e.g. "UNICODE UTF-8")

    @classmethod
    def from_message(cls, msg: Message) -> AckContext:
        msh = msg.msh
        return cls(
            sending_application=msh.field(3),
            sending_facility=msh.field(4),
            receiving_application=msh.field(5),
            receiving_facility=msh.field(6),
            trigger_event=msg.trigger_event,
            control_id=msh.field(10),
            processing_id=msh.field(11) or "P",
            version=msh.field(12) or "2.5",
            charset=msh.field(18) or "UNICODE UTF-8",
        )

    @classmethod
    def salvage(cls, data: bytes, *, our_application: str, our_facility: str) -> AckContext:
        """Best effort for a message we could not parse: read what we can of its first line."""
        first = data[:4096].replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r", 1)[0]
        text = first.decode("ascii", errors="replace")
        parts = text.split("|") if text.startswith("MSH|") else []

        def field(n: int, default: str = "") -> str:  # MSH numbering: parts[n-1]
            value = parts[n - 1] if len(parts) >= n else ""
            return escape(value[:64]) if value and value.isprintable() else default

        raw_type = parts[8] if len(parts) > 8 else ""
        trigger = raw_type.split("^")[1][:3] if raw_type.count("^") >= 1 else ""
        return cls(
            sending_application=field(3),
            sending_facility=field(4),
            receiving_application=field(5, our_application),
            receiving_facility=field(6, our_facility),
            trigger_event=trigger if trigger.isalnum() else "",
            control_id=field(10),
            processing_id=field(11, "P") if field(11, "P") in ("P", "T", "D") else "P",
            version=field(12, "2.5") if field(12, "2.5") in ("2.5", "2.5.1", "2.6") else "2.5",
            charset="UNICODE UTF-8",
        )


def hl7_timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


def _msh_time(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M")  # minute precision, like the ANS examples' MSH-7


def _msh(sending_app: str, sending_fac: str, receiving_app: str, receiving_fac: str, now: datetime,
         msg_type: str, control_id: str, processing_id: str, version: str, charset: str, profile: str = "") -> str:
    fields = [
        "MSH", ENCODING_CHARACTERS, sending_app, sending_fac, receiving_app, receiving_fac,
        _msh_time(now), "", msg_type, escape(control_id), processing_id, version,
        "", "", "", "", "FRA", charset,
    ]
    if profile:
        fields += ["", "", profile]
    return "|".join(fields)


def err_segment(problem: Problem) -> str:
    """ERR-2 location, ERR-3 table 0357 code, ERR-4 severity, ERR-5 900-906 when set, ERR-8 user message."""
    err3 = f"{int(problem.code)}^{escape(problem.code.label)}^messageErrorCondition"
    err5 = ""
    if problem.app_code is not None:
        err5 = f"{int(problem.app_code)}^{escape(problem.app_code.label)}^applicationErrorCondition"
    fields = ["ERR", "", problem.location.to_erl() if problem.location else "", err3, problem.severity.value,
              err5, "", "", escape(problem.message)]
    return "|".join(fields).rstrip("|")


def build_ack(ctx: AckContext, code: AckCode, problems: Sequence[Problem], *, control_id: str, now: datetime) -> bytes:
    """ACK^<event>^ACK answering `ctx`; `control_id` is our own MSH-10."""
    trigger = ctx.trigger_event or "R01"
    segments = [
        _msh(ctx.receiving_application, ctx.receiving_facility, ctx.sending_application, ctx.sending_facility, now,
             f"ACK^{trigger}^ACK", control_id, ctx.processing_id, ctx.version, ctx.charset),
        f"MSA|{code.value}|{ctx.control_id}",
    ]
    segments += [err_segment(p) for p in problems]
    return ("\r".join(segments) + "\r").encode("utf-8")


# --- business acknowledgements (ZAM) ------------------------------------------------------------


class ZamEvent(enum.Enum):
    RECEPTION_DMP = "Z01"
    RECEPTION_MSS = "Z02"
    LECTURE_MSS = "Z03"


_ZAM_OBX1 = {
    ZamEvent.RECEPTION_DMP: "ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM",
    ZamEvent.RECEPTION_MSS: "ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM",
    ZamEvent.LECTURE_MSS: "ACK_LECTURE_MSS^Accusé de lecture^AckMetierZAM",
}
_ZAM_OBX2 = {
    ZamEvent.RECEPTION_MSS: "DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM",
    ZamEvent.LECTURE_MSS: "LECTEUR_MSS^Lecteur du courriel MSSanté^AckMetierZAM",
}
# ERR-5 coding systems per event (examples and profils-messages.md).
_ZAM_ERR_SYSTEM = {
    ZamEvent.RECEPTION_DMP: "DMPERRORCODE",
    ZamEvent.RECEPTION_MSS: "SMTPERRORCODE",
    ZamEvent.LECTURE_MSS: "applicationErrorCondition",
}


@dataclass(frozen=True)
class ZamError:
    code: str  # DMP error code, SMTP code, or 900-906
    label: str
    severity: str = "E"


def build_zam(
    ctx: AckContext,
    event: ZamEvent,
    *,
    success: bool,
    control_id: str,
    now: datetime,
    recipient_id: str = "",
    recipient_address: str = "",
    error: ZamError | None = None,
) -> bytes:
    """ZAM^<event>^ZAM_Z01 to the lab, about the message `ctx.control_id` (OBX-4)."""
    if not success and error is None:
        raise ValueError("a negative business acknowledgement carries an error (ERR required when OBX-5 = N)")
    segments = [
        _msh(ctx.receiving_application, ctx.receiving_facility, ctx.sending_application, ctx.sending_facility, now,
             f"ZAM^{event.value}^ZAM_Z01", control_id, ctx.processing_id, "2.6", ctx.charset, PROFILE),
        f"EVN||{hl7_timestamp(now)}",
        f"OBX|1|CWE|{_ZAM_OBX1[event]}|{escape(ctx.control_id)}|{'Y' if success else 'N'}^^expandedYes-NoIndicator||||||F|",
    ]
    if event in _ZAM_OBX2:
        if not recipient_address:
            raise ValueError("Z02/Z03 name the MSSanté recipient or reader")
        segments.append(
            f"OBX|2|XTN|{_ZAM_OBX2[event]}|{escape(recipient_id)}|^^X.400^{escape(recipient_address)}||||||F|"
        )
    if error is not None and not success:
        segments.append(
            f"ERR|||207^Application internal error^messageErrorCondition|{error.severity}|"
            f"{escape(error.code)}^{escape(error.label)}^{_ZAM_ERR_SYSTEM[event]}"
        )
    return ("\r".join(segments) + "\r").encode("utf-8")
