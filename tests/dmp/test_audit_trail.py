"""DMP calls land in the gateway's real audit trail (mssante.observability.audit) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from .dmp_support import INS, ConnectorFactory, make_cda, make_request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from mssante.dmp.api import DmpAccepted, DmpAction, DmpRejected
from mssante.dmp.reference import RunningDmp
from mssante.observability.audit import Audit
from mssante.store.base import Base
from mssante.store.db import make_engine
from mssante.store.models import AuditEvent


async def test_dmp_calls_are_in_the_audit_table(db_url: str, dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        audit = Audit(sessions, lambda: datetime.now(UTC))
        c = await make_connector(dmp.base_url, audit=audit.record)
        ok = await c.send(make_request(make_cda("17001")))
        assert isinstance(ok, DmpAccepted)
        refused = await c.send(make_request(b"", DmpAction.DELETE, replaced_unique_id="1.2.3^unknown"))
        assert isinstance(refused, DmpRejected)
        async with sessions() as s:
            rows = (await s.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars().all()
        assert [(r.action, r.outcome) for r in rows] == [("dmp.submit", "accepted"), ("dmp.delete", "rejected")]
        assert rows[0].actor == "801234534765" and rows[0].details["ins"] == INS
        assert rows[0].details["document_unique_id"] == ok.document_unique_id
        assert rows[1].details["code"] == "900"
    finally:
        await engine.dispose()


async def test_a_failing_audit_does_not_lose_the_outcome(dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is down")

    c = await make_connector(dmp.base_url, audit=broken)
    assert isinstance(await c.send(make_request(make_cda("17101"))), DmpAccepted)
