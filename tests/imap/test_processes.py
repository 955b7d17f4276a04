"""Several IMAP processes on one SQLite store (imap.processes, mssante.workers):

- the SQLite change poller publishes what another connection committed, and only that;
- `mssante serve` with `processes = 2`: connections land in both processes, an APPEND made in one
  process wakes IDLE sessions in both, a killed child is replaced, SIGTERM stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mssante.store.notify import SqlitePollNotifier, make_notifier

from ..tests_support import free_port_block

REPO_ROOT = Path(__file__).resolve().parents[2]


def _folder_db(path: Path) -> None:
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE folder (id INTEGER PRIMARY KEY, highestmodseq INTEGER)")
    c.executemany("INSERT INTO folder VALUES (?, ?)", [(1, 5), (2, 9)])
    c.commit()
    c.close()


async def test_sqlite_poller_publishes_other_connections_changes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _folder_db(db)
    n = make_notifier(f"sqlite+aiosqlite:///{db}", cross_process=True)
    assert isinstance(n, SqlitePollNotifier)
    got: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()
    n.subscribe(1, lambda f, m: got.put_nowait((f, m)))
    await n.start()
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("UPDATE folder SET highestmodseq = 6 WHERE id = 1")
        assert await asyncio.wait_for(got.get(), 10) == (1, 6)
        # A change to a folder nobody here watches publishes nothing; the next one to ours does.
        other.execute("UPDATE folder SET highestmodseq = 10 WHERE id = 2")
        other.execute("UPDATE folder SET highestmodseq = 7 WHERE id = 1")
        assert await asyncio.wait_for(got.get(), 10) == (1, 7)
        other.execute("DELETE FROM folder WHERE id = 1")
        assert await asyncio.wait_for(got.get(), 10) == (1, None)
        assert got.empty()
    finally:
        other.close()
        await n.stop()
    assert n.polls > 0


# --- the real thing: `mssante serve` with two IMAP processes ---------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _inodes(port: int, state: str) -> set[str]:
    """Socket inodes on local port `port` in a TCP state (01 established, 0A listening)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == state:
            inodes.add(f[9])
    return inodes


def _child_listening(parent: int, port: int, deadline: float, not_pid: int = 0) -> int:
    """The parent's child process that listens on `port` (waits for it)."""
    while time.monotonic() < deadline:
        for kid in _children(parent):
            if kid != not_pid and _owned(kid, _inodes(port, "0A")):
                return kid
        time.sleep(0.1)
    raise AssertionError("no IMAP child process listens")


def _owned(pid: int, inodes: set[str]) -> int:
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            n += 1
    return n


