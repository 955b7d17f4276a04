"""Authentication failure rate limits, per account and per client address (issue 5).

Pure: the caller passes `now` (seconds, monotonic or epoch). The same budget applies whether or not
the account exists, so refusals never reveal which accounts exist (no user enumeration). State is per
process; several gateway processes each enforce their own budget (documented in docs/smtp.md).
"""

from __future__ import annotations

from collections import deque


class FailureLimiter:
    def __init__(self, *, per_account: int = 5, per_address: int = 20, window: float = 300.0,
                 max_keys: int = 100_000) -> None:
        self.per_account = per_account
        self.per_address = per_address
        self.window = window
        self._max_keys = max_keys
        self._accounts: dict[str, deque[float]] = {}
        self._addresses: dict[str, deque[float]] = {}

    @staticmethod
    def _count(table: dict[str, deque[float]], key: str, now: float, window: float) -> int:
        q = table.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - window:
            q.popleft()
        if not q:
            del table[key]
            return 0
        return len(q)

    def blocked(self, account: str, address: str, now: float) -> bool:
        """True when either budget is spent: refuse without even checking the credentials."""
        acc = account.strip().lower()
        return (
            (bool(acc) and self._count(self._accounts, acc, now, self.window) >= self.per_account)
            or self._count(self._addresses, address, now, self.window) >= self.per_address
        )

    def failure(self, account: str, address: str, now: float) -> None:
        acc = account.strip().lower()
        for table, key in ((self._accounts, acc), (self._addresses, address)):
            if not key:
                continue
            if len(table) >= self._max_keys and key not in table:
                self._prune(table, now)
            table.setdefault(key, deque()).append(now)

    def success(self, account: str) -> None:
        """A good login clears the account's failures (the address budget stays)."""
        self._accounts.pop(account.strip().lower(), None)

    def _prune(self, table: dict[str, deque[float]], now: float) -> None:
        for k in list(table):
            self._count(table, k, now, self.window)
        if len(table) >= self._max_keys:  # still full: forget the oldest half
            for k in list(table)[: len(table) // 2]:
                del table[k]
