"""LoginCache (mssante.imap.authcache): repeated successful logins answered from memory, never at
the expense of rate limits, password changes, disabled mailboxes or plaintext in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update

from .conftest import ADDRESS, OTHER, PASSWORD, Client, Env

from mssante.auth.passwords import hash_password
from mssante.auth.ratelimit import FailureLimiter
from mssante.auth.service import AuthFailure, Authenticator
from mssante.imap.authcache import LoginCache
from mssante.imap.store import SqlStorage
from mssante.store.models import Mailbox


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


_storages: list[SqlStorage] = []


@pytest.fixture(autouse=True)
async def _close_storages() -> AsyncIterator[None]:
    yield
    while _storages:
        await _storages.pop().aclose()


def make(env: Env, *, ttl: float = 60.0, clock: Clock | None = None,
         limiter: FailureLimiter | None = None) -> tuple[LoginCache, Authenticator]:
    auth = Authenticator(env.services.sessions, limiter=limiter or FailureLimiter())
    storage = SqlStorage(env.services.sessions)
    _storages.append(storage)
    return LoginCache(auth, storage.login_row, ttl=ttl, clock=clock or Clock()), auth


async def _set(env: Env, address: str, **values: object) -> None:
    async with env.services.sessions() as s, s.begin():
        await s.execute(update(Mailbox).where(Mailbox.address == address).values(**values))


async def test_repeated_login_is_answered_from_memory(env: Env) -> None:
    cache, _auth = make(env)
    first = await cache.password(ADDRESS, PASSWORD, remote="r")
    second = await cache.password(ADDRESS.upper(), PASSWORD, remote="r")
    assert first.ok and second.ok and cache.hits == 1
    assert second.identity == first.identity and dict(second.identity.mailboxes)[ADDRESS] == env.mailbox_id
    # Another account or another authzid is another entry.
    assert (await cache.password(OTHER, PASSWORD)).ok and cache.hits == 1
    assert (await cache.password(ADDRESS, PASSWORD, authzid=ADDRESS)).ok and cache.hits == 1


async def test_failures_are_never_cached_and_still_counted(env: Env) -> None:
    cache, _auth = make(env, limiter=FailureLimiter(per_account=3, per_address=100))
    assert (await cache.password(ADDRESS, PASSWORD, remote="r")).ok  # cached
    for _ in range(3):
        r = await cache.password(ADDRESS, "wrong password here", remote="r")
        assert not r.ok and r.reason == AuthFailure.BAD_CREDENTIALS
    # The account is now blocked: the cached good password does not get around the limiter.
    r = await cache.password(ADDRESS, PASSWORD, remote="r")
    assert not r.ok and r.reason == AuthFailure.RATE_LIMITED and r.temporary
    assert cache.hits == 0


async def test_password_change_and_disable_take_effect_at_once(env: Env) -> None:
    cache, _auth = make(env)
    assert (await cache.password(ADDRESS, PASSWORD)).ok
    await _set(env, ADDRESS, password_hash=hash_password("a brand new password"))
    r = await cache.password(ADDRESS, PASSWORD)
    assert not r.ok and cache.hits == 0
    assert (await cache.password(ADDRESS, "a brand new password")).ok
    assert (await cache.password(ADDRESS, "a brand new password")).ok and cache.hits == 1
    await _set(env, ADDRESS, enabled=False)
    assert not (await cache.password(ADDRESS, "a brand new password")).ok and cache.hits == 1


async def test_entries_expire(env: Env) -> None:
    clock = Clock()
    cache, _auth = make(env, ttl=30.0, clock=clock)
    assert (await cache.password(ADDRESS, PASSWORD)).ok
    clock.t += 31
    assert (await cache.password(ADDRESS, PASSWORD)).ok and cache.hits == 0  # verified again
    assert (await cache.password(ADDRESS, PASSWORD)).ok and cache.hits == 1


async def test_no_plaintext_kept(env: Env) -> None:
    cache, _auth = make(env)
    assert (await cache.password(ADDRESS, PASSWORD)).ok
    for key, (_exp, stored, result) in cache._entries.items():
        assert len(key) == 32 and PASSWORD.encode() not in key
        assert PASSWORD not in stored and PASSWORD not in repr(result)


async def test_session_login_through_the_cache(env: Env) -> None:
    cache, _auth = make(env)
    for _ in range(2):
        c = Client(env, authenticator=cache)
        await c.start()
        assert "l1 OK" in await c.login()
        assert "* 0 EXISTS" in await c.cmd("s SELECT INBOX")
        await c.close()
    assert cache.hits == 1
