"""Debian clients against the running server over real TLS: mbsync (isync) both ways, curl imaps://,
neomutt in batch mode. Each skips when its binary is not installed."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from .conftest import ADDRESS, PASSWORD, Running, message


async def run(*argv: str, env: dict[str, str] | None = None, stdin: bytes = b"", timeout: float = 60) -> tuple[int, bytes, bytes]:
    p = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(p.communicate(stdin), timeout)
    return p.returncode or 0, out, err


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package; .ci/run installs it)")
    return path


async def test_curl_fetches_a_message(running: Running) -> None:
    curl = need("curl")
    await running.env.deliver(message("via curl", "Corps du message\r\n"))
    url = f"imaps://localhost:{running.imaps.port}/INBOX;UID=1"
    code, out, err = await run(curl, "-sS", "--cacert", str(running.certs.ca_path), "--user", f"{ADDRESS}:{PASSWORD}",
                               url)
    assert code == 0, err
    assert b"Subject: via curl" in out and b"Corps du message" in out
    # And a listing of the mailbox folders.
    code, out, err = await run(curl, "-sS", "--cacert", str(running.certs.ca_path), "--user",
                               f"{ADDRESS}:{PASSWORD}", f"imaps://localhost:{running.imaps.port}/")
    assert code == 0 and b"INBOX" in out and b"Sent" in out, (out, err)


async def test_mbsync_both_ways(running: Running, tmp_path: Path) -> None:
    mbsync = need("mbsync")
    for i in range(3):
        await running.env.deliver(message(f"sync {i}"))
    maildir = tmp_path / "mail"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""
IMAPAccount test
Host localhost
Port {running.imaps.port}
User {ADDRESS}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {running.certs.ca_path}
AuthMechs PLAIN

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel ch
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
""")
    code, out, err = await run(mbsync, "-c", str(rc), "-a")
    assert code == 0, err.decode()
    inbox = list((maildir / "INBOX" / "cur").iterdir()) + list((maildir / "INBOX" / "new").iterdir())
    assert len(inbox) == 3
    # Local changes go up: a new message in a new local folder, and one message flagged + deleted.
    newdir = maildir / "Local"
    for sub in ("cur", "new", "tmp"):
        (newdir / sub).mkdir(parents=True)
    (newdir / "new" / "1700000000.1.host").write_bytes(message("made locally"))
    victim = sorted(inbox)[0]
    victim.rename(maildir / "INBOX" / "cur" / (victim.name.split(":")[0] + ":2,ST"))
    code, out, err = await run(mbsync, "-c", str(rc), "-a")
    assert code == 0, err.decode()
    c = await asyncio.to_thread(_imap_state)
    assert c == (2, 1), c


def _imap_state() -> tuple[int, int]:
    return _state_holder["f"]()


_state_holder: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _state_reader(running: Running) -> None:
    import imaplib

    def f() -> tuple[int, int]:
        m = imaplib.IMAP4_SSL("localhost", running.imaps.port, ssl_context=running.certs.client_context())
        m.login(ADDRESS, PASSWORD)
        inbox = int(m.select("INBOX")[1][0])
        local = int(m.select("Local")[1][0])
        m.logout()
        return inbox, local

    _state_holder["f"] = f


async def test_neomutt_batch_reads_inbox(running: Running, tmp_path: Path) -> None:
    neomutt = need("neomutt")
    await running.env.deliver(message("for neomutt"))
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""
set folder = "imaps://{ADDRESS.replace('@', '%40')}@localhost:{running.imaps.port}/"
set spoolfile = "+INBOX"
set imap_pass = "{PASSWORD}"
set certificate_file = "{tmp_path / 'certs'}"
set ssl_ca_certificates_file = "{running.certs.ca_path}"
set ssl_verify_host = yes
set header_cache = ""
set message_cachedir = ""
set imap_check_subscribed = no
set mbox_type = Maildir
""")
    script = need("script")  # neomutt needs a terminal: util-linux script(1) gives it a pty
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm", COLUMNS="120", LINES="40")
    # Batch mode: copy every message of INBOX into a local mbox, then quit.
    out_mbox = tmp_path / "out.mbox"
    url = f"imaps://{ADDRESS.replace('@', '%40')}@localhost:{running.imaps.port}/INBOX"
    cmdline = (f"{neomutt} -n -F {muttrc} -f {url} -e \"set confirmcreate=no; set confirmappend=no; "
               f"set mbox_type=mbox; push '<tag-pattern>~A<enter><tag-prefix><copy-message>{out_mbox}<enter><quit>'\"")
    code, out, err = await run(script, "-qec", cmdline, "/dev/null", env=env, timeout=30)
    if not out_mbox.exists():
        pytest.skip(f"neomutt could not run non-interactively here (exit {code}): {err[-200:]!r}")
    assert b"Subject: for neomutt" in out_mbox.read_bytes()
