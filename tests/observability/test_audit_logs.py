from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from sqlalchemy import select

from mssante.observability.audit import Audit, AuditFieldError
from mssante.observability.logs import JsonFormatter, setup_logging
from mssante.observability.metrics import Metrics
from mssante.store.base import Base
from mssante.store.db import make_engine, make_sessions
from mssante.store.models import AuditEvent


async def test_audit_records_and_purges_by_retention(db_url):
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions = make_sessions(engine)
    clock = [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]
    audit = Audit(sessions, lambda: clock[0])
    await audit.record("smtp.accept", actor="CN=mx.op-b.test", message_id="<a@b>", size=1200)
    clock[0] = dt.datetime(2026, 8, 1, tzinfo=dt.timezone.utc)
    await audit.record("imap.login", actor="dr.martin@op-a.test", outcome="failure")
    removed = await audit.purge(retention_days=183)
    assert removed == 1
    async with sessions() as s:
        rows = (await s.scalars(select(AuditEvent))).all()
    assert [(r.action, r.outcome) for r in rows] == [("imap.login", "failure")]
    await engine.dispose()


@pytest.mark.parametrize("key", ["body", "content", "password", "token", "cda", "Document"])
def test_audit_refuses_content_and_secret_fields(key):
    audit = Audit(None, lambda: dt.datetime.now(dt.timezone.utc))  # type: ignore[arg-type]
    with pytest.raises(AuditFieldError):
        audit.event("x", **{key: "secret stuff"})


def test_json_logs_mask_secret_fields_and_never_include_exception_text():
    rec = logging.LogRecord("mssante.test", logging.ERROR, __file__, 1, "login failed for %s", ("dr@op.test",), None)
    rec.fields = {"user": "dr@op.test", "password": "hunter2hunter2", "auth_token": "eyJ..."}
    try:
        raise ValueError("the message body was: very private")
    except ValueError:
        import sys

        rec.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "login failed for dr@op.test"
    assert out["password"] == "***" and out["auth_token"] == "***" and out["user"] == "dr@op.test"
    assert out["error"] == "ValueError"
    assert "very private" not in json.dumps(out)


def test_setup_logging_json(capsys):
    setup_logging("INFO", json_lines=True)
    logging.getLogger("mssante.t").info("hello %d", 3)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(err)["msg"] == "hello 3"
    setup_logging("WARNING", json_lines=False)


def test_metrics_render_per_instance():
    a, b = Metrics(), Metrics()
    a.smtp_messages.labels("mta", "accepted").inc()
    assert b'mssante_smtp_messages_total{listener="mta",outcome="accepted"} 1.0' in a.render()
    assert b'listener="mta"' not in b.render()
