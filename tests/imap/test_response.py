"""Response rendering details that the transcripts do not reach (mssante.imap.response)."""

from __future__ import annotations

import datetime as dt

from mssante.imap import response


def test_internaldate_cache_keeps_each_zone() -> None:
    # The same instant in two zones compares (and hashes) equal: the cache must not give one the
    # other's offset (RFC 3501 date-time keeps the zone of the message).
    utc = dt.datetime(2026, 1, 2, 12, 0, 5, tzinfo=dt.timezone.utc)
    paris = utc.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert response.internaldate(utc) == b'" 2-Jan-2026 12:00:05 +0000"'
    assert response.internaldate(paris) == b'" 2-Jan-2026 13:00:05 +0100"'
    assert response.internaldate(utc) == b'" 2-Jan-2026 12:00:05 +0000"'
    west = utc.astimezone(dt.timezone(-dt.timedelta(hours=3, minutes=30)))
    assert response.internaldate(west) == b'" 2-Jan-2026 08:30:05 -0330"'


def test_internaldate_naive_is_utc_and_cache_is_bounded() -> None:
    base = dt.datetime(2025, 12, 31, 23, 59, 59)
    assert response.internaldate(base) == b'"31-Dec-2025 23:59:59 +0000"'
    for i in range(response._DATES.limit + 10):
        response.internaldate(base + dt.timedelta(seconds=i))
    assert len(response._DATES) <= response._DATES.limit
    assert response.internaldate(base) == b'"31-Dec-2025 23:59:59 +0000"'


def test_memo_never_exceeds_its_limit() -> None:
    from mssante.imap.memo import Memo

    m: Memo[int, int] = Memo(3)
    assert [m.put(i, i * i) for i in range(7)] == [0, 1, 4, 9, 16, 25, 36]
    assert len(m) <= 3 and m[6] == 36
