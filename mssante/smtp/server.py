"""Listener entry points: `start_mta(services)`, `start_submission(services)` (ports from config.listeners).

Each returns an `SmtpListeners` (Stoppable: `await stop()`), whose `.addresses` maps a listener name
to the bound (host, port) — port 0 in the config binds a free port, reported here.
TLS contexts come from pki.tls (TLS >= 1.2, AEAD suites), with the operator's SERV certificate
(config.tls.cert/key) and the trust-space anchors to ask clients for their certificate.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from mssante.config import parse_hostport
from mssante.smtp.delivery import committer_for
from mssante.smtp.inbound import InboundPolicy
from mssante.smtp.protocol import GatewaySMTP, Limits, PeerTracker, SmtpPolicy
from mssante.smtp.submission import SubmissionPolicy

log = logging.getLogger("mssante.smtp")


def server_tls_context(services: Any) -> ssl.SSLContext:
    from pki.tls import server_context

    t = services.config.tls
    if not t.cert or not t.key:
        raise ValueError("config error: tls.cert and tls.key are required for the SMTP listeners")
    # CERT_OPTIONAL: a peer without a certificate gets a clear SMTP refusal rather than a TLS alert.
    ctx = server_context(t.cert, t.key, client_ca_path=t.anchors or None, require_client_cert=False)
    if t.anchors and t.intermediates:
        # Peers that send only their leaf (some clients do) still chain: intermediates help path building,
        # OpenSSL still requires the path to end at an anchor (no partial chains).
        ctx.load_verify_locations(cafile=t.intermediates)
    # No session tickets: every connection is a full handshake with the client certificate anyway (validated
    # per connection), and issuing two TLS 1.3 tickets per connection costs an encryption and a send each.
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    return ctx


@dataclass
class SmtpListeners:
    servers: dict[str, asyncio.AbstractServer] = field(default_factory=dict)
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    connections: set[GatewaySMTP] = field(default_factory=set)
    services: Any = None

    @property
    def port(self) -> int:
        """The port of the first listener (convenience for tests)."""
        return next(iter(self.addresses.values()))[1]

    async def stop(self) -> None:
        for srv in self.servers.values():
            srv.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for srv in self.servers.values():
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except asyncio.TimeoutError:
                log.warning("smtp listener did not close in time")
        self.servers.clear()


async def _serve(
    listeners: SmtpListeners,
    name: str,
    address: str,
    policy: SmtpPolicy,
    services: Any,
    tls: ssl.SSLContext,
    *,
    implicit_tls: bool,
    authenticator: Any = None,
) -> None:
    host, port = _hostport(address)
    limits = Limits.from_config(services.config.smtp)
    peers = PeerTracker(services.config.smtp.max_connections_per_peer, services.config.smtp.max_connections_per_peer_per_minute)
    mechanisms = authenticator.mechanisms if authenticator is not None else ()
    metrics = services.metrics
    gauge = metrics.smtp_connections.labels(name) if metrics is not None else None

    def opened(c: GatewaySMTP) -> None:
        listeners.connections.add(c)
        if gauge is not None:
            gauge.inc()

    def closed(c: GatewaySMTP) -> None:
        listeners.connections.discard(c)
        if gauge is not None:
            gauge.dec()

    def factory() -> GatewaySMTP:
        return GatewaySMTP(
            policy, limits=limits, hostname=services.config.hostname, tls_context=tls, implicit_tls=implicit_tls,
            peers=peers, authenticator=authenticator, auth_mechanisms=mechanisms, on_open=opened, on_close=closed,
            metrics=metrics,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host, port, ssl=tls if implicit_tls else None, backlog=512,
                                      reuse_address=True)
    sock = server.sockets[0].getsockname()
    listeners.servers[name] = server
    listeners.addresses[name] = (str(sock[0]), int(sock[1]))
    log.info("smtp %s listening on %s:%d", name, sock[0], sock[1])


def _hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if port == "0" and host:
        return host.strip("[]"), 0
    return parse_hostport(address, "listener")


async def start_mta(services: Any, address: str | None = None) -> SmtpListeners:
    """The operator-to-operator MTA (config.listeners.mta; port 0 = any free port)."""
    addr = address if address is not None else services.config.listeners.mta
    out = SmtpListeners(services=services)
    committer_for(services).start()
    await _serve(out, "mta", addr, InboundPolicy(services), services, server_tls_context(services), implicit_tls=False)
    return out


def authenticator_for(services: Any) -> Any:
    if services.authenticator is None:
        from mssante.auth.service import Authenticator

        services.authenticator = Authenticator.from_services(services)
    return services.authenticator


async def start_submission(services: Any, *, submission: str | None = None, submissions: str | None = None) -> SmtpListeners:
    """Submission with STARTTLS (587) and with implicit TLS (465, RFC 8314); an empty address disables one."""
    cfg = services.config.listeners
    sub = submission if submission is not None else cfg.submission
    subs = submissions if submissions is not None else cfg.submissions
    out = SmtpListeners(services=services)
    committer_for(services).start()
    auth = authenticator_for(services)
    policy = SubmissionPolicy(services)
    tls = server_tls_context(services)
    if sub:
        await _serve(out, "submission", sub, policy, services, tls, implicit_tls=False, authenticator=auth)
    if subs:
        await _serve(out, "submissions", subs, policy, services, tls, implicit_tls=True, authenticator=auth)
    return out
