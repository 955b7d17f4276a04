from __future__ import annotations

import json
import os
import stat

from cryptography import x509

from mssante.cli import main
from mssante.config import load_config
from mssante.trust.listeblanche import parse_liste_blanche


def _accounts(d):
    return json.loads((d / "dev" / "accounts.json").read_text())


def test_init_creates_a_working_dev_operator(tmp_path, capsys):
    a = tmp_path / "a"
    assert main(["--data-dir", str(a), "init", "--domain", "op-a.test"]) == 0
    acc = _accounts(a)
    assert acc["operator"]["domain"] == "op-a.test"
    for key in ("cert", "key", "ca"):
        assert os.path.isabs(acc["operator"][key]) and os.path.exists(acc["operator"][key])
    assert set(acc["listeners"]) >= {"mta", "submission", "submissions", "imap", "imaps", "mllp", "http"}
    assert acc["listeners"]["mta"] == "127.0.0.1:2525"
    kinds = {m["type"]: m for m in acc["mailboxes"]}
    assert set(kinds) >= {"PER", "ORG", "APP"}
    assert kinds["PER"]["password"] and kinds["PER"]["idnps"].startswith("8")
    app = kinds["APP"]
    cert = x509.load_pem_x509_certificate(open(app["cert"], "rb").read())
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # secrets are private to the operator
    assert stat.S_IMODE((a / "dev" / "accounts.json").stat().st_mode) == 0o600
    cfg = load_config(a / "mssante.toml")
    assert cfg.operator.domain == "op-a.test" and cfg.db_url.endswith("mssante.db")
    liste = parse_liste_blanche((a / "dev" / "authority" / "liste-blanche.xml").read_bytes())
    assert "op-a.test" in liste.domains


def test_init_is_idempotent(tmp_path, capsys):
    a = tmp_path / "a"
    assert main(["--data-dir", str(a), "init", "--domain", "op-a.test"]) == 0
    before = (a / "dev" / "accounts.json").read_bytes()
    cert_before = (a / "tls" / "server").iterdir()
    cert_before = {p.name: p.read_bytes() for p in cert_before}
    assert main(["--data-dir", str(a), "init"]) == 0
    assert "already initialised" in capsys.readouterr().out
    assert (a / "dev" / "accounts.json").read_bytes() == before
    assert {p.name: p.read_bytes() for p in (a / "tls" / "server").iterdir()} == cert_before
    # the same directory cannot silently become another operator
    assert main(["--data-dir", str(a), "init", "--domain", "other.test"]) == 1
    assert "already holds operator op-a.test" in capsys.readouterr().err


def test_second_operator_joins_the_dev_trust_space(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--data-dir", str(a), "init", "--domain", "op-a.test"]) == 0
    assert main(["--data-dir", str(b), "init", "--domain", "op-b.test", "--authority", str(a), "--ports-offset", "100"]) == 0
    acc_a, acc_b = _accounts(a), _accounts(b)
    assert acc_b["listeners"]["mta"] == "127.0.0.1:2625"
    assert open(acc_a["operator"]["ca"], "rb").read() == open(acc_b["operator"]["ca"], "rb").read()  # same CA
    cfg_a, cfg_b = load_config(a / "mssante.toml"), load_config(b / "mssante.toml")
    assert cfg_a.trust.list_path == cfg_b.trust.list_path  # both read one list
    liste = parse_liste_blanche(open(cfg_a.trust.list_path, "rb").read())
    assert {"op-a.test", "op-b.test"} <= set(liste.domains)


def test_join_without_authority_fails_cleanly(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "b"), "init", "--domain", "op-b.test", "--authority", str(tmp_path / "none")]) == 1
    assert "no dev trust space" in capsys.readouterr().err


def test_mailbox_commands(tmp_path, capsys):
    a = tmp_path / "a"
    assert main(["--data-dir", str(a), "init"]) == 0
    capsys.readouterr()
    assert main(["--data-dir", str(a), "mailbox", "add", "Dr.Durand@op-a.test", "--type", "PER", "--idnps", "810000000002"]) == 0
    out = capsys.readouterr().out
    assert "created dr.durand@op-a.test (PER)" in out and "shown once" in out
    assert main(["--data-dir", str(a), "mailbox", "add", "dr.durand@op-a.test", "--type", "PER"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["--data-dir", str(a), "mailbox", "disable", "dr.durand@op-a.test"]) == 0
    assert main(["--data-dir", str(a), "mailbox", "passwd", "nobody@op-a.test"]) == 1
    assert "no mailbox nobody@op-a.test" in capsys.readouterr().err
    assert main(["--data-dir", str(a), "mailbox", "list", "--json"]) == 0
    items = {i["address"]: i for i in json.loads(capsys.readouterr().out)}
    assert items["dr.durand@op-a.test"]["enabled"] is False
    assert items["dr.martin@op-a.test"]["enabled"] is True


def test_usage_errors_exit_2(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["--data-dir", str(tmp_path), "mailbox", "add", "x@op-a.test", "--type", "BAD"])
    assert e.value.code == 2
    assert main([]) == 2
