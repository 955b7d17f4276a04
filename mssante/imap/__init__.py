"""mssante.imap: our IMAP server (issue 6). See docs/imap.md.

Layers: framing.py + parser.py + state.py + response.py + mime.py + selected.py + search.py +
fetch.py (pure, no I/O); session.py + handlers*.py (the session over a Conn and a Storage);
store.py (the Storage protocol and its SQLAlchemy implementation); server.py (asyncio + TLS).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImapListeners:
    """Both listeners of the gateway (STARTTLS and implicit TLS); `stop()` stops them all."""

    listeners: list[Any] = field(default_factory=list)
    owned_notifier: Any = None

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop()
        if self.owned_notifier is not None:
            await self.owned_notifier.stop()


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def ssl_context_from(services: Any) -> ssl.SSLContext | None:
    """The server context from [tls] cert/key; client certificates are asked for (optional) and
    checked against the trust-space anchors so that SASL EXTERNAL works (SPECS.md §2)."""
    tls = services.config.tls
    if not tls.cert or not tls.key:
        return None
    from pki.tls import server_context

    return server_context(tls.cert, tls.key, client_ca_path=tls.anchors or None)


async def start(services: Any, *, ssl_context: ssl.SSLContext | None = None, on_read_receipt: Any = None
                ) -> ImapListeners:
    """Start [listeners] imap (STARTTLS) and imaps (implicit TLS); an empty address disables one."""
    from mssante.imap.server import start_imap

    ctx = ssl_context or ssl_context_from(services)
    out = ImapListeners()
    if services.notifier is None:
        # One notifier per process, shared by both listeners and by every writer that publishes
        # (the MTA should call services.notifier.publish(folder_id) after its commit).
        from mssante.store.notify import make_notifier

        services.notifier = out.owned_notifier = make_notifier(
            services.engine.url.render_as_string(hide_password=False))
        await services.notifier.start()
    cfg = services.config.listeners
    if cfg.imap:
        host, port = _hostport(cfg.imap)
        out.listeners.append(await start_imap(services, host=host, port=port, implicit_tls=False,
                                              ssl_context=ctx, on_read_receipt=on_read_receipt))
    if cfg.imaps and ctx is not None:
        host, port = _hostport(cfg.imaps)
        out.listeners.append(await start_imap(services, host=host, port=port, implicit_tls=True,
                                              ssl_context=ctx, on_read_receipt=on_read_receipt))
    return out
