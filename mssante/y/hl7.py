"""A small, strict HL7 v2.5/v2.6 ER7 parser with no I/O (h11-style protocol core).

Bytes in, typed objects out; every refusal is an `Hl7Error` that carries its HL7 table 0357
code and the ERR-2 location, so the MLLP listener can answer with an ACK without ever showing
exception text to the peer (ARCHITECTURE.md, "Errors").

Limits are checked *before* allocating per-segment structures (a 50 MB OBX is refused from
its length alone). Segment terminators CR, LF and CRLF are all accepted (SPECS.md §4:
"Lines may end with CR (standard) or LF (as in the examples)").

Message content is never logged or copied into error texts: error messages name the segment
and field, never the value.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

# HL7 v2.5 §2.5.4 delimiters; the ANS guide requires exactly "^~\&" in MSH-2 (profils-messages.md, MSH).
FIELD_SEPARATOR = "|"
ENCODING_CHARACTERS = "^~\\&"
_COMPONENT, _REPETITION, _ESCAPE, _SUBCOMPONENT = "^", "~", "\\", "&"
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


class ErrorCode(enum.IntEnum):
    """HL7 table 0357 (messageErrorCondition), as listed in the ANS guide error-codes.md."""

    ACCEPTED = 0
    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    TABLE_VALUE_NOT_FOUND = 103
    CARDINALITY = 198
    OTHER_HL7 = 199
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION = 203
    APPLICATION_ERROR = 207

    @property
    def label(self) -> str:
        return _ERROR_LABELS[self]


_ERROR_LABELS: dict[ErrorCode, str] = {
    ErrorCode.ACCEPTED: "Message accepted",
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.CARDINALITY: "Non-conformant cardinality",
    ErrorCode.OTHER_HL7: "Other HL7 Error",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version",
    ErrorCode.APPLICATION_ERROR: "Application internal error",
}


class AppErrorCode(enum.IntEnum):
    """Application error codes 900-906 (ANS guide error-codes.md, SPECS.md §3), sent in ERR-5."""

    WRONG_VERSION = 900
    AUTHOR_NOT_ALLOWED = 901
    UNKNOWN_PATIENT = 902
    NO_INS = 903
    INS_MISMATCH = 904
    INS_INCOMPLETE = 905
    OTHER = 906

    @property
    def label(self) -> str:
        return _APP_LABELS[self]


_APP_LABELS: dict[AppErrorCode, str] = {
    AppErrorCode.WRONG_VERSION: "Version du document incorrecte",
    AppErrorCode.AUTHOR_NOT_ALLOWED: "Auteur non autorisé à remplacer ou supprimer un document",
    AppErrorCode.UNKNOWN_PATIENT: "Identifiant patient inconnu",
    AppErrorCode.NO_INS: "INS non présent dans le document",
    AppErrorCode.INS_MISMATCH: "L'INS transmis ne correspond pas",
    AppErrorCode.INS_INCOMPLETE: "L'INS transmis n'est pas complet",
    AppErrorCode.OTHER: "Autre erreur",
}


class Severity(enum.Enum):
    """HL7 table 0516 (errorSeverity)."""

    ERROR = "E"
    WARNING = "W"
    INFORMATION = "I"
    FATAL = "F"


@dataclass(frozen=True)
class Location:
    """ERR-2 (ERL): segment id, segment sequence (1-based), field, component."""

    segment: str
    sequence: int = 1
    field: int | None = None
    component: int | None = None

    def to_erl(self) -> str:
        parts = [self.segment, str(self.sequence)]
        if self.field is not None:
            parts.append(str(self.field))
            if self.component is not None:
                parts += ["1", str(self.component)]
        return _COMPONENT.join(parts)


@dataclass(frozen=True)
class Problem:
    """One entry for an ERR segment. Used for errors (E) and warnings (W)."""

    code: ErrorCode
    message: str
    location: Location | None = None
    app_code: AppErrorCode | None = None
    severity: Severity = Severity.ERROR


class Hl7Error(Exception):
    """A refusal of the received message. `problem` maps one to one to an ERR segment.

    `reject` selects MSA-1: AE (the message is wrong; do not resend as is) by default,
    AR (circumstantial: resend later) when True.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        location: Location | None = None,
        *,
        app_code: AppErrorCode | None = None,
        reject: bool = False,
    ) -> None:
        super().__init__(message)
        self.problem = Problem(code, message, location, app_code)
        self.reject = reject

    @property
    def code(self) -> ErrorCode:
        return self.problem.code

    @property
    def app_code(self) -> AppErrorCode | None:
        return self.problem.app_code

    @property
    def location(self) -> Location | None:
        return self.problem.location


