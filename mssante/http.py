"""The gateway's HTTP port: health, Prometheus metrics, and the routes other packages add
(FHIR directory, liste blanche publication, Y delivery status)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from sqlalchemy import text

from mssante.app import Services

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services", Services)


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    checks: dict[str, str] = {}
    try:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - a health check reports, it does not raise
        checks["database"] = "unavailable"
    if services.trust is not None:
        checks["trust_list"] = "ok" if getattr(services.trust, "policy", None) is not None else "missing"
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "degraded", "domain": services.config.operator.domain, "checks": checks}
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    return web.Response(body=services.metrics.render(), content_type="text/plain", charset="utf-8")


def make_http_app(services: Services, extra: list[Callable[[web.Application], None]] | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SERVICES_KEY] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for add in extra or []:
        add(app)
    return app


class HttpListener:
    def __init__(self, runner: web.AppRunner, site: web.TCPSite) -> None:
        self._runner = runner
        self.site = site

    @property
    def port(self) -> int:
        server = self.site._server  # noqa: SLF001 - aiohttp exposes no public accessor for the bound port
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_http(app: web.Application, host: str, port: int) -> HttpListener:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return HttpListener(runner, site)
