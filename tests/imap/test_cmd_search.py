"""SEARCH and SORT: every key, charsets, ESEARCH, SEARCHRES, MODSEQ."""

from __future__ import annotations

from .conftest import Client, Env, message

B64 = (b"From: Labo <labo@op-b.test>\r\nTo: dr.house@op-a.test\r\nCc: sec@op-a.test\r\nSubject: =?utf-8?b?w6l0w6k=?=\r\n"
       b"Date: Tue, 01 Sep 2026 08:00:00 +0000\r\nX-MSS-MES: FIN\r\nContent-Type: text/plain; charset=utf-8\r\n"
       b"Content-Transfer-Encoding: base64\r\n\r\nUsOpc3VsdGF0IG5vcm1hbA==\r\n")


async def _setup(env: Env, c: Client) -> None:
    await env.deliver(message("alpha", "first body\r\n"))
    await env.deliver(B64)
    await env.deliver(message("gamma", "x" * 3000 + "\r\n", frm="z@op-c.test"))
    await c.cmd("s SELECT INBOX")
    await c.cmd("f STORE 1 +FLAGS (\\Seen \\Flagged $Done)")


async def test_keys(env: Env, logged: Client) -> None:
    await _setup(env, logged)
    cases = {
        "ALL": "1 2 3", "SEEN": "1", "UNSEEN": "2 3", "FLAGGED": "1", "UNFLAGGED": "2 3", "KEYWORD $Done": "1",
        "UNKEYWORD $Done": "2 3", "ANSWERED": "", "UNANSWERED": "1 2 3", "DELETED": "", "UNDELETED": "1 2 3",
        "DRAFT": "", "UNDRAFT": "1 2 3", "NEW": "", "OLD": "1 2 3", "RECENT": "",
        "LARGER 1000": "3", "SMALLER 1000": "1 2", "FROM labo": "2", "TO dr.house": "1 2 3", "CC sec": "2",
        "BCC x": "", "SUBJECT alpha": "1", "BODY résultat": "2", "TEXT résultat": "2", "TEXT X-MSS-MES": "",
        "TEXT alpha": "1", "HEADER X-MSS-MES FIN": "2", 'HEADER X-MSS-MES ""': "2", "SENTBEFORE 1-Oct-2026": "2",
        "SENTON 1-Sep-2026": "2", "SENTSINCE 1-Oct-2026": "1 3", "SINCE 1-Jan-2000": "1 2 3", "BEFORE 1-Jan-2000": "",
        "ON 1-Jan-2000": "", "2:*": "2 3", "UID 1,3": "1 3", "NOT SEEN": "2 3", "OR SEEN LARGER 1000": "1 3",
        "(SEEN FLAGGED)": "1", "MODSEQ 1": "1 2 3", "YOUNGER 3600": "1 2 3", "OLDER 3600": "",
    }
    for key, want in cases.items():
        r = await logged.cmd(f"a SEARCH CHARSET UTF-8 {key}")
        line = [ln for ln in r.splitlines() if ln.startswith("* SEARCH")][0]
        got = line[len("* SEARCH"):].split("(")[0].strip()
        assert got == want, (key, got, want)


async def test_esearch_and_saved(env: Env, logged: Client) -> None:
    await _setup(env, logged)
    r = await logged.cmd("a UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert '* ESEARCH (TAG "a") UID MIN 2 MAX 3 ALL 2:3 COUNT 2' in r
    r = await logged.cmd("b SEARCH RETURN () ALL")
    assert '* ESEARCH (TAG "b") ALL 1:3' in r
    await logged.cmd("c SEARCH RETURN (SAVE) FLAGGED")
    r = await logged.cmd("d FETCH $ (UID)")
    assert "* 1 FETCH (UID 1)" in r and "* 2 FETCH" not in r
    r = await logged.cmd("e SEARCH RETURN (COUNT) DELETED")
    assert "COUNT 0" in r


async def test_bad_charset_and_sort(env: Env, logged: Client) -> None:
    await _setup(env, logged)
    r = await logged.cmd("a SEARCH CHARSET ISO-2022-JP ALL")
    assert "a BAD [BADCHARSET" in r
    r = await logged.cmd("b SORT (REVERSE SIZE) UTF-8 ALL")
    assert "* SORT 3 " in r
    r = await logged.cmd("c UID SORT (SUBJECT) UTF-8 ALL")
    assert "* SORT 1 3 2" in r
    r = await logged.cmd("d SORT (FROM) UTF-8 NOT SEEN")
    assert "* SORT 2 3" in r


async def test_thread_orderedsubject(env: Env, logged: Client) -> None:
    await env.deliver(message("Bilan"))
    await env.deliver(message("Autre"))
    await env.deliver(message("Re: Bilan"))
    await env.deliver(message("RE: Fwd: bilan"))
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert "* THREAD (1 (3)(4))(2)" in r, r
    r = await logged.cmd("d UID THREAD ORDEREDSUBJECT UTF-8 NOT UID 4")
    assert "* THREAD (1 3)(2)" in r, r
    assert "THREAD=ORDEREDSUBJECT" in await logged.cmd("b CAPABILITY")
    assert "c BAD" in await logged.cmd("c THREAD REFERENCES UTF-8 ALL")
