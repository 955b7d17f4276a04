"""``mssante pki …``: trust-space CA operations from the command line.

Passphrase: ``--passphrase-file FILE`` or the environment variable ``MSSANTE_PKI_PASSPHRASE``
(never an argument: command lines are visible to every local user). Errors: one line on stderr,
exit status 1; files are written atomically and only once everything succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pki.crl import CrlStore
from pki.errors import MalformedInput, PkiError
from pki.files import parse_certificates, parse_crl, parse_csr, read_bytes
from pki.keys import KEY_KINDS
from pki.space import Issued, TrustSpacePKI
from pki.validation import Reason, Role, Validator

PASSPHRASE_ENV = "MSSANTE_PKI_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
Handler = Callable[[argparse.Namespace], int]


class CliError(PkiError):
    """A usage problem detected after parsing (missing passphrase, bad serial, …)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _space_dir(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    return Path(getattr(args, "data_dir", None) or "var") / "pki"


def _passphrase(args: argparse.Namespace) -> bytes:
    if args.passphrase_file is not None:
        data = read_bytes(args.passphrase_file, "passphrase file").strip()  # same rule as mssante init
        if not data:
            raise CliError(f"{args.passphrase_file}: passphrase file is empty")
        return data
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode()
    raise CliError(f"a passphrase is required: use --passphrase-file FILE or set {PASSPHRASE_ENV}")


def _open(args: argparse.Namespace) -> TrustSpacePKI:
    return TrustSpacePKI.open(_space_dir(args), _passphrase(args))


def _csr(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "csr", None) is None:
        return None
    data = read_bytes(args.csr, "CSR file")
    parse_csr(data, source=str(args.csr))  # clear error before anything else happens
    return data


def _print_issued(issued: Issued) -> None:
    print(f"serial: {hex(issued.serial)}")
    print(f"subject: {issued.subject_dn}")
    print(f"certificate: {issued.cert_path}")
    print(f"chain: {issued.chain_path}")
    if issued.key_path is not None:
        print(f"key: {issued.key_path}")


def _parse_serial(value: str) -> int:
    v = value.strip().replace(":", "")
    try:
        if v.lower().startswith("0x"):
            return int(v, 16)
        if v.isdigit():
            return int(v)
        return int(v, 16)
    except ValueError as exc:
        raise CliError(f"serial {value!r} is not a decimal or hexadecimal number") from exc


# -- handlers -------------------------------------------------------------------------------------
def cmd_init_ca(args: argparse.Namespace) -> int:
    space = TrustSpacePKI.create(_space_dir(args), _passphrase(args), now=_now(), key_kind=args.key_kind,
                                 label=args.label, crl_days=args.crl_days)
    print(f"trust space created in {space.directory}")
    print(f"anchors: {space.anchors_path}")
    print(f"intermediates: {space.intermediates_path}")
    for path in space.crl_paths:
        print(f"crl: {path}")
    return 0


def cmd_issue_server(args: argparse.Namespace) -> int:
    csr = _csr(args)
    space = _open(args)
    issued = space.issue_server(args.fqdn, domains=args.domain or [], org=args.org, structure_id=args.structure_id,
                                department=args.department, out_dir=args.out, now=_now(),
                                key_kind=args.key_kind, csr_pem=csr)
    _print_issued(issued)
    return 0


def cmd_issue_org(args: argparse.Namespace) -> int:
    csr = _csr(args)
    space = _open(args)
    issued = space.issue_org(args.name, org=args.org, structure_id=args.structure_id, department=args.department,
                             out_dir=args.out, now=_now(), key_kind=args.key_kind, csr_pem=csr,
                             emails=args.email or None)
    _print_issued(issued)
    return 0


def cmd_issue_person(args: argparse.Namespace) -> int:
    csr = _csr(args)
    space = _open(args)
    issued = space.issue_person(args.idnps, args.family, args.given, out_dir=args.out, now=_now(),
                                key_kind=args.key_kind, csr_pem=csr, org=args.org, structure_id=args.structure_id,
                                department=args.department, profession=args.profession,
                                emails=args.email or None)
    _print_issued(issued)
    return 0


def cmd_sign_csr(args: argparse.Namespace) -> int:
    missing: list[str] = []
    required = {"server": ("fqdn", "org", "structure_id", "department"),
                "org": ("name", "org", "structure_id", "department"),
                "person": ("idnps", "family", "given")}[args.profile]
    for attr in required:
        if not getattr(args, attr, None):
            missing.append("--" + attr.replace("_", "-"))
    if missing:
        raise CliError(f"sign-csr --profile {args.profile} needs {', '.join(missing)}")
    if args.profile == "server":
        return cmd_issue_server(args)
    if args.profile == "org":
        return cmd_issue_org(args)
    return cmd_issue_person(args)


def cmd_revoke(args: argparse.Namespace) -> int:
    space = _open(args)
    serial = _parse_serial(args.serial)
    now = _now()
    ca = space.revoke(serial, args.reason, now)
    paths = space.write_crls(now)
    print(f"revoked {hex(serial)} ({args.reason}) in CA {ca.name}; CRLs rewritten:")
    for p in paths:
        print(f"crl: {p}")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    space = _open(args)
    for p in space.write_crls(_now()):
        print(f"crl: {p}")
    return 0


def _load_cert_files(paths: list[str] | None) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for p in paths or []:
        out += parse_certificates(read_bytes(p, "certificate file"), source=p)
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    now = datetime.fromisoformat(args.at) if args.at else _now()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    certs = parse_certificates(read_bytes(args.cert, "certificate file"), source=args.cert)
    leaf, sent = certs[0], certs[1:]
    if args.anchors:
        anchors = _load_cert_files(args.anchors)
        intermediates = _load_cert_files(args.untrusted)
        crl_files = list(args.crl or [])
    else:
        space_dir = _space_dir(args)
        if not TrustSpacePKI.exists(space_dir):
            raise CliError(f"{space_dir}: no trust space; give --anchors (and --untrusted, --crl)")
        anchors = _load_cert_files([str(space_dir / "anchors.pem")])
        intermediates = _load_cert_files([str(space_dir / "intermediates.pem")] + list(args.untrusted or []))
        crl_files = list(args.crl or []) or [str(space_dir / n / "crl.pem") for n in ("root", "organisations",
                                                                                           "personnes")]
    # Every CRL must come from a known CA and verify; an expired one is refused up front.
    store = CrlStore([*anchors, *intermediates, *sent], require_known_issuer=True)
    for path in crl_files:
        entry = store.load(read_bytes(path, "CRL file"), source=path)
        if entry.next_update is not None and now > entry.next_update:
            raise CliError(f"{path}: CRL expired at {entry.next_update.isoformat()} (nextUpdate)")
    validator = Validator(anchors, intermediates, store, fail_closed=not args.fail_open,
                          check_revocation=not args.no_revocation)
    decision = validator.validate(leaf, Role(args.role.upper().replace("-", "_")), now, sent)
    if decision.ok:
        print(f"OK {decision.subject.rfc4514_string() if decision.subject else ''}"
              + (f" ({decision.detail})" if decision.detail else ""))
        return 0
    print(f"{decision.reason.value}: {decision.detail}", file=sys.stderr)
    return 1


def _describe_cert(cert: x509.Certificate) -> list[str]:
    key = cert.public_key()
    key_desc = f"RSA {key.key_size}" if isinstance(key, rsa.RSAPublicKey) else (
        f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__)
    lines = [
        f"subject: {cert.subject.rfc4514_string()}",
        f"issuer: {cert.issuer.rfc4514_string()}",
        f"serial: {hex(cert.serial_number)}",
        f"not before: {cert.not_valid_before_utc.isoformat()}",
        f"not after: {cert.not_valid_after_utc.isoformat()}",
        f"key: {key_desc}",
        f"signature: {cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else 'n/a'}",
    ]
    for ext in cert.extensions:
        value: Any = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            lines.append("san: " + ", ".join(str(n.value) for n in value))
        elif isinstance(value, x509.ExtendedKeyUsage):
            lines.append("eku: " + ", ".join(o._name for o in value))
        elif isinstance(value, x509.BasicConstraints):
            lines.append(f"ca: {value.ca}" + (f" pathlen={value.path_length}" if value.path_length is not None else ""))
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    if args.file is None:
        space_dir = _space_dir(args)
        if not TrustSpacePKI.exists(space_dir):
            raise CliError(f"{space_dir}: no trust space (give a file to show, or --dir)")
        for cert in parse_certificates(read_bytes(space_dir / "anchors.pem"), source="anchors.pem") + \
                parse_certificates(read_bytes(space_dir / "intermediates.pem"), source="intermediates.pem"):
            print("\n".join(_describe_cert(cert)))
            print()
        return 0
    data = read_bytes(args.file, "file")
    if b"CERTIFICATE REQUEST" in data:
        csr = parse_csr(data, source=args.file)
        print(f"CSR subject: {csr.subject.rfc4514_string()}")
        print(f"self-signature valid: {csr.is_signature_valid}")
        return 0
    if b"X509 CRL" in data:
        crl = parse_crl(data, source=args.file)
        print(f"CRL issuer: {crl.issuer.rfc4514_string()}")
        print(f"this update: {crl.last_update_utc.isoformat()}")
        print(f"next update: {crl.next_update_utc.isoformat() if crl.next_update_utc else 'none'}")
        print(f"revoked: {len(crl)}")
        return 0
    try:
        certs = parse_certificates(data, source=args.file)
    except MalformedInput:
        crl = parse_crl(data, source=args.file)  # DER CRL
        print(f"CRL issuer: {crl.issuer.rfc4514_string()}\nrevoked: {len(crl)}")
        return 0
    for cert in certs:
        print("\n".join(_describe_cert(cert)))
        print()
    return 0


# -- registration ---------------------------------------------------------------------------------
def _wrap(handler: Handler, name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (PkiError, ValueError, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"mssante pki {name}: error: {message}", file=sys.stderr)
            return 1
        except Exception as exc:  # e.g. cryptography's UnsupportedAlgorithm on exotic input
            print(f"mssante pki {name}: error: unexpected {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
            return 1
    return run


def _common(p: argparse.ArgumentParser, *, passphrase: bool = True) -> None:
    p.add_argument("--dir", default=None, help="trust-space directory (default: <data-dir>/pki)")
    if passphrase:
        p.add_argument("--passphrase-file", default=None,
                       help=f"file holding the CA key passphrase (or set {PASSPHRASE_ENV})")


def _issue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory for the certificate, chain and key")
    p.add_argument("--key-kind", choices=KEY_KINDS, default=None, help="generated key type (default: the space's)")
    p.add_argument("--csr", default=None, help="issue for this CSR (PEM/DER) instead of generating a key")


def _org_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--org", required=required, help="raison sociale (O=)")
    p.add_argument("--structure-id", required=required, help="structure identifier, FINESS/SIRET (OU=)")
    p.add_argument("--department", required=required, help="département code or 'Name (NN)' (ST=)")


def register(subparsers: Any) -> None:
    """Add the ``pki`` group with its subcommands to an argparse subparsers object."""
    group = subparsers.add_parser("pki", help="trust-space PKI: CAs, issuance, revocation, validation")
    sub = group.add_subparsers(dest="pki_command", metavar="COMMAND", required=True)

    p = sub.add_parser("init-ca", help="create the root CA and the ORGANISATIONS / PERSONNES intermediates")
    _common(p)
    p.add_argument("--label", default="DEV", help="name part of the CAs, e.g. DEV (AC RACINE DEV IGC-SANTE)")
    p.add_argument("--key-kind", choices=KEY_KINDS, default="ec-p256")
    p.add_argument("--crl-days", type=int, default=7, help="CRL validity (nextUpdate) in days")
    p.set_defaults(func=_wrap(cmd_init_ca, "init-ca"))

    p = sub.add_parser("issue-server", help="issue a SERV certificate (TLS server+client, FQDN and domains)")
    _common(p)
    p.add_argument("--fqdn", required=True)
    p.add_argument("--domain", action="append", help="mail domain to add to subjectAltName (repeatable)")
    _org_args(p)
    _issue_args(p)
    p.set_defaults(func=_wrap(cmd_issue_server, "issue-server"))

    p = sub.add_parser("issue-org", help="issue an ORG certificate (client auth; structure or application)")
    _common(p)
    p.add_argument("--name", required=True, help="structure or application name (CN=)")
    p.add_argument("--email", action="append", help="mailbox address for subjectAltName (repeatable)")
    _org_args(p)
    _issue_args(p)
    p.set_defaults(func=_wrap(cmd_issue_org, "issue-org"))

    p = sub.add_parser("issue-person", help="issue a PS certificate carrying the IDNPS (like a CPS)")
    _common(p)
    p.add_argument("--idnps", required=True, help="IDNPS, e.g. 8 + RPPS number")
    p.add_argument("--family", required=True)
    p.add_argument("--given", required=True)
    p.add_argument("--profession", default=None)
    p.add_argument("--email", action="append")
    _org_args(p, required=False)
    _issue_args(p)
    p.set_defaults(func=_wrap(cmd_issue_person, "issue-person"))

    p = sub.add_parser("sign-csr", help="issue a certificate for a CSR with a profile's subject and extensions")
    _common(p)
    p.add_argument("--profile", choices=("server", "org", "person"), required=True)
    p.add_argument("--fqdn")
    p.add_argument("--domain", action="append")
    p.add_argument("--name")
    p.add_argument("--idnps")
    p.add_argument("--family")
    p.add_argument("--given")
    p.add_argument("--profession", default=None)
    p.add_argument("--email", action="append")
    _org_args(p, required=False)
    p.add_argument("--out", required=True)
    p.add_argument("--csr", required=True, help="the certificate request (PEM or DER)")
    p.set_defaults(func=_wrap(cmd_sign_csr, "sign-csr"), key_kind=None)

    p = sub.add_parser("revoke", help="revoke a certificate and rewrite the CRLs")
    _common(p)
    p.add_argument("--serial", required=True, help="serial number (0x… hexadecimal or decimal)")
    p.add_argument("--reason", default="unspecified",
                   help="RFC 5280 reason: keyCompromise, cACompromise, affiliationChanged, superseded, "
                        "cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise, unspecified")
    p.set_defaults(func=_wrap(cmd_revoke, "revoke"))

    p = sub.add_parser("crl", help="regenerate every CA's CRL (run daily: nextUpdate is --crl-days ahead)")
    _common(p)
    p.set_defaults(func=_wrap(cmd_crl, "crl"))

    p = sub.add_parser("verify", help="validate a certificate (or chain file) like the gateway does")
    _common(p, passphrase=False)
    p.add_argument("cert", help="certificate or chain file (leaf first)")
    p.add_argument("--role", default="tls-client", choices=("tls-server", "tls-client", "email", "any"))
    p.add_argument("--anchors", action="append", help="trust anchors PEM bundle (default: the space's)")
    p.add_argument("--untrusted", action="append", help="extra intermediates PEM bundle")
    p.add_argument("--crl", action="append", help="CRL file (PEM/DER, repeatable; default: the space's)")
    p.add_argument("--at", default=None, help="validation time, ISO 8601 (default: now)")
    p.add_argument("--fail-open", action="store_true", help="accept when no valid CRL is available")
    p.add_argument("--no-revocation", action="store_true", help="skip revocation checks")
    p.set_defaults(func=_wrap(cmd_verify, "verify"))

    p = sub.add_parser("show", help="print a certificate, CSR or CRL (or the space's CAs)")
    _common(p, passphrase=False)
    p.add_argument("file", nargs="?", default=None)
    p.set_defaults(func=_wrap(cmd_show, "show"))


__all__ = ["register", "Reason"]
