"""The pure "decide" step of a Y delivery: one HL7 message in, a complete plan or a NACK out.

    decision = decide(data, config, now, trust=..., directory=...)
    if isinstance(decision, YPlan):   store it durably, then send decision.ack
    else:                             send decision.ack (AE/AR with ERR segments)

Planning is all-or-nothing (nothing half-sent): every check (structure, flags matrix, INS,
CDA, recipients in the trust space, directory look-ups, message sizes) runs before a plan
exists. The caller owns I/O: trust and directory are plain callables. The annuaire service is
async, so a listener first calls `lookups_needed` and resolves those ids, then passes
`resolved.get` as `directory` (see docs/y.md).
"""

from __future__ import annotations

import email
import email.policy
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

from mssante.dmp.api import DmpAction, DmpRequest
from mssante.y.ack import AckCode, AckContext, build_ack
from mssante.y.cda import IDNPS_OID, CdaError, CdaHeader, parse_cda_header
from mssante.y.flags import Routing, decide_routing
from mssante.y.hl7 import (
    AppErrorCode,
    ErrorCode,
    Hl7Error,
    Hl7Limits,
    Location,
    Problem,
    Severity,
    parse_message,
)
from mssante.y.ins import Identity, InsEnvironment, InsError, check_identity, check_traits
from mssante.y.mail import (
    DEFAULT_PATIENT_DOMAIN,
    LegGroup,
    MailError,
    MailSpec,
    body_for,
    message_id,
    render_leg_message,
    patient_address,
    valid_address,
)
from mssante.y.message import Participant, YAction, YRequest, build_request
from mssante.y.xdm import XdmDocument, XdmSubmission, build_xdm

TrustCheck = Callable[[str], bool]  # domain -> is it in the trust space (liste blanche / local)?
DirectoryLookup = Callable[[str], Sequence[str] | None]  # IDNPS or RPPS -> MSSanté addresses, PER first


@dataclass(frozen=True)
class AuthorisedSender:
    """A lab/RIS allowed to use this PFI, identified by MSH-3.1 / MSH-4.1."""

    application: str
    facility: str
    mail_from: str  # its APP mailbox: From of the MSSanté legs (mapping-mss.md)
    display_name: str
    structure_ids: frozenset[str] = frozenset()  # allowed PRT SB structure ids (PRT-8.10); empty = any
    nil: str = ""  # X-MSS-NIL


@dataclass(frozen=True)
class IntakeConfig:
    senders: tuple[AuthorisedSender, ...]
    environment: InsEnvironment = InsEnvironment.PRODUCTION
    patient_domain: str = DEFAULT_PATIENT_DOMAIN
    source_oid: str = "1.2.250.1.213.1.1.9.999"  # XDS sourceId of this gateway: set it in config
    message_id_domain: str = "localhost"
    limits: Hl7Limits = field(default_factory=Hl7Limits)
    ack_warnings: bool = True  # send warnings as ERR severity W in an AA


