"""The ``annuaire`` CLI group (argparse built here, db_url set by the test) and the guarded export."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fhir.resources.R4B.bundle import Bundle

from annuaire import cli
from annuaire.export import export_extraction, safe_value
from annuaire.formats import MSS_COLUMNS, detect_layout, split_line


def _run(db_url: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mssante")
    sub = parser.add_subparsers(dest="group", required=True)
    cli.register(sub)
    args = parser.parse_args(list(argv))
    args.db_url = db_url  # the top-level CLI does this before dispatch (CONTRACTS.md)
    return int(args.func(args))


def test_cli_import_search_show_stats_export(db_url: str, files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(db_url, "annuaire", "import", str(files["mssante_zip"]), str(files["activite"]),
                str(files["own"])) == 0
    out = capsys.readouterr().out
    assert "mssante," in out and "activite," in out and "own," in out
    assert _run(db_url, "annuaire", "stats", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["mailboxes_liste_rouge"] == 2 and stats["open_PER"] > stats["open_ORG"] > 0

    assert _run(db_url, "annuaire", "search", "--name", "lefevre", "--limit", "3", "--json") == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and all("LEFÈVRE" in h["display_name"] for h in hits)
    addr = hits[0]["address"]

    assert _run(db_url, "annuaire", "show", addr.upper()) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["address"] == addr and shown["open"] is True
    assert _run(db_url, "annuaire", "show", hits[0]["idnps"]) == 0
    assert json.loads(capsys.readouterr().out)["resourceType"] == "Practitioner"
    assert _run(db_url, "annuaire", "show", "nobody@example.org") == 1
    assert "unknown address" in capsys.readouterr().err

    out_txt = tmp_path / "export.txt"
    assert _run(db_url, "annuaire", "export", "-o", str(out_txt)) == 0
    lines = out_txt.read_text(encoding="utf-8").splitlines()
    assert detect_layout(lines[0]).width == 31 and len(lines) == 1 + 18  # 20 own, 2 liste rouge left out
    assert _run(db_url, "annuaire", "export", "--with-liste-rouge", "-o", str(out_txt)) == 0
    assert len(out_txt.read_text(encoding="utf-8").splitlines()) == 1 + 20
    out_json = tmp_path / "export.json"
    assert _run(db_url, "annuaire", "export", "--format", "fhir", "-o", str(out_json)) == 0
    bundle = json.loads(out_json.read_text(encoding="utf-8"))
    Bundle.model_validate(bundle)
    flags = [e["extension"][1]["extension"][-1]["valueBoolean"] for entry in bundle["entry"]
             for e in entry["resource"]["telecom"]]
    assert flags.count(True) == 2


def test_cli_bad_file_exits_1_with_one_line(db_url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "Extraction_Correspondance_MSSante_bad.txt"
    bad.write_text("Nom|Prénom|\nx|y|\n", encoding="utf-8")
    assert _run(db_url, "annuaire", "import", "--no-progress", str(bad)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognised header" in err[0]
    assert _run(db_url, "annuaire", "import", str(tmp_path / "missing.txt")) == 2


@pytest.mark.parametrize("value,expected", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+33 1 02", "'+33 1 02"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tcmd", "'\tcmd"),
    ("\rcmd", "' cmd"),
    ("a|b", "a b"),
    ("line1\nline2", "line1 line2"),
    ("Jean-Marie", "Jean-Marie"),
    ("", ""),
])
def test_safe_value(value: str, expected: str) -> None:
    assert safe_value(value) == expected


def test_export_cannot_forge_columns_or_rows() -> None:
    box = SimpleNamespace(**{c: "" for c in (
        "type address id_type id_pp idnps structure_id_type structure_id service civility family given "
        "category_code category_label profession_code profession_label sf_code sf_label org_name enseigne l2 "
        "l3 l4_number l4_repeat l4_type l4_street l5 l6 postal_code department country").split()})
    box.type, box.address, box.dematerialisation, box.liste_rouge = "ORG", "x@y.mssante.fr", True, False
    box.service = "Urgences|EVIL\n=cmd|"
    box.org_name = "=1+1"
    buf = io.StringIO()
    rep = export_extraction([box], buf)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and rep.sanitized_values == 2
    fields = split_line(lines[1])
    assert len(fields) == len(MSS_COLUMNS)
    assert fields[7] == "Urgences EVIL =cmd " and fields[18] == "'=1+1"
