"""The gateway's configuration: one typed schema, loaded from TOML.

Every key is documented in config/mssante.example.toml. A bad value stops the start with
one line naming the key, the value and what was expected (issue 2), for example:

    config error: smtp.max_message_size = 'big': expected an integer
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad configuration: the message is the one line shown to the operator."""


@dataclass
class OperatorConfig:
    domain: str = "op-a.test"  # the operator's mail domain (its mailboxes live here)
    local_domains: list[str] = field(default_factory=list)  # more hosted domains
    hostname: str = ""  # the MTA's FQDN (HELO name, SERV certificate CN); defaults to mx.<domain>
    organisation: str = "Operateur de developpement"
    structure_id: str = "10000000000001"
    department: str = "Paris (75)"


@dataclass
class DatabaseConfig:
    url: str = ""  # SQLAlchemy async URL; empty = sqlite in the data directory
    pool_size: int = 10


@dataclass
class TlsConfig:
    cert: str = ""  # this operator's SERV certificate chain (leaf first), PEM
    key: str = ""  # its private key, PEM
    anchors: str = ""  # trust-space root CA(s), PEM bundle (IGC Santé roots in production)
    intermediates: str = ""  # trust-space intermediate CAs, PEM bundle
    crls: list[str] = field(default_factory=list)  # CRL files (PEM or DER)
    crl_urls: list[str] = field(default_factory=list)  # CRL distribution URLs, refreshed
    crl_refresh_minutes: int = 60
    revocation_fail_closed: bool = True  # no valid CRL for an issuer = refuse


@dataclass
class ListenersConfig:
    # host:port; an empty string disables the listener.
    mta: str = "127.0.0.1:2525"
    submission: str = "127.0.0.1:2587"
    submissions: str = "127.0.0.1:2465"
    imap: str = "127.0.0.1:2143"
    imaps: str = "127.0.0.1:2993"
    mllp: str = "127.0.0.1:2575"
    http: str = "127.0.0.1:8080"


@dataclass
class SmtpConfig:
    max_message_size: int = 25 * 1024 * 1024  # SIZE, the patient operator's 25 MB limit
    max_recipients: int = 100
    max_line_length: int = 1000  # RFC 5321 §4.5.3.1.6, including CRLF
    max_header_size: int = 256 * 1024
    bad_command_limit: int = 20
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7 server timeout
    data_timeout: float = 600.0
    max_connections_per_peer: int = 20
    max_connections_per_peer_per_minute: int = 600
    rcpt_cache_seconds: float = 2.0  # RCPT mailbox lookups cached this long (a disabled mailbox: at most this late)


@dataclass
class RelayConfig:
    retry_schedule: list[int] = field(default_factory=lambda: [60, 300, 900, 1800, 3600, 7200, 14400])
    max_age_hours: int = 120  # failure DSN after this long
    delay_dsn_after_minutes: int = 240  # delayed DSN after this long
    per_domain_concurrency: int = 4
    workers: int = 8
    dns_server: str = ""  # host:port of the resolver to ask; empty = the system resolver
    static_routes: dict[str, str] = field(default_factory=dict)  # domain -> host:port
    routes_file: str = ""  # JSON {domain: "host:port"} re-read when it changes (dev trust spaces)
    mx_port: int = 25  # port of the MX hosts found in DNS (static routes carry their own)
    poll_seconds: float = 5.0  # how often the relay looks for due messages when nothing wakes it


@dataclass
class AuthConfig:
    jwks_path: str = ""  # Pro Santé Connect-style token verification keys (JWKS JSON)
    jwt_issuer: str = ""
    jwt_audience: str = ""
    max_failures_per_account: int = 5
    max_failures_per_address: int = 20
    failure_window_seconds: int = 300


@dataclass
class TrustConfig:
    list_path: str = ""  # the liste blanche file
    list_url: str = ""  # or the URL it is pulled from (HTTPS, trust-space CA pinned)
    list_ca: str = ""  # CA file pinned for list_url
    signature_cert: str = ""  # the trust authority's certificate (detached signature check)
    checksum_url: str = ""  # a published SHA-256 checksum of the list, also required to match
    tls_server_name: str = ""  # TLS name to verify for list_url when its host differs (loopback setups)
    refresh_minutes: int = 15
    max_shrink_ratio: float = 0.10  # refuse a list that loses more than this share of domains


@dataclass
class ImapConfig:
    append_limit: int = 25 * 1024 * 1024
    idle_timeout: float = 1800.0  # RFC 9051 §6.3.13: at least 30 minutes
    command_timeout: float = 1800.0
    bad_command_limit: int = 20
    processes: int = 1  # IMAP processes on the same listeners (SO_REUSEPORT); >1 uses a core each


@dataclass
class MllpConfig:
    environment: str = "test"  # "test" (INS OID 1.2.250.1.213.1.4.10) or "production" (…4.8)
    patient_domain: str = "patient.mssante.fr"
    max_message_size: int = 20 * 1024 * 1024
    tls: bool = False
    senders: list[dict[str, Any]] = field(default_factory=list)  # authorised sending systems
    decide_processes: int = 0  # 0: the CPU-bound decide step (HL7, CDA, XDM, MIME) in a thread; N: N processes


