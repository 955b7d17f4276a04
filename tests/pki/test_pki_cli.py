"""``mssante pki`` subcommands through register(): happy paths and every bad-input case."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pki.cli import PASSPHRASE_ENV, register
from pki.keys import generate_key
from pki.space import TrustSpacePKI


class Cli:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp = tmp_path
        self.capsys = capsys
        self.parser = argparse.ArgumentParser(prog="mssante")
        register(self.parser.add_subparsers(dest="group", required=True))
        self.passfile = tmp_path / "pass.txt"
        self.passfile.write_text("s3cret passphrase\n")

    def run(self, *argv: str) -> tuple[int, str, str]:
        args = self.parser.parse_args(["pki", *argv])
        args.data_dir = self.tmp / "var"
        rc = args.func(args)
        out, err = self.capsys.readouterr()
        return rc, out, err

    def fail(self, *argv: str) -> str:
        rc, out, err = self.run(*argv)
        assert rc == 1, (out, err)
        assert err.count("\n") == 1, err  # one clear line
        return err

    @property
    def pw(self) -> list[str]:
        return ["--passphrase-file", str(self.passfile)]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    c = Cli(tmp_path, capsys)
    rc, out, _ = c.run("init-ca", *c.pw)
    assert rc == 0 and "trust space created" in out
    return c


def _serial(out: str) -> str:
    return next(line.split(": ")[1] for line in out.splitlines() if line.startswith("serial: "))


def _server(cli: Cli, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli.run("issue-server", *cli.pw, "--fqdn", "mx.cli.mssante.fr", "--domain", "cli.mssante.fr",
                   "--org", "CLI Org", "--structure-id", "123", "--department", "75", "--out", str(out), *extra)


def test_issue_verify_revoke_cycle(cli: Cli) -> None:
    out_dir = cli.tmp / "out"
    rc, issued, _ = _server(cli, out_dir)
    assert rc == 0 and "CN=mx.cli.mssante.fr,OU=123,O=CLI Org,ST=Paris (75),C=FR" in issued
    chain = str(out_dir / "mx.cli.mssante.fr-chain.pem")
    rc, out, _ = cli.run("verify", chain, "--role", "tls-server")
    assert rc == 0 and out.startswith("OK ")
    rc, _, err = cli.run("verify", str(out_dir / "mx.cli.mssante.fr.pem"), "--role", "tls-server")
    assert rc == 0  # intermediates of the space are known
    rc, out, _ = cli.run("revoke", *cli.pw, "--serial", _serial(issued), "--reason", "keyCompromise")
    assert rc == 0 and "revoked" in out
    rc, _, err = cli.run("verify", chain, "--role", "tls-server")
    assert rc == 1 and err.startswith("REVOKED: ")
    rc, out, _ = cli.run("crl", *cli.pw)
    assert rc == 0 and out.count("crl: ") == 3
    rc, out, _ = cli.run("show", chain)
    assert rc == 0 and "san: mx.cli.mssante.fr, cli.mssante.fr" in out and "eku: serverAuth, clientAuth" in out
    rc, out, _ = cli.run("show")
    assert rc == 0 and "AC RACINE DEV IGC-SANTE" in out
    rc, out, _ = cli.run("show", str(cli.tmp / "var/pki/organisations/crl.pem"))
    assert rc == 0 and "revoked: 1" in out


def test_org_person_and_env_passphrase(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret passphrase")
    rc, out, _ = cli.run("issue-org", "--name", "LIS", "--org", "Labo", "--structure-id", "9",
                         "--department", "2B", "--out", str(cli.tmp / "o"), "--key-kind", "rsa2048")
    assert rc == 0 and "ST=Haute-Corse (2B)" in out
    rc, out, _ = cli.run("issue-person", "--idnps", "810000000042", "--family", "Durand", "--given", "Anne",
                         "--out", str(cli.tmp / "p"))
    assert rc == 0 and "CN=810000000042" in out
    rc, _, _ = cli.run("verify", str(cli.tmp / "p/810000000042-chain.pem"), "--role", "tls-client")
    assert rc == 0
    rc, _, err = cli.run("verify", str(cli.tmp / "o/LIS-chain.pem"), "--role", "tls-server")
    assert rc == 1 and err.startswith("WRONG_EKU")


def test_sign_csr(cli: Cli) -> None:
    key = generate_key("ec-p256")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(key, hashes.SHA256()))
    path = cli.tmp / "req.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    rc, out, _ = cli.run("sign-csr", *cli.pw, "--profile", "org", "--csr", str(path), "--name", "APP",
                         "--org", "O", "--structure-id", "1", "--department", "69", "--out", str(cli.tmp / "s"))
    assert rc == 0 and "key: " not in out
    cert = x509.load_pem_x509_certificate((cli.tmp / "s/APP.pem").read_bytes())
    assert cert.public_key() == key.public_key()
    err = cli.fail("sign-csr", *cli.pw, "--profile", "server", "--csr", str(path), "--out", str(cli.tmp / "t"))
    assert "--fqdn" in err
    assert not (cli.tmp / "t").exists()


def test_bad_inputs_write_nothing(cli: Cli) -> None:
    out_dir = cli.tmp / "never"
    before = sorted(p.name for p in (cli.tmp / "var/pki").rglob("*") if p.is_file())

    # Wrong passphrase.
    bad = cli.tmp / "bad.txt"
    bad.write_text("wrong\n")
    err = cli.fail("issue-server", "--passphrase-file", str(bad), "--fqdn", "a.fr", "--org", "O",
                   "--structure-id", "1", "--department", "75", "--out", str(out_dir))
    assert "wrong passphrase" in err
    # No passphrase at all.
    err = cli.fail("crl")
    assert PASSPHRASE_ENV in err
    # Malformed CSR, CSR with a bad self-signature.
    junk = cli.tmp / "junk.csr"
    junk.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    assert "not a valid" in cli.fail("sign-csr", *cli.pw, "--profile", "org", "--csr", str(junk), "--name", "A",
                                     "--org", "O", "--structure-id", "1", "--department", "75",
                                     "--out", str(out_dir))
    key = generate_key("ec-p256")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "victim")])).sign(key, hashes.SHA256()))
    tampered = cli.tmp / "tampered.csr"
    tampered.write_bytes(x509.load_der_x509_csr(csr.public_bytes(serialization.Encoding.DER)
                                                .replace(b"victim", b"victin")).public_bytes(serialization.Encoding.PEM))
    assert "self-signature" in cli.fail("sign-csr", *cli.pw, "--profile", "org", "--csr", str(tampered),
                                        "--name", "A", "--org", "O", "--structure-id", "1",
                                        "--department", "75", "--out", str(out_dir))
    # Unknown serial, bad reason, malformed serial.
    assert "not issued" in cli.fail("revoke", *cli.pw, "--serial", "0x1234")
    assert "not a decimal" in cli.fail("revoke", *cli.pw, "--serial", "zz-top")
    assert not out_dir.exists()
    # Nothing new under the space except the audit trail.
    after = sorted(p.name for p in (cli.tmp / "var/pki").rglob("*") if p.is_file())
    assert after == before


def test_verify_bad_inputs(cli: Cli, tmp_path: Path) -> None:
    out_dir = cli.tmp / "out"
    assert _server(cli, out_dir)[0] == 0
    chain = str(out_dir / "mx.cli.mssante.fr-chain.pem")
    space_dir = cli.tmp / "var/pki"
    space = TrustSpacePKI.open(space_dir, b"s3cret passphrase")
    # Malformed PEM / DER certificate.
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    assert "malformed PEM" in cli.fail("verify", str(bad_pem))
    bad_der = tmp_path / "bad.der"
    bad_der.write_bytes(b"\x30\x03\x02\x01")
    assert "not a PEM or DER" in cli.fail("verify", str(bad_der))
    # CRL of an unknown issuer.
    other = TrustSpacePKI.create(tmp_path / "other", b"x", now=datetime.now(UTC), label="OTHER")
    assert "not a known CA" in cli.fail("verify", chain, "--crl", str(other.crl_paths[1]))
    # CRL signed by the wrong key (right issuer name).
    now = datetime.now(UTC)
    forged = (x509.CertificateRevocationListBuilder().issuer_name(space.organisations.cert.subject)
              .last_update(now).next_update(now + timedelta(days=1)).sign(other.organisations.key, hashes.SHA256()))
    forged_path = tmp_path / "forged.crl"
    forged_path.write_bytes(forged.public_bytes(serialization.Encoding.DER))
    assert "signature does not verify" in cli.fail("verify", chain, "--crl", str(forged_path))
    # Expired CRL.
    expired = (x509.CertificateRevocationListBuilder().issuer_name(space.organisations.cert.subject)
               .last_update(now - timedelta(days=9)).next_update(now - timedelta(days=2))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   space.organisations.key.public_key()), critical=False)
               .sign(space.organisations.key, hashes.SHA256()))
    expired_path = tmp_path / "expired.crl"
    expired_path.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    assert "expired" in cli.fail("verify", chain, "--crl", str(expired_path))
    # Untrusted anchors given explicitly.
    rc, _, err = cli.run("verify", chain, "--anchors", str(other.anchors_path), "--no-revocation")
    assert rc == 1 and err.startswith("UNTRUSTED_ROOT: ")
    # Missing file.
    assert "cannot read" in cli.fail("verify", str(tmp_path / "absent.pem"))


def test_init_ca_errors(cli: Cli) -> None:
    assert "already exists" in cli.fail("init-ca", *cli.pw)
    target = cli.tmp / "fresh"
    assert "label" in cli.fail("init-ca", *cli.pw, "--dir", str(target), "--label", "bad/label")
    assert not target.exists()
    empty = cli.tmp / "empty.txt"
    empty.write_text("\n")
    assert "empty" in cli.fail("init-ca", "--passphrase-file", str(empty), "--dir", str(target))
    assert not target.exists()
    rc, out, _ = cli.run("init-ca", *cli.pw, "--dir", str(target), "--label", "QUALIF", "--key-kind", "rsa2048")
    assert rc == 0 and (target / "space.json").is_file()
    rc, out, _ = cli.run("show", "--dir", str(target))
    assert "AC RACINE QUALIF IGC-SANTE" in out and "key: RSA 2048" in out