@dataclass(frozen=True)
class Hl7Limits:
    """Resource limits, checked before allocation. 20 MB default stays below the 25 MB MSSanté
    message ceiling (SPECS.md §2) once the document is wrapped in an XDM archive."""

    max_message_bytes: int = 20 * 1024 * 1024
    max_segments: int = 2000
    max_field_bytes: int = 20 * 1024 * 1024
    max_fields_per_segment: int = 400


_CHARSETS = {
    "": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/15": "iso8859-15",
    "8859/1": "iso8859-1",
    "ASCII": "ascii",
}


def unescape(value: str) -> str:
    """HL7 v2.5 §2.7 escape sequences for the default delimiters (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X..\\)."""
    if _ESCAPE not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == _ESCAPE:
            end = value.find(_ESCAPE, i + 1)
            if end == -1:
                out.append(value[i:])
                break
            seq = value[i + 1 : end]
            simple = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}.get(seq)
            if simple is not None:
                out.append(simple)
            elif seq.startswith("X") and len(seq) % 2 == 1 and all(c in "0123456789abcdefABCDEF" for c in seq[1:]):
                try:
                    out.append(bytes.fromhex(seq[1:]).decode("utf-8"))
                except UnicodeDecodeError:
                    out.append(value[i : end + 1])
            else:  # \H\ \N\ formatting and unknown sequences are dropped
                pass
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def escape(value: str) -> str:
    """Inverse of `unescape` for the delimiters, used by the ACK/ZAM builders."""
    return (
        value.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
        .replace("\n", " ")
    )


@dataclass(frozen=True)
class Segment:
    """One segment. `fields[0]` is the segment name; `field(n)` uses HL7 numbering.

    For MSH, `field(1)` is the field separator and `field(2)` the encoding characters, as in
    the standard, so MSH-9 is `field(9)` like every other segment.
    """

    name: str
    fields: tuple[str, ...]
    sequence: int  # 1-based occurrence number of this segment name in the message
    index: int  # 0-based position in the message

    def field(self, n: int) -> str:
        """Raw (still escaped) field n, '' when absent."""
        if self.name == "MSH":
            if n == 1:
                return FIELD_SEPARATOR
            n -= 1
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self.field(n)
        if self.name == "MSH" and n == 2:
            return [raw]
        return raw.split(_REPETITION) if raw else []

    def component(self, n: int, c: int = 1, *, rep: int = 0, sub: int = 0) -> str:
        """Unescaped component c (1-based) of repetition `rep` of field n; `sub` > 0 picks a sub-component."""
        reps = self.repetitions(n)
        if rep >= len(reps):
            return ""
        return components(reps[rep], c, sub)

    def location(self, field_no: int | None = None, component: int | None = None) -> Location:
        return Location(self.name, self.sequence, field_no, component)


def components(raw: str, c: int, sub: int = 0) -> str:
    """Component c (1-based) of a raw field repetition, unescaped; sub-component `sub` when > 0."""
    comps = raw.split(_COMPONENT)
    if c < 1 or c > len(comps):
        return ""
    value = comps[c - 1]
    if sub:
        subs = value.split(_SUBCOMPONENT)
        value = subs[sub - 1] if 0 < sub <= len(subs) else ""
    return unescape(value)


