"""DSN (RFC 3464) and MDN (RFC 8098) parsing for leg matching."""

from __future__ import annotations

import pytest

from mssante.y.reports import ReportError, parse_dsn, parse_mdn

DSN = b"""From: MAILER-DAEMON@mx.hopital.mssante.fr
To: labo@labo-t.mssante.fr
Subject: Undelivered Mail
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

Delivery failed.
--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.hopital.mssante.fr
Original-Envelope-Id: y-leg-42

Final-Recipient: rfc822; paul.martin@hopital.mssante.fr
Original-Recipient: rfc822; paul.martin@hopital.mssante.fr
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 mailbox unknown

Final-Recipient: rfc822; other@hopital.mssante.fr
Action: delivered
Status: 2.0.0
--B1
Content-Type: text/rfc822-headers

Message-ID: <y.abc@pfi.test>
Subject: XDM/1.0/DDM+CR

--B1--
"""

MDN_ERROR = b"""From: serviceY_auto@chb.mssante.fr
To: labo@labo-t.mssante.fr
Subject: [KO Int\xc3\xa9gration syst\xc3\xa8me !][902] XDM/1.0/DDM+CR
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="RAA"

--RAA
Content-Type: text/plain; charset=utf-8

Le document n'a pas pu etre integre.
--RAA
Content-Type: message/disposition-notification

Original-Recipient: rfc822;serviceY_auto@chb.mssante.fr
Final-Recipient: rfc822; serviceY_auto@chb.mssante.fr
Original-Message-ID: <y.abc@pfi.test>
Disposition: automatic-action/MDN-sent-automatically; processed/Error: 902^Identifiant de patient inconnu^messageErrorCondition| E^Error^errorSeverity

--RAA--
"""


def test_dsn() -> None:
    report = parse_dsn(DSN)
    assert report.original_envelope_id == "y-leg-42" and report.original_message_id == "<y.abc@pfi.test>"
    failed, ok = report.recipients
    assert failed.final_recipient == "paul.martin@hopital.mssante.fr" and not failed.delivered and failed.final
    assert failed.status == "5.1.1" and failed.smtp_code == 550
    assert ok.delivered and ok.smtp_code == 250


def test_mdn_error() -> None:
    mdn = parse_mdn(MDN_ERROR)
    assert mdn.original_message_id == "<y.abc@pfi.test>"
    assert mdn.final_recipient == "serviceY_auto@chb.mssante.fr"
    assert mdn.disposition_type == "processed" and mdn.error_code == "902"
    assert mdn.error_label == "Identifiant de patient inconnu" and not mdn.success


def test_mdn_success() -> None:
    data = MDN_ERROR.replace(
        b"processed/Error: 902^Identifiant de patient inconnu^messageErrorCondition| E^Error^errorSeverity", b"processed")
    mdn = parse_mdn(data)
    assert mdn.success and mdn.error_code is None and mdn.action_mode == "automatic-action"


def test_not_reports() -> None:
    with pytest.raises(ReportError):
        parse_dsn(MDN_ERROR)
    with pytest.raises(ReportError):
        parse_mdn(b"Subject: hello\r\n\r\nbody")
    with pytest.raises(ReportError):
        parse_dsn(DSN.replace(b"Status: 5.1.1", b"Status: bogus"))
