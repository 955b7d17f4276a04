"""Crash safety of IMAP writes: `mssante serve` (two IMAP processes, so both the loop-side writes
and the lock-file hand-offs run) is killed with SIGKILL in the middle of a stream of APPENDs;
after a restart every APPEND that was acknowledged (APPENDUID) is there, with its content."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path

from .test_processes import Operator, Raw, _child_listening, _wait_port

APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def _append_loop(port: int, ca: str, login: str, k: int, acked: list[tuple[int, bytes]], stop: threading.Event) -> None:
    try:
        c = Raw(port, ca)
        c.cmd(login)
        i = 0
        while not stop.is_set():
            marker = b"crash-%d-%d" % (k, i)
            msg = b"From: a@op-a.test\r\nTo: b@op-a.test\r\nSubject: " + marker + b"\r\n\r\n" + marker * 40 + b"\r\n"
            c.n += 1
            tag = b"a%d" % c.n
            c.s.sendall(tag + b" APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
            while True:
                ln = c.f.readline()
                if not ln:
                    return
                if ln.startswith(tag + b" "):
                    break
            m = APPENDUID.search(ln)
            assert ln.startswith(tag + b" OK") and m, ln
            acked.append((int(m.group(2)), marker))  # acknowledged: must survive the crash
            i += 1
    except OSError:
        return  # the server died under us: what was acknowledged is in `acked`


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    op = Operator.init(tmp_path, 2)
    port, ca, login = op.port, op.ca, op.login

    proc = op.serve()
    acked: list[tuple[int, bytes]] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 90
        _wait_port(port, deadline)
        child = _child_listening(proc.pid, port, deadline)
        threads = [threading.Thread(target=_append_loop, args=(port, ca, login, k, acked, stop)) for k in range(6)]
        for t in threads:
            t.start()
        while time.monotonic() < deadline and len(acked) < 150:
            time.sleep(0.01)
        # Kill the whole gateway at once (the parent, then the child, as a power cut would).
        proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert len(acked) >= 150

    proc = op.serve()
    try:
        _wait_port(port, time.monotonic() + 90)
        c = Raw(port, ca)
        c.cmd(login)
        c.cmd("SELECT INBOX")
        found: dict[int, bytes] = {}
        uid = 0
        for ln in c.cmd("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"):
            m = re.search(rb"UID (\d+)", ln)
            if m:
                uid = int(m.group(1))
            elif ln.startswith(b"Subject: "):
                found[uid] = ln[9:].strip()
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    missing = [uid for uid, marker in acked if found.get(uid) != marker]
    assert not missing, f"{len(missing)} acknowledged APPENDs lost or changed: {missing[:10]}"
