"""Wiring for `mssante serve`: the TrustState + Refresher from the config, and the authority's HTTP routes.

Reads `config.trust` (list_path | list_url, list_ca, signature_cert, refresh_minutes, max_shrink_ratio),
`config.operator` (local domains), `config.tls.anchors` (CA pinned when list_ca is empty) and
`config.data_path` (refresher state in DATA_DIR/trust, authority in DATA_DIR/authority).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mssante.trust.refresh import RefreshConfig, Refresher, RefreshOutcome
from mssante.trust.state import TrustState

log = logging.getLogger("mssante.trust")


def _path(base: Path, value: str) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def refresh_config(config: Any) -> RefreshConfig | None:
    """The refresher's settings from the gateway config; None when no list source is configured."""
    t = config.trust
    base = Path(config.data_path)
    source = t.list_url or (str(_path(base, t.list_path)) if t.list_path else "")
    if not source:
        return None
    ca = _path(base, t.list_ca) or (_path(base, config.tls.anchors) if t.list_url else None)
    return RefreshConfig(
        source=source,
        state_dir=base / "trust",
        interval_s=max(1, int(t.refresh_minutes)) * 60.0,
        ca_file=ca,
        authority_cert=_path(base, t.signature_cert),
        checksum_source=getattr(t, "checksum_url", "") or None,
        tls_server_name=getattr(t, "tls_server_name", "") or None,
        max_shrink=float(t.max_shrink_ratio),
    )


class TrustService:
    """Stoppable: the refresher's loop."""

    def __init__(self, state: TrustState, refresher: Refresher | None) -> None:
        self.state = state
        self.refresher = refresher

    async def stop(self) -> None:
        if self.refresher is not None:
            await self.refresher.stop()


async def start(services: Any) -> TrustService:
    """Create `services.trust`, load the list (cache first), keep it refreshed. Fails closed: no list, no peer."""
    config = services.config
    op = config.operator
    state = TrustState(local_domains=[op.domain, *op.local_domains])
    services.trust = state
    metrics = getattr(services, "metrics", None)
    on_outcome: Callable[[RefreshOutcome], None] | None = None
    if metrics is not None:
        state.on_swap(lambda p: metrics.trust_domains.set(len(p.liste.by_domain)))

        def on_outcome(outcome: RefreshOutcome) -> None:
            metrics.trust_refresh.labels(outcome=outcome.value.lower()).inc()

    cfg = refresh_config(config)
    if cfg is None:
        log.warning(
            "no liste blanche configured (trust.list_path / trust.list_url): no peer will be accepted"
        )
        return TrustService(state, None)
    refresher = Refresher(state, cfg, now=services.now, on_outcome=on_outcome)
    await refresher.start()
    return TrustService(state, refresher)


def http_routes(services: Any) -> Callable[[web.Application], None]:
    """Routes serving this gateway's trust authority, when DATA_DIR/authority exists (else nothing)."""
    from mssante.trust.authority import TrustAuthority
    from mssante.trust.routes import add_routes

    root = Path(services.config.data_path) / "authority"

    def add(app: web.Application) -> None:
        if not root.exists():
            return
        authority = TrustAuthority(services.sessions, root)
        add_routes(app, publish_dir=authority.files.published, authority=authority, now=services.now)

    return add
