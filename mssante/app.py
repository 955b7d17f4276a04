"""The composition root: builds config, store, services and listeners, and hands each its dependencies.

No module-level mutable state: everything a listener needs arrives in `Services`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mssante.config import Config
from mssante.observability.audit import Audit
from mssante.observability.metrics import Metrics


async def cancel_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel background tasks and wait for each to finish (their errors were already logged)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Services:
    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    audit: Audit
    metrics: Metrics
    now: Callable[[], dt.datetime] = utcnow
    validator: Any = None  # pki.validation.Validator for the trust-space anchors, intermediates and CRLs
    trust: Any = None  # mssante.trust.state.TrustState
    directory: Any = None  # annuaire.service.Directory
    authenticator: Any = None  # mssante.auth.service.Authenticator
    notifier: Any = None  # mssante.store.notify: folder change notifications (IMAP IDLE)
    extras: dict[str, Any] = field(default_factory=dict)
