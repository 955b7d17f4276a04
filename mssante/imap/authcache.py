"""Cheaper IMAP re-logins: a successful password check remembered for a short time.

Clients (and the benchmark) log in again and again with the same application password: each
time an argon2id verification (~20 ms of CPU in production) and two ORM queries. `LoginCache`
wraps mssante.auth.service.Authenticator and answers a repeated, identical, successful login
from memory, under these rules:

- only successes are remembered; anything else (wrong password, unknown account, rate limit)
  always goes through the Authenticator, so failure counting and rate limits are unchanged;
- a cached login still asks the rate limiter first (`blocked` refuses it exactly as before) and
  reports the success to it, as the Authenticator does;
- the key is HMAC-SHA256 of (account, authzid, password) under a random per-process key: no
  plaintext is kept, the map cannot be looked up without the key, nothing is logged;
- the mailbox row is read on every cached login: a disabled mailbox or a changed password hash
  (the one the password was verified against) drops the entry at once; an entry is kept only
  when the hash did not change while the Authenticator was verifying;
- entries expire after `ttl` seconds (default 60): delegations granted or revoked meanwhile
  are seen at most that late; bounded size (oldest dropped first).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

# (password_hash, enabled) of a mailbox by address, or None.
Lookup = Callable[[str], Awaitable["tuple[str | None, bool] | None"]]


class LoginCache:
    def __init__(self, inner: Any, lookup: Lookup, *, ttl: float = 60.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._lookup = lookup
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, str, Any]] = OrderedDict()
        self.hits = 0

    def __getattr__(self, name: str) -> Any:  # mechanisms, token(), certificate(), limiter ...
        return getattr(self._inner, name)

    def _digest(self, account: str, authzid: str, password: str) -> bytes:
        msg = json.dumps([account, authzid, password], ensure_ascii=True).encode("ascii")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    async def password(self, username: str, password: str, *, remote: str = "", authzid: str = "") -> Any:
        inner = self._inner
        account = username.strip().lower()
        key = self._digest(account, authzid.strip().lower(), password)
        hit = self._entries.get(key)
        if hit is not None:
            expires, stored, result = hit
            limiter = inner.limiter
            if expires > self._clock() and not limiter.blocked(account, remote, inner.clock()):
                row = await self._lookup(account)
                if row is not None and row[1] and row[0] == stored:
                    limiter.success(account)
                    self.hits += 1
                    return result
            self._entries.pop(key, None)  # expired, blocked or changed: the Authenticator decides
        before = await self._lookup(account)
        result = await inner.password(username, password, remote=remote, authzid=authzid)
        if result.ok and before is not None and before[1] and before[0]:
            after = await self._lookup(account)
            if after == before:
                self._entries[key] = (self._clock() + self._ttl, before[0], result)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return result


__all__ = ["LoginCache"]
