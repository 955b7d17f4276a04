"""`mssante init`: a working dev operator in one directory, and dev trust spaces on loopback.

Layout of DIR (the data directory):
    mssante.toml            the operator's config (relative paths are relative to DIR)
    mssante.db              the SQLite store (embedded default)
    tls/                    this operator's SERV certificate and key, and the APP/ORG client certificates
    dev/accounts.json       every mailbox with its credentials and the listener addresses (0600, dev only)
    dev/authority/          the dev trust space, when this operator created it:
        pki/                root + ORGANISATIONS + PERSONNES CAs (keys encrypted with passphrase)
        passphrase          the CA key passphrase (0600; a dev trust space only)
        liste-blanche.xml   the liste blanche naming every operator that joined
        operators.json      domain -> certificate DN, the source the list is built from

`init --authority OTHER` makes a second operator join OTHER's dev trust space: same CA,
and both listed in the one liste blanche they both read (the offline join shortcut).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante.auth.passwords import generate_password, hash_password

BASE_PORTS = {
    "mta": 2525,
    "submission": 2587,
    "submissions": 2465,
    "imap": 2143,
    "imaps": 2993,
    "mllp": 2575,
    "http": 8080,
}


class InitError(Exception):
    pass


@dataclass(frozen=True)
class SampleMailbox:
    local: str
    kind: str
    display_name: str
    idnps: str | None = None
    structure_id: str | None = None
    client_cert: bool = False
    password: bool = True


def sample_mailboxes(structure_id: str) -> list[SampleMailbox]:
    return [
        SampleMailbox("dr.martin", "PER", "Dr Jeanne MARTIN", idnps="810000000001"),
        SampleMailbox("cardiologie", "ORG", "Service de cardiologie", structure_id=structure_id),
        SampleMailbox("labo", "APP", "Laboratoire (SIL)", structure_id=structure_id, client_cert=True, password=False),
    ]


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class DevAuthority:
    """The dev trust space: its PKI and its liste blanche, kept in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki_dir = root / "pki"
        self.passphrase_file = root / "passphrase"
        self.list_path = root / "liste-blanche.xml"
        self.operators_file = root / "operators.json"
        self.routes_file = root / "routes.json"

    def exists(self) -> bool:
        return self.passphrase_file.exists() and self.pki_dir.exists()

    def create(self, now: dt.datetime) -> None:
        from pki.space import TrustSpacePKI

        self.root.mkdir(parents=True, exist_ok=True)
        passphrase = secrets.token_urlsafe(24).encode()
        TrustSpacePKI.create(self.pki_dir, passphrase, now=now, label="DEV")
        _write_private(self.passphrase_file, passphrase)
        _write_public(self.operators_file, b"{}")
        self.publish(now)

    def open(self) -> Any:
        from pki.space import TrustSpacePKI

        if not self.exists():
            raise InitError(f"no dev trust space in {self.root}: run `mssante init` for the first operator first")
        return TrustSpacePKI.open(self.pki_dir, self.passphrase_file.read_bytes().strip())

    def operators(self) -> dict[str, dict[str, str]]:
        if not self.operators_file.exists():
            return {}
        data: dict[str, dict[str, str]] = json.loads(self.operators_file.read_text())
        return data

    def add_operator(self, domain: str, dn: str, description: str, now: dt.datetime, *, mta: str = "") -> None:
        ops = self.operators()
        ops[domain] = {"dn": dn, "description": description, "mta": mta}
        _write_public(self.operators_file, json.dumps(ops, indent=2, sort_keys=True).encode())
        # Loopback operators have no MX records: the relay reads their MTA addresses from here.
        routes = {d: o["mta"] for d, o in ops.items() if o.get("mta")}
        _write_public(self.routes_file, json.dumps(routes, indent=2, sort_keys=True).encode())
        self.publish(now)

    def publish(self, now: dt.datetime) -> None:
        from mssante.trust.listeblanche import build_liste_blanche_xml

        entries = [(d, o["dn"], o.get("description", "")) for d, o in sorted(self.operators().items())]
        _write_public(self.list_path, build_liste_blanche_xml(entries, now))


