"""The Y intake service: HL7 bytes in, durable Y delivery, then the ACK.

    intake = YIntake.for_services(services)
    result = await intake.handle(payload, peer)      # -> IntakeResult(ack=..., delivery_id=..., ...)

Order of operations (issue 7, "AA only after the request is durably stored as a Y delivery"):
1. the sending system is looked up in config.mllp.senders (application, facility) and, when its
   rule names a certificate, checked against the validated TLS client certificate;
2. `mssante.y.intake.decide` (pure, in a thread or a process) validates everything, plans every leg
   and renders the leg messages, or refuses with AE/AR + ERR: a refusal stores nothing, so nothing
   is ever half-sent;
3. a message control id already stored for that sender is answered with the stored ACK, nothing
   else happens (duplicate: HL7 v2.5 §2.10.1, MSH-10 is unique per sending system) — a refusal
   looks for it before answering, an accepted plan finds it in step 4;
4. the delivery, its legs (one per DMP document, one per MSSanté recipient), their payloads and the
   audit event are written in ONE transaction shared by every plan waiting at that moment
   (`store_plans`: a fixed number of statements, one fsync);
5. only after COMMIT is the ACK AA returned to the listener, which writes it to the socket.
A crash before 5 means no AA: the lab resends; the duplicate guard of step 3/4 makes that safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import logging
import multiprocessing
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mssante.smtp.delivery import committer_for
from mssante.store.groupcommit import GroupCommitter
from mssante.store.mail import store_blob
from mssante.y.ack import AckCode, AckContext, build_ack
from mssante.y.hl7 import ErrorCode, Hl7Limits, Location, Problem
from mssante.y.ins import InsEnvironment
from mssante.dmp.api import DmpRequest
from mssante.y.intake import AuthorisedSender, IntakeConfig, YRefusal, decide, lookups_needed
from mssante.y.mllp import Frame, Oversize, PeerInfo
from mssante.y.models import LEG_DMP, LEG_MSS, YDelivery, YLeg
from mssante.y.storage import PendingStore
from mssante.y.tracking import ACCEPTED

if TYPE_CHECKING:
    from mssante.app import Services

log = logging.getLogger("mssante.y.service")

OUR_APPLICATION = "MSSANTE-PFI"


class SenderConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SenderRule:
    """One entry of config.mllp.senders (docs/y-runtime.md lists the keys)."""

    application: str  # MSH-3.1
    facility: str  # MSH-4.1
    mailbox: str  # the lab's APP mailbox: From of the MSSanté legs, receives DSNs and MDNs
    certificate: str = ""  # subject DN, CN or SHA-256 fingerprint of its TLS client certificate; "" = none required
    structures: frozenset[str] = frozenset()  # structure ids (PRT-8.10) it may send for; empty = any
    ack_endpoint: str = ""  # host:port of its MLLP listener for ZAM business acknowledgements
    display_name: str = ""
    nil: str = ""  # X-MSS-NIL

    @property
    def key(self) -> str:
        return f"{self.application}|{self.facility}"

    def as_authorised(self) -> AuthorisedSender:
        return AuthorisedSender(self.application, self.facility, self.mailbox, self.display_name or self.application,
                                self.structures, self.nil)


def parse_senders(entries: Sequence[dict[str, Any]]) -> tuple[SenderRule, ...]:
    rules: list[SenderRule] = []
    known = {"application", "facility", "mailbox", "certificate", "structures", "structure", "ack_endpoint",
             "display_name", "nil"}
    for i, e in enumerate(entries):
        where = f"mllp.senders[{i}]"
        for k in e:
            if k not in known:
                raise SenderConfigError(f"config error: {where}.{k} is not a known key (see docs/y-runtime.md)")
        for k in ("application", "facility", "mailbox"):
            if not isinstance(e.get(k), str) or not e[k]:
                raise SenderConfigError(f"config error: {where}.{k} is required (a string)")
        structures = e.get("structures", [])
        if isinstance(structures, str):
            structures = [structures]
        if e.get("structure"):
            structures = [*structures, str(e["structure"])]
        endpoint = str(e.get("ack_endpoint", ""))
        if endpoint:
            from mssante.config import parse_hostport

            parse_hostport(endpoint, f"{where}.ack_endpoint")
        rules.append(SenderRule(
            application=e["application"], facility=e["facility"], mailbox=e["mailbox"].lower(),
            certificate=str(e.get("certificate", "")), structures=frozenset(str(s) for s in structures),
            ack_endpoint=endpoint, display_name=str(e.get("display_name", "")), nil=str(e.get("nil", "")),
        ))
    return tuple(rules)


def _norm_dn(value: str) -> str:
    return "".join(value.split()).casefold()


def certificate_matches(rule: SenderRule, peer: PeerInfo) -> bool:
    """The rule's certificate identity equals the validated peer certificate (DN, CN or fingerprint)."""
    if not rule.certificate:
        return True
    if not peer.cert_subject or peer.cert_error:
        return False
    want = rule.certificate.strip()
    if want.replace(":", "").lower() == peer.cert_sha256:
        return True
    if _norm_dn(want) == _norm_dn(peer.cert_subject):
        return True
    cns = [part[3:] for part in peer.cert_subject.split(",") if part.strip().upper().startswith("CN=")]
    return any(cn.strip() == want for cn in cns)


