"""HTTP views of Y deliveries (admin): GET /y/deliveries[?since=2h&limit=100] and /y/deliveries/{id}.

They show identifiers and states only (INS, addresses, codes), never document or mail content.
The HTTP port is an admin port (ARCHITECTURE.md): bind it to loopback or put it behind the proxy's
authentication in production (docs/y-runtime.md).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from aiohttp import web

from mssante.y.cli import UsageError, parse_since
from mssante.y.tracking import delivery_view, list_deliveries

if TYPE_CHECKING:
    from mssante.app import Services


def add_routes(app: web.Application, services: Services) -> None:
    async def listing(request: web.Request) -> web.Response:
        try:
            since = parse_since(request.query["since"], services.now()) if request.query.get("since") else None
            limit = int(request.query.get("limit", "100"))
        except (UsageError, ValueError) as e:
            return web.json_response({"error": str(e) if isinstance(e, UsageError) else "limit: expected an integer"},
                                     status=400)
        async with services.sessions() as s:
            rows = await list_deliveries(s, since=since, limit=max(1, min(limit, 1000)))
        return web.json_response({"deliveries": rows, "at": services.now().astimezone(dt.timezone.utc).isoformat()})

    async def one(request: web.Request) -> web.Response:
        try:
            delivery_id = int(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "expected a delivery number"}, status=400)
        async with services.sessions() as s:
            view = await delivery_view(s, delivery_id)
        if view is None:
            return web.json_response({"error": f"no Y delivery {delivery_id}"}, status=404)
        return web.json_response(view)

    app.router.add_get("/y/deliveries", listing)
    app.router.add_get("/y/deliveries/{id}", one)
