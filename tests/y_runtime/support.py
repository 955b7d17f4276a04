"""Shared helpers for the Y runtime tests: a Services on a fresh database, the ANS example, a ZAM sink."""

from __future__ import annotations

import asyncio
import datetime as dt  # noqa: F401 (re-exported)
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mssante.app import Services, utcnow
from mssante.config import config_from_dict
from mssante.dmp.api import DmpAccepted, DmpOutcome, DmpRejected, DmpRequest, DmpTemporaryFailure  # noqa: F401 (re-exported)
from mssante.observability.audit import Audit
from mssante.observability.metrics import Metrics
from mssante.store.base import Base
from mssante.store.db import make_engine, make_sessions
from mssante.store.mail import create_mailbox
from mssante.trust.listeblanche import build_liste_blanche_xml, parse_liste_blanche
from mssante.trust.state import TrustState
from mssante.y.mllp import Frame, MllpServer, Oversize, PeerInfo, start_mllp

DOMAIN = "test-ci-sis.mssante.fr"
PATIENT_DOMAIN = "patient.mssante.fr"
LAB_MAILBOX = f"labo@{DOMAIN}"
PRESCRIBER = f"adam.hoda@{DOMAIN}"
PATIENT = f"279035121518989@{PATIENT_DOMAIN}"
REPO = Path(__file__).resolve().parents[2]
REAL = (REPO.parent / "shared" / "data" / "real" / "hl7v2").resolve()
SEGUR = "Vague_2__Trans_Doc-CDA-HL7V2__TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1__ORU__Transmission_initiale_ORU__message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"


def segur_bytes() -> bytes:
    import pytest

    path = REAL / SEGUR
    if not path.is_file():
        pytest.skip(f"ANS example {path} is absent (../shared/data/real)")
    return path.read_bytes()


def with_control_id(data: bytes, control_id: str) -> bytes:
    """The same message with another MSH-10 (a new message from the LIS's point of view)."""
    end = data.index(b"\n") if b"\n" in data[:2048] else data.index(b"\r")
    first = data[:end].split(b"|")
    first[9] = control_id.encode()
    return b"|".join(first) + data[end:]


def replace_line(data: bytes, prefix: bytes, new: bytes | None) -> bytes:
    """Replace (or drop, new=None) the first segment starting with `prefix`."""
    lines = re.split(rb"(\r\n|\r|\n)", data)
    out: list[bytes] = []
    done = False
    i = 0
    while i < len(lines):
        seg = lines[i]
        sep = lines[i + 1] if i + 1 < len(lines) else b""
        if not done and seg.startswith(prefix):
            done = True
            if new is not None:
                out += [new, sep]
        else:
            out += [seg, sep]
        i += 2
    return b"".join(out)


def sender_entry(ack_endpoint: str = "", certificate: str = "") -> dict[str, Any]:
    e: dict[str, Any] = {"application": "SIL-Y", "facility": "labo", "mailbox": LAB_MAILBOX,
                         "display_name": "Laboratoire SIL-Y", "nil": "SIL-Y-1.0"}
    if ack_endpoint:
        e["ack_endpoint"] = ack_endpoint
    if certificate:
        e["certificate"] = certificate
    return e


async def make_services(db_url: str, tmp: Path, *, senders: Sequence[dict[str, Any]] = (),
                        trusted: Sequence[str] = (PATIENT_DOMAIN,), create: bool = True,
                        dmp_enabled: bool = True) -> Services:
    cfg = config_from_dict({
        "data_dir": str(tmp), "database": {"url": db_url},
        "operator": {"domain": DOMAIN},
        "mllp": {"environment": "test", "senders": list(senders)},
    })
    engine = make_engine(db_url)
    if create:
        import mssante.store.queue  # noqa: F401 - tables on Base
        import mssante.y.models  # noqa: F401

        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    sessions = make_sessions(engine)
    trust = TrustState(local_domains=[DOMAIN])
    now = utcnow()
    xml = build_liste_blanche_xml([(d, f"CN=mx.{d},OU=1,O=Op {d},ST=Paris (75),C=FR", d)
                                   for d in (DOMAIN, *trusted)], now)
    trust.install(parse_liste_blanche(xml), now)
    services = Services(config=cfg, engine=engine, sessions=sessions, audit=Audit(sessions, utcnow),
                        metrics=Metrics(), now=utcnow, trust=trust)
    services.extras["y_dmp_enabled"] = dmp_enabled  # a DmpConnector is given to the worker by each test
    if create:
        async with sessions() as s, s.begin():
            await create_mailbox(s, LAB_MAILBOX, "APP", display_name="Laboratoire", structure_id="1120459876")
            await create_mailbox(s, PRESCRIBER, "PER", display_name="Dr Adam HODA", owner_idnps="801234567897")
    return services


async def close_services(services: Services) -> None:
    intake = services.extras.get("y_intake")
    if intake is not None:
        await intake.close()
    from mssante.smtp.delivery import close_committer

    await close_committer(services)  # the shared writer of the intake and the worker
    await services.engine.dispose()


@dataclass
class ZamSink:
    """A lab's MLLP endpoint collecting business acknowledgements; answers AA (or `answer`)."""

    received: list[bytes] = field(default_factory=list)
    answer: str = "AA"
    server: MllpServer | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, services: Services) -> str:
        async def handler(item: Frame | Oversize, peer: PeerInfo) -> bytes:
            assert isinstance(item, Frame)
            self.received.append(item.payload)
            self.event.set()
            cid = item.payload.split(b"\r")[0].split(b"|")[9].decode()
            return f"MSH|^~\\&|SIL-Y|labo|PFI|x|20250101||ACK^Z02^ACK|R{cid}|P|2.6\rMSA|{self.answer}|{cid}\r".encode()

        self.server = await start_mllp(services, host="127.0.0.1", port=0, handler=handler)
        return f"127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def events(self) -> list[tuple[str, str]]:
        """(ZAM event, OBX-1 OBX-5 Y/N) of each acknowledgement received."""
        out = []
        for p in self.received:
            lines = p.split(b"\r")
            ev = lines[0].split(b"|")[8].decode().split("^")[1]
            obx = [ln for ln in lines if ln.startswith(b"OBX|1|")][0].split(b"|")
            out.append((ev, obx[5].decode().split("^")[0]))
        return out


class FakeDmp:
    """Test double of the DmpConnector Protocol (tests only): scripted outcomes."""

    def __init__(self, outcomes: Sequence[DmpOutcome] = ()) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[DmpRequest] = []

    async def send(self, request: DmpRequest) -> DmpOutcome:
        self.requests.append(request)
        if self.outcomes:
            return self.outcomes.pop(0)
        return DmpAccepted(request.document_unique_id or "doc", "subset")




async def table_rows(services: Services, tables: Sequence[Any]) -> dict[str, list[tuple]]:
    """Every row of each table, in id order: to compare what two write paths stored."""
    from sqlalchemy import select

    out: dict[str, list[tuple]] = {}
    async with services.engine.connect() as c:
        for table in tables:
            rows = (await c.execute(select(table).order_by(table.c.id))).all()
            out[table.name] = [tuple(r) for r in rows]
    return out