def listeners_for(offset: int) -> dict[str, str]:
    return {name: f"127.0.0.1:{port + offset}" for name, port in BASE_PORTS.items()}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def render_toml(sections: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    lines = ["# Written by `mssante init` for a dev operator. Every key: config/mssante.example.toml", ""]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines += ["", f"[{name}]"]
        for k, v in values.items():
            if isinstance(v, dict):
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in values.items():
            if isinstance(v, dict):
                lines += ["", f"[{name}.{k}]"] + [f"{kk!r} = {_toml_value(vv)}".replace("'", '"') for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@dataclass
class InitResult:
    data_dir: Path
    created: bool
    accounts_path: Path
    config_path: Path


def _structure_id(domain: str) -> str:
    # A stable, FINESS-like 9-digit id per dev domain (the OU of its certificates).
    import hashlib

    return "1" + str(int(hashlib.sha256(domain.encode()).hexdigest(), 16))[:8]


async def init_operator(
    data_dir: Path,
    domain: str,
    *,
    authority_dir: Path | None = None,
    ports_offset: int = 0,
    now: dt.datetime | None = None,
) -> InitResult:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    from mssante.config import load_config
    from mssante.store import migrate
    from mssante.store.db import make_engine, make_sessions
    from mssante.store.mail import MailboxError, create_mailbox, mailbox_by_address, normalise_address

    now = now or dt.datetime.now(dt.timezone.utc)
    domain = domain.lower()
    try:
        normalise_address(f"x@{domain}")
    except MailboxError:
        raise InitError(f"invalid domain {domain!r}") from None
    if "." not in domain:
        raise InitError(f"invalid domain {domain!r}: expected a dotted mail domain such as op-a.test")
    data_dir = data_dir.resolve()
    config_path = data_dir / "mssante.toml"
    accounts_path = data_dir / "dev" / "accounts.json"
    if config_path.exists() and accounts_path.exists():
        cfg = load_config(config_path)
        if cfg.operator.domain != domain:
            raise InitError(f"{data_dir} already holds operator {cfg.operator.domain}, not {domain}")
        engine = make_engine(cfg.db_url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
        return InitResult(data_dir, False, accounts_path, config_path)

    data_dir.mkdir(parents=True, exist_ok=True)
    if authority_dir is not None:
        authority = DevAuthority(authority_dir.resolve() / "dev" / "authority")
        if not authority.exists():
            raise InitError(f"no dev trust space in {authority_dir}: run `mssante init --data-dir {authority_dir}` first")
    else:
        authority = DevAuthority(data_dir / "dev" / "authority")
        if not authority.exists():
            authority.create(now)
    space = authority.open()

    structure_id = _structure_id(domain)
    organisation = f"Operateur {domain}"
    department = "Paris (75)"
    hostname = f"mx.{domain}"
    tls_dir = data_dir / "tls"
    server = space.issue_server(
        hostname, domains=[domain, hostname], org=organisation, structure_id=structure_id, department=department,
        out_dir=tls_dir / "server", now=now,
    )
    listeners = listeners_for(ports_offset)
    authority.add_operator(domain, server.subject_dn, f"Dev operator {domain}", now, mta=listeners["mta"])
    sections: dict[str, dict[str, Any]] = {
        "operator": {"domain": domain, "hostname": hostname, "organisation": organisation,
                     "structure_id": structure_id, "department": department},
        "tls": {"cert": str(server.chain_path), "key": str(server.key_path), "anchors": str(space.anchors_path),
                "intermediates": str(space.intermediates_path), "crls": [str(p) for p in space.crl_paths]},
        # A dev trust space is tiny: one operator leaving is a large share, so the shrink guard is off.
        "trust": {"list_path": str(authority.list_path), "refresh_minutes": 1, "max_shrink_ratio": 1.0},
        "relay": {"routes_file": str(authority.routes_file)},
        "listeners": listeners,
        "mllp": {"environment": "test"},
    }
    _write_public(config_path, render_toml(sections, {"data_dir": "."}).encode())
    cfg = load_config(config_path)

    engine = make_engine(cfg.db_url)
    mailboxes: list[dict[str, Any]] = []
    try:
        await migrate.upgrade(engine)
        sessions = make_sessions(engine)
        for sample in sample_mailboxes(structure_id):
            address = f"{sample.local}@{domain}"
            entry: dict[str, Any] = {"address": address, "type": sample.kind, "display_name": sample.display_name}
            password = generate_password() if sample.password else None
            cert_sha = cert_subject = None
            if sample.client_cert:
                issued = space.issue_org(
                    f"{sample.display_name} {domain}", org=organisation, structure_id=structure_id,
                    department=department, out_dir=tls_dir / "clients" / sample.local, now=now,
                )
                cert_sha = issued.cert.fingerprint(hashes.SHA256()).hex()
                cert_subject = issued.subject_dn
                entry.update(cert=str(issued.chain_path), key=str(issued.key_path), cert_dn=issued.subject_dn)
                _ = issued.cert.public_bytes(Encoding.DER)
            if password:
                entry["password"] = password
            if sample.idnps:
                entry["idnps"] = sample.idnps
            async with sessions() as s, s.begin():
                if await mailbox_by_address(s, address) is None:
                    await create_mailbox(
                        s, address, sample.kind, display_name=sample.display_name, owner_idnps=sample.idnps,
                        structure_id=sample.structure_id, password_hash=hash_password(password) if password else None,
                        cert_sha256=cert_sha, cert_subject=cert_subject,
                    )
            mailboxes.append(entry)
    finally:
        await engine.dispose()

    accounts = {
        "operator": {"domain": domain, "hostname": hostname, "cert": str(server.chain_path), "key": str(server.key_path),
                     "ca": str(space.anchors_path), "intermediates": str(space.intermediates_path),
                     "cert_dn": server.subject_dn},
        "listeners": listeners,
        "trust": {"list": str(authority.list_path), "authority": str(authority.root)},
        "mailboxes": mailboxes,
    }
    _write_private(accounts_path, json.dumps(accounts, indent=2, ensure_ascii=False).encode())
    return InitResult(data_dir, True, accounts_path, config_path)
