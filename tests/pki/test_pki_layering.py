"""ARCHITECTURE.md layering rule: pki/ never imports mssante/."""

from __future__ import annotations

import ast
from pathlib import Path

PKI = Path(__file__).resolve().parents[2] / "pki"


def test_pki_does_not_import_mssante() -> None:
    offenders = []
    for path in sorted(PKI.glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "mssante" or n.startswith("mssante.")]
    assert offenders == []
