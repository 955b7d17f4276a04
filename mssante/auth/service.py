"""The Authenticator: password, token or certificate in, typed `AuthResult` out (SMTP and IMAP share it).

    auth = Authenticator(sessions, validator=v, tokens=TokenVerifier(...), limiter=FailureLimiter())
    r = await auth.password("dr.x@op-a.test", "app-password", remote="192.0.2.1")
    r = await auth.token(access_token, username="dr.x@op-a.test", remote=...)   # XOAUTH2/OAUTHBEARER
    r = await auth.certificate(cert, authzid="", remote=...)                    # EXTERNAL (mTLS)
    if r.ok: r.identity.mailbox_ids  # the mailboxes this identity may open and send as

Rules (SPECS.md §2, issue 5):
- application passwords are per mailbox (argon2id, mssante/auth/passwords.py); the user name is the address;
- a token's IDNPS/RPPS must own the mailbox asked for (Mailbox.owner_idnps) or be one of its delegates;
- a client certificate (ORG/APP, AUTH_CLI usage) must validate (pki, role TLS client) and its SHA-256
  fingerprint must be registered on the mailbox (Mailbox.cert_sha256);
- disabled mailboxes never authenticate;
- failures are rate-limited per account and per client address; the answer for an unknown account, a
  wrong secret and a blocked account is the same (`reason` differs only in the audit trail).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mssante.auth.passwords import verify_password
from mssante.auth.ratelimit import FailureLimiter
from mssante.auth.tokens import TokenError, TokenVerifier
from mssante.store.models import Mailbox, MailboxDelegate


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class AuthFailure(StrEnum):
    BAD_CREDENTIALS = "BAD_CREDENTIALS"  # unknown account, wrong password, disabled mailbox
    RATE_LIMITED = "RATE_LIMITED"
    BAD_TOKEN = "BAD_TOKEN"  # noqa: S105 (a reason code, not a secret)
    NOT_OWNER = "NOT_OWNER"  # valid token or certificate, but not for the mailbox asked for
    BAD_CERTIFICATE = "BAD_CERTIFICATE"  # missing, invalid, revoked
    UNKNOWN_CERTIFICATE = "UNKNOWN_CERTIFICATE"  # valid but registered on no mailbox
    UNAVAILABLE = "UNAVAILABLE"  # the mechanism is not configured


@dataclass(frozen=True, slots=True)
class Identity:
    method: str  # "password" | "token" | "certificate"
    login: str  # the name authenticated: an address, an IDNPS or a certificate subject
    mailboxes: tuple[tuple[str, int], ...]  # (address, id) this identity may open and send as (own + delegated)
    idnps: str | None = None
    primary: str | None = None  # the mailbox logged into (the user name / authzid), if one

    @property
    def mailbox_ids(self) -> frozenset[int]:
        return frozenset(i for _, i in self.mailboxes)

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(a for a, _ in self.mailboxes)

    def may_send_as(self, address: str) -> bool:
        return address.lower() in self.addresses

    def narrowed(self, address: str) -> Identity:
        """The same identity restricted to one of its mailboxes (XOAUTH2 user=, PLAIN authzid)."""
        a = address.lower()
        return Identity(self.method, self.login, tuple(m for m in self.mailboxes if m[0] == a), self.idnps, a)


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    identity: Identity | None = None
    reason: AuthFailure | None = None
    detail: str = ""  # for the audit trail and logs; never sent to the client
    temporary: bool = False  # a temporary refusal (rate limit): 454 in SMTP

    @staticmethod
    def fail(reason: AuthFailure, detail: str = "", *, temporary: bool = False) -> AuthResult:
        return AuthResult(False, None, reason, detail, temporary)


@dataclass
class Authenticator:
    sessions: async_sessionmaker[AsyncSession]
    validator: Any = None  # pki.validation.Validator (EXTERNAL)
    tokens: TokenVerifier | None = None  # XOAUTH2 / OAUTHBEARER
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    now: Callable[[], dt.datetime] = _utcnow
    clock: Callable[[], float] = time.monotonic  # rate-limit windows

    @classmethod
    def from_services(cls, services: Any) -> Authenticator:
        cfg = services.config.auth
        tokens = None
        if cfg.jwks_path:
            tokens = TokenVerifier.from_file(cfg.jwks_path, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience)
        return cls(
            services.sessions,
            validator=services.validator,
            tokens=tokens,
            limiter=FailureLimiter(per_account=cfg.max_failures_per_account, per_address=cfg.max_failures_per_address,
                                   window=float(cfg.failure_window_seconds)),
            now=services.now,
        )

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """SASL mechanisms that can succeed with this configuration (EXTERNAL also needs a client cert)."""
        out = ["PLAIN", "LOGIN"]
        if self.tokens is not None and self.tokens.configured:
            out += ["XOAUTH2", "OAUTHBEARER"]
        if self.validator is not None:
            out.append("EXTERNAL")
        return tuple(out)

    # --- password ------------------------------------------------------------------------------------
    async def password(self, username: str, password: str, *, remote: str = "", authzid: str = "") -> AuthResult:
        account = username.strip().lower()
        if self.limiter.blocked(account, remote, self.clock()):
            return AuthResult.fail(AuthFailure.RATE_LIMITED, "too many failures", temporary=True)
        async with self.sessions() as s:
            box = await s.scalar(select(Mailbox).where(Mailbox.address == account))
        stored = box.password_hash if box is not None and box.enabled else None
        # Constant work whether or not the account exists (passwords.verify_password uses a dummy hash).
        good = await asyncio.to_thread(verify_password, stored, password)
        if not good or box is None:
            self.limiter.failure(account, remote, self.clock())
            return AuthResult.fail(AuthFailure.BAD_CREDENTIALS, "unknown account or wrong password")
        self.limiter.success(account)
        ident = await self._identity("password", box.address, [box], delegate_keys=[box.address])
        return self._authorize(ident, authzid.strip().lower())

    # --- Pro Santé Connect token (XOAUTH2 / OAUTHBEARER) ----------------------------------------------
    async def token(self, token: str, *, username: str = "", remote: str = "") -> AuthResult:
        account = username.strip().lower()
        if self.tokens is None or not self.tokens.configured:
            return AuthResult.fail(AuthFailure.UNAVAILABLE, "no token issuer configured")
        if self.limiter.blocked(account, remote, self.clock()):
            return AuthResult.fail(AuthFailure.RATE_LIMITED, "too many failures", temporary=True)
        try:
            claims = self.tokens.verify(token, self.now())
        except TokenError as e:
            self.limiter.failure(account, remote, self.clock())
            return AuthResult.fail(AuthFailure.BAD_TOKEN, e.reason.value)
        async with self.sessions() as s:
            owned = list((await s.scalars(select(Mailbox).where(Mailbox.owner_idnps == claims.idnps))).all())
        ident = await self._identity("token", claims.idnps, owned, delegate_keys=[claims.idnps], idnps=claims.idnps)
        if not ident.mailbox_ids:
            self.limiter.failure(account, remote, self.clock())
            return AuthResult.fail(AuthFailure.NOT_OWNER, f"IDNPS {claims.idnps} owns no mailbox here")
        result = self._authorize(ident, account)
        if not result.ok:
            self.limiter.failure(account, remote, self.clock())
        else:
            self.limiter.success(account)
        return result

    # --- client certificate (EXTERNAL) -----------------------------------------------------------------
    async def certificate(self, cert: x509.Certificate | None, *, authzid: str = "", remote: str = "") -> AuthResult:
        if cert is None:
            return AuthResult.fail(AuthFailure.BAD_CERTIFICATE, "no client certificate")
        if self.validator is None:
            return AuthResult.fail(AuthFailure.UNAVAILABLE, "no certificate validator configured")
        from pki.validation import Role  # pki is a sibling package; imported lazily for light start-up

        decision = self.validator.validate(cert, Role.TLS_CLIENT, self.now())
        if not decision.ok:
            return AuthResult.fail(AuthFailure.BAD_CERTIFICATE, f"{decision.reason}: {decision.detail}")
        fp = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        async with self.sessions() as s:
            boxes = list((await s.scalars(select(Mailbox).where(Mailbox.cert_sha256 == fp))).all())
        ident = await self._identity("certificate", cert.subject.rfc4514_string(), boxes, delegate_keys=[])
        if not ident.mailbox_ids:
            return AuthResult.fail(AuthFailure.UNKNOWN_CERTIFICATE, "certificate registered on no mailbox")
        return self._authorize(ident, authzid.strip().lower())

    # --- helpers ---------------------------------------------------------------------------------------
    def _authorize(self, ident: Identity, authzid: str) -> AuthResult:
        """With an authorization identity (PLAIN authzid, XOAUTH2 user), narrow to that one mailbox."""
        if not authzid or authzid == ident.login.lower():
            return AuthResult(True, ident)
        if authzid not in ident.addresses:
            return AuthResult.fail(AuthFailure.NOT_OWNER, f"{ident.login} may not use {authzid}")
        return AuthResult(True, ident.narrowed(authzid))

    async def _identity(self, method: str, login: str, boxes: list[Mailbox], *, delegate_keys: list[str],
                        idnps: str | None = None) -> Identity:
        boxes = [b for b in boxes if b.enabled]
        found = {b.address: int(b.id) for b in boxes}
        keys = [k.lower() for k in delegate_keys] + sorted(found)
        if keys:
            async with self.sessions() as s:
                rows = (
                    await s.execute(
                        select(Mailbox.id, Mailbox.address)
                        .join(MailboxDelegate, MailboxDelegate.mailbox_id == Mailbox.id)
                        .where(or_(MailboxDelegate.delegate.in_(keys)), Mailbox.enabled.is_(True))
                    )
                ).all()
            for i, a in rows:
                found[str(a)] = int(i)
        primary = login.lower() if method == "password" else None
        return Identity(method, login, tuple(sorted(found.items())), idnps, primary)