@dataclass
class DmpConfig:
    url: str = ""  # ITI-41 endpoint; empty = no DMP leg (refused at intake)
    registry_url: str = ""  # ITI-57/ITI-18 endpoint; empty = the sibling /registry of url
    cert: str = ""  # the structure's ORG certificate chain (mutual TLS)
    key: str = ""
    signing_cert: str = ""  # the structure's seal certificate for the VIHF; empty = cert
    signing_key: str = ""
    anchors: str = ""  # CA file for the DMP's server certificate
    server_hostname: str = ""  # TLS name to verify when the URL host differs (loopback setups)
    source_id: str = "1.2.250.1.213.1.1.9.999"  # XDS sourceId (OID) of this PFI
    secteur_activite: str = "SA25^1.2.250.1.71.4.2.4"  # VIHF Secteur_Activite
    concurrency: int = 8
    timeout: float = 30.0


@dataclass
class LoggingConfig:
    level: str = "INFO"
    json: bool = False


@dataclass
class AuditConfig:
    retention_days: int = 183  # six months (SPECS.md §2 traceability)


@dataclass
class Config:
    data_dir: str = "./var"
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    mllp: MllpConfig = field(default_factory=MllpConfig)
    dmp: DmpConfig = field(default_factory=DmpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    # Derived helpers -----------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def db_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_path / 'mssante.db').resolve()}"

    @property
    def hostname(self) -> str:
        return self.operator.hostname or f"mx.{self.operator.domain}"

    @property
    def all_local_domains(self) -> frozenset[str]:
        return frozenset(d.lower() for d in [self.operator.domain, *self.operator.local_domains])


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return "a table"
    return str(tp)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config error: {key} = {value!r}: expected {_describe(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        if value < 0:
            raise ConfigError(f"config error: {key} = {value!r}: expected a non-negative integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if value < 0:
            raise ConfigError(f"config error: {key} = {value!r}: expected a non-negative number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise bad


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in known:
            where = f"{prefix}{k}"
            raise ConfigError(f"config error: {where} is not a known key (see config/mssante.example.toml)")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            if not isinstance(data[f.name], dict):
                raise ConfigError(f"config error: {key} = {data[f.name]!r}: expected a table [{key}]")
            kwargs[f.name] = _build(tp, data[f.name], f"{key}.")  # type: ignore[arg-type]
        else:
            if isinstance(tp, types.UnionType):
                tp = typing.get_args(tp)[0]
            kwargs[f.name] = _coerce(key, data[f.name], tp)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    for name in ("mta", "submission", "submissions", "imap", "imaps", "mllp", "http"):
        value = getattr(cfg.listeners, name)
        if value:
            parse_hostport(value, f"listeners.{name}")
    if cfg.mllp.environment not in ("test", "production"):
        raise ConfigError(f"config error: mllp.environment = {cfg.mllp.environment!r}: expected 'test' or 'production'")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"config error: logging.level = {cfg.logging.level!r}: expected DEBUG, INFO, WARNING or ERROR")
    if not 0.0 <= cfg.trust.max_shrink_ratio <= 1.0:
        raise ConfigError(f"config error: trust.max_shrink_ratio = {cfg.trust.max_shrink_ratio!r}: expected a number between 0 and 1")
    if "@" in cfg.operator.domain or "." not in cfg.operator.domain:
        raise ConfigError(f"config error: operator.domain = {cfg.operator.domain!r}: expected a mail domain such as op-a.test")
    for d, route in cfg.relay.static_routes.items():
        if not isinstance(route, str):
            raise ConfigError(f"config error: relay.static_routes.{d} = {route!r}: expected a host:port string")
        parse_hostport(route, f"relay.static_routes.{d}")
    if cfg.relay.dns_server:
        parse_hostport(cfg.relay.dns_server, "relay.dns_server")
    if cfg.smtp.max_message_size < 1024:
        raise ConfigError(f"config error: smtp.max_message_size = {cfg.smtp.max_message_size}: expected at least 1024 bytes")
    if not 0 <= cfg.mllp.decide_processes <= 64:
        raise ConfigError(f"config error: mllp.decide_processes = {cfg.mllp.decide_processes}: expected 0 to 64")
    if not 1 <= cfg.imap.processes <= 64:
        raise ConfigError(f"config error: imap.processes = {cfg.imap.processes}: expected 1 to 64")


def parse_hostport(value: str, key: str = "address") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config error: {key} = {value!r}: expected host:port with a port from 1 to 65535")
    return host, int(port)


def config_from_dict(data: dict[str, Any], *, base_dir: Path | None = None) -> Config:
    cfg: Config = _build(Config, data, "")
    if base_dir is not None and not Path(cfg.data_dir).is_absolute():
        cfg.data_dir = str((base_dir / cfg.data_dir).resolve())
    _check(cfg)
    return cfg


def load_config(path: Path) -> Config:
    """Load and check a TOML file; relative paths in it are relative to its folder."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"config error: cannot read {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config error: {path} is not valid TOML: {e}") from None
    return config_from_dict(data, base_dir=path.resolve().parent)
