"""`mssante y status/list` and GET /y/deliveries[/{id}] over a real store and a real HTTP port."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mssante.cli import main
from mssante.y.http import add_routes
from mssante.y.mllp import MllpClient, start_mllp
from mssante.y.worker import YWorker
from .support import FakeDmp, close_services, make_services, segur_bytes, sender_entry


async def _one_delivery(tmp: Path) -> None:
    services = await make_services(f"sqlite+aiosqlite:///{tmp / 'mssante.db'}", tmp, senders=[sender_entry()])
    server = await start_mllp(services, host="127.0.0.1", port=0)
    client = await MllpClient.connect("127.0.0.1", server.port)
    await client.send(segur_bytes())
    await client.close()
    await server.stop()
    worker = YWorker(services, dmp=FakeDmp())
    await worker.run_once()
    await worker.drain_dmp()
    await close_services(services)


def test_cli_status_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_one_delivery(tmp_path))
    assert main(["--data-dir", str(tmp_path), "y", "status", "1"]) == 0
    out = capsys.readouterr().out
    assert "SIL-Y|labo" in out and "adam.hoda@test-ci-sis.mssante.fr" in out and "dmp-accepted" in out
    assert main(["--data-dir", str(tmp_path), "y", "list", "--since", "1h", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["control_id"] == "015" and rows[0]["legs"] == {"delivered": 1, "dmp-accepted": 1, "queued": 1}
    assert main(["--data-dir", str(tmp_path), "y", "status", "99"]) == 1
    assert "no Y delivery 99" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "y", "list", "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err


async def test_http_routes(tmp_path: Path) -> None:
    await _one_delivery(tmp_path)
    services = await make_services(f"sqlite+aiosqlite:///{tmp_path / 'mssante.db'}", tmp_path, create=False)
    app = web.Application()
    add_routes(app, services)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/y/deliveries?since=1d") as r:
                assert r.status == 200
                body = await r.json()
                assert [d["id"] for d in body["deliveries"]] == [1]
            async with http.get(f"http://127.0.0.1:{port}/y/deliveries/1") as r:
                view = await r.json()
                assert {leg["state"] for leg in view["leg_details"]} == {"delivered", "queued", "dmp-accepted"}
                assert "request" not in json.dumps(view["leg_details"])  # the DMP request stays internal
            async with http.get(f"http://127.0.0.1:{port}/y/deliveries/2") as r:
                assert r.status == 404
            async with http.get(f"http://127.0.0.1:{port}/y/deliveries?limit=x") as r:
                assert r.status == 400
    finally:
        await runner.cleanup()
        await close_services(services)
