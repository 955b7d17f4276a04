"""The trust authority: keeps the liste blanche in its database, signs and publishes it, lets operators join.

Workflow (docs/trust.md):
1. `trust authority token` issues a one-time enrolment token (stored as SHA-256), handed out of band.
2. The operator submits a join request (domain, MTA host name, organisation, contact, CSR) with the token;
   it gets a request id and a poll secret (stored as SHA-256).
3. The authority approves (SERV certificate issued from the CSR by pki, SPECS.md §6; (domain, DN) added to
   the list; list republished) or rejects. The operator polls and fetches its certificate.
4. suspend/remove revoke the certificate (certificateHold / cessationOfOperation, RFC 5280 §5.3.1),
   delist the domain's entries of that request and republish list and CRLs.

Publishing writes into `<root>/published/`: ``liste-blanche.xml`` (the real ANS format, sorted),
``liste-blanche.xml.sig`` (detached signature over the exact bytes by the authority's signing
certificate ``signer.pem``: ECDSA or RSA PKCS#1 v1.5, SHA-256), ``liste-blanche.xml.sha256``, and the
trust space's CRLs under ``crl/``. Every change is audited in `audit_event` (actions ``trust.*``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mssante.store.models import AuditEvent
from mssante.trust.dn import DnSyntaxError, parse_dn
from mssante.trust.errors import TrustError
from mssante.trust.listeblanche import (
    Entry,
    ListeBlanche,
    build_liste_blanche_xml,
    is_valid_domain,
    normalise_domain,
)
from mssante.trust.models import JoinStatus, TrustEnrolmentToken, TrustJoinRequest, TrustListEntry
from pki.ca import verify_csr
from pki.errors import PkiError
from pki.files import atomic_write_many, parse_csr
from pki.keys import load_private_key
from pki.profiles import check_fqdn, organisation_subject
from pki.space import TrustSpacePKI

LIST_NAME = "liste-blanche.xml"
SIG_NAME = LIST_NAME + ".sig"
SHA_NAME = LIST_NAME + ".sha256"
MAX_CSR_BYTES = 16 * 1024
_STRUCTURE_RE = re.compile(r"^[A-Za-z0-9]{1,40}$")


class AuthorityErrorCode(StrEnum):
    BAD_TOKEN = "BAD_TOKEN"  # noqa: S105 (a reason code, not a secret)
    BAD_REQUEST = "BAD_REQUEST"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    CONFLICT = "CONFLICT"
    NO_PKI = "NO_PKI"
    NOT_INITIALISED = "NOT_INITIALISED"


class AuthorityError(TrustError):
    code: AuthorityErrorCode

    def __init__(self, code: AuthorityErrorCode, detail: str) -> None:
        super().__init__(code, detail)


@dataclass(frozen=True)
class JoinSubmission:
    domain: str
    fqdn: str  # MTA host name, CN of the SERV certificate
    org: str
    structure_id: str
    department: str
    contact: str
    csr_pem: bytes


@dataclass(frozen=True)
class JoinTicket:
    request_id: str
    poll_secret: str


@dataclass(frozen=True)
class JoinView:
    request_id: str
    status: str
    domain: str
    fqdn: str
    org: str
    contact: str
    created_at: datetime
    subject_dn: str | None = None
    serial: str | None = None
    cert_pem: str | None = None
    chain_pem: str | None = None
    note: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "domain": self.domain,
            "fqdn": self.fqdn,
            "subject_dn": self.subject_dn,
            "serial": self.serial,
            "cert_pem": self.cert_pem,
            "chain_pem": self.chain_pem,
            "note": self.note,
        }


@dataclass(frozen=True)
class Published:
    sha256: str
    entries: int
    path: Path


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)  # SQLite returns naive UTC datetimes


def sign_detached(data: bytes, key: Any) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise AuthorityError(AuthorityErrorCode.NOT_INITIALISED, "unsupported signing key type")


class AuthorityFiles:
    """Layout of the authority's directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.signer_cert = root / "signer.pem"
        self.signer_key = root / "signer.key"
        self.published = root / "published"
        self.issued = root / "issued"

    def exists(self) -> bool:
        return self.signer_cert.exists() and self.signer_key.exists()

    def init(self, pki: TrustSpacePKI, now: datetime, *, department: str = "75") -> Path:
        """Issue the authority's signing certificate (an ORG product of the trust space)."""
        if self.exists():
            return self.signer_cert
        self.root.mkdir(parents=True, exist_ok=True)
        issued = pki.issue_org(
            "AUTORITE LISTE BLANCHE",
            org="AUTORITE DE L'ESPACE DE CONFIANCE",
            structure_id="0",
            department=department,
            out_dir=self.root / "signer-tmp",
            now=now,
        )
        if issued.key_path is None:  # issue_org without a CSR always generates the key
            raise AuthorityError(AuthorityErrorCode.NOT_INITIALISED, "the PKI returned no signing key")
        issued.key_path.replace(self.signer_key)
        self.signer_key.chmod(0o600)
        issued.cert_path.replace(self.signer_cert)
        shutil.rmtree(self.root / "signer-tmp", ignore_errors=True)
        return self.signer_cert


