"""What `serve` runs: the listeners and services each package provides, wired in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from mssante.app import Services

log = logging.getLogger("mssante.wiring")


async def attach_services(services: Services) -> None:
    """Attach the trust-space services (PKI validation, liste blanche, directory, auth)."""


async def detach_services(services: Services) -> None:
    pass


def extra_http_routes(services: Services) -> list[Callable[[web.Application], None]]:
    return []


async def start_listeners(services: Services) -> dict[str, Any]:
    return {}
