"""relay.routes_file: the dev trust space's {domain: "host:port"} map, re-read when it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mssante.smtp.routing import RouteError, Router, Target


def write(path: Path, data: object, mtime: float) -> None:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    os.utime(path, (mtime, mtime))  # distinct mtimes even within one clock tick


async def test_routes_file_is_read_reread_and_kept_when_broken(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    write(routes, {"Op-B.test.": "127.0.0.1:2625"}, 1_000)
    # No DNS server answers on this port: a domain outside the file fails instead of asking the system.
    router = Router(routes_file=str(routes), dns_server="127.0.0.1:9", timeout=0.2)
    assert await router.route("op-b.test") == [Target("127.0.0.1", "127.0.0.1", 2625)]

    write(routes, {"op-b.test": "127.0.0.1:2700", "op-c.test": "127.0.0.1:2725"}, 2_000)
    assert await router.route("op-b.test") == [Target("127.0.0.1", "127.0.0.1", 2700)]
    assert await router.route("op-c.test") == [Target("127.0.0.1", "127.0.0.1", 2725)]

    # A half-written or wrong file keeps the last good routes.
    write(routes, '{"op-b.test": ', 3_000)
    assert await router.route("op-c.test") == [Target("127.0.0.1", "127.0.0.1", 2725)]
    write(routes, ["not", "a", "map"], 4_000)
    assert await router.route("op-b.test") == [Target("127.0.0.1", "127.0.0.1", 2700)]

    with pytest.raises(RouteError):
        await router.route("elsewhere.test")


async def test_static_routes_win_over_the_file(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    write(routes, {"op-b.test": "127.0.0.1:2625"}, 1_000)
    router = Router(static_routes={"op-b.test": "127.0.0.1:3000"}, routes_file=str(routes))
    assert await router.route("op-b.test") == [Target("127.0.0.1", "127.0.0.1", 3000)]