def _may_need_lookups(payload: bytes) -> bool:
    """Cheap pre-check: some PRT RCT segment has no X.400 address (then the directory is asked)."""
    for line in payload.replace(b"\n", b"\r").split(b"\r"):
        if line.startswith(b"PRT|") and b"RCT^" in line and b"^X.400^" not in line.upper():
            return True
    return False


def _msh_key(payload: bytes) -> tuple[str, str, str] | None:
    """MSH-3.1, MSH-4.1 and MSH-10 read from the first line only (duplicate pre-check)."""
    first = payload[:2048].replace(b"\n", b"\r").split(b"\r", 1)[0]
    if not first.startswith(b"MSH|"):
        return None
    parts = first.decode("utf-8", "replace").split("|")
    if len(parts) < 10:
        return None
    return parts[2].split("^")[0], parts[3].split("^")[0], parts[9].split("^")[0]


@dataclass(frozen=True)
class IntakeResult:
    ack: bytes
    code: str  # AA | AE | AR
    delivery_id: int | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class MailLegRow:
    group: str  # ps | patient
    recipients: tuple[str, ...]
    message_id: str
    raw: bytes  # the leg message, rendered once (never logged)


@dataclass(frozen=True)
class StoragePlan:
    """What the storage transaction needs from a YPlan: small and picklable, so that the pure decide
    step may run in another process (`YIntake(decide_processes=N)`)."""

    sender_key: str  # MSH-3.1|MSH-4.1
    control_id: str
    message_type: str
    action: str
    patient_ins: str | None
    recipient_ids: dict[str, str]  # address -> PRT person id (ZAM OBX-4)
    ack_reception: bool
    ack_lecture: bool
    ack_context: AckContext
    ack: bytes
    warnings: tuple[str, ...]
    mail_legs: tuple[MailLegRow, ...]
    dmp: tuple[DmpRequest, ...]

    @property
    def mails(self) -> tuple[bytes, ...]:
        return tuple(m.raw for m in self.mail_legs)


def _trust_in(trusted: frozenset[str], domain: str) -> bool:
    from mssante.trust.listeblanche import normalise_domain

    return normalise_domain(domain) in trusted


def plan_for_storage(payload: bytes, lookups: dict[str, list[str]], now: dt.datetime, config: IntakeConfig,
                     trusted: frozenset[str], our_facility: str, ack_control_id: str) -> StoragePlan | YRefusal:
    """The pure decide step and the rendering of the leg messages (CPU only; runs in a thread or a process)."""
    decision = decide(payload, config, now, trust=functools.partial(_trust_in, trusted), directory=lookups.get,
                      our_application=OUR_APPLICATION, our_facility=our_facility, ack_control_id=ack_control_id)
    if isinstance(decision, YRefusal):
        return decision
    req = decision.request
    return StoragePlan(
        sender_key=f"{req.sending_application.namespace}|{req.sending_facility.namespace}",
        control_id=req.control_id, message_type=req.message_type, action=decision.action.value,
        patient_ins=req.patient.identity.ins,
        recipient_ids={p.address.lower(): (p.person.id if p.person is not None else "") for p in req.recipients
                       if p.address},
        ack_reception=decision.routing.ack_reception, ack_lecture=decision.routing.ack_lecture,
        ack_context=decision.ack_context, ack=decision.ack, warnings=decision.warnings,
        mail_legs=tuple(MailLegRow(leg.group.value, leg.recipients, leg.message_id, leg.data)
                        for leg in decision.mail_legs),
        dmp=decision.dmp,
    )


