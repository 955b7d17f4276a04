"""A trust space's PKI: root CA, ORGANISATIONS and PERSONNES intermediates (SPECS.md §6).

Directory layout::

    space.json          label, default key kind, CRL validity
    anchors.pem         the root certificate (the trust anchor other gateways configure)
    intermediates.pem   both intermediate certificates
    root/ organisations/ personnes/    one CA each (see pki.ca)
    issued.jsonl        index of issued certificates (serial, CA, subject, notAfter)
    audit.jsonl         audit trail (pki.audit)

Hierarchy: ``AC RACINE <label> IGC-SANTE`` → ``AC <label> IGC-SANTE ORGANISATIONS`` (SERV, ORG)
and ``AC <label> IGC-SANTE PERSONNES`` (PS). The space is single-writer: one process issues at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.audit import AuditLog
from pki.ca import CertificateAuthority, parse_reason, self_signed_root, verify_csr
from pki.errors import PkiError, SpaceError, UnknownSerial
from pki.files import atomic_write, atomic_write_many, parse_csr
from pki.keys import KeyKind, PrivateKey, check_key_kind, generate_key, private_key_pem
from pki.profiles import (
    INTERMEDIATE_VALIDITY,
    LEAF_VALIDITY,
    ROOT_VALIDITY,
    Profile,
    ca_subject,
    check_fqdn,
    intermediate_name,
    leaf_extensions,
    organisation_subject,
    person_subject,
    root_name,
    split_names,
)

CA_NAMES = ("root", "organisations", "personnes")
DEFAULT_CRL_DAYS = 7
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Issued:
    cert_path: Path
    key_path: Path | None  # None when issued from a CSR (the requester keeps its key)
    chain_path: Path       # leaf + issuing intermediate
    serial: int
    subject_dn: str        # RFC 4514, as written in the liste blanche (CN=…,OU=…,O=…,ST=…,C=FR)
    cert: x509.Certificate


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TrustSpacePKI:
    def __init__(self, directory: Path, *, label: str, key_kind: KeyKind, crl_days: int,
                 root: CertificateAuthority, organisations: CertificateAuthority,
                 personnes: CertificateAuthority) -> None:
        self.directory = directory
        self.label = label
        self.key_kind: KeyKind = key_kind
        self.crl_validity = timedelta(days=crl_days)
        self.root = root
        self.organisations = organisations
        self.personnes = personnes
        self.audit = AuditLog(directory / "audit.jsonl")

    # -- paths -------------------------------------------------------------------------------
    @property
    def anchors_path(self) -> Path:
        return self.directory / "anchors.pem"

    @property
    def intermediates_path(self) -> Path:
        return self.directory / "intermediates.pem"

    @property
    def crl_paths(self) -> list[Path]:
        return [ca.crl_path for ca in self.authorities]

    @property
    def issued_index_path(self) -> Path:
        return self.directory / "issued.jsonl"

    @property
    def authorities(self) -> tuple[CertificateAuthority, CertificateAuthority, CertificateAuthority]:
        return (self.root, self.organisations, self.personnes)

    def authority(self, name: str) -> CertificateAuthority:
        for ca in self.authorities:
            if ca.name == name:
                return ca
        raise PkiError(f"unknown CA {name!r}; use one of {', '.join(CA_NAMES)}")

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / "space.json").is_file()

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str | Path, passphrase: bytes, *, now: datetime,
               key_kind: KeyKind | str = "ec-p256", label: str = "DEV",
               crl_days: int = DEFAULT_CRL_DAYS) -> TrustSpacePKI:
        """Create root + intermediates, write anchors/intermediates/CRLs. Refuses an existing space."""
        d = Path(directory)
        kind = check_key_kind(key_kind)
        if not passphrase:
            raise SpaceError("a non-empty passphrase is required to encrypt the CA keys")
        if not re.fullmatch(r"[A-Z0-9][A-Z0-9 _-]{0,30}", label):
            raise SpaceError(f"label {label!r}: use 1-31 upper-case letters, digits, space, '-' or '_'")
        if cls.exists(d):
            raise SpaceError(f"{d}: a trust space already exists here")
        audit = AuditLog(d / "audit.jsonl")
        try:
            root_key = generate_key(kind)
            root_cert = self_signed_root(ca_subject(root_name(label), label), root_key, now=now,
                                         validity=ROOT_VALIDITY, path_length=1)
            root = CertificateAuthority("root", d / "root", root_cert, root_key)
            subs: list[CertificateAuthority] = []
            for name, kind_label in (("organisations", "ORGANISATIONS"), ("personnes", "PERSONNES")):
                key: PrivateKey = generate_key(kind)
                cert = root.issue_ca(ca_subject(intermediate_name(label, kind_label), label), key.public_key(),
                                     now=now, validity=INTERMEDIATE_VALIDITY, path_length=0)
                subs.append(CertificateAuthority(name, d / name, cert, key))
            space = cls(d, label=label, key_kind=kind, crl_days=crl_days, root=root,
                        organisations=subs[0], personnes=subs[1])
            files: list[tuple[Path, bytes, int]] = []
            for ca in space.authorities:
                files.append((ca.key_path, private_key_pem(ca.key, passphrase), 0o600))
                files.append((ca.cert_path, _pem(ca.cert), 0o644))
                crl = ca.build_crl(now, space.crl_validity)
                files.append((ca.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644))
                files.append((ca.state_path, ca.state_bytes(), 0o600))
            files.append((space.anchors_path, _pem(root_cert), 0o644))
            files.append((space.intermediates_path, _pem(subs[0].cert) + _pem(subs[1].cert), 0o644))
            files.append((space.issued_index_path, b"", 0o644))
            meta = {"version": 1, "label": label, "key_kind": kind, "crl_days": crl_days,
                    "created": now.isoformat()}
            # space.json last: its presence marks a complete space.
            files.append((d / "space.json", json.dumps(meta, indent=1).encode(), 0o644))
            atomic_write_many(files)
            for ca in subs:
                space._index("root", ca.cert, "CA", now)
        except Exception as exc:
            audit.record("init-ca", "failure", now=now, subject=root_name(label), error=str(exc))
            raise
        audit.record("init-ca", "ok", now=now, subject=root_cert.subject.rfc4514_string(),
                     serial=root_cert.serial_number, key_kind=kind)
        return space

    @classmethod
    def open(cls, directory: str | Path, passphrase: bytes) -> TrustSpacePKI:
        """Open an existing space; a wrong passphrase raises pki.errors.WrongPassphrase."""
        d = Path(directory)
        try:
            meta = json.loads((d / "space.json").read_text())
        except FileNotFoundError as exc:
            raise SpaceError(f"{d}: no trust space here (run 'pki init-ca' first)") from exc
        except (OSError, ValueError) as exc:
            raise SpaceError(f"{d}/space.json: unreadable ({exc})") from exc
        cas = [CertificateAuthority.load(name, d / name, passphrase) for name in CA_NAMES]
        return cls(d, label=meta["label"], key_kind=check_key_kind(meta["key_kind"]),
                   crl_days=int(meta.get("crl_days", DEFAULT_CRL_DAYS)),
                   root=cas[0], organisations=cas[1], personnes=cas[2])

    # -- issuance ----------------------------------------------------------------------------
    def issue_server(self, fqdn: str, *, domains: list[str], org: str, structure_id: str, department: str,
                     out_dir: str | Path, now: datetime, key_kind: KeyKind | str | None = None,
                     csr_pem: bytes | None = None) -> Issued:
        """SERV product: CN=FQDN, SAN = FQDN + mail domains; TLS server + client EKU (SPECS.md §1, §6).

        An entry of ``domains`` that is an IP literal becomes an iPAddress SAN (loopback test servers).
        """
        def build(public_key: object) -> tuple[x509.Name, Any]:
            name = check_fqdn(fqdn)
            dns, ips = split_names([name, *domains], "mail domain")
            subject = organisation_subject(name, org=org, structure_id=structure_id, department=department)
            return subject, leaf_extensions(Profile.SERV, public_key, dns_names=dns, ip_addresses=ips)
        return self._issue(self.organisations, Profile.SERV, build, fqdn, out_dir, now, key_kind, csr_pem)

    def issue_org(self, name: str, *, org: str, structure_id: str, department: str, out_dir: str | Path,
                  now: datetime, key_kind: KeyKind | str | None = None, csr_pem: bytes | None = None,
                  emails: list[str] | None = None) -> Issued:
        """ORG product: a structure or an application (APP mailbox); client auth (AUTH_CLI)."""
        def build(public_key: object) -> tuple[x509.Name, Any]:
            subject = organisation_subject(name, org=org, structure_id=structure_id, department=department)
            return subject, leaf_extensions(Profile.ORG, public_key, emails=emails)
        return self._issue(self.organisations, Profile.ORG, build, name, out_dir, now, key_kind, csr_pem)

    def issue_person(self, idnps: str, family: str, given: str, *, out_dir: str | Path, now: datetime,
                     key_kind: KeyKind | str | None = None, csr_pem: bytes | None = None,
                     org: str | None = None, structure_id: str | None = None, department: str | None = None,
                     profession: str | None = None, emails: list[str] | None = None) -> Issued:
        """PS product: carries the IDNPS like a CPS (serialNumber, UID, CN); client auth."""
        def build(public_key: object) -> tuple[x509.Name, Any]:
            subject = person_subject(idnps, family, given, org=org, structure_id=structure_id,
                                     department=department, profession=profession)
            return subject, leaf_extensions(Profile.PS, public_key, emails=emails)
        return self._issue(self.personnes, Profile.PS, build, idnps, out_dir, now, key_kind, csr_pem)

    def _issue(self, ca: CertificateAuthority, profile: Profile,
               build: Callable[[object], tuple[x509.Name, Any]], basename: str, out_dir: str | Path,
               now: datetime, key_kind: KeyKind | str | None, csr_pem: bytes | None) -> Issued:
        action = f"issue-{profile.value.lower()}" + ("-csr" if csr_pem is not None else "")
        try:
            key: PrivateKey | None = None
            if csr_pem is not None:
                csr = parse_csr(csr_pem)
                verify_csr(csr)  # RFC 2986 proof of possession; the CSR subject is replaced by the profile's
                public_key: object = csr.public_key()
            else:
                key = generate_key(key_kind or self.key_kind)
                public_key = key.public_key()
            subject, exts = build(public_key)
            cert = ca.issue(subject, public_key, exts, now=now, validity=LEAF_VALIDITY)
            out = Path(out_dir)
            slug = _SLUG.sub("_", basename.strip()).strip("._") or "cert"
            cert_path, chain_path = out / f"{slug}.pem", out / f"{slug}-chain.pem"
            files = [(cert_path, _pem(cert), 0o644), (chain_path, _pem(cert) + _pem(ca.cert), 0o644)]
            key_path = None
            if key is not None:
                key_path = out / f"{slug}.key"
                files.append((key_path, private_key_pem(key), 0o600))
            atomic_write_many(files)
            self._index(ca.name, cert, profile.value, now)
        except Exception as exc:
            self.audit.record(action, "failure", now=now, subject=basename, ca=ca.name, error=str(exc))
            raise
        self.audit.record(action, "ok", now=now, subject=cert.subject.rfc4514_string(),
                          serial=cert.serial_number, ca=ca.name, not_after=cert.not_valid_after_utc.isoformat())
        return Issued(cert_path, key_path, chain_path, cert.serial_number, cert.subject.rfc4514_string(), cert)

    def _index(self, issuer: str, cert: x509.Certificate, profile: str, now: datetime) -> None:
        """Append to issued.jsonl: which CA issued which serial (revoke() looks serials up here)."""
        line = json.dumps({"serial": hex(cert.serial_number), "ca": issuer, "profile": profile,
                           "subject": cert.subject.rfc4514_string(),
                           "not_after": cert.not_valid_after_utc.isoformat(), "issued": now.isoformat()})
        with self.issued_index_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def issued(self) -> list[dict[str, str]]:
        """Every certificate issued by this space (CA certificates included), oldest first."""
        try:
            text = self.issued_index_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def find_issued(self, serial: int) -> dict[str, str] | None:
        for item in self.issued():
            if int(item["serial"], 16) == serial:
                return item
        return None

    # -- revocation --------------------------------------------------------------------------
    def revoke(self, serial: int, reason: str | x509.ReasonFlags, now: datetime) -> CertificateAuthority:
        """Record a revocation (RFC 5280 §5.3.1 reason); call write_crls to publish it."""
        try:
            flag = parse_reason(reason)
            item = self.find_issued(serial)
            if item is None:
                raise UnknownSerial(f"serial {hex(serial)} was not issued by this trust space")
            ca = self.authority(item["ca"])
            ca.revoke(serial, flag, now)
            ca.save_state()
        except Exception as exc:
            self.audit.record("revoke", "failure", now=now, serial=serial, error=str(exc))
            raise
        self.audit.record("revoke", "ok", now=now, subject=item["subject"], serial=serial, ca=ca.name,
                          reason=flag.value)
        return ca

    def write_crls(self, now: datetime) -> list[Path]:
        """Regenerate and write every CA's CRL (thisUpdate=now, nextUpdate=now+crl_days)."""
        paths: list[Path] = []
        for ca in self.authorities:
            crl = ca.build_crl(now, self.crl_validity)
            atomic_write(ca.crl_path, crl.public_bytes(serialization.Encoding.PEM))
            ca.save_state()
            paths.append(ca.crl_path)
            self.audit.record("crl", "ok", now=now, subject=ca.cert.subject.rfc4514_string(), ca=ca.name,
                              crl_number=ca.crl_number, revoked=len(ca.revoked),
                              next_update=(now + self.crl_validity).isoformat())
        return paths
