"""`mssante demo`: one complete Y delivery on loopback, printed step by step; exit 0 on success.

What it does (issue 7, "mssante demo"), in a temporary folder:
1. a dev trust space with two operators, `test-ci-sis.mssante.fr` (ours: the PFI and the
   prescriber's operator) and `patient.mssante.fr` (the patients' operator), each with its own
   store, SERV certificate, MTA, submission, IMAP and relay, both named in one liste blanche;
2. the reference DMP (mssante/dmp/reference.py) over mutual TLS, fed with the lab structure's ORG
   certificate and a signed VIHF (mssante/dmp/connector.py);
3. a simulated LIS, `SIL-Y|labo`, authorised in config.mllp.senders with its APP mailbox
   `labo@test-ci-sis.mssante.fr` and client certificate, which sends the ANS example
   ORU_CR_Bio_INIT_N3_SEGUR *unchanged* over MLLP/TLS and listens for business acknowledgements;
4. it shows the ACK, the message in the prescriber's IMAP mailbox (adam.hoda@test-ci-sis.mssante.fr)
   and in the patient's (<INS>@patient.mssante.fr, on the other operator, reached through the relay),
   the DMP leg, the prescriber's read receipt (an MDN sent through submission, as a mail client
   would), and the ZAM^Z01/Z02/Z03 acknowledgements received by the LIS.

The ANS examples are read from ../shared/data/real (relative to the repository root), or --data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import imaplib
import json
import random
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESCRIBER_LOCAL = "adam.hoda"
OUR_DOMAIN = "test-ci-sis.mssante.fr"
PATIENT_DOMAIN = "patient.mssante.fr"
EXAMPLE = ("Vague_2__Trans_Doc-CDA-HL7V2__TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1__ORU__Transmission_initiale_ORU__"
           "message_ORU_CR_Bio_INIT_N3_SEGUR.hl7")
LAB_STRUCTURE = "1120459876"  # PRT SB structure (PRT-8.10) of the example
BASE_PORTS = (2525, 2587, 2465, 2143, 2993, 2575, 8080)


class DemoError(Exception):
    """A failure to report as one line (exit status 1)."""


def default_real_data() -> Path:
    return (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real").resolve()


def find_example(real: Path | None) -> Path:
    base = (real or default_real_data()).resolve()
    path = base / "hl7v2" / EXAMPLE
    if not path.is_file():
        raise DemoError(f"the ANS example is missing: {path} (put the ANS data in ../shared/data/real "
                        "next to the repository, or pass --data DIR)")
    return path


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_offset(avoid: set[int]) -> int:
    for _ in range(300):
        offset = random.randrange(10000, 50000, 10)
        if offset not in avoid and all(_free(p + offset) for p in BASE_PORTS):
            return offset
    raise DemoError("no free block of loopback ports")


@dataclass
class Operator:
    domain: str
    data_dir: Path
    accounts: dict[str, Any]
    gateway: Any = None
    started: list[Any] = field(default_factory=list)  # what the demo started itself (wiring did not)

    @property
    def services(self) -> Any:
        return self.gateway.services

    def mailbox(self, local: str) -> dict[str, Any]:
        for m in self.accounts["mailboxes"]:
            if m["address"] == f"{local}@{self.domain}":
                return dict(m)
        raise DemoError(f"no mailbox {local}@{self.domain} in {self.data_dir}/dev/accounts.json")

    def port(self, listener: str) -> int:
        return int(self.accounts["listeners"][listener].rsplit(":", 1)[1])

    async def stop(self) -> None:
        for item in reversed(self.started):
            with contextlib.suppress(Exception):
                await item.stop()
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.stop()


class Printer:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out

    def step(self, text: str) -> None:
        self.out(f"\n==> {text}")

    def info(self, text: str) -> None:
        self.out(f"    {text}")


async def _ensure_tables(config: Any) -> None:
    """Tables not yet in the Alembic migrations (slices land before the lead regenerates them)."""
    from mssante.store.base import Base
    from mssante.store.db import make_engine
    from mssante.store.schema import all_metadata

    all_metadata()
    engine = make_engine(config.db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()


async def _add_mailbox(config: Any, address: str, kind: str, display: str, idnps: str | None,
                       structure_id: str | None = None) -> str:
    from mssante.auth.passwords import generate_password, hash_password
    from mssante.store.db import make_engine, make_sessions
    from mssante.store.mail import create_mailbox, mailbox_by_address

    password = generate_password()
    engine = make_engine(config.db_url)
    try:
        async with make_sessions(engine)() as s, s.begin():
            if await mailbox_by_address(s, address) is None:
                await create_mailbox(s, address, kind, display_name=display, owner_idnps=idnps,
                                     structure_id=structure_id, password_hash=hash_password(password))
    finally:
        await engine.dispose()
    return password


async def _start_operator(op: Operator, config: Any, *, dmp: Any = None) -> None:
    """Start the gateway as `serve` does, then whatever mssante/wiring.py does not start yet."""
    from mssante.runtime import Gateway

    op.gateway = Gateway(config)
    await op.gateway.start()
    services = op.services
    kinds = {type(v).__name__: v for v in op.gateway.listeners.values()}
    addresses: set[str] = set()
    for v in op.gateway.listeners.values():
        addresses |= set(getattr(v, "addresses", {}) or {})
    if services.validator is None:
        from pki.validation import Validator

        t = config.tls
        services.validator = Validator.from_files(t.anchors, t.intermediates or None, t.crls)
    if services.trust is None:
        from mssante.trust.service import start as start_trust

        op.started.append(await start_trust(services))
    from mssante.config import parse_hostport

    if "mta" not in addresses:
        from mssante.smtp.server import start_mta

        op.started.append(await start_mta(services))
    if "submission" not in addresses:
        from mssante.smtp.server import start_submission

        op.started.append(await start_submission(services, submissions=""))
    if "RelayWorker" not in kinds:
        from mssante.smtp.relay import start_relay_worker

        op.started.append(await start_relay_worker(services, poll_interval=0.5))
    if "ImapListener" not in kinds:
        from mssante.imap.server import start_imap
        from mssante.smtp.server import server_tls_context

        host, port = parse_hostport(config.listeners.imap, "listeners.imap")
        op.started.append(await start_imap(services, host=host, port=port, implicit_tls=False,
                                           ssl_context=server_tls_context(services)))
    if "YRuntime" not in kinds and config.mllp.senders:
        from mssante.y.service import start_y

        op.started.append(await start_y(services, dmp=dmp, poll_interval=0.2))


def _imap_fetch(port: int, user: str, password: str, anchors: str) -> list[dict[str, str]]:
    """What a mail client sees: STARTTLS, LOGIN, SELECT INBOX, FETCH headers (BODY.PEEK: stays unread)."""
    ctx = ssl.create_default_context(cafile=anchors)
    ctx.check_hostname = False  # loopback: the certificate names mx.<domain>; the chain is still verified
    with imaplib.IMAP4("127.0.0.1", port, timeout=20) as imap:
        imap.starttls(ssl_context=ctx)
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", "ALL")
        out: list[dict[str, str]] = []
        for uid in (data[0] or b"").split():
            _, parts = imap.uid("FETCH", uid.decode(), "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT MESSAGE-ID X-MSS-CODECDA "
                                              "X-MSS-INS X-MSS-MES DISPOSITION-NOTIFICATION-TO)] BODYSTRUCTURE)")
            head = b"".join(p[1] for p in parts if isinstance(p, tuple))
            import email

            msg = email.message_from_bytes(head)
            meta = " ".join(p.decode(errors="replace") for p in parts if isinstance(p, bytes))
            fields = {k.lower(): str(email.header.make_header(email.header.decode_header(v))) for k, v in msg.items()}
            fields["uid"] = uid.decode()
            fields["attachment"] = "IHE_XDM.ZIP" if "IHE_XDM.ZIP" in meta.upper() or b"IHE_XDM" in head else ""
            out.append(fields)
        return out


def _mdn(reader: str, lab: str, original_message_id: str, subject: str, now: dt.datetime) -> bytes:
    """An RFC 8098 MDN as the prescriber's mail client sends it (SPECS.md §3 read receipts)."""
    from email.utils import format_datetime, make_msgid

    return (
        f"From: <{reader}>\r\nTo: <{lab}>\r\nSubject: Accuse de lecture: {subject[:60]}\r\n"
        f"Date: {format_datetime(now)}\r\nMessage-ID: {make_msgid(domain=OUR_DOMAIN)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=\"mdn-b\"\r\n\r\n"
        "--mdn-b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nLe message a ete lu.\r\n"
        "--mdn-b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Reporting-UA: demo; mssante\r\nOriginal-Recipient: rfc822;{reader}\r\nFinal-Recipient: rfc822;{reader}\r\n"
        f"Original-Message-ID: {original_message_id}\r\n"
        "Disposition: automatic-action/MDN-sent-automatically; processed\r\n\r\n--mdn-b--\r\n"
    ).encode()


