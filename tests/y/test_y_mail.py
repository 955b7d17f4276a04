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