@dataclass(frozen=True)
class Message:
    segments: tuple[Segment, ...]
    charset: str
    message_code: str  # MSH-9.1, e.g. ORU
    trigger_event: str  # MSH-9.2, e.g. R01
    structure: str  # MSH-9.3, e.g. ORU_R01
    control_id: str  # MSH-10
    processing_id: str  # MSH-11.1
    version: str  # MSH-12.1
    msh: Segment = field(repr=False)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    @property
    def type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}"


def split_segments(data: bytes, limits: Hl7Limits) -> list[bytes]:
    """Split on CR, LF or CRLF after bounding the number of segments (no huge list allocation)."""
    if len(data) > limits.max_message_bytes:
        raise Hl7Error(
            ErrorCode.APPLICATION_ERROR,
            f"message of {len(data)} bytes exceeds the {limits.max_message_bytes}-byte limit",
        )
    # CRLF counts twice here; the bound is generous but still prevents allocating millions of lines.
    terminators = data.count(b"\r") + data.count(b"\n")
    if terminators > 2 * limits.max_segments + 2:
        raise Hl7Error(ErrorCode.APPLICATION_ERROR, f"more than {limits.max_segments} segments")
    # bytes.splitlines splits on CR, LF and CRLF only (not on VT/FF/FS like str.splitlines): the same lines
    # as replacing CRLF and LF by CR then splitting, without two copies of the message.
    lines = [ln for ln in data.splitlines() if ln.strip(b" \t\x0b\x1c")]
    if len(lines) > limits.max_segments:
        raise Hl7Error(ErrorCode.APPLICATION_ERROR, f"more than {limits.max_segments} segments")
    return lines


def _charset_of(msh_line: bytes) -> str:
    try:
        head = msh_line.decode("ascii", errors="replace")
    except Exception:  # pragma: no cover - bytes.decode with "replace" does not raise
        head = ""
    parts = head.split(FIELD_SEPARATOR)
    declared = parts[17].split("~")[0].strip() if len(parts) > 17 else ""
    codec = _CHARSETS.get(declared.upper())
    if codec is None:
        raise Hl7Error(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            "unsupported character set in MSH-18",
            Location("MSH", 1, 18),
        )
    return codec


def parse_message(data: bytes, limits: Hl7Limits | None = None) -> Message:
    """Parse one ER7 message (without MLLP framing). Raises `Hl7Error`, never anything else."""
    limits = limits or Hl7Limits()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Hl7Error(ErrorCode.APPLICATION_ERROR, "message must be bytes")
    data = bytes(data)
    lines = split_segments(data, limits)
    if not lines or not lines[0].startswith(b"MSH"):
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "the message must start with an MSH segment", Location("MSH"))
    msh_line = lines[0]
    # MSH-1 / MSH-2: exactly "|" and "^~\&" (ANS guide, MSH table).
    if msh_line[3:4] != b"|":
        raise Hl7Error(ErrorCode.DATA_TYPE, "MSH-1 field separator must be '|'", Location("MSH", 1, 1))
    if msh_line[4:9] != b"^~\\&|":
        raise Hl7Error(ErrorCode.DATA_TYPE, "MSH-2 encoding characters must be exactly ^~\\&", Location("MSH", 1, 2))
    codec = _charset_of(msh_line)
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for index, line in enumerate(lines):
        try:
            text = line.decode(codec)
        except UnicodeDecodeError:
            raise Hl7Error(
                ErrorCode.DATA_TYPE,
                f"segment {index + 1} is not valid {codec}",
                Location(line[:3].decode("ascii", "replace"), 1),
            ) from None
        text = text.rstrip(" \t\x0b\x1c\xa0")
        name = text[:3]
        if not _SEGMENT_NAME.fullmatch(name) or (len(text) > 3 and text[3] != FIELD_SEPARATOR):
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, f"segment {index + 1} has no valid segment name", Location("???", index + 1))
        if name == "MSH" and index != 0:
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "only one MSH segment is allowed", Location("MSH", 2))
        counts[name] = counts.get(name, 0) + 1
        if text.count(FIELD_SEPARATOR) > limits.max_fields_per_segment:
            raise Hl7Error(ErrorCode.APPLICATION_ERROR, f"{name} has too many fields", Location(name, counts[name]))
        fields = tuple(text.split(FIELD_SEPARATOR))
        for n, value in enumerate(fields):
            if len(value) > limits.max_field_bytes:
                raise Hl7Error(
                    ErrorCode.APPLICATION_ERROR,
                    f"{name}-{n} is longer than the {limits.max_field_bytes}-byte limit",
                    Location(name, counts[name], n),
                )
        segments.append(Segment(name, fields, counts[name], index))
    msh = segments[0]
    msg_type = msh.repetitions(9)[0] if msh.field(9) else ""
    code, trigger, structure = components(msg_type, 1), components(msg_type, 2), components(msg_type, 3)
    if not code or not trigger:
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-9 message type is missing", Location("MSH", 1, 9))
    control_id = msh.component(10)
    if not control_id:
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 message control id is missing", Location("MSH", 1, 10))
    if len(control_id) > 199:
        raise Hl7Error(ErrorCode.DATA_TYPE, "MSH-10 is too long", Location("MSH", 1, 10))
    return Message(
        segments=tuple(segments),
        charset=codec,
        message_code=code,
        trigger_event=trigger,
        structure=structure,
        control_id=control_id,
        processing_id=msh.component(11),
        version=msh.component(12),
        msh=msh,
    )


