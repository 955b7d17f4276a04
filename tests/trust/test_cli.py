"""`mssante trust …` through argparse + register(), the way the top-level CLI dispatches."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker

from mssante.store.base import Base
from mssante.store.db import make_engine
from mssante.trust import cli
from mssante.trust.authority import TrustAuthority
from mssante.trust.listeblanche import build_liste_blanche_xml
from mssante.trust.refresh import RefreshConfig, Refresher, RefreshOutcome
from mssante.trust.routes import add_routes
from mssante.trust.state import TrustState
from pki.space import TrustSpacePKI
from pki.tls import server_context

NOW = datetime.now(UTC)
HOST = "autorite.test.mssante.fr"


def run(data_dir: Path, db_url: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mssante")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["trust", *argv])
    args.data_dir, args.config_path, args.db_url = data_dir, None, db_url  # as mssante.cli prepares them
    return int(args.func(args))


def test_show_list_real_file(tmp_path: Path, real_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "", "show-list", str(real_data / "listeblanchemssante-2025-03-13.xml")) == 0
    out = capsys.readouterr().out
    assert "entries: 6554" in out and "distinct domains: 5002" in out and "distinct DNs: 392" in out
    assert "ROOT_NOT_CLOSED" in out and "INVALID_DOMAIN (entry 6055)" in out


def test_show_list_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "cut.xml"
    data = build_liste_blanche_xml([("a.mssante.fr", "CN=a,C=FR", "")], NOW)
    bad.write_bytes(data[: data.index(b"<DNCertificatOperateur>")])
    assert run(tmp_path, "", "show-list", str(bad)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TRUNCATED" in err
    assert run(tmp_path, "", "show-list", str(tmp_path / "missing.xml")) == 1
    assert run(tmp_path, "", "show-list", "https://127.0.0.1:9/liste.xml") == 1
    assert "UNREACHABLE" in capsys.readouterr().err


async def test_status_shows_a_list_waiting_for_confirmation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "lb.xml"
    dn = "CN=mx.op.fr,OU=1,O=OP,ST=Paris (75),C=FR"
    src.write_bytes(build_liste_blanche_xml([(f"d{i}.mssante.fr", dn, "") for i in range(10)], NOW))
    r = Refresher(TrustState(), RefreshConfig(str(src), tmp_path / "trust"))
    assert await r.refresh_once() is RefreshOutcome.INSTALLED
    src.write_bytes(build_liste_blanche_xml([(f"d{i}.mssante.fr", dn, "") for i in range(5)], NOW))
    assert await r.refresh_once() is RefreshOutcome.REFUSED_SHRINK
    assert run(tmp_path, "", "status") == 0
    out = capsys.readouterr().out
    assert "installed: " in out and "refused by the shrink guard: " in out
    assert f"confirm-shrink {r.pending_shrink_sha256}" in out
    assert run(tmp_path / "nowhere", "", "status") == 1


def test_confirm_shrink(tmp_path: Path) -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert run(tmp_path, "", "confirm-shrink", sha) == 0
    assert (tmp_path / "trust" / "confirm-shrink" / sha).exists()
    assert run(tmp_path, "", "confirm-shrink", "nothex") == 1


@pytest.fixture
async def authority_server(tmp_path: Path) -> AsyncIterator[tuple[Path, str, str, TrustSpacePKI]]:
    data_dir = tmp_path / "var"
    dev = data_dir / "dev" / "authority"
    space = TrustSpacePKI.create(dev / "pki", b"secret-pass", now=NOW)
    (dev / "passphrase").write_bytes(b"secret-pass\n")
    db_url = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    srv = space.issue_server(
        HOST, domains=[], org="A", structure_id="1", department="75", out_dir=tmp_path / "s", now=NOW
    )
    assert srv.key_path is not None
    ctx = server_context(srv.chain_path, srv.key_path)
    authority = TrustAuthority(async_sessionmaker(engine, expire_on_commit=False), data_dir / "authority")
    app = web.Application()
    add_routes(app, publish_dir=authority.files.published, authority=authority)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    try:
        yield data_dir, db_url, f"https://127.0.0.1:{runner.addresses[0][1]}", space
    finally:
        await runner.cleanup()
        await engine.dispose()


async def test_authority_and_join_through_the_cli(
    tmp_path: Path, authority_server: tuple[Path, str, str, TrustSpacePKI], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, db_url, url, space = authority_server

    async def trust(*argv: str) -> int:
        return await asyncio.to_thread(run, data_dir, db_url, *argv)  # the handler runs its own event loop

    tls = ["--ca-file", str(space.anchors_path), "--tls-server-name", HOST]
    assert await trust("authority", "init") == 0
    token_file = tmp_path / "token"
    assert await trust("authority", "token", "--note", "clinique", "--out", str(token_file)) == 0
    assert token_file.read_text().strip() not in capsys.readouterr().out
    join_dir = tmp_path / "op" / "join"
    assert (
        await trust(
            "join",
            "--domain",
            "clinique.mssante.fr",
            "--org",
            "CLINIQUE",
            "--structure-id",
            "750000001",
            "--department",
            "75",
            "--contact",
            "it@clinique.fr",
            "--authority-url",
            url,
            "--token-file",
            str(token_file),
            "--join-dir",
            str(join_dir),
            *tls,
        )
        == 0
    )
    capsys.readouterr()
    assert await trust("authority", "list", "--status", "pending") == 0
    request_id = capsys.readouterr().out.split()[0]
    assert await trust("join-status", "--join-dir", str(join_dir), *tls) == 0
    assert "status: pending" in capsys.readouterr().out
    assert await trust("authority", "approve", request_id) == 0
    assert await trust("join-status", "--join-dir", str(join_dir), *tls) == 0
    assert (join_dir / "mta.pem").exists()

    capsys.readouterr()
    signer = str(data_dir / "authority" / "signer.pem")
    lb = url + "/trust/liste-blanche.xml"
    assert await trust("show-list", lb, *tls, "--authority-cert", signer, "--checksum", lb + ".sha256") == 0
    assert "entries: 1\n" in capsys.readouterr().out
    other_signer = str(join_dir / "mta.pem")  # any other certificate: the signature must not verify
    assert await trust("show-list", lb, *tls, "--authority-cert", other_signer) == 1
    assert "SIGNATURE_MISMATCH" in capsys.readouterr().err
    published = data_dir / "authority" / "published" / "liste-blanche.xml"
    cert = str(join_dir / "mta.pem")
    assert (
        await trust("check-peer", "--list", str(published), "--domain", "clinique.mssante.fr", "--cert", cert)
        == 0
    )
    assert capsys.readouterr().out.startswith("ACCEPT")
    assert (
        await trust("check-peer", "--list", str(published), "--domain", "autre.mssante.fr", "--cert", cert)
        == 1
    )
    assert capsys.readouterr().out.startswith("DOMAIN_NOT_LISTED")

    assert await trust("authority", "remove", request_id) == 0
    assert (
        await trust("check-peer", "--list", str(published), "--domain", "clinique.mssante.fr", "--cert", cert)
        == 1
    )
    assert await trust("authority", "approve", request_id) == 1
    assert "CONFLICT" in capsys.readouterr().err
