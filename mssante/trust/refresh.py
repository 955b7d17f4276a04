"""Keep the liste blanche current: load from a file or pull from a URL every N minutes.

Rules (SPECS.md §1, docs/trust.md):
- HTTPS with the trust-space CA pinned (an SSL context holding only that CA file).
- Conditional requests (ETag / If-Modified-Since, RFC 9110 §13.1): a refresh that finds no change costs one
  request, answered 304.
- Integrity: when an authority certificate is configured, a detached signature over the exact bytes
  (``<source>.sig``: raw ECDSA/RSA-PKCS#1 v1.5 SHA-256, checkable with ``openssl dgst -sha256 -verify``)
  must verify; when a checksum source is configured (ANS publishes a SHA-256), it must match.
- The new list is swapped in atomically (TrustState); on any failure the last good list stays, `failures`
  is incremented and one log line is written (never the content).
- Shrink guard: a list losing more than `max_shrink` (default 10 %) of the current domains at once is
  refused until an operator confirms that list's SHA-256 (`mssante trust confirm-shrink SHA256`), since a
  mirror once served a list truncated to ~600 entries.
- The last good list is cached in `state_dir`, so a restart starts from it (and the shrink guard holds
  across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mssante.trust.listeblanche import DEFAULT_MAX_BYTES, ListeBlanche, ListeBlancheError, parse_liste_blanche
from mssante.trust.errors import TrustError
from mssante.trust.state import TrustState
from pki.files import atomic_write
from pki.tls import client_context

log = logging.getLogger("mssante.trust.refresh")

CACHE_NAME = "liste-blanche.xml"
META_NAME = "liste-blanche.json"
CONFIRM_DIR = "confirm-shrink"
PENDING_NAME = "pending-liste-blanche.xml"  # a list refused by the shrink guard, kept for inspection
PENDING_META = "pending-liste-blanche.json"


class RefreshOutcome(StrEnum):
    INSTALLED = "INSTALLED"
    NOT_MODIFIED = "NOT_MODIFIED"  # 304, or a file/body with the SHA-256 already installed
    REFUSED_SHRINK = "REFUSED_SHRINK"
    FAILED = "FAILED"


class RefreshErrorCode(StrEnum):
    UNREACHABLE = "UNREACHABLE"
    HTTP_STATUS = "HTTP_STATUS"
    TOO_LARGE = "TOO_LARGE"
    SIGNATURE_MISSING = "SIGNATURE_MISSING"
    SIGNATURE_MISMATCH = "SIGNATURE_MISMATCH"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    INVALID_LIST = "INVALID_LIST"
    EMPTY_LIST = "EMPTY_LIST"


class RefreshError(TrustError):
    code: RefreshErrorCode

    def __init__(self, code: RefreshErrorCode, detail: str) -> None:
        super().__init__(code, detail)


@dataclass(frozen=True)
class RefreshConfig:
    source: str  # file path or http(s) URL of the list
    state_dir: Path  # cache of the last good list + shrink confirmations
    interval_s: float = 3600.0
    ca_file: Path | None = None  # pinned CA for HTTPS (trust-space root); None: system store
    tls_server_name: str | None = None  # name to verify when the URL host is an IP address (e.g. 127.0.0.1)
    authority_cert: Path | None = None  # when set, `<source>.sig` must verify with this certificate's key
    signature_source: str | None = None  # default `<source>.sig`
    checksum_source: str | None = None  # optional SHA-256 file (ANS style: "hex  name" or "hex")
    max_shrink: float = 0.10
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 30.0


def verify_signature(data: bytes, signature: bytes, cert: x509.Certificate) -> None:
    """Check a detached signature over `data` by `cert`'s key (ECDSA or RSA PKCS#1 v1.5, SHA-256)."""
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise RefreshError(RefreshErrorCode.SIGNATURE_MISMATCH, "unsupported authority key type")
    except InvalidSignature:
        raise RefreshError(
            RefreshErrorCode.SIGNATURE_MISMATCH, "detached signature does not verify"
        ) from None


def parse_checksum(text: bytes) -> str:
    token = text.strip().split(maxsplit=1)[0].decode("ascii", "replace").lower() if text.strip() else ""
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise RefreshError(RefreshErrorCode.CHECKSUM_MISMATCH, "checksum file is not a SHA-256")
    return token


def shrink_ratio(current: ListeBlanche, new: ListeBlanche) -> float:
    """Share of the current domains missing from the new list."""
    old = current.by_domain.keys()
    if not old:
        return 0.0
    lost = sum(1 for d in old if d not in new.by_domain)
    return lost / len(old)


def confirmation_path(state_dir: Path, sha256: str) -> Path:
    return state_dir / CONFIRM_DIR / sha256