# Message profiles of the ANS guide (profils-messages.md): the segments a message must carry.
# ORU^R01 (v2.5): MSH, PID, {ORC, OBR, {OBX [PRT] [NTE]}}; MDM (v2.6): MSH, EVN, PID, PV1, ORC, OBR, TXA, {OBX}.
REQUIRED_SEGMENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ORU", "R01"): ("PID", "ORC", "OBR", "OBX"),
    ("MDM", "T02"): ("EVN", "PID", "PV1", "ORC", "OBR", "TXA", "OBX"),
    ("MDM", "T04"): ("EVN", "PID", "PV1", "ORC", "OBR", "TXA", "OBX"),
    ("MDM", "T10"): ("EVN", "PID", "PV1", "ORC", "OBR", "TXA", "OBX"),
}
SUPPORTED_VERSIONS = ("2.5", "2.5.1", "2.6")
PROCESSING_IDS = ("P", "T", "D")  # MSH-11, ANS guide MSH table


def validate_structure(msg: Message) -> None:
    """Check message type, version, processing id and required segments (table above)."""
    if msg.message_code not in {code for code, _ in REQUIRED_SEGMENTS}:
        raise Hl7Error(
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE, f"message type {msg.message_code} is not supported", Location("MSH", 1, 9, 1)
        )
    required = REQUIRED_SEGMENTS.get((msg.message_code, msg.trigger_event))
    if required is None:
        raise Hl7Error(
            ErrorCode.UNSUPPORTED_EVENT, f"event {msg.type} is not supported", Location("MSH", 1, 9, 2)
        )
    if msg.version not in SUPPORTED_VERSIONS:
        raise Hl7Error(ErrorCode.UNSUPPORTED_VERSION, "HL7 version must be 2.5 or 2.6", Location("MSH", 1, 12))
    if msg.processing_id not in PROCESSING_IDS:
        raise Hl7Error(ErrorCode.UNSUPPORTED_PROCESSING_ID, "MSH-11 must be P, T or D", Location("MSH", 1, 11))
    for name in required:
        if msg.first(name) is None:
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, f"required segment {name} is missing", Location(name))
    pids = msg.all("PID")
    if len(pids) > 1:
        raise Hl7Error(ErrorCode.CARDINALITY, "one patient per message: several PID segments", Location("PID", 2))
    first_obx = msg.all("OBX")[0]
    if pids[0].index > first_obx.index:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "PID must precede the OBX segments", Location("PID"))
