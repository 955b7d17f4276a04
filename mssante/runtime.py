"""Running the gateway: build the services once, start every configured listener, stop cleanly.

`mssante serve` calls `serve_forever`; tests and the demo use `Gateway` directly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from mssante.app import Services, cancel_tasks, utcnow
from mssante.config import Config, parse_hostport
from mssante.http import make_http_app, start_http
from mssante.observability.audit import Audit
from mssante.observability.metrics import Metrics
from mssante.store import migrate
from mssante.store.db import make_engine, make_sessions

log = logging.getLogger("mssante.runtime")

AUDIT_PURGE_INTERVAL = 24 * 3600.0


async def build_services(config: Config) -> Services:
    engine = make_engine(config.db_url, pool_size=config.database.pool_size)
    await migrate.upgrade(engine)
    sessions = make_sessions(engine)
    services = Services(
        config=config, engine=engine, sessions=sessions, audit=Audit(sessions, utcnow), metrics=Metrics(), now=utcnow
    )
    from mssante.wiring import attach_services

    await attach_services(services)
    return services


@dataclass
class Gateway:
    config: Config
    services: Services | None = None
    listeners: dict[str, Any] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.services = await build_services(self.config)
        from mssante.wiring import extra_http_routes, start_listeners

        if self.config.listeners.http:
            host, port = parse_hostport(self.config.listeners.http, "listeners.http")
            app = make_http_app(self.services, extra_http_routes(self.services))
            self.listeners["http"] = await start_http(app, host, port)
        self.listeners.update(await start_listeners(self.services))
        self.tasks.append(asyncio.create_task(self._purge_audit(), name="audit-purge"))
        log.info("gateway %s started: %s", self.config.operator.domain, ", ".join(sorted(self.listeners)))

    async def _purge_audit(self) -> None:
        assert self.services is not None
        while True:
            try:
                removed = await self.services.audit.purge(self.config.audit.retention_days)
                if removed:
                    log.info("audit purge removed %d events", removed)
            except Exception:  # noqa: BLE001 - keep serving; the next run retries
                log.exception("audit purge failed")
            await asyncio.sleep(AUDIT_PURGE_INTERVAL)

    async def stop(self) -> None:
        await cancel_tasks(self.tasks)
        for name, listener in reversed(list(self.listeners.items())):
            try:
                await listener.stop()
            except Exception:  # noqa: BLE001 - stop the others regardless
                log.exception("stopping %s failed", name)
        self.listeners.clear()
        if self.services is not None:
            from mssante.smtp.delivery import close_committer
            from mssante.wiring import detach_services

            await close_committer(self.services)  # acceptances in flight finish their commit
            await detach_services(self.services)
            await self.services.engine.dispose()


async def serve_forever(config: Config) -> int:
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: a SIGTERM that arrives while listeners are starting still stops cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
    print(f"mssante serving {config.operator.domain}; http on {config.listeners.http or 'off'}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await gateway.stop()
    return 0