def confirm_shrink(state_dir: Path, sha256: str) -> Path:
    """Record an operator's consent to install the list with this SHA-256 despite the shrink guard."""
    sha = sha256.strip().lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError("not a SHA-256 hex digest")
    path = confirmation_path(state_dir, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(datetime.now(UTC).isoformat() + "\n")
    return path


def client_ssl(ca_file: Path | None) -> ssl.SSLContext:
    """HTTPS client context: only `ca_file` trusted (the trust-space root, pinned), pki's hardened settings."""
    if ca_file is not None:
        return client_context(ca_path=ca_file)
    ctx = ssl.create_default_context()  # no pinned CA configured: the system store
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class Refresher:
    """Pulls the list and installs it into a TrustState. Counters are plain attributes (the lead exports them)."""

    def __init__(
        self,
        state: TrustState,
        config: RefreshConfig,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_outcome: Callable[[RefreshOutcome], None] | None = None,
    ) -> None:
        self.state = state
        self._on_outcome = on_outcome
        self.config = config
        self._now = now
        self.failures = 0
        self.successes = 0
        self.not_modified = 0
        self.refused_shrink = 0
        self.requests = 0  # HTTP requests made (a no-change refresh adds exactly one)
        self.last_error: RefreshErrorCode | None = None
        self.last_attempt: datetime | None = None
        self.last_success: datetime | None = None
        self.pending_shrink_sha256: str | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._authority: x509.Certificate | None = None
        if config.authority_cert is not None:
            self._authority = x509.load_pem_x509_certificate(config.authority_cert.read_bytes())
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl(self.config.ca_file)),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            )
        return self._session

    async def start(self) -> Refresher:
        """Install the cached last good list, refresh once, then every `interval_s`."""
        self.load_cached()
        await self.refresh_once()
        self._task = asyncio.create_task(self._loop(), name="trust-refresh")
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.interval_s)
            if self._stop.is_set():
                return
            await self.refresh_once()

    # -- cache -------------------------------------------------------------------------------------
    def load_cached(self) -> bool:
        """Install the last good list from `state_dir` (kept across restarts). False when none/invalid.

        Only a list cached from the same source counts: after a change of source, the new source's
        first list is installed as a first load.
        """
        try:
            meta = json.loads((self.config.state_dir / META_NAME).read_text())
            data = (self.config.state_dir / CACHE_NAME).read_bytes()
            liste = parse_liste_blanche(data, max_bytes=self.config.max_bytes)
        except (OSError, ValueError, ListeBlancheError):
            return False
        if (
            not isinstance(meta, dict)
            or meta.get("source") != self.config.source
            or meta.get("sha256") != liste.sha256
        ):
            return False
        self.etag = meta.get("etag")
        self.last_modified = meta.get("last_modified")
        self.state.install(liste, self._now())
        return True

    def _save(self, data: bytes, liste: ListeBlanche) -> None:
        d = self.config.state_dir
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / CACHE_NAME, data)
        meta = {
            "source": self.config.source,
            "sha256": liste.sha256,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "installed_at": self._now().isoformat(),
        }
        atomic_write(d / META_NAME, json.dumps(meta).encode())

    def _save_pending(self, data: bytes, liste: ListeBlanche, ratio: float) -> None:
        """Keep the refused list where the operator can inspect it (`trust show-list`) before confirming."""
        d = self.config.state_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write(d / PENDING_NAME, data)
            meta = {
                "sha256": liste.sha256,
                "source": self.config.source,
                "domains": len(liste.by_domain),
                "current_domains": len(self.state.liste.by_domain),
                "lost_ratio": round(ratio, 4),
                "refused_at": self._now().isoformat(),
            }
            atomic_write(d / PENDING_META, json.dumps(meta).encode())
        except OSError as exc:
            log.warning("refused trust list not kept for inspection: %s", type(exc).__name__)

    # -- one refresh -------------------------------------------------------------------------------
    async def refresh_once(self) -> RefreshOutcome:
        async with self._lock:  # the loop and an operator-triggered refresh never overlap
            outcome = await self._refresh()
        if self._on_outcome is not None:
            self._on_outcome(outcome)  # e.g. a Prometheus counter
        return outcome

    async def _refresh(self) -> RefreshOutcome:
        now = self._now()
        self.last_attempt = now
        try:
            fetched = await self._fetch_list()
            if fetched is None:
                self.not_modified += 1
                self.last_success = now
                return RefreshOutcome.NOT_MODIFIED
            data, etag, last_modified = fetched
            sha = hashlib.sha256(data).hexdigest()
            if sha == self.state.liste.sha256:  # same bytes (a file source, or a server without validators)
                self.etag, self.last_modified = etag, last_modified
                self.not_modified += 1
                self.last_success = now
                return RefreshOutcome.NOT_MODIFIED
            if (
                sha == self.pending_shrink_sha256
                and not confirmation_path(self.config.state_dir, sha).exists()
            ):
                self.refused_shrink += 1  # the same refused list again: still waiting for the operator
                return RefreshOutcome.REFUSED_SHRINK
            await self._check_integrity(data)
            try:
                # ~100 ms of CPU for the real list: keep the event loop (SMTP sessions) responsive
                liste = await asyncio.to_thread(parse_liste_blanche, data, max_bytes=self.config.max_bytes)
            except ListeBlancheError as exc:
                raise RefreshError(RefreshErrorCode.INVALID_LIST, str(exc.code)) from None
            if not liste.by_domain:
                raise RefreshError(RefreshErrorCode.EMPTY_LIST, "no valid entry")
        except RefreshError as exc:
            return self._fail(exc.code, exc.detail)
        ratio = shrink_ratio(self.state.liste, liste)
        if (
            ratio > self.config.max_shrink
            and not confirmation_path(self.config.state_dir, liste.sha256).exists()
        ):
            self.refused_shrink += 1
            self.pending_shrink_sha256 = liste.sha256
            self._save_pending(data, liste, ratio)
            log.warning(
                "trust list refused by shrink guard: source=%s sha256=%s lost=%.1f%% of %d domains "
                "(confirm with: mssante trust confirm-shrink %s)",
                self.config.source,
                liste.sha256,
                100 * ratio,
                len(self.state.liste.by_domain),
                liste.sha256,
            )
            return RefreshOutcome.REFUSED_SHRINK
        self.etag, self.last_modified = etag, last_modified
        self.state.install(liste, now)
        self.pending_shrink_sha256 = None
        self.successes += 1
        self.last_success = now
        self.last_error = None
        try:
            self._save(data, liste)
            for name in (PENDING_NAME, PENDING_META):
                (self.config.state_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("trust list cache not written: %s", type(exc).__name__)
        log.info(
            "trust list installed: source=%s sha256=%s domains=%d problems=%d",
            self.config.source,
            liste.sha256,
            len(liste.by_domain),
            len(liste.problems),
        )
        return RefreshOutcome.INSTALLED

    def _fail(self, code: RefreshErrorCode, detail: str) -> RefreshOutcome:
        self.failures += 1
        self.last_error = code
        # One line, no content: the detail strings here never carry list data.
        log.warning(
            "trust list refresh failed: source=%s error=%s detail=%s", self.config.source, code, detail
        )
        return RefreshOutcome.FAILED

    async def fetch(self) -> bytes:
        """The source's current bytes, unconditionally, integrity-checked, not installed (for inspection)."""
        src = self.config.source
        data = await self._fetch_aux(src)
        await self._check_integrity(data)
        return data

    async def _fetch_list(self) -> tuple[bytes, str | None, str | None] | None:
        """(bytes, etag, last_modified), or None when the server answers 304."""
        src = self.config.source
        if not _is_url(src):
            return self._read_file(src), None, None
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        body, status, resp_headers = await self._get(src, headers)
        if status == 304:
            return None
        if status != 200:
            raise RefreshError(RefreshErrorCode.HTTP_STATUS, f"HTTP {status}")
        return body, resp_headers.get("ETag"), resp_headers.get("Last-Modified")

    def _read_file(self, path: str) -> bytes:
        try:
            size = os.path.getsize(path)
            if size > self.config.max_bytes:
                raise RefreshError(RefreshErrorCode.TOO_LARGE, f"{size} bytes")
            with open(path, "rb") as f:
                return f.read(self.config.max_bytes + 1)
        except OSError as exc:
            raise RefreshError(RefreshErrorCode.UNREACHABLE, type(exc).__name__) from None

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[bytes, int, Mapping[str, str]]:
        session = await self._http()
        self.requests += 1
        try:
            async with session.get(
                url, headers=headers, allow_redirects=False, server_hostname=self.config.tls_server_name
            ) as resp:
                if resp.status != 200:
                    return b"", resp.status, resp.headers.copy()
                length = resp.content_length
                if length is not None and length > self.config.max_bytes:
                    raise RefreshError(RefreshErrorCode.TOO_LARGE, f"{length} bytes announced")
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(65536):
                    total += len(chunk)
                    if total > self.config.max_bytes:  # size checked before parsing
                        raise RefreshError(RefreshErrorCode.TOO_LARGE, "body over the limit")
                    chunks.append(chunk)
                return b"".join(chunks), resp.status, resp.headers.copy()
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
            raise RefreshError(RefreshErrorCode.UNREACHABLE, type(exc).__name__) from None

    async def _fetch_aux(self, src: str) -> bytes:
        if not _is_url(src):
            return self._read_file(src)
        body, status, _ = await self._get(src, {})
        if status != 200:
            raise RefreshError(RefreshErrorCode.HTTP_STATUS, f"HTTP {status} for {src}")
        return body

    async def _check_integrity(self, data: bytes) -> None:
        if self._authority is not None:
            sig_src = self.config.signature_source or self.config.source + ".sig"
            try:
                sig = await self._fetch_aux(sig_src)
            except RefreshError as exc:
                raise RefreshError(RefreshErrorCode.SIGNATURE_MISSING, exc.detail) from None
            verify_signature(data, sig, self._authority)
        if self.config.checksum_source is not None:
            expected = parse_checksum(await self._fetch_aux(self.config.checksum_source))
            if hashlib.sha256(data).hexdigest() != expected:
                raise RefreshError(
                    RefreshErrorCode.CHECKSUM_MISMATCH, "SHA-256 differs from the checksum file"
                )