@dataclass(frozen=True)
class MailLegPlan:
    group: LegGroup
    envelope_from: str
    recipients: tuple[str, ...]
    message_id: str
    raw: bytes  # the rendered leg message (mail.render_leg_message); never log it

    @property
    def data(self) -> bytes:
        return self.raw

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The leg message parsed (tests and tools; the runtime only needs `raw`)."""
        parsed = email.message_from_bytes(self.raw, policy=email.policy.SMTP)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class YPlan:
    request: YRequest
    routing: Routing
    headers: tuple[CdaHeader, ...]
    action: YAction
    delivery_key: str
    ins_qualified: bool
    dmp: tuple[DmpRequest, ...]  # one per document when DESTDMP=Y
    mail_legs: tuple[MailLegPlan, ...]
    xdm: bytes | None
    ack_context: AckContext  # for the later ZAM business acknowledgements
    ack: bytes  # AA: send only once the plan is durably stored
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class YRefusal:
    code: AckCode
    problems: tuple[Problem, ...]
    control_id: str | None
    ack: bytes


Decision = YPlan | YRefusal


def _ack_id(seed: str, now: datetime) -> str:
    return "ACK" + hashlib.sha256(f"{seed}|{now.isoformat()}".encode()).hexdigest()[:16].upper()


def _error(code: ErrorCode, message: str, location: Location | None = None, app: AppErrorCode | None = None) -> Hl7Error:
    return Hl7Error(code, message, location, app_code=app)


def lookups_needed(data: bytes, limits: Hl7Limits | None = None) -> frozenset[str]:
    """IDNPS/RPPS of RCT recipients given without an address (resolve them before `decide`)."""
    try:
        req = build_request(parse_message(data, limits))
    except Hl7Error:
        return frozenset()
    return frozenset(
        p.person.id for p in req.recipients if not p.address and not p.is_patient and p.person is not None and p.person.id
    )


def _find_sender(config: IntakeConfig, req: YRequest) -> AuthorisedSender:
    for s in config.senders:
        if s.application == req.sending_application.namespace and s.facility == req.sending_facility.namespace:
            return s
    raise _error(ErrorCode.APPLICATION_ERROR, "sending application/facility not authorised on this PFI", Location("MSH", 1, 3))


def _domain(addr: str) -> str:
    return addr.rpartition("@")[2].lower()


def _ps_recipients(req: YRequest, trust: TrustCheck, directory: DirectoryLookup) -> list[str]:
    out: list[str] = []
    for p in req.recipients:
        if p.is_patient:
            continue
        addr = p.address
        if not addr:
            ident = p.person.id if p.person is not None else ""
            if not ident:
                raise _error(ErrorCode.REQUIRED_FIELD_MISSING, "PRT RCT without address nor PS identifier", p.location)
            found = [a for a in (directory(ident) or ()) if a]
            if not found:
                raise _error(ErrorCode.APPLICATION_ERROR, "RCT recipient identifier not found in the directory", p.location)
            addr = found[0]
        if not valid_address(addr):
            raise _error(ErrorCode.DATA_TYPE, "PRT-15.4 is not a valid mail address", Location("PRT", p.location.sequence, 15, 4))
        if not trust(_domain(addr)):
            raise _error(
                ErrorCode.APPLICATION_ERROR, "recipient domain is outside the MSSanté trust space",
                Location("PRT", p.location.sequence, 15, 4),
            )
        if addr.lower() not in out:
            out.append(addr.lower())
    return out


def _author_fields(req: YRequest, header: CdaHeader) -> tuple[str, str, str, str, str]:
    a: Participant | None = req.author
    person = a.person if a is not None else None
    org = a.organization if a is not None else None
    idnps = person.id if person is not None and person.id else (header.author.id if header.author else "") or ""
    family = person.family if person is not None and person.id else (header.author.family if header.author else "")
    given = person.given if person is not None and person.id else (header.author.given if header.author else "")
    sid = org.id if org is not None and org.id else (header.author_organization.id if header.author_organization else "") or ""
    sname = org.name if org is not None and org.id else (header.author_organization.name if header.author_organization else "")
    return idnps, family, given, sid, sname


def _plan(data: bytes, config: IntakeConfig, now: datetime, trust: TrustCheck, directory: DirectoryLookup,
          ack_control_id: str | None) -> YPlan:
    msg = parse_message(data, config.limits)
    ctx = AckContext.from_message(msg)
    req = build_request(msg)
    sender = _find_sender(config, req)
    routing = decide_routing(req.flags)
    warnings = list(req.warnings)
    headers = tuple(parse_cda_header(d.data) for d in req.documents)
    action = req.action
    if action is YAction.SUBMIT and any(h.replaced_document_id for h in headers):
        action = YAction.REPLACE  # relatedDocument@typeCode=RPLC signals replacement (SPECS.md §4)
    if action is YAction.REPLACE and not all(h.replaced_document_id for h in headers):
        raise _error(ErrorCode.REQUIRED_FIELD_MISSING, "a replacement needs relatedDocument[@typeCode='RPLC'] in the CDA",
                     req.documents[0].location, AppErrorCode.WRONG_VERSION)
    # Identity (SPECS.md §4 "Identity rules"): every document must name the PID patient.
    pid_identity = req.patient.identity
    all_oids = InsEnvironment.PRODUCTION.oids + InsEnvironment.TEST.oids
    id_type = "NH"
    if pid_identity.ins is None and not (routing.dmp_leg or routing.patient_leg) and req.patient.other_ids:
        # A PS-only send without INS is allowed (X-MSS-INS: N, SPECS.md §3); the XDM patientId is then
        # the local identifier with its assigning authority OID (type PI).
        local_id, local_oid, _ = req.patient.other_ids[0]
        if not local_oid:
            raise InsError(AppErrorCode.NO_INS, "no INS and PID-3 has no assigning authority OID", Location("PID", 1, 3))
        for h in headers:
            if h.patient_ins(all_oids):
                raise InsError(AppErrorCode.INS_MISMATCH, "the CDA carries an INS but PID-3 does not", Location("OBX", 1, 5))
            check_traits(pid_identity, Identity(None, None, h.patient_family, h.patient_given, h.patient_birth_time,
                                                h.patient_sex))
        qualified, ins, ins_oid, id_type = False, local_id, local_oid, "PI"
        warnings.append("no INS: sent to professionals only, with X-MSS-INS: N")
    else:
        qualified = True
        for h in headers:
            cda_ins = h.patient_ins(config.environment.oids) or h.patient_ins(all_oids)
            cda_identity = Identity(cda_ins[0] if cda_ins else None, cda_ins[1] if cda_ins else None, h.patient_family,
                                    h.patient_given, h.patient_birth_time, h.patient_sex)
            check = check_identity(pid_identity, req.patient.identity_status, cda_identity, config.environment)
            qualified = qualified and check.qualified
            warnings += [w for w in check.warnings if w not in warnings]
        if not qualified and (routing.dmp_leg or routing.patient_leg):
            raise InsError(AppErrorCode.INS_INCOMPLETE,
                           "the DMP and the patient are only reached with a qualified INS (VALI)", Location("PID", 1, 32))
        ins = pid_identity.ins or ""
        ins_oid = pid_identity.ins_oid or ""
    # Author and structure (PRT SB; needed for the DMP: VIHF and submission set author).
    idnps, family, given, structure_id, structure_name = _author_fields(req, headers[0])
    if sender.structure_ids and structure_id not in sender.structure_ids:
        raise _error(ErrorCode.APPLICATION_ERROR, "PRT-8 structure is not allowed for this sending application",
                     Location("PRT", req.author.location.sequence if req.author else 1, 8))
    if routing.dmp_leg and (req.author is None or not idnps or not structure_id):
        raise _error(ErrorCode.REQUIRED_FIELD_MISSING, "feeding the DMP needs a PRT SB with the author and structure",
                     Location("PRT", 1, 4))
    sb_person = req.author.person if req.author is not None else None
    if routing.dmp_leg and sb_person is not None and sb_person.id_oid and sb_person.id_oid != IDNPS_OID:
        # PRT-5.9 of the SB participant is the IDNPS OID (profils-messages.md); the DMP author depends on it.
        raise _error(ErrorCode.TABLE_VALUE_NOT_FOUND, "PRT-5.9 of the SB participant must be the IDNPS OID",
                     Location("PRT", req.author.location.sequence if req.author else 1, 5, 9))
    # Recipients.
    ps: list[str] = []
    if routing.ps_leg:
        ps = _ps_recipients(req, trust, directory)
        if not ps:
            raise _error(ErrorCode.REQUIRED_FIELD_MISSING, "DESTMSSANTEPS=Y but no PRT RCT professional recipient",
                         Location("PRT", 1, 4))
    elif any(not p.is_patient for p in req.recipients):
        warnings.append("PRT RCT professional recipients ignored: DESTMSSANTEPS=N")
    patient_addrs: list[str] = []
    if routing.patient_leg:
        # The patient address comes from the validated PID INS, never from a PRT (SPECS.md §2).
        addr = patient_address(ins, config.patient_domain)
        if not trust(_domain(addr)):
            raise _error(ErrorCode.APPLICATION_ERROR, "patient domain is outside the MSSanté trust space", Location("PID", 1, 3))
        patient_addrs = [addr]
    for p in req.recipients:
        if id_type == "NH" and p.is_patient and p.address and \
                p.address.lower() != patient_address(ins, config.patient_domain).lower():
            warnings.append("a PRT patient address disagrees with the PID INS; the PID INS is used")
    key = f"{req.sending_application.namespace}|{req.sending_facility.namespace}|{req.control_id}"
    xdm: bytes | None = None
    legs: list[MailLegPlan] = []
    if ps or patient_addrs:
        sub = XdmSubmission(
            patient_ins=ins, patient_oid=ins_oid, author_idnps=idnps, author_family=family, author_given=given,
            structure_id=structure_id, structure_name=structure_name, source_id=config.source_oid,
            submission_key=key, title=headers[0].title, patient_id_type=id_type,
            patient_traits=(f"PID-5|{'^'.join([*pid_identity.family_names[:1], *pid_identity.given_names[:1]])}^^^^^L",
                            f"PID-7|{pid_identity.birth_date or ''}", f"PID-8|{pid_identity.sex or ''}"),
        )
        xdm = build_xdm([XdmDocument(h, d.data, routing.confidentiality) for h, d in zip(headers, req.documents, strict=True)],
                        sub, now)
        groups = [(LegGroup.PS, ps, req.body_ps), (LegGroup.PATIENT, patient_addrs, req.body_patient)]
        for group, rcpts, body in groups:
            if not rcpts:
                continue
            spec = MailSpec(
                group=group, sender=sender.mail_from, sender_name=sender.display_name, recipients=tuple(rcpts),
                document_label=req.documents[0].type_label or headers[0].code.display,
                patient_family=(pid_identity.family_names or ("",))[0],
                patient_given=(pid_identity.given_names or ("",))[0],
                patient_birth_date=pid_identity.birth_date or "", body=body_for(group, body, action.value), xdm=xdm,
                cda_codes=tuple(h.code.code for h in headers), ins_qualified=qualified, nil=sender.nil,
                no_reply=req.no_reply, reply_to=req.reply_to, read_receipt=routing.ack_lecture,
                delivery_key=f"{key}|{group.value}", message_id_domain=config.message_id_domain,
            )
            raw = render_leg_message(spec, now)
            legs.append(MailLegPlan(group, sender.mail_from, tuple(rcpts),
                                    message_id(spec.delivery_key, config.message_id_domain), raw))
    dmp: list[DmpRequest] = []
    if routing.dmp_leg:
        dmp_action = {YAction.SUBMIT: DmpAction.SUBMIT, YAction.REPLACE: DmpAction.REPLACE,
                      YAction.DELETE: DmpAction.DELETE}[action]
        for n, (h, d) in enumerate(zip(headers, req.documents, strict=True), start=1):
            dmp.append(DmpRequest(
                action=dmp_action, cda=d.data, ins=ins, ins_oid=ins_oid, author_idnps=idnps, author_family=family,
                author_given=given, structure_id=structure_id, structure_name=structure_name,
                restrictions=routing.restrictions, document_unique_id=h.document_id,
                replaced_unique_id=h.replaced_document_id if action is YAction.REPLACE else (
                    h.document_id if action is YAction.DELETE else None),
                correlation_id=f"{key}|dmp|{n}",
            ))
    problems = tuple(Problem(ErrorCode.ACCEPTED, w, severity=Severity.WARNING) for w in warnings) if config.ack_warnings else ()
    ack = build_ack(ctx, AckCode.ACCEPT, problems, control_id=ack_control_id or _ack_id(key, now), now=now)
    return YPlan(request=req, routing=routing, headers=headers, action=action, delivery_key=key, ins_qualified=qualified,
                 dmp=tuple(dmp), mail_legs=tuple(legs), xdm=xdm, ack_context=ctx, ack=ack, warnings=tuple(warnings))


def decide(
    data: bytes,
    config: IntakeConfig,
    now: datetime,
    *,
    trust: TrustCheck,
    directory: DirectoryLookup,
    our_application: str = "PFI",
    our_facility: str = "",
    ack_control_id: str | None = None,
    correlation_id: str = "",
) -> Decision:
    """Validate one HL7 message and plan its legs, or explain the refusal. Never raises."""
    try:
        return _plan(data, config, now, trust, directory, ack_control_id)
    except (Hl7Error, CdaError, InsError) as exc:
        problem, code = exc.problem, (AckCode.REJECT if exc.reject else AckCode.ERROR)
    except MailError as exc:
        problem, code = Problem(ErrorCode.APPLICATION_ERROR, str(exc)), AckCode.ERROR
    except Exception:  # noqa: BLE001 - a bug must still produce an answer, never a stack trace to the peer
        problem = Problem(ErrorCode.APPLICATION_ERROR, f"internal error, retry later (ref {correlation_id or 'n/a'})")
        code = AckCode.REJECT
    try:
        ctx = AckContext.from_message(parse_message(data, config.limits))
    except Hl7Error:
        ctx = AckContext.salvage(data, our_application=our_application, our_facility=our_facility)
    ack = build_ack(ctx, code, (problem,), control_id=ack_control_id or _ack_id(ctx.control_id, now), now=now)
    return YRefusal(code=code, problems=(problem,), control_id=ctx.control_id or None, ack=ack)
