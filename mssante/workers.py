"""Extra IMAP processes (`imap.processes`, issue 6): IMAP on more than one core.

One Python process serves IMAP on one core. With `imap.processes = N`, `serve` starts N-1 children
that each run the IMAP listeners only, on the same addresses (SO_REUSEPORT: the kernel spreads new
connections between the processes). Every process works on the same store; what one process
changes, the others' sessions see through the folder notifier: LISTEN/NOTIFY on PostgreSQL, a
25 ms poll of the SQLite file otherwise (mssante.store.notify). Writes serialise on the database's
own lock, as any two writers do.

- The parent hands each child its configuration as one JSON line on the child's stdin and keeps
  the pipe open: the child stops when that pipe closes, so a parent that dies (even killed) never
  leaves orphans serving.
- A child that exits on its own is logged and started again (back-off up to 30 s).
- A child answers `ready` on stdout once it listens; `start()` waits for every child.
- Per process: the authentication failure budget (docs/smtp.md) and the metrics (the parent's
  /metrics counts its own sessions). Read receipts are recorded in the audit trail by whichever
  process saw the \\Seen; only the parent's sessions call an in-process hook.

    python -m mssante.workers        # (internal) a child: reads its config from stdin
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mssante.config import Config

log = logging.getLogger("mssante.workers")

START_TIMEOUT = 60.0
MAX_BACKOFF = 30.0


class ImapWorkers:
    """The parent's side: start, watch and stop `count` IMAP child processes (a Stoppable)."""

    def __init__(self, config: Config, count: int) -> None:
        self._payload = json.dumps(dataclasses.asdict(config)).encode() + b"\n"
        self.count = count
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        self.restarts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def _spawn(self, i: int) -> asyncio.subprocess.Process:
        # The child imports this very source tree, whatever the working directory.
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mssante.workers", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self._payload)
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() != b"ready":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeError(f"IMAP process {i + 1} did not start (exit code {proc.returncode})")
        self.procs[i] = proc
        log.info("IMAP process %d started (pid %d)", i + 1, proc.pid)
        return proc

    async def start(self) -> ImapWorkers:
        try:
            for i in range(self.count):
                await self._spawn(i)
        except BaseException:
            await self.stop()
            raise
        self._tasks = [asyncio.create_task(self._watch(i), name=f"imap-process-{i + 1}") for i in range(self.count)]
        return self

    async def _watch(self, i: int) -> None:
        backoff = 1.0
        while not self._stopping:
            proc = self.procs[i]
            if proc is not None:
                code = await proc.wait()
                if self._stopping:
                    return
                log.error("IMAP process %d (pid %d) exited with code %s; restarting in %.0f s",
                          i + 1, proc.pid, code, backoff)
                self.procs[i] = None
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            try:
                await self._spawn(i)
                self.restarts += 1
                backoff = 1.0
            except Exception:  # noqa: BLE001 - try again later; the other processes keep serving
                log.exception("restarting IMAP process %d failed", i + 1)
                backoff = min(MAX_BACKOFF, backoff * 2)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for proc in self.procs:
            if proc is not None and proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()  # the child's signal to finish its sessions and exit
        for proc in self.procs:
            if proc is None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                log.warning("IMAP process pid %d did not stop; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.procs = [None] * self.count


# --- the child ------------------------------------------------------------------------------------
async def child_main(config: Config, stdin_closed: asyncio.Future[None]) -> int:
    from mssante.app import Services, utcnow
    from mssante.auth.service import Authenticator
    from mssante.observability.audit import Audit
    from mssante.observability.metrics import Metrics
    from mssante.store.db import make_engine, make_sessions
    from mssante.store.notify import make_notifier
    from mssante.wiring import Upkeep, build_validator, start_imap_listeners

    # No migration here: the parent ran it before starting us.
    engine = make_engine(config.db_url, pool_size=config.database.pool_size)
    services = Services(config=config, engine=engine, sessions=make_sessions(engine),
                        audit=Audit(make_sessions(engine), utcnow), metrics=Metrics(), now=utcnow)
    listeners: dict[str, Any] = {}
    try:
        services.validator = build_validator(services)
        services.authenticator = Authenticator.from_services(services)
        services.notifier = make_notifier(config.db_url, cross_process=True)
        await services.notifier.start()
        listeners = await start_imap_listeners(services)
        listeners["upkeep"] = Upkeep(services, issue_crls=False).start()
        try:
            sys.stdout.write("ready\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the parent went away while we started
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stdin_closed.add_done_callback(lambda _f: stop.set())
        await stop.wait()
    finally:
        for name, listener in reversed(list(listeners.items())):
            try:
                await listener.stop()
            except Exception:  # noqa: BLE001 - stop the others regardless
                log.exception("stopping %s failed", name)
        if services.notifier is not None:
            await services.notifier.stop()
        await engine.dispose()
    return 0


async def _child() -> int:
    from mssante.config import config_from_dict
    from mssante.observability.logs import setup_logging

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = config_from_dict(json.loads(await reader.readline()))
    setup_logging(config.logging.level, config.logging.json)
    closed: asyncio.Future[None] = loop.create_future()

    async def watch_stdin() -> None:
        while await reader.read(4096):
            pass
        if not closed.done():
            closed.set_result(None)

    watcher = asyncio.create_task(watch_stdin())
    try:
        return await child_main(config, closed)
    finally:
        watcher.cancel()


if __name__ == "__main__":
    sys.exit(asyncio.run(_child()))
