"""What `serve` runs: the services and listeners each package provides, wired in one place.

Order matters and is fixed here:
1. services: PKI validator (anchors, intermediates, CRLs), the trust state (liste blanche with
   its refresher), the directory, the authenticator, the folder notifier;
2. listeners: MTA, submission, relay worker, IMAP (STARTTLS and implicit TLS), the Y intake
   (MLLP + worker), each only when its address is configured;
3. background upkeep: CRL refresh (and, for the dev authority, CRL re-issue before expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mssante.app import Services, cancel_tasks
from mssante.config import parse_hostport

log = logging.getLogger("mssante.wiring")


def _path(services: Services, value: str) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else Path(services.config.data_dir) / p


def build_validator(services: Services) -> Any:
    """The trust-space path validator every listener uses (pki.validation.Validator), or None."""
    from pki.validation import Validator

    t = services.config.tls
    anchors = _path(services, t.anchors)
    if anchors is None:
        log.warning("no trust anchors configured (tls.anchors): certificate-based peers will be refused")
        return None
    crl_paths = [p for p in (_path(services, c) for c in t.crls) if p is not None]
    validator = Validator.from_files(anchors, _path(services, t.intermediates), crl_paths,
                                     fail_closed=t.revocation_fail_closed)
    if validator.crls is not None:
        for url in t.crl_urls:
            validator.crls.add_source(url)
    return validator


@dataclass
class Upkeep:
    """Periodic work that keeps the trust material fresh: a Stoppable like the listeners."""

    services: Services
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    issue_crls: bool = True  # False in the extra IMAP processes: the main process re-issues dev CRLs

    def start(self) -> Upkeep:
        self.tasks.append(asyncio.create_task(self._crls(), name="crl-refresh"))
        return self

    def _dev_authority(self) -> Any:
        # A dev operator that created its dev trust space re-issues that space's CRLs before they expire.
        root = Path(self.services.config.data_dir) / "dev" / "authority"
        if not (root / "passphrase").exists():
            return None
        from mssante.devspace import DevAuthority

        return DevAuthority(root)

    async def _crls(self) -> None:
        interval = max(60, self.services.config.tls.crl_refresh_minutes * 60)
        while True:
            try:
                authority = self._dev_authority() if self.issue_crls else None
                if authority is not None:
                    space = authority.open()
                    await asyncio.to_thread(space.write_crls, self.services.now())
                validator = self.services.validator
                if validator is not None and validator.crls is not None:
                    problems = await asyncio.to_thread(validator.crls.refresh)
                    for source, problem in problems:
                        log.warning("CRL refresh from %s failed: %s (last good CRL kept)", source, problem)
            except Exception:  # noqa: BLE001 - keep the last good CRLs; try again next round
                log.exception("CRL upkeep failed")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        await cancel_tasks(self.tasks)


async def attach_services(services: Services) -> None:
    """Attach the trust-space services (PKI validation, liste blanche, directory, auth, notifications)."""
    from annuaire.service import Directory
    from mssante.auth.service import Authenticator
    from mssante.store.notify import make_notifier
    from mssante.trust import service as trust_service

    services.validator = build_validator(services)
    services.extras["trust_service"] = await trust_service.start(services)
    services.directory = Directory(services.engine)
    services.authenticator = Authenticator.from_services(services)
    # Several IMAP processes on SQLite: the others' changes are polled (mssante.store.notify).
    services.notifier = make_notifier(services.config.db_url, cross_process=services.config.imap.processes > 1)
    await services.notifier.start()


async def detach_services(services: Services) -> None:
    trust = services.extras.pop("trust_service", None)
    if trust is not None:
        await trust.stop()
    if services.notifier is not None:
        await services.notifier.stop()
        services.notifier = None
    if services.directory is not None:
        await services.directory.close()
        services.directory = None


def extra_http_routes(services: Services) -> list[Callable[[web.Application], None]]:
    from annuaire.fhir import add_routes as add_fhir
    from mssante.trust.service import http_routes as trust_routes
    from mssante.y.http import add_routes as add_y

    return [
        lambda app: add_fhir(app, services.directory, prefix="/fhir"),
        trust_routes(services),
        lambda app: add_y(app, services),
    ]


async def start_imap_listeners(services: Services) -> dict[str, Any]:
    """The IMAP listeners (STARTTLS and implicit TLS) that are configured; with imap.processes > 1
    they share their addresses with the other IMAP processes (SO_REUSEPORT)."""
    from mssante.imap.server import start_imap
    from mssante.smtp.server import server_tls_context

    cfg = services.config
    started: dict[str, Any] = {}
    if not (cfg.listeners.imap or cfg.listeners.imaps):
        return started
    # The same context as SMTP: client certificates optional (they serve SASL EXTERNAL for ORG/APP).
    tls = server_tls_context(services)
    shared = cfg.imap.processes > 1
    try:
        for name, implicit in (("imap", False), ("imaps", True)):
            value = getattr(cfg.listeners, name)
            if value:
                host, port = parse_hostport(value, f"listeners.{name}")
                started[name] = await start_imap(services, host=host, port=port, implicit_tls=implicit,
                                                 ssl_context=tls, reuse_port=shared)
    except BaseException:
        for listener in started.values():
            with contextlib.suppress(Exception):
                await listener.stop()
        raise
    return started


async def start_listeners(services: Services) -> dict[str, Any]:
    """Start every configured listener; on a failure, stop those already started and re-raise."""
    from mssante.smtp.relay import start_relay_worker
    from mssante.smtp.server import start_mta, start_submission
    from mssante.y.service import start_y

    cfg = services.config
    started: dict[str, Any] = {}
    try:
        if cfg.listeners.mta:
            started["mta"] = await start_mta(services)
        if cfg.listeners.submission or cfg.listeners.submissions:
            started["submission"] = await start_submission(services)
        started["relay"] = await start_relay_worker(services, mx_port=cfg.relay.mx_port,
                                                     poll_interval=cfg.relay.poll_seconds)
        started.update(await start_imap_listeners(services))
        if cfg.imap.processes > 1 and (cfg.listeners.imap or cfg.listeners.imaps):
            from mssante.workers import ImapWorkers

            started["imap-workers"] = await ImapWorkers(cfg, cfg.imap.processes - 1).start()
        started["y"] = await start_y(services)
        started["upkeep"] = Upkeep(services).start()
    except BaseException:
        for listener in reversed(list(started.values())):
            with contextlib.suppress(Exception):
                await listener.stop()
        raise
    return started
