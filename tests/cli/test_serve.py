"""`mssante serve` on a clean data directory: first run creates the dev trust space,
the HTTP port answers /healthz and /metrics, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from ..tests_support import free_port_block

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_first_run_answers_health_and_stops_on_sigterm(tmp_path):
    data = tmp_path / "var"
    offset = free_port_block()
    subprocess.run([sys.executable, "-m", "mssante.cli", "--data-dir", str(data), "init", "--ports-offset", str(offset)],
                   check=True, capture_output=True, cwd=REPO_ROOT)
    port = json.loads((data / "dev" / "accounts.json").read_text())["listeners"]["http"].split(":")[1]
    proc = subprocess.Popen([sys.executable, "-m", "mssante.cli", "--data-dir", str(data), "serve"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert body is not None, proc.stderr.read1().decode() if proc.poll() is not None else "no answer"
        assert body["status"] == "ok" and body["domain"] == "op-a.test"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"mssante_smtp_messages_total" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0


def test_serve_creates_dev_space_on_first_run(tmp_path):
    """With no config at all, serve initialises ./var itself (the README's first command)."""
    offset = free_port_block()
    # Start from an empty directory, but on free ports: init must run inside serve.
    data = tmp_path / "var"
    proc = subprocess.Popen([sys.executable, "-m", "mssante.cli", "--data-dir", str(data), "serve", "--ports-offset",
                             str(offset)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (data / "dev" / "accounts.json").exists():
            time.sleep(0.2)
        assert (data / "dev" / "accounts.json").exists()
        port = int(json.loads((data / "dev" / "accounts.json").read_text())["listeners"]["http"].split(":")[1])
        ok = False
        while time.monotonic() < deadline and not ok:
            with socket.socket() as s:
                ok = s.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.1)
        assert ok
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
