"""Leg message conventions (SPECS.md §3)."""

from __future__ import annotations

import email
import email.policy

import pytest
from .y_factory import INS, NOW

from mssante.y.mail import LegGroup, MailError, MailSpec, body_for, build_leg_message, patient_address, subject


def spec(**kw: object) -> MailSpec:
    base: dict[str, object] = dict(
        group=LegGroup.PATIENT, sender="labo@labo-t.mssante.fr", sender_name="Laboratoire Test",
        recipients=(patient_address(INS),), document_label="CR d'examens biologiques", patient_family="Dupont",
        patient_given="Jean", patient_birth_date="19850512", body="Bonjour", xdm=b"PK\x03\x04zip",
        cda_codes=("11502-2", "11502-2"), ins_qualified=True, nil="NIL-1", no_reply=True,
        reply_to="secretariat@labo-t.mssante.fr", read_receipt=True, delivery_key="k|patient",
        message_id_domain="pfi.test",
    )
    base.update(kw)
    return MailSpec(**base)  # type: ignore[arg-type]


def test_headers_and_attachment() -> None:
    msg = build_leg_message(spec(), NOW)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "XDM/1.0/DDM+CR d'examens biologiques DUPONT Jean 12/05/1985"
    assert parsed["To"] == f"{INS}@patient.mssante.fr"
    assert parsed["X-MSS-CODECDA"] == "11502-2" and parsed["X-MSS-INS"] == "O" and parsed["X-MSS-NIL"] == "NIL-1"
    assert parsed["X-MSS-MES"] == "FIN" and parsed["Reply-To"] == "secretariat@labo-t.mssante.fr"
    assert parsed["Disposition-Notification-To"] == "labo@labo-t.mssante.fr"
    assert parsed["Message-ID"].endswith("@pfi.test>") and parsed["Date"]
    (att,) = list(parsed.iter_attachments())
    assert att.get_filename() == "IHE_XDM.ZIP" and att.get_content() == b"PK\x03\x04zip"
    assert build_leg_message(spec(), NOW).as_bytes() == msg.as_bytes()  # deterministic


def test_ps_group_never_gets_fin_and_unqualified_ins() -> None:
    msg = build_leg_message(spec(group=LegGroup.PS, recipients=("a@b.mssante.fr",), ins_qualified=False,
                                 read_receipt=False), NOW)
    assert msg["X-MSS-MES"] is None and msg["X-MSS-INS"] == "N" and msg["Disposition-Notification-To"] is None


def test_refusals() -> None:
    with pytest.raises(MailError):
        build_leg_message(spec(recipients=()), NOW)
    with pytest.raises(MailError):
        build_leg_message(spec(recipients=("not an address",)), NOW)
    with pytest.raises(MailError):
        build_leg_message(spec(xdm=b"\0" * (26 * 1024 * 1024)), NOW)
    with pytest.raises(MailError):
        patient_address("123")


def test_subject_and_bodies() -> None:
    assert subject("CR", "pat-trois", "Dominique", "19790328") == "XDM/1.0/DDM+CR PAT-TROIS Dominique 28/03/1979"
    assert "remplace" in body_for(LegGroup.PS, None, "replace")
    assert body_for(LegGroup.PATIENT, " Texte ", "submit") == "Texte\n"


def test_rendered_directly_seven_bit_folded_and_decodable() -> None:
    """The renderer writes MIME itself: headers 7-bit (RFC 2047), lines of at most 78, CRLF only, and
    what a standard parser reads back is what the spec said."""
    s = spec(sender_name='Laboratoire Élise, "SIL" (Paris)', patient_family="Müller", patient_given="Zoé",
             document_label="Compte rendu d'examens biologiques très détaillé " * 3,
             recipients=tuple(f"dr{i}@b.mssante.fr" for i in range(15)), group=LegGroup.PS,
             body="Première ligne \r\nseconde\n.\n" + "x" * 300, xdm=bytes(range(256)) * 40)
    from mssante.y.mail import render_leg_message

    raw = render_leg_message(s, NOW)
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["From"].addresses[0].display_name == s.sender_name
    assert parsed["From"].addresses[0].addr_spec == s.sender
    assert str(parsed["Subject"]).startswith("XDM/1.0/DDM+Compte rendu")  # the prefix stays readable
    assert parsed["Subject"] == subject(s.document_label, "Müller", "Zoé", "19850512")
    assert [a.addr_spec for a in parsed["To"].addresses] == list(s.recipients)
    text, att = list(parsed.iter_parts())
    assert text.get_content().replace("\r\n", "\n") == "Première ligne \nseconde\n.\n" + "x" * 300 + "\n"
    assert att.get_filename() == "IHE_XDM.ZIP" and att.get_content() == s.xdm
    assert not parsed.defects and not text.defects and not att.defects
    assert render_leg_message(s, NOW) == raw  # a pure function


def test_base64_lines_match_the_email_package_encoding() -> None:
    """The leg's IHE_XDM.ZIP part: the same bytes as base64.encodebytes with CRLF line ends."""
    import base64
    import os

    from mssante.y.mail import _base64_crlf

    for n in (0, 1, 2, 3, 56, 57, 58, 114, 1000, 57 * 300, 57 * 300 + 5):
        data = os.urandom(n)
        assert _base64_crlf(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")
