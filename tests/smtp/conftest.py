"""Fixtures: a dev trust space and operators on loopback (see operators.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest


from .operators import Operator, Space, make_operator, refresh_trust  # noqa: E402

from mssante.smtp.server import start_mta, start_submission  # noqa: E402


@pytest.fixture
def space(tmp_path: Path) -> Space:
    return Space.create(tmp_path / "space")


async def start(op: Operator, *, mta: bool = True, submission: bool = True) -> Operator:
    if mta:
        m = await start_mta(op.services, f"{op.ip}:0")
        op.listeners.append(m)
        op.mta_port = m.addresses["mta"][1]
    if submission:
        s = await start_submission(op.services, submission=f"{op.ip}:0", submissions=f"{op.ip}:0")
        op.listeners.append(s)
        op.sub_port = s.addresses["submission"][1]
        op.subs_port = s.addresses["submissions"][1]
    return op


@pytest.fixture
async def ops(space: Space, tmp_path: Path) -> AsyncIterator[dict[str, Operator]]:
    """op-a.test and op-b.test in the trust space, op-x.test outside it (certificate from the same CA)."""
    a = await make_operator(space, tmp_path / "a", "op-a.test", smtp={"command_timeout": 5.0, "data_timeout": 10.0})
    b = await make_operator(space, tmp_path / "b", "op-b.test")
    x = await make_operator(space, tmp_path / "x", "op-x.test", listed=False)
    refresh_trust(space, a, b, x)
    for op in (a, b):
        await start(op)
    yield {"a": a, "b": b, "x": x}
    for op in (a, b, x):
        await op.stop()
