"""Small helpers shared by tests (ports)."""

from __future__ import annotations

import random
import socket

BASE_PORTS = (2525, 2587, 2465, 2143, 2993, 2575, 8080)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block() -> int:
    """An offset N such that every dev listener port + N is free on 127.0.0.1."""
    for _ in range(200):
        offset = random.randrange(10000, 50000, 10)
        if all(_free(p + offset) for p in BASE_PORTS):
            return offset
    raise RuntimeError("no free block of ports")
