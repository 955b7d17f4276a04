"""CREATE / DELETE / RENAME / SUBSCRIBE / LIST / LSUB / STATUS / NAMESPACE / ENABLE / ID."""

from __future__ import annotations

from .conftest import Client, Env, message


async def test_create_hierarchy_and_list(logged: Client) -> None:
    assert "a OK" in await logged.cmd("a CREATE Patients/Dupont/2026")
    r = await logged.cmd('b LIST "" "Patients/*"')
    assert '* LIST (\\HasChildren) "/" "Patients/Dupont"' in r
    assert '* LIST (\\HasNoChildren) "/" "Patients/Dupont/2026"' in r
    r = await logged.cmd('c LIST "" "%"')
    assert '"Patients"' in r and "Dupont" not in r
    r = await logged.cmd('d LIST "Patients/" "%"')
    assert '"Patients/Dupont"' in r and '"Patients"\r\n' not in r
    r = await logged.cmd('e LIST "" ""')
    assert '* LIST (\\Noselect) "/" ""' in r
    assert "ALREADYEXISTS" in await logged.cmd("f CREATE Patients")
    assert "g NO" in await logged.cmd("g CREATE inbox")
    assert "h NO" in await logged.cmd('h CREATE "a//b"')
    assert "i OK" in await logged.cmd("i CREATE Suivis (USE (\\Flagged))")
    assert "\\Flagged" in await logged.cmd('j LIST "" Suivis')


async def test_delete_and_rename(env: Env, logged: Client) -> None:
    await logged.cmd("a CREATE Old/Child")
    assert "INUSE" in await logged.cmd("b DELETE Old")
    assert "c OK" in await logged.cmd("c RENAME Old New")
    r = await logged.cmd('d LIST "" "*"')
    assert '"New/Child"' in r and '"Old' not in r
    assert "e OK" in await logged.cmd("e DELETE New/Child")
    assert "f NO [NONEXISTENT]" in await logged.cmd("f DELETE New/Child")
    assert "g NO" in await logged.cmd("g DELETE INBOX")


async def test_rename_inbox_moves_messages(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    assert "a OK" in await logged.cmd("a RENAME INBOX Saved")
    assert "MESSAGES 0" in await logged.cmd("b STATUS INBOX (MESSAGES)")
    assert "MESSAGES 1" in await logged.cmd("c STATUS Saved (MESSAGES)")


async def test_subscriptions_and_extended_list(logged: Client) -> None:
    await logged.cmd("a CREATE Projets")
    r = await logged.cmd('b LSUB "" "*"')
    assert "Projets" not in r and "* LSUB () \"/\" INBOX" in r
    await logged.cmd("c SUBSCRIBE Projets")
    assert "Projets" in await logged.cmd('d LSUB "" "*"')
    r = await logged.cmd('e LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN STATUS (MESSAGES UIDNEXT SIZE))')
    assert '\\Subscribed) "/" "Projets"' in r and '* STATUS "Projets" (MESSAGES 0 UIDNEXT 1 SIZE 0)' in r
    await logged.cmd("f UNSUBSCRIBE Projets")
    assert "Projets" not in await logged.cmd('g LSUB "" "*"')
    r = await logged.cmd('h LIST (SPECIAL-USE) "" "*"')
    assert "\\Sent" in r and "INBOX" not in r


async def test_status_namespace_enable_id(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    r = await logged.cmd("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE DELETED)")
    assert "MESSAGES 1 RECENT 0 UIDNEXT 2 UIDVALIDITY" in r and "UNSEEN 1" in r and "DELETED 0" in r
    assert "a2 BAD" in await logged.cmd("a2 STATUS INBOX (BOGUS)")
    assert '* NAMESPACE (("" "/")) NIL NIL' in await logged.cmd("b NAMESPACE")
    r = await logged.cmd("c ENABLE CONDSTORE X-UNKNOWN IMAP4rev2")
    assert "* ENABLED CONDSTORE IMAP4rev2" in r
    assert '* ID ("name" "mssante"' in await logged.cmd('d ID ("name" "test")')
    # IMAP4rev2 enabled: SEARCH answers ESEARCH, SELECT has no RECENT.
    r = await logged.cmd("e SELECT INBOX")
    assert "RECENT" not in r
    assert '* ESEARCH (TAG "f") ALL 1' in await logged.cmd("f SEARCH ALL")


async def test_utf8_mailbox_names_listed_in_mutf7(logged: Client) -> None:
    await logged.cmd("a CREATE &AMk-l&AOk-ments")
    assert '"&AMk-l&AOk-ments"' in await logged.cmd('b LIST "" "*"')
