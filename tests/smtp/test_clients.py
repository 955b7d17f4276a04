"""Real third-party clients against the listeners: Debian swaks and curl (mutual TLS, AUTH)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from .operators import PASSWORD, Operator, Space
from mssante.store.models import Message


async def run(*argv: str) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode or 0, out.decode("utf-8", "replace")


async def message_ids(op: Operator) -> list[str | None]:
    async with op.services.sessions() as s:
        return list((await s.scalars(select(Message.message_id))).all())


needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt-get install swaks)")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_swaks
async def test_swaks_mtls_to_mta(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    code, out = await run(
        "swaks", "--server", f"{a.ip}:{a.mta_port}", "--tls", "--tls-cert", str(b.serv.chain_path),
        "--tls-key", str(b.serv.key_path), "--helo", "mx.op-b.test", "--from", "sec@op-b.test",
        "--to", "dr.martin@op-a.test", "--header", "Message-Id: <swaks1@op-b.test>", "--timeout", "20",
    )
    assert code == 0, out
    assert "250 2.0.0 OK queued as" in out
    assert await message_ids(a) == ["<swaks1@op-b.test>"]


@needs_swaks
async def test_swaks_without_certificate_is_refused(ops: dict[str, Operator]) -> None:
    a = ops["a"]
    await a.add_mailbox("dr.martin")
    code, out = await run("swaks", "--server", f"{a.ip}:{a.mta_port}", "--tls", "--helo", "mx.op-b.test",
                          "--from", "sec@op-b.test", "--to", "dr.martin@op-a.test", "--timeout", "20")
    assert code != 0 and "550 5.7.1" in out, out


@needs_swaks
async def test_swaks_submission_auth_plain(ops: dict[str, Operator]) -> None:
    a = ops["a"]
    await a.add_mailbox("dr.a")
    await a.add_mailbox("dr.c")
    code, out = await run(
        "swaks", "--server", f"{a.ip}:{a.sub_port}", "--tls", "--auth", "PLAIN", "--auth-user", "dr.a@op-a.test",
        "--auth-password", PASSWORD, "--from", "dr.a@op-a.test", "--to", "dr.c@op-a.test",
        "--header", "From: <dr.a@op-a.test>", "--header", "Message-Id: <swaks2@op-a.test>", "--timeout", "20",
    )
    assert code == 0, out
    assert await message_ids(a) == ["<swaks2@op-a.test>"]


@needs_curl
async def test_curl_mtls_to_mta(ops: dict[str, Operator], space: Space, tmp_path: Path) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    mail = tmp_path / "mail.eml"
    mail.write_bytes(b"From: <sec@op-b.test>\r\nTo: <dr.martin@op-a.test>\r\nSubject: curl\r\n"
                     b"Message-ID: <curl1@op-b.test>\r\n\r\nBonjour.\r\n")
    code, out = await run(
        "curl", "-sS", "--url", f"smtp://mx.op-a.test:{a.mta_port}", "--resolve", f"mx.op-a.test:{a.mta_port}:{a.ip}",
        "--ssl-reqd", "--cert", str(b.serv.chain_path), "--key", str(b.serv.key_path),
        "--cacert", str(space.pki.anchors_path), "--mail-from", "sec@op-b.test", "--mail-rcpt", "dr.martin@op-a.test",
        "--upload-file", str(mail), "-H", "", "--max-time", "30",
    )
    assert code == 0, out
    assert await message_ids(a) == ["<curl1@op-b.test>"]


@needs_curl
async def test_curl_submission_with_password(ops: dict[str, Operator], space: Space, tmp_path: Path) -> None:
    a = ops["a"]
    await a.add_mailbox("dr.a")
    await a.add_mailbox("dr.c")
    mail = tmp_path / "mail.eml"
    mail.write_bytes(b"From: <dr.a@op-a.test>\r\nTo: <dr.c@op-a.test>\r\nSubject: curl\r\n\r\nBonjour.\r\n")
    code, out = await run(
        "curl", "-sS", "--url", f"smtp://mx.op-a.test:{a.sub_port}", "--resolve", f"mx.op-a.test:{a.sub_port}:{a.ip}",
        "--ssl-reqd", "--cacert", str(space.pki.anchors_path), "--user", f"dr.a@op-a.test:{PASSWORD}",
        "--mail-from", "dr.a@op-a.test", "--mail-rcpt", "dr.c@op-a.test", "--upload-file", str(mail), "--max-time", "30",
    )
    assert code == 0, out
    ids = await message_ids(a)
    assert len(ids) == 1 and ids[0] and ids[0].endswith("@op-a.test>")  # Message-ID added (RFC 6409 §8.3)
