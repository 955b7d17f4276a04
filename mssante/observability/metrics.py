"""Prometheus metrics, one registry per gateway (no module-level globals shared between tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.smtp_messages = Counter("mssante_smtp_messages_total", "Messages accepted or refused", ["listener", "outcome"], registry=r)
        self.smtp_connections = Gauge("mssante_smtp_connections", "Open SMTP connections", ["listener"], registry=r)
        self.imap_connections = Gauge("mssante_imap_connections", "Open IMAP connections", registry=r)
        self.auth_failures = Counter("mssante_auth_failures_total", "Failed authentications", ["protocol"], registry=r)
        self.queue_depth = Gauge("mssante_queue_depth", "Messages waiting in the relay queue", registry=r)
        self.relay_attempts = Counter("mssante_relay_attempts_total", "Relay attempts", ["outcome"], registry=r)
        self.trust_refresh = Counter("mssante_trust_refresh_total", "Liste blanche refreshes", ["outcome"], registry=r)
        self.trust_domains = Gauge("mssante_trust_domains", "Domains in the current liste blanche", registry=r)
        self.hl7_messages = Counter("mssante_hl7_messages_total", "HL7 messages by ACK code", ["ack"], registry=r)
        self.y_legs = Counter("mssante_y_legs_total", "Y delivery leg transitions", ["kind", "state"], registry=r)
        self.dmp_calls = Counter("mssante_dmp_calls_total", "DMP calls", ["outcome"], registry=r)
        self.ack_latency = Histogram("mssante_hl7_ack_seconds", "Time to ACK an HL7 message", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
