"""A throwaway PostgreSQL server for tests, started from the installed server binaries.

initdb and pg_ctl refuse to run as root, so under root they run as the `postgres` system
user (or `nobody`). The server listens on 127.0.0.1 on a free port, in a temp directory,
with fsync left on: the tests exercise the same durability the gateway relies on.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bindir() -> Path | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(cand, "initdb")) and os.path.exists(os.path.join(cand, "pg_ctl")):
            return Path(cand)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.tmp = Path(tempfile.mkdtemp(prefix="mssante-pg-"))
        self.datadir = self.tmp / "data"
        self.port = free_port()
        self.user = "mssante"
        self._runas: list[str] = []
        if os.geteuid() == 0:
            name = "postgres"
            try:
                pwd.getpwnam(name)
            except KeyError:
                name = "nobody"
            self._runas = ["runuser", "-u", name, "--"]
            shutil.chown(self.tmp, user=name)
            os.chmod(self.tmp, 0o700)

    def _run(self, *args: str) -> None:
        subprocess.run([*self._runas, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.tmp)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8" if self._has_c_utf8() else "--no-locale")
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.tmp} -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts, "-l", str(self.tmp / "log"), "-w",
                  "-t", "60", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start listening")

    @staticmethod
    def _has_c_utf8() -> bool:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
        return "c.utf8" in out or "c.utf-8" in out

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy async URL."""
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
                       check=True, capture_output=True)
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{dbname}"