async def _submit(port: int, user: str, password: str, anchors: str, mail_from: str, to: str | list[str],
                  raw: bytes) -> None:
    import aiosmtplib

    ctx = ssl.create_default_context(cafile=anchors)
    ctx.check_hostname = False
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=20)
    await smtp.connect()
    await smtp.starttls(tls_context=ctx)
    await smtp.login(user, password)
    await smtp.sendmail(mail_from, [to] if isinstance(to, str) else to, raw)
    await smtp.quit()


async def _wait(what: str, check: Callable[[], Any], deadline: float) -> Any:
    loop = asyncio.get_running_loop()
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def run_demo(real: Path | None = None, *, keep: bool = False, timeout: float = 90.0,
                   out: Callable[[str], None] = print) -> int:
    from mssante.config import load_config
    from mssante.devspace import DevAuthority, init_operator

    example = find_example(real)
    hl7 = example.read_bytes()
    p = Printer(out)
    tmp = Path(tempfile.mkdtemp(prefix="mssante-demo-"))
    ours = patient = None
    running_dmp = lis = None
    try:
        p.step(f"Dev trust space in {tmp}: operators {OUR_DOMAIN} and {PATIENT_DOMAIN}")
        off1 = free_offset(set())
        off2 = free_offset({off1})
        r1 = await init_operator(tmp / "ours", OUR_DOMAIN, ports_offset=off1)
        r2 = await init_operator(tmp / "patient", PATIENT_DOMAIN, authority_dir=tmp / "ours", ports_offset=off2)
        ours = Operator(OUR_DOMAIN, r1.data_dir, json.loads(r1.accounts_path.read_text()))
        patient = Operator(PATIENT_DOMAIN, r2.data_dir, json.loads(r2.accounts_path.read_text()))
        cfg1, cfg2 = load_config(r1.config_path), load_config(r2.config_path)
        await _ensure_tables(cfg1)
        await _ensure_tables(cfg2)
        prescriber = f"{PRESCRIBER_LOCAL}@{OUR_DOMAIN}"
        ins = "279035121518989"  # the example's PID-3 INS: the patient address is derived from it
        patient_addr = f"{ins}@{PATIENT_DOMAIN}"
        prescriber_pw = await _add_mailbox(cfg1, prescriber, "PER", "Dr Adam HODA", "801234567897")
        patient_pw = await _add_mailbox(cfg2, patient_addr, "PER", "DOMINIQUE PAT-TROIS", None)
        mail_lab = f"sil-mail@{OUR_DOMAIN}"  # a lab that only speaks MSSanté mail (native email entry)
        mail_lab_pw = await _add_mailbox(cfg1, mail_lab, "APP", "Laboratoire (messagerie seule)", None, LAB_STRUCTURE)
        p.info(f"mailboxes: {prescriber} (prescriber), {patient_addr} (patient), labo@{OUR_DOMAIN} (the lab's APP mailbox)")
        space = DevAuthority(tmp / "ours" / "dev" / "authority").open()
        now = dt.datetime.now(dt.timezone.utc)
        anchors = str(space.anchors_path)

        p.step("Reference DMP (ITI-41 over mutual TLS, VIHF signed by the lab structure's certificate)")
        from mssante.dmp.reference import ReferenceDmp, start_reference_dmp
        from mssante.dmp.registry import ReferenceRegistry
        from mssante.dmp.tlsconf import server_context as dmp_server_context

        dmp_cert = space.issue_server("dmp.test-ci-sis.mssante.fr", domains=["127.0.0.1"], org="DMP de reference",
                                      structure_id="DMP0001", department="Paris (75)", out_dir=tmp / "dmp" / "tls", now=now)
        structure = space.issue_org("SIL-Y labo", org="Laboratoire SIL-Y", structure_id=LAB_STRUCTURE,
                                    department="Paris (75)", out_dir=tmp / "dmp" / "lab-structure", now=now)
        reference = ReferenceDmp(ReferenceRegistry(tmp / "dmp" / "store"))
        running_dmp = await start_reference_dmp(
            reference, host="127.0.0.1", port=0,
            ssl_context=dmp_server_context(dmp_cert.chain_path, dmp_cert.key_path, space.anchors_path))
        p.info(f"listening on {running_dmp.base_url}")
        cfg1.dmp.url = f"{running_dmp.base_url}/repository"
        cfg1.dmp.cert, cfg1.dmp.key, cfg1.dmp.anchors = str(structure.chain_path), str(structure.key_path), anchors

        p.step("Simulated LIS SIL-Y|labo: its ACK endpoint for business acknowledgements")
        from mssante.y.mllp import Frame, MllpClient, start_mllp

        zams: list[bytes] = []

        async def on_zam(item: Any, peer: Any) -> bytes:
            if not isinstance(item, Frame):
                return b""
            zams.append(item.payload)
            cid = item.payload.split(b"\r")[0].split(b"|")[9].decode("ascii", "replace")
            return f"MSH|^~\\&|SIL-Y|labo|PFI|{OUR_DOMAIN}|{now:%Y%m%d%H%M}||ACK^Z01^ACK|L{cid}|P|2.6\rMSA|AA|{cid}\r".encode()

        lab = ours.mailbox("labo")
        lis = await start_mllp(_LisServices(), host="127.0.0.1", port=0, handler=on_zam)  # type: ignore[arg-type]
        p.info(f"LIS listening on 127.0.0.1:{lis.port}")
        cfg1.mllp.tls = True
        cfg1.mllp.senders = [{
            "application": "SIL-Y", "facility": "labo", "mailbox": lab["address"], "certificate": lab["cert_dn"],
            "structures": [LAB_STRUCTURE], "ack_endpoint": f"127.0.0.1:{lis.port}", "display_name": "Laboratoire SIL-Y",
            "nil": "SIL-Y-DEMO",
        }]
        cfg1.relay.static_routes = {PATIENT_DOMAIN: cfg2.listeners.mta}
        cfg2.relay.static_routes = {OUR_DOMAIN: cfg1.listeners.mta}

        p.step("Starting both gateways (MTA, submission, IMAP, relay; MLLP/TLS intake and Y worker on ours)")
        await _start_operator(patient, cfg2)
        await _start_operator(ours, cfg1)
        p.info(f"{OUR_DOMAIN}: MLLP {cfg1.listeners.mllp} (TLS, client certificate required), "
               f"MTA {cfg1.listeners.mta}, IMAP {cfg1.listeners.imap}")
        p.info(f"{PATIENT_DOMAIN}: MTA {cfg2.listeners.mta}, IMAP {cfg2.listeners.imap}")

        p.step(f"LIS sends {example.name} unchanged ({len(hl7)} bytes) over MLLP/TLS with its certificate")
        from pki.tls import client_context

        tls = client_context(ca_path=anchors, cert_path=lab["cert"], key_path=lab["key"])
        mllp_port = int(cfg1.listeners.mllp.rsplit(":", 1)[1])
        client = await MllpClient.connect("127.0.0.1", mllp_port, ssl_context=tls, server_hostname=f"mx.{OUR_DOMAIN}")
        try:
            ack = await client.send(hl7)
        finally:
            await client.close()
        for seg in ack.decode("utf-8", "replace").split("\r"):
            if seg:
                p.info(seg)
        if b"MSA|AA|" not in ack:
            raise DemoError("the intake did not answer AA")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        services = ours.services
        from mssante.y.tracking import delivery_view

        async def view() -> dict[str, Any]:
            async with services.sessions() as s:
                v = await delivery_view(s, 1)
            assert v is not None
            return v

        p.step(f"Prescriber's IMAP mailbox ({prescriber}, on {OUR_DOMAIN})")

        async def prescriber_mail() -> list[dict[str, str]]:
            return await asyncio.to_thread(_imap_fetch, ours.port("imap"), prescriber, prescriber_pw, anchors)

        mails = await _wait("the prescriber's message", prescriber_mail, deadline)
        _show_mail(p, mails[0])

        p.step(f"Patient's IMAP mailbox ({patient_addr}, on {PATIENT_DOMAIN}, reached through the relay)")

        async def patient_mail() -> list[dict[str, str]]:
            return await asyncio.to_thread(_imap_fetch, patient.port("imap"), patient_addr, patient_pw, anchors)

        pmails = await _wait("the patient's message", patient_mail, deadline)
        _show_mail(p, pmails[0])

        p.step("DMP leg")

        async def dmp_done() -> dict[str, Any] | None:
            v = await view()
            legs = [leg for leg in v["leg_details"] if leg["kind"] == "dmp"]
            return legs[0] if legs and legs[0]["state"] in ("dmp-accepted", "dmp-rejected") else None

        dmp_leg = await _wait("the DMP leg", dmp_done, deadline)
        p.info(f"state {dmp_leg['state']}; {json.dumps(dmp_leg['detail'] or {}, ensure_ascii=False)}"
               + (f"; {dmp_leg['last_error']}" if dmp_leg["last_error"] else ""))
        p.info(f"reference DMP: {reference.requests} request(s), last outcome {reference.last_outcome}")

        p.step(f"Delivery status notification from {PATIENT_DOMAIN} (NOTIFY=SUCCESS, back to the lab's APP mailbox)")

        async def patient_delivered() -> dict[str, Any] | None:
            v = await view()
            legs = [leg for leg in v["leg_details"] if leg["group"] == "patient"]
            return legs[0] if legs and legs[0]["state"] == "delivered" else None

        try:
            pleg = await _wait("the patient operator's DSN", patient_delivered,
                               min(deadline, loop.time() + 15))
            p.info(f"patient leg {pleg['state']}: {json.dumps(pleg['detail'] or {}, ensure_ascii=False)}")
        except DemoError:
            p.info("no DSN yet: the patient leg stays 'sent' (accepted by the patient operator's MTA)")

        p.step("The prescriber reads the message: its mail client sends the read receipt (MDN) through submission")
        raw_mdn = _mdn(prescriber, lab["address"], mails[0]["message-id"], mails[0].get("subject", ""), now)
        await _submit(ours.port("submission"), prescriber, prescriber_pw, anchors, prescriber, lab["address"], raw_mdn)
        p.info(f"MDN for {mails[0]['message-id']} submitted by {prescriber} to {lab['address']}")

        p.step("Business acknowledgements received by the LIS (ZAM)")

        async def all_acks() -> bool:
            events = {_zam_key(z) for z in zams}
            return {("Z01", "Y"), ("Z02", prescriber), ("Z02", patient_addr), ("Z03", prescriber)} <= events

        await _wait("ZAM^Z01/Z02/Z03", all_acks, deadline)
        for z in zams:
            for seg in z.decode("utf-8", "replace").split("\r"):
                if seg.startswith(("MSH", "OBX", "ERR")):
                    p.info(seg)
            p.info("")

        p.step("mssante y status 1")
        v = await view()
        from mssante.y.cli import _print_legs

        _print_legs_to(p, v, _print_legs)

        p.step(f"Native email entry: {mail_lab} (an APP mailbox, no HL7) submits an IHE_XDM.ZIP to "
               f"dmp@{OUR_DOMAIN} and to the prescriber")
        native = _native_mail(services, hl7, now, mail_lab, [f"dmp@{OUR_DOMAIN}", prescriber])
        await _submit(ours.port("submission"), mail_lab, mail_lab_pw, anchors, mail_lab,
                      [f"dmp@{OUR_DOMAIN}", prescriber], native)

        async def native_view() -> dict[str, Any] | None:
            async with services.sessions() as s:
                v2 = await delivery_view(s, 2)
            if v2 is None:
                return None
            dmp2 = [leg for leg in v2["leg_details"] if leg["kind"] == "dmp"]
            return v2 if dmp2 and dmp2[0]["state"] in ("dmp-accepted", "dmp-rejected") else None

        v2 = await _wait("the native email entry's DMP leg", native_view, deadline)
        _print_legs_to(p, v2, _print_legs)
        p.step("Demo complete: ACK AA, prescriber and patient mailboxes, DMP, DSN, read receipt, ZAM acks, "
               "native email entry")
        return 0
    finally:
        for op in (ours, patient):
            if op is not None:
                await op.stop()
        if lis is not None:
            await lis.stop()
        if running_dmp is not None:
            await running_dmp.stop()
        if keep:
            out(f"\n(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


class _LisServices:
    """The few settings start_mllp reads, for the simulated LIS's own listener."""

    def __init__(self) -> None:
        from mssante.config import Config

        self.config = Config()
        self.validator = None
        self.now = lambda: dt.datetime.now(dt.timezone.utc)


def _native_mail(services: Any, hl7: bytes, now: dt.datetime, sender: str, to: list[str]) -> bytes:
    """An ordinary MSSanté document message (XDM/1.0/DDM subject, X-MSS-* headers, IHE_XDM.ZIP), as a
    lab's mail software would write it: here built by the same core from the example's CDA."""
    import email
    import email.policy
    from email.utils import make_msgid

    from mssante.y.service import YIntake

    plan = YIntake.for_services(services)._decide(hl7, {}, now)
    if not hasattr(plan, "mails"):
        raise DemoError("the example could not be turned into a mail")
    msg = email.message_from_bytes(plan.mails[0], policy=email.policy.SMTP)
    for h in ("From", "To", "Message-ID", "Disposition-Notification-To", "Reply-To"):
        del msg[h]
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = make_msgid(domain=OUR_DOMAIN)
    return msg.as_bytes()


def _zam_key(z: bytes) -> tuple[str, str]:
    lines = z.decode("utf-8", "replace").split("\r")
    event = lines[0].split("|")[8].split("^")[1]
    if event == "Z01":
        obx = [ln for ln in lines if ln.startswith("OBX|1|")][0].split("|")
        return event, obx[5].split("^")[0]
    obx2 = [ln for ln in lines if ln.startswith("OBX|2|")]
    return event, obx2[0].split("|")[5].split("^")[-1] if obx2 else ""


def _show_mail(p: Printer, m: dict[str, str]) -> None:
    for k in ("from", "subject", "message-id", "x-mss-codecda", "x-mss-ins", "x-mss-mes", "disposition-notification-to"):
        if m.get(k):
            p.info(f"{k}: {m[k]}")
    if m.get("attachment"):
        p.info(f"attachment: {m['attachment']}")


def _print_legs_to(p: Printer, view: dict[str, Any], printer: Callable[[dict[str, Any]], None]) -> None:
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        printer(view)
    for line in buf.getvalue().splitlines():
        p.info(line)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_demo(args.data, keep=args.keep, timeout=args.timeout))
    except DemoError as e:
        print(f"mssante demo: {e}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="a complete Y delivery on loopback (two operators, DMP, LIS); exit 0 on success")
    p.add_argument("--data", type=Path, default=None, help="the ANS data folder (default: ../shared/data/real)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (data dirs, stores, certificates)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for every leg (default 90)")
    p.set_defaults(func=_run)