class TrustAuthority:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], root: Path, *, pki: TrustSpacePKI | None = None
    ) -> None:
        self.sessions = sessions
        self.files = AuthorityFiles(root)
        self.pki = pki

    # -- audit ------------------------------------------------------------------------------------
    @staticmethod
    def _audit(
        s: AsyncSession, action: str, actor: str, now: datetime, outcome: str = "ok", **details: Any
    ) -> None:
        s.add(AuditEvent(at=now, action="trust." + action, actor=actor, outcome=outcome, details=details))

    # -- enrolment tokens -------------------------------------------------------------------------
    async def issue_token(
        self, now: datetime, *, note: str = "", ttl: timedelta = timedelta(days=7), actor: str
    ) -> str:
        token = secrets.token_urlsafe(32)
        async with self.sessions.begin() as s:
            s.add(
                TrustEnrolmentToken(
                    token_sha256=_sha(token), note=note[:200], created_at=now, expires_at=now + ttl
                )
            )
            self._audit(s, "token.issue", actor, now, note=note[:200], expires_at=(now + ttl).isoformat())
        return token

    # -- join -------------------------------------------------------------------------------------
    def _validate(self, sub: JoinSubmission) -> tuple[str, str]:
        domain = normalise_domain(sub.domain)
        if not is_valid_domain(domain):
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, "domain is not a valid domain name")
        try:
            fqdn = check_fqdn(sub.fqdn)
            organisation_subject(fqdn, org=sub.org, structure_id=sub.structure_id, department=sub.department)
        except PkiError as exc:
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, str(exc)) from None
        if not _STRUCTURE_RE.match(sub.structure_id.strip()):
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, "structure id: 1-40 letters or digits")
        if not sub.contact.strip() or len(sub.contact) > 300:
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, "contact: 1-300 characters")
        if len(sub.csr_pem) > MAX_CSR_BYTES:
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, "CSR too large")
        try:
            verify_csr(parse_csr(sub.csr_pem))  # RFC 2986 proof of possession
        except PkiError as exc:
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, str(exc)) from None
        return domain, fqdn

    async def submit_join(self, token: str, sub: JoinSubmission, now: datetime) -> JoinTicket:
        domain, fqdn = self._validate(sub)
        request_id = secrets.token_hex(16)
        poll_secret = secrets.token_urlsafe(32)
        refusal: AuthorityError | None = None
        async with self.sessions.begin() as s:
            tok = (
                await s.execute(
                    select(TrustEnrolmentToken)
                    .where(TrustEnrolmentToken.token_sha256 == _sha(token))
                    .with_for_update()
                )
            ).scalar_one_or_none()
            pending = (
                await s.execute(
                    select(TrustJoinRequest.id).where(
                        TrustJoinRequest.domain == domain, TrustJoinRequest.status == JoinStatus.PENDING
                    )
                )
            ).first()
            if tok is None or tok.used_at is not None or _aware(tok.expires_at) <= now:
                why = "unknown" if tok is None else ("used" if tok.used_at is not None else "expired")
                refusal = AuthorityError(AuthorityErrorCode.BAD_TOKEN, f"enrolment token {why}")
            elif pending is not None:
                refusal = AuthorityError(
                    AuthorityErrorCode.CONFLICT, f"a request for {domain} is already pending"
                )
            else:
                tok.used_at = now
                s.add(
                    TrustJoinRequest(
                        id=request_id,
                        poll_secret_sha256=_sha(poll_secret),
                        token_id=tok.id,
                        domain=domain,
                        fqdn=fqdn,
                        org=sub.org.strip(),
                        structure_id=sub.structure_id.strip(),
                        department=sub.department.strip(),
                        contact=sub.contact.strip(),
                        csr_pem=sub.csr_pem.decode("ascii", "replace"),
                        status=JoinStatus.PENDING,
                        created_at=now,
                    )
                )
                self._audit(
                    s, "join.submit", domain, now, request_id=request_id, fqdn=fqdn, org=sub.org.strip()
                )
        if refusal is not None:
            async with self.sessions.begin() as s:
                self._audit(s, "join.submit", domain, now, outcome="refused", reason=refusal.detail)
            raise refusal
        return JoinTicket(request_id, poll_secret)

    @staticmethod
    def _view(r: TrustJoinRequest) -> JoinView:
        return JoinView(
            request_id=r.id,
            status=r.status,
            domain=r.domain,
            fqdn=r.fqdn,
            org=r.org,
            contact=r.contact,
            created_at=_aware(r.created_at),
            subject_dn=r.subject_dn,
            serial=r.serial,
            cert_pem=r.cert_pem,
            chain_pem=r.chain_pem,
            note=r.decision_note,
        )

    async def join_status(self, request_id: str, poll_secret: str) -> JoinView:
        async with self.sessions() as s:
            r = await s.get(TrustJoinRequest, request_id)
            if r is None or not secrets.compare_digest(r.poll_secret_sha256, _sha(poll_secret)):
                # same answer for unknown id and wrong secret: ids are not enumerable
                raise AuthorityError(AuthorityErrorCode.NOT_FOUND, "no such join request")
            return self._view(r)

    async def list_requests(self, status: str | None = None) -> list[JoinView]:
        async with self.sessions() as s:
            q = select(TrustJoinRequest).order_by(TrustJoinRequest.created_at, TrustJoinRequest.id)
            if status:
                q = q.where(TrustJoinRequest.status == status)
            return [self._view(r) for r in (await s.execute(q)).scalars()]

    async def _load(self, s: AsyncSession, request_id: str, allowed: tuple[str, ...]) -> TrustJoinRequest:
        r = await s.get(TrustJoinRequest, request_id, with_for_update=True)
        if r is None:
            raise AuthorityError(AuthorityErrorCode.NOT_FOUND, f"no join request {request_id}")
        if r.status not in allowed:
            raise AuthorityError(AuthorityErrorCode.CONFLICT, f"request {request_id} is {r.status}")
        return r

    def _need_pki(self) -> TrustSpacePKI:
        if self.pki is None:
            raise AuthorityError(AuthorityErrorCode.NO_PKI, "this operation needs the trust-space PKI")
        return self.pki

    async def approve(self, request_id: str, now: datetime, *, actor: str) -> JoinView:
        pki = self._need_pki()
        async with self.sessions.begin() as s:
            r = await self._load(s, request_id, (JoinStatus.PENDING,))
            try:
                issued = pki.issue_server(
                    r.fqdn,
                    domains=[r.domain],
                    org=r.org,
                    structure_id=r.structure_id,
                    department=r.department,
                    out_dir=self.files.issued / r.id,
                    now=now,
                    csr_pem=r.csr_pem.encode(),
                )
            except PkiError as exc:
                raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, str(exc)) from None
            r.status = JoinStatus.APPROVED
            r.decided_at, r.decided_by = now, actor
            r.cert_pem = issued.cert_path.read_text()
            r.chain_pem = issued.chain_path.read_text()
            r.serial = format(issued.serial, "x")
            r.subject_dn = issued.subject_dn
            existing = (
                await s.execute(
                    select(TrustListEntry).where(
                        TrustListEntry.domain == r.domain, TrustListEntry.dn == issued.subject_dn
                    )
                )
            ).scalar_one_or_none()
            if existing is not None:  # a renewal with the same subject: the entry now follows this request
                existing.join_request_id, existing.updated_at = r.id, now
            else:
                s.add(
                    TrustListEntry(
                        domain=r.domain,
                        dn=issued.subject_dn,
                        description=r.org,
                        responsable_contact=r.contact,
                        support_contact=r.contact,
                        updated_at=now,
                        join_request_id=r.id,
                    )
                )
            self._audit(
                s,
                "join.approve",
                actor,
                now,
                request_id=r.id,
                domain=r.domain,
                serial=r.serial,
                dn=r.subject_dn,
            )
            view = self._view(r)
        await self.publish(now, actor=actor)
        return view

    async def reject(self, request_id: str, now: datetime, *, actor: str, note: str = "") -> JoinView:
        async with self.sessions.begin() as s:
            r = await self._load(s, request_id, (JoinStatus.PENDING,))
            r.status, r.decided_at, r.decided_by, r.decision_note = (
                JoinStatus.REJECTED,
                now,
                actor,
                note[:500],
            )
            self._audit(s, "join.reject", actor, now, request_id=r.id, domain=r.domain)
            return self._view(r)

    async def suspend(self, request_id: str, now: datetime, *, actor: str) -> JoinView:
        return await self._withdraw(request_id, now, actor, JoinStatus.SUSPENDED, "certificateHold")

    async def remove(self, request_id: str, now: datetime, *, actor: str) -> JoinView:
        return await self._withdraw(request_id, now, actor, JoinStatus.REMOVED, "cessationOfOperation")

    async def _withdraw(
        self, request_id: str, now: datetime, actor: str, status: str, reason: str
    ) -> JoinView:
        pki = self._need_pki()
        allowed = (
            (JoinStatus.APPROVED,)
            if status == JoinStatus.SUSPENDED
            else (JoinStatus.APPROVED, JoinStatus.SUSPENDED)
        )
        async with self.sessions.begin() as s:
            r = await self._load(s, request_id, allowed)
            if r.serial and r.status == JoinStatus.APPROVED:
                pki.revoke(int(r.serial, 16), reason, now)  # RFC 5280 §5.3.1 reason code
            pki.write_crls(now)
            await s.execute(delete(TrustListEntry).where(TrustListEntry.join_request_id == r.id))
            r.status, r.decided_at, r.decided_by = status, now, actor
            self._audit(
                s,
                "join." + status,
                actor,
                now,
                request_id=r.id,
                domain=r.domain,
                serial=r.serial,
                reason=reason,
            )
            view = self._view(r)
        await self.publish(now, actor=actor)
        return view

    # -- entries maintained directly ----------------------------------------------------------------
    @staticmethod
    async def _listed(s: AsyncSession, domain: str | None = None) -> set[tuple[str, str]]:
        """(domain, canonical DN key) of the entries already listed (one DN spelling per subject)."""
        q = select(TrustListEntry.domain, TrustListEntry.dn)
        if domain is not None:
            q = q.where(TrustListEntry.domain == domain)
        keys: dict[str, str] = {}
        out: set[tuple[str, str]] = set()
        for d, text in (await s.execute(q)).all():
            if text not in keys:
                try:
                    keys[text] = parse_dn(text).key
                except DnSyntaxError:
                    keys[text] = text
            out.add((d, keys[text]))
        return out

    async def add_entry(self, entry: Entry, now: datetime, *, actor: str) -> bool:
        """Add one (domain, DN) pair; False when that subject is already listed for the domain."""
        domain = normalise_domain(entry.domain)
        if not is_valid_domain(domain):
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, f"{entry.domain!r} is not a domain name")
        try:
            key = parse_dn(entry.dn_text).key
        except DnSyntaxError as exc:
            raise AuthorityError(AuthorityErrorCode.BAD_REQUEST, f"DN: {exc}") from None
        async with self.sessions.begin() as s:
            if (domain, key) in await self._listed(s, domain):
                return False
            s.add(
                TrustListEntry(
                    domain=domain,
                    dn=entry.dn_text,
                    description=entry.description,
                    responsable_contact=entry.responsable_contact,
                    support_contact=entry.support_contact,
                    updated_at=now,
                )
            )
            self._audit(s, "entry.add", actor, now, domain=domain, dn=entry.dn_text)
        return True

    async def import_list(self, liste: ListeBlanche, now: datetime, *, actor: str) -> int:
        """Seed the authority from an existing list: indexed entries only, one row per (domain, subject)."""
        rows = []
        async with self.sessions.begin() as s:
            seen = await self._listed(s)
            for e in liste.entries:
                if e.dn is None or e.domain not in liste.by_domain or (e.domain, e.dn.key) in seen:
                    continue
                seen.add((e.domain, e.dn.key))
                rows.append(
                    TrustListEntry(
                        domain=e.domain,
                        dn=e.dn_text,
                        description=e.description[:500],
                        responsable_contact=e.responsable_contact[:300],
                        support_contact=e.support_contact[:300],
                        updated_at=now,
                    )
                )
            s.add_all(rows)
            self._audit(s, "list.import", actor, now, sha256=liste.sha256, added=len(rows))
        return len(rows)

    async def entries(self) -> list[Entry]:
        async with self.sessions() as s:
            q = select(TrustListEntry).order_by(TrustListEntry.domain, TrustListEntry.dn)
            return [
                Entry(
                    domain=e.domain,
                    dn_text=e.dn,
                    dn=None,
                    description=e.description,
                    responsable_contact=e.responsable_contact,
                    support_contact=e.support_contact,
                    date_maj=_iso(_aware(e.updated_at)),
                )
                for e in (await s.execute(q)).scalars()
            ]

    # -- publication ------------------------------------------------------------------------------
    async def publish(self, now: datetime, *, actor: str) -> Published:
        if not self.files.exists():
            raise AuthorityError(
                AuthorityErrorCode.NOT_INITIALISED, "no signing certificate: run `trust authority init`"
            )
        entries = await self.entries()
        data = build_liste_blanche_xml(entries, now)
        key = load_private_key(self.files.signer_key)
        sig = sign_detached(data, key)
        sha = hashlib.sha256(data).hexdigest()
        out = self.files.published
        files = [
            (out / SHA_NAME, f"{sha}  {LIST_NAME}\n".encode(), 0o644),
            (out / SIG_NAME, sig, 0o644),
            (out / LIST_NAME, data, 0o644),
            (out / "authority.pem", self.files.signer_cert.read_bytes(), 0o644),
        ]
        if self.pki is not None:
            for crl in self.pki.crl_paths:  # <space>/<ca name>/crl.pem -> crl/<ca name>.pem
                files.append((out / "crl" / f"{crl.parent.name}.pem", crl.read_bytes(), 0o644))
        # all written and fsynced before the first rename: a reader sees list and signature change together
        # (up to the few microseconds between renames; a mismatch fails one refresh, retried next interval)
        atomic_write_many(files)
        async with self.sessions.begin() as s:
            self._audit(s, "list.publish", actor, now, sha256=sha, entries=len(entries))
        return Published(sha, len(entries), out / LIST_NAME)


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def load_signer_cert(root: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(AuthorityFiles(root).signer_cert.read_bytes())
