"""`mssante dmp serve` and `mssante dmp send`: the argparse group, and both commands for real."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from .dmp_support import DMP_HOST, INS, Pki, make_cda

from mssante.dmp.cli import register
from mssante.dmp.reference import RunningDmp

REPO = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mssante")
    register(p.add_subparsers(dest="command"))
    return p


def send_args(pki: Pki, url: str, document: Path | None, *extra: str) -> list[str]:
    args = ["dmp", "send"] + ([str(document)] if document else []) + [
        "--url", f"{url}/repository", "--server-hostname", DMP_HOST,
        "--cert", str(pki.lab.chain_path), "--key", str(pki.lab.key_path), "--anchors", str(pki.space.anchors_path),
        "--ins", INS, "--author-idnps", "801234534765", "--author-family", "CAMPARINI", "--author-given", "Marcel",
        "--structure-id", "11204598", "--structure-name", "Laboratoire des charmes",
    ]
    return args + list(extra)


def test_group_parses_and_rejects_bad_listen() -> None:
    args = parser().parse_args(["dmp", "serve", "--listen", "127.0.0.1:9443", "--cert", "c", "--key", "k", "--anchors", "a"])
    assert args.listen == ("127.0.0.1", 9443) and callable(args.func)
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["dmp", "serve", "--listen", "nowhere", "--cert", "c", "--key", "k", "--anchors", "a"])
    assert exc.value.code == 2


async def test_send_submits_replaces_and_deletes(dmp: RunningDmp, pki_material: Pki, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = tmp_path / "v1.xml", tmp_path / "v2.xml"
    v1.write_bytes(make_cda("13001"))
    v2.write_bytes(make_cda("13002", version=2, replaces="1.2.250.1.999.2.7^13001"))
    p = parser()
    args = p.parse_args(send_args(pki_material, dmp.base_url, v1))
    assert await asyncio.to_thread(args.func, args) == 0
    args = p.parse_args(send_args(pki_material, dmp.base_url, v2, "--action", "replace"))
    assert await asyncio.to_thread(args.func, args) == 0
    args = p.parse_args(send_args(pki_material, dmp.base_url, None, "--action", "delete", "--replaces", "1.2.250.1.999.2.7^13002"))
    assert await asyncio.to_thread(args.func, args) == 0
    args = p.parse_args(send_args(pki_material, dmp.base_url, None, "--action", "delete", "--replaces", "1.2.250.1.999.2.7^13002"))
    assert await asyncio.to_thread(args.func, args) == 1
    err = capsys.readouterr().err
    assert "rejected 900" in err and err.count("\n") == 1
    args = p.parse_args(send_args(pki_material, dmp.base_url, tmp_path / "missing.xml"))
    assert await asyncio.to_thread(args.func, args) == 1
    capsys.readouterr()
    args = p.parse_args(["dmp", "list", "--url", dmp.base_url, "--server-hostname", DMP_HOST, "--cert", str(pki_material.lab.chain_path),
                         "--key", str(pki_material.lab.key_path), "--anchors", str(pki_material.space.anchors_path), "--ins", INS])
    assert await asyncio.to_thread(args.func, args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["status"].rsplit(":", 1)[-1] for d in lines] == ["Deprecated", "Deleted"]


def test_serve_runs_until_sigterm(pki_material: Pki, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mssante.cli", "--data-dir", str(tmp_path / "var"), "dmp", "serve", "--listen", "127.0.0.1:0",
           "--cert", str(pki_material.server.chain_path), "--key", str(pki_material.server.key_path),
           "--anchors", str(pki_material.space.anchors_path), "--store", str(tmp_path / "store")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "reference DMP listening on https://127.0.0.1:" in line, proc.stderr.read() if proc.stderr else ""
        port = int(line.split(":")[2].split(" ")[0])
        p = parser()
        doc = tmp_path / "d.xml"
        doc.write_bytes(make_cda("14001"))
        args = p.parse_args(send_args(pki_material, f"https://127.0.0.1:{port}", doc))
        assert args.func(args) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert list((tmp_path / "store" / INS).glob("*.json"))


def test_serve_reports_unreadable_material(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["dmp", "serve", "--cert", str(tmp_path / "no.pem"), "--key", "k", "--anchors", "a"])
    assert args.func(args) == 1
    assert "cannot load TLS material" in capsys.readouterr().err


def test_serve_reports_an_unreadable_store(pki_material: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "store" / INS
    bad.mkdir(parents=True)
    (bad / "x.json").write_text("{not json")
    args = parser().parse_args(["dmp", "serve", "--listen", "127.0.0.1:0", "--cert", str(pki_material.server.chain_path),
                                "--key", str(pki_material.server.key_path), "--anchors", str(pki_material.space.anchors_path),
                                "--store", str(tmp_path / "store")])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "cannot open the store" in err and err.count("\n") == 1