def _ack_control_id() -> str:
    return "A" + uuid.uuid4().hex[:19].upper()


class YIntake:
    def __init__(self, services: Services, *, committer: GroupCommitter | None = None,
                 decide_processes: int | None = None) -> None:
        self.services = services
        cfg = services.config
        self.rules = parse_senders(cfg.mllp.senders)
        self._by_key = {r.key: r for r in self.rules}
        self.intake_config = IntakeConfig(
            senders=tuple(r.as_authorised() for r in self.rules),
            environment=InsEnvironment(cfg.mllp.environment),
            patient_domain=cfg.mllp.patient_domain,
            message_id_domain=cfg.operator.domain,
            limits=Hl7Limits(max_message_bytes=cfg.mllp.max_message_size,
                             max_field_bytes=cfg.mllp.max_message_size),
        )
        # Set by start_y from the connector it built; tests and tools may set extras["y_dmp_enabled"].
        self.dmp_enabled = bool(services.extras.get("y_dmp_enabled", bool(cfg.dmp.url)))
        # The gateway's shared group committer (mssante.smtp.delivery.committer_for), which the Y worker's
        # submissions and SMTP acceptances also go through: one writer per process. On SQLite two writers of
        # one process would meet in SQLite's busy handler, which sleeps 1, 2, 5, 10 ms… between tries.
        self._committer = committer or committer_for(services)
        # The decide step is CPU-bound (HL7, CDA, XDM ZIP, MIME): a process pool spreads it over cores.
        n = decide_processes if decide_processes is not None else int(
            services.extras.get("y_decide_processes", cfg.mllp.decide_processes))
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        if n > 0:
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=n,
                                                                mp_context=multiprocessing.get_context("spawn"))
        self._trusted: tuple[int, frozenset[str]] = (0, frozenset())

    @classmethod
    def for_services(cls, services: Services) -> YIntake:
        intake = services.extras.get("y_intake")
        if not isinstance(intake, YIntake):
            intake = cls(services)
            services.extras["y_intake"] = intake
        return intake

    async def close(self) -> None:
        """Stop the decide processes (the shared committer is closed by its owner: close_committer)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # --- trust and directory for the pure core -----------------------------------------------------
    def trusted_domains(self) -> frozenset[str]:
        """Local domains and liste blanche domains (what TrustPolicy.submission accepts), cached per policy."""
        trust = self.services.trust
        policy = trust.policy if trust is not None else None
        if self._trusted[0] != id(policy) or not self._trusted[1]:
            listed = frozenset(policy.liste.by_domain) if policy is not None else frozenset()
            local = frozenset(policy.local_domains) if policy is not None else frozenset()
            self._trusted = (id(policy), listed | local | self.services.config.all_local_domains)
        return self._trusted[1]

    async def _lookups(self, payload: bytes) -> dict[str, list[str]]:
        directory = self.services.directory
        out: dict[str, list[str]] = {}
        if directory is None or not _may_need_lookups(payload):
            return out  # no full parse on the event loop when every RCT carries its address
        ids = lookups_needed(payload, self.intake_config.limits)
        if not ids:
            return out
        for ident in ids:
            try:
                found = await directory.mailboxes_for(ident)
            except Exception:  # noqa: BLE001 - an unavailable directory = unknown id (refused with an ERR)
                log.warning("directory lookup failed")
                found = []
            out[ident] = [getattr(m, "address", m) for m in (found or [])]
        return out

    # --- the listener entry points -----------------------------------------------------------------
    async def handle_frame(self, item: Frame | Oversize, peer: PeerInfo) -> bytes:
        if isinstance(item, Oversize):
            now = self.services.now()
            ctx = AckContext.salvage(item.head, our_application=OUR_APPLICATION, our_facility=self.services.config.operator.domain)
            problem = Problem(ErrorCode.APPLICATION_ERROR,
                              f"message of {item.size} bytes exceeds the {self.services.config.mllp.max_message_size}-byte limit")
            self.services.metrics.hl7_messages.labels(ack="AE").inc()
            await self._audit_refusal(peer, ctx.control_id, "AE", problem)
            return build_ack(ctx, AckCode.ERROR, (problem,), control_id=_ack_control_id(), now=now)
        return (await self.handle(item.payload, peer)).ack

    async def handle(self, payload: bytes, peer: PeerInfo) -> IntakeResult:
        started = time.perf_counter()
        try:
            result = await self._handle(payload, peer)
        except Exception:  # noqa: BLE001 - the peer gets a generic AR with a correlation id, never a trace
            ref = uuid.uuid4().hex[:12]
            log.exception("y intake failed (ref %s)", ref)
            now = self.services.now()
            ctx = AckContext.salvage(payload, our_application=OUR_APPLICATION, our_facility=self.services.config.operator.domain)
            problem = Problem(ErrorCode.APPLICATION_ERROR, f"temporary failure, resend later (ref {ref})")
            result = IntakeResult(build_ack(ctx, AckCode.REJECT, (problem,), control_id=_ack_control_id(), now=now), "AR")
        self.services.metrics.hl7_messages.labels(ack=result.code).inc()
        self.services.metrics.ack_latency.observe(time.perf_counter() - started)
        return result

    def _refuse(self, ctx: AckContext, problem: Problem, code: AckCode = AckCode.ERROR) -> IntakeResult:
        ack = build_ack(ctx, code, (problem,), control_id=_ack_control_id(), now=self.services.now())
        return IntakeResult(ack, code.value)

    async def _handle(self, payload: bytes, peer: PeerInfo) -> IntakeResult:
        salvage_ctx = None
        key = _msh_key(payload)
        if peer.cert_error:
            salvage_ctx = AckContext.salvage(payload, our_application=OUR_APPLICATION,
                                             our_facility=self.services.config.operator.domain)
            problem = Problem(ErrorCode.APPLICATION_ERROR, "client certificate not accepted", Location("MSH", 1, 3))
            await self._audit_refusal(peer, salvage_ctx.control_id, "AE", problem)
            return self._refuse(salvage_ctx, problem)
        if key is not None:
            rule = self._by_key.get(f"{key[0]}|{key[1]}")
            if rule is not None and not certificate_matches(rule, peer):
                salvage_ctx = AckContext.salvage(payload, our_application=OUR_APPLICATION,
                                                 our_facility=self.services.config.operator.domain)
                problem = Problem(ErrorCode.APPLICATION_ERROR,
                                  "sending system not authorised for this client certificate", Location("MSH", 1, 3))
                await self._audit_refusal(peer, salvage_ctx.control_id, "AE", problem)
                return self._refuse(salvage_ctx, problem)
        lookups = await self._lookups(payload)
        now = self.services.now()
        rendered: StoragePlan | YRefusal | None = None
        if self._pool is not None:
            try:
                rendered = await asyncio.get_running_loop().run_in_executor(
                    self._pool, plan_for_storage, payload, lookups, now, self.intake_config, self.trusted_domains(),
                    self.services.config.operator.domain, _ack_control_id())
            except (RuntimeError, OSError, concurrent.futures.process.BrokenProcessPool):
                # No usable pool (spawn refused, a worker died): decide in a thread from now on.
                log.exception("y intake: the decide process pool failed; deciding in a thread")
                pool, self._pool = self._pool, None
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
        if rendered is None:
            rendered = await asyncio.to_thread(self._decide, payload, lookups, now)
        # A control id already stored for this sender is answered with the stored ACK whatever deciding
        # it again says: an accepted plan finds it in the storage transaction (`store_plans`), a refusal
        # looks for it here (no SELECT per message on the accepted path).
        if isinstance(rendered, YRefusal) or (rendered.dmp and not self.dmp_enabled):
            stored = await self._stored_ack(f"{key[0]}|{key[1]}", key[2]) if key is not None else None
            if stored is not None:
                return IntakeResult(stored[1].encode("utf-8"), "AA", stored[0], duplicate=True)
        if isinstance(rendered, YRefusal):
            problem = rendered.problems[0]
            await self._audit_refusal(peer, rendered.control_id or "", rendered.code.value, problem)
            return IntakeResult(rendered.ack, rendered.code.value)
        plan = rendered
        rule = self._by_key[plan.sender_key]
        if plan.dmp and not self.dmp_enabled:
            # config.dmp: "empty url = no DMP leg (refused at intake)": never AA a leg that cannot go.
            problem = Problem(ErrorCode.APPLICATION_ERROR, "DESTDMP=Y but this PFI has no DMP connection configured",
                              Location("OBX", 1, 5))
            await self._audit_refusal(peer, plan.control_id, "AR", problem)
            return self._refuse(plan.ack_context, problem, AckCode.REJECT)
        delivery_id, ack, duplicate = await self.store(plan, rule, actor=peer.label, source="mllp")
        wake = self.services.extras.get("y_wakeup")
        if isinstance(wake, asyncio.Event) and not duplicate:
            wake.set()
        return IntakeResult(ack, "AA", delivery_id, duplicate)

    def _decide(self, payload: bytes, lookups: dict[str, list[str]], now: dt.datetime) -> StoragePlan | YRefusal:
        return plan_for_storage(payload, lookups, now, self.intake_config, self.trusted_domains(),
                                self.services.config.operator.domain, _ack_control_id())

    async def _stored_ack(self, sender_key: str, control_id: str) -> tuple[int, str] | None:
        async with self.services.sessions() as s:
            row = (await s.execute(select(YDelivery.id, YDelivery.ack).where(
                YDelivery.sender_key == sender_key, YDelivery.control_id == control_id))).first()
        return (int(row[0]), str(row[1])) if row is not None else None

    async def _audit_refusal(self, peer: PeerInfo, control_id: str, code: str, problem: Problem) -> None:
        try:
            await self.services.audit.record(
                "y.refused", peer.label, code, control_id=control_id[:64], error_code=int(problem.code),
                app_code=int(problem.app_code) if problem.app_code is not None else None,
                reason=problem.message[:300],
            )
        except Exception:  # noqa: BLE001 - the NACK is still sent
            log.exception("audit of a refusal failed")

    # --- durable storage ---------------------------------------------------------------------------
    async def store(self, plan: StoragePlan, rule: SenderRule, *, actor: str, source: str) -> tuple[int, bytes, bool]:
        """Write the delivery and all its legs in one transaction; return (id, ack, duplicate) after COMMIT.

        Concurrent intakes (several MLLP connections) are stored together: the group committer hands the
        plans of one batch to `PendingStore.run_many` (`store_plans`: a fixed number of statements, one
        fsync), and retries them one by one if that batch fails. Each caller is answered after COMMIT."""
        job = PendingStore(plan, rule, actor, source, self.services.now(), self.services.audit)
        result: tuple[int, bytes, bool]
        try:
            result = await self._committer.submit(job)
        except IntegrityError:
            # The same control id committed meanwhile by a concurrent batch (PostgreSQL: several committer
            # workers): stored again, it is found and answered as a duplicate with the first ACK.
            result = await self._committer.submit(job)
        return result

    @property
    def store_batches(self) -> int:
        """For benchmarks: the transactions committed by the shared committer (intake plans, worker batches,
        SMTP acceptances)."""
        return self._committer.batches

    @property
    def stored_plans(self) -> int:
        """For benchmarks: the jobs those transactions stored."""
        return self._committer.jobs


# --- runtime glue: what `serve` starts (mssante/wiring.py) ------------------------------------------

def mllp_ssl_context(services: Services) -> Any:
    """TLS for the MLLP listener when config.mllp.tls: our SERV certificate, client certificates required
    and chained to the trust-space anchors (then validated by pki, revocation included, per connection)."""
    cfg = services.config
    if not cfg.mllp.tls:
        return None
    from pki.tls import server_context

    if not cfg.tls.cert or not cfg.tls.key or not cfg.tls.anchors:
        raise SenderConfigError("config error: mllp.tls = true needs tls.cert, tls.key and tls.anchors")
    ctx = server_context(cfg.tls.cert, cfg.tls.key, client_ca_path=cfg.tls.anchors, require_client_cert=True)
    if cfg.tls.intermediates:
        ctx.load_verify_locations(cafile=cfg.tls.intermediates)
    return ctx


def dmp_connector_from_config(services: Services) -> Any:
    """The ITI-41 connector (mssante/dmp/connector.py) from config.dmp, or None when no DMP is configured."""
    d = services.config.dmp
    if not d.url:
        return None
    from pathlib import Path

    from mssante.dmp.connector import Iti41Connector, config_from_settings

    if not d.cert or not d.key or not d.anchors:
        raise SenderConfigError("config error: dmp.url needs dmp.cert, dmp.key and dmp.anchors")
    conf = config_from_settings(d.url, Path(d.cert), Path(d.key), Path(d.anchors), source_id=d.source_id,
                                concurrency=d.concurrency, timeout=d.timeout)
    return Iti41Connector(conf, audit=services.audit.record, now=services.now)


@dataclass
class YRuntime:
    """The MLLP listener + the Y worker (+ the DMP connector they own): one Stoppable for `serve`."""

    services: Services
    mllp: Any = None  # mssante.y.mllp.MllpServer
    worker: Any = None  # mssante.y.worker.YWorker
    dmp: Any = None

    @property
    def port(self) -> int | None:
        return self.mllp.port if self.mllp is not None else None

    async def stop(self) -> None:
        if self.mllp is not None:
            await self.mllp.stop()
        if self.worker is not None:
            await self.worker.stop()
        intake = self.services.extras.get("y_intake")
        if isinstance(intake, YIntake):
            await intake.close()
        if self.dmp is not None and hasattr(self.dmp, "close"):
            await self.dmp.close()


async def start_y(services: Services, *, dmp: Any = None, address: str | None = None,
                  poll_interval: float = 1.0, decide_processes: int | None = None) -> YRuntime:
    """Start the Y intake on config.listeners.mllp (TLS when config.mllp.tls) and the Y worker.

    `dmp` overrides the connector built from config.dmp (a DmpConnector); no DMP configured = DMP legs
    wait (never lost) and a warning is logged.
    """
    from mssante.config import parse_hostport
    from mssante.y.mllp import start_mllp
    from mssante.y.worker import start_y_worker

    connector = dmp if dmp is not None else dmp_connector_from_config(services)
    if connector is None:
        log.warning("no DMP configured (dmp.url): DMP legs will wait in state 'accepted'")
    runtime = YRuntime(services, dmp=connector if dmp is None else None)
    services.extras["y_dmp_enabled"] = connector is not None
    if decide_processes is not None:
        services.extras["y_decide_processes"] = decide_processes
    addr = address if address is not None else services.config.listeners.mllp
    if addr:
        host, _, port_text = addr.rpartition(":")
        port = 0 if port_text == "0" else parse_hostport(addr, "listeners.mllp")[1]
        runtime.mllp = await start_mllp(services, host=host.strip("[]"), port=port, ssl_context=mllp_ssl_context(services))
    await ensure_routing_mailbox(services)
    runtime.worker = await start_y_worker(services, dmp=connector, poll_interval=poll_interval)
    return runtime


async def ensure_routing_mailbox(services: Services) -> None:
    """dmp@<our domain> must exist for submission to accept mail to it (native email entry)."""
    from mssante.store.mail import create_mailbox, mailbox_by_address

    address = routing_address(services)
    async with services.sessions() as s, s.begin():
        if await mailbox_by_address(s, address) is None:
            await create_mailbox(s, address, "APP", display_name="Alimentation DMP (plateforme Y)")


# --- native email entry (docs/y-runtime.md "Native email entry") ----------------------------------

DMP_ROUTING_LOCAL = "dmp"  # dmp@<operator domain>: the routing address that asks for the DMP leg
DMP_RESTRICTIONS_HEADER = "X-MSS-DMP-Restrictions"  # optional: MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX


class MailEntryRefused(ValueError):
    """A native-entry message that cannot become a Y delivery (the reason goes back to the sender)."""


@dataclass(frozen=True)
class MailEntryPlan:
    sender: str  # the authenticated APP mailbox (From, enforced by submission)
    message_id: str
    dmp: tuple[Any, ...]  # DmpRequest per CDA of the IHE_XDM.ZIP
    other_recipients: tuple[str, ...]  # the mail's other recipients (already delivered or queued by submission)
    ins: str


def routing_address(services: Services) -> str:
    return f"{DMP_ROUTING_LOCAL}@{services.config.operator.domain}"


def plan_mail_entry(raw: bytes, *, our_hostname: str, routing: str, environment: InsEnvironment,
                    app_mailboxes: dict[str, str | None]) -> MailEntryPlan:
    """Pure: validate a message found in the routing mailbox and plan its DMP legs.

    Accepted only when our own topmost Received trace says it came through authenticated submission
    (RFC 3848 "ESMTPSA"/"ESMTPA"), From is one of our APP mailboxes (`app_mailboxes`: address ->
    structure id; submission already refused a From that is not the authenticated identity's), it
    carries X-MSS-INS: O and exactly one IHE_XDM.ZIP whose documents name the XDM patientId.
    """
    import email
    import email.policy
    import email.utils

    from mssante.dmp.api import DmpAction, DmpRequest
    from mssante.y.cda import parse_cda_header
    from mssante.y.flags import CONFIDENTIALITY_FOR_FLAG
    from mssante.y.ins import check_ins_format
    from mssante.y.xdm import XdmError, parse_xdm

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    received = str(msg.get("Received", ""))
    by = re.search(r"\bby\s+(\S+)", received)
    proto = re.search(r"\bwith\s+(\S+)", received)
    if not by or by.group(1).lower() != our_hostname.lower() or not proto or proto.group(1).upper() not in ("ESMTPSA", "ESMTPA"):
        raise MailEntryRefused("only messages submitted by an authenticated APP mailbox of this operator are accepted")
    senders = [a.lower() for _, a in email.utils.getaddresses([str(v) for v in msg.get_all("From", [])]) if a]
    if len(senders) != 1 or senders[0] not in app_mailboxes:
        raise MailEntryRefused("the sender is not an APP mailbox of this operator")
    sender = senders[0]
    mid = str(msg.get("Message-ID", "")).strip()
    if not mid:
        raise MailEntryRefused("the message has no Message-ID")
    if str(msg.get("X-MSS-INS", "")).strip().upper() != "O":
        raise MailEntryRefused("the DMP is only fed with a qualified INS (X-MSS-INS: O)")
    zips = [p for p in msg.walk() if (p.get_filename() or "").upper() == "IHE_XDM.ZIP"]
    if len(zips) != 1:
        raise MailEntryRefused("exactly one IHE_XDM.ZIP attachment is expected (one patient per message)")
    payload = zips[0].get_payload(decode=True)
    try:
        package = parse_xdm(payload if isinstance(payload, bytes) else b"")
    except XdmError as e:
        raise MailEntryRefused(f"IHE_XDM.ZIP refused: {e}") from None
    restrictions = frozenset(r.strip().upper() for r in str(msg.get(DMP_RESTRICTIONS_HEADER, "")).split(",") if r.strip())
    unknown = restrictions - set(CONFIDENTIALITY_FOR_FLAG)
    if unknown:
        raise MailEntryRefused(f"{DMP_RESTRICTIONS_HEADER}: unknown value(s) {', '.join(sorted(unknown))}")
    requests: list[DmpRequest] = []
    ins = ""
    for n, doc in enumerate(package.documents, start=1):
        if not doc.mime_type.lower().endswith("xml"):
            continue
        try:
            header = parse_cda_header(doc.data)
        except Exception as e:  # noqa: BLE001 - a typed CdaError; its message names the problem, not content
            raise MailEntryRefused(f"document {n}: {e}") from None
        found = header.patient_ins(environment.oids)
        if found is None:
            raise MailEntryRefused(f"document {n}: no INS of the {environment.value} environment in the CDA")
        try:
            doc_ins = check_ins_format(found[0], found[1], environment, Location("OBX"))
        except Exception as e:  # noqa: BLE001 - InsError
            raise MailEntryRefused(f"document {n}: {e}") from None
        if not package.patient_id.startswith(doc_ins + "^"):
            raise MailEntryRefused(f"document {n}: the CDA names another patient than the XDM patientId")
        author, org = header.author, header.author_organization
        if author is None or not author.id or org is None or not org.id:
            raise MailEntryRefused(f"document {n}: the CDA author and its organisation are required for the DMP")
        allowed = app_mailboxes.get(sender)
        if allowed and org.id != allowed:
            raise MailEntryRefused(f"document {n}: the author's structure is not the sending APP mailbox's structure")
        ins = doc_ins
        action = DmpAction.REPLACE if header.replaced_document_id else DmpAction.SUBMIT
        requests.append(DmpRequest(
            action=action, cda=doc.data, ins=doc_ins, ins_oid=found[1], author_idnps=author.id,
            author_family=author.family, author_given=author.given, structure_id=org.id, structure_name=org.name,
            restrictions=restrictions, document_unique_id=header.document_id,
            replaced_unique_id=header.replaced_document_id, correlation_id=f"mail|{mid}|dmp|{n}",
        ))
    if not requests:
        raise MailEntryRefused("IHE_XDM.ZIP carries no CDA document")
    rcpts = [a.lower() for _, a in email.utils.getaddresses([str(v) for h in ("To", "Cc") for v in msg.get_all(h, [])]) if a]
    others = tuple(dict.fromkeys(a for a in rcpts if a != routing.lower()))
    return MailEntryPlan(sender, mid, tuple(requests), others, ins)


async def store_mail_entry(session: AsyncSession, plan: MailEntryPlan, *, now: dt.datetime, audit: Any,
                           local_domains: frozenset[str]) -> tuple[int, bool]:
    """One transaction: the Y delivery (source mail), its DMP legs, and legs tracking the mail's other
    recipients (submission already delivered or queued them: `delivered` / `queued`). Idempotent."""
    key = f"mail|{plan.sender}"
    existing = await session.scalar(select(YDelivery.id).where(YDelivery.sender_key == key,
                                                               YDelivery.control_id == plan.message_id[:200]))
    if existing is not None:
        return int(existing), True
    delivery = YDelivery(sender_key=key, control_id=plan.message_id[:200], message_type="MAIL^XDM",
                         action=plan.dmp[0].action.value, patient_ins=plan.ins, sender_mailbox=plan.sender,
                         source="mail", actor=plan.sender, ack_reception=False, ack_lecture=False, ack_endpoint="",
                         ack_context=None, ack="", warnings=[], received_at=now)
    session.add(delivery)
    await session.flush()
    for req in plan.dmp:
        blob_id = await store_blob(session, req.cda)
        fields = {f.name: getattr(req, f.name) for f in dataclasses.fields(req) if f.name != "cda"}
        fields["action"] = req.action.value
        fields["restrictions"] = sorted(req.restrictions)
        session.add(YLeg(delivery_id=delivery.id, kind=LEG_DMP, group="", recipient=req.ins, recipient_id=req.ins,
                         blob_id=blob_id, state=ACCEPTED, state_at=now, attempts=0, next_attempt_at=now,
                         detail={"request": fields}))
    from mssante.y.tracking import DELIVERED, QUEUED

    for rcpt in plan.other_recipients:
        local = rcpt.rpartition("@")[2] in local_domains
        session.add(YLeg(delivery_id=delivery.id, kind=LEG_MSS, group="ps", recipient=rcpt, message_id=plan.message_id,
                         state=DELIVERED if local else QUEUED, state_at=now, attempts=1))
    session.add(audit.event("y.accepted", plan.sender, "ok", delivery_id=delivery.id, sender=key,
                            control_id=plan.message_id[:64], message_type="MAIL^XDM", source="mail", ins=plan.ins,
                            legs=len(plan.dmp) + len(plan.other_recipients)))
    await session.flush()
    return int(delivery.id), False