class Raw:
    """A minimal blocking IMAP client (IDLE included), over implicit TLS."""

    def __init__(self, port: int, ca: str) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        self.s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
        self.f = self.s.makefile("rb")
        self.n = 0
        assert self.f.readline().startswith(b"* OK")

    def cmd(self, line: str, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = f"a{self.n}".encode()
        if literal is None:
            self.s.sendall(tag + b" " + line.encode() + b"\r\n")
        else:
            self.s.sendall(tag + b" " + line.encode() + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        out = []
        while True:
            ln = self.f.readline()
            assert ln, "connection closed"
            if ln.startswith(tag + b" "):
                assert ln.startswith(tag + b" OK"), ln
                return out
            out.append(ln)

    def idle(self) -> None:
        self.s.sendall(b"i IDLE\r\n")
        assert self.f.readline().startswith(b"+")

    def wait_exists(self) -> int:
        while True:
            ln = self.f.readline()
            assert ln, "connection closed"
            if ln.endswith(b" EXISTS\r\n"):
                return int(ln.split()[1])

    def close(self) -> None:
        self.s.close()


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@dataclass
class Operator:
    """A dev operator initialised by the CLI, with `processes` IMAP processes."""

    data: Path
    port: int  # implicit-TLS IMAP
    ca: str
    login: str  # a LOGIN command for its PER mailbox

    @classmethod
    def init(cls, tmp_path: Path, processes: int) -> Operator:
        data = tmp_path / "var"
        subprocess.run([sys.executable, "-m", "mssante.cli", "--data-dir", str(data), "init", "--ports-offset",
                        str(free_port_block())], check=True, capture_output=True, cwd=REPO_ROOT)
        with (data / "mssante.toml").open("a") as f:
            f.write(f"\n[imap]\nprocesses = {processes}\n")
        accounts = json.loads((data / "dev" / "accounts.json").read_text())
        user = next(m for m in accounts["mailboxes"] if m["type"] == "PER")
        return cls(data, int(accounts["listeners"]["imaps"].split(":")[1]), accounts["operator"]["ca"],
                   f'LOGIN {user["address"]} "{user["password"]}"')

    def serve(self, out: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "mssante.cli", "--data-dir", str(self.data), "serve"],
                                cwd=REPO_ROOT, stdout=out, stderr=out)


def test_serve_with_two_imap_processes(tmp_path: Path) -> None:
    op = Operator.init(tmp_path, 2)
    port, ca, login = op.port, op.ca, op.login
    proc = op.serve(subprocess.PIPE)
    clients: list[Raw] = []
    try:
        deadline = time.monotonic() + 90
        _wait_port(port, deadline)
        child = _child_listening(proc.pid, port, deadline)

        # 24 sessions in IDLE: SO_REUSEPORT spreads them over both processes (all in one: 2^-23).
        for _ in range(24):
            c = Raw(port, ca)
            c.cmd(login)
            c.cmd("SELECT INBOX")
            clients.append(c)
        inodes = _inodes(port, "01")
        in_parent, in_child = _owned(proc.pid, inodes), _owned(child, inodes)
        assert in_parent + in_child == 24 and in_parent > 0 and in_child > 0, (in_parent, in_child)
        for c in clients:
            c.idle()

        # An APPEND made by whichever process takes this connection wakes every IDLE session.
        writer = Raw(port, ca)
        writer.cmd(login)
        msg = b"From: a@op-a.test\r\nTo: b@op-a.test\r\nSubject: t\r\n\r\nhello\r\n"
        writer.cmd("APPEND INBOX", msg)
        assert {c.wait_exists() for c in clients} == {1}
        writer.cmd("APPEND INBOX", msg)
        assert {c.wait_exists() for c in clients} == {2}
        writer.close()

        # A killed child is replaced, and the listeners keep answering meanwhile.
        os.kill(child, signal.SIGKILL)
        while time.monotonic() < deadline and Path(f"/proc/{child}").exists():  # until the parent reaped it
            time.sleep(0.05)
        r = Raw(port, ca)  # served by the parent while the child is away
        r.cmd(login)
        r.close()
        _child_listening(proc.pid, port, deadline, not_pid=child)
        for _ in range(6):
            r = Raw(port, ca)
            r.cmd(login)
            assert any(b"EXISTS" in ln for ln in r.cmd("SELECT INBOX"))
            r.close()
    finally:
        for c in clients:
            c.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0
    assert not _children(proc.pid)


def test_children_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives the parent no chance to stop its children: they see their stdin close and exit."""
    op = Operator.init(tmp_path, 3)
    port = op.port
    proc = op.serve()
    try:
        deadline = time.monotonic() + 90
        first = _child_listening(proc.pid, port, deadline)
        second = _child_listening(proc.pid, port, deadline, not_pid=first)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    while time.monotonic() < deadline and any(_alive(p) for p in (first, second)):
        time.sleep(0.1)
    assert not _alive(first) and not _alive(second)
    _assert_port_free(port)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_port_free(port: int) -> None:
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "something still listens"


async def test_sqlite_poller_survives_a_missing_file_and_logs_once(tmp_path: Path, caplog) -> None:
    import logging

    db = tmp_path / "later.db"
    n = SqlitePollNotifier(str(db), interval=0.01)
    got: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()
    n.subscribe(1, lambda f, m: got.put_nowait((f, m)))
    with caplog.at_level(logging.INFO, logger="mssante.store.notify"):
        await n.start()
        try:
            while n.polls < 10:
                await asyncio.sleep(0.01)
            assert n.failing
            _folder_db(db)  # the file appears
            assert await asyncio.wait_for(got.get(), 10) == (1, 5)
            assert not n.failing
        finally:
            await n.stop()
    assert [r.levelname for r in caplog.records].count("WARNING") == 1
