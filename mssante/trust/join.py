"""Joining a trust space, operator side: key + CSR, join request with the enrolment token, polling.

Files in the join directory (default DATA_DIR/trust/join):
    mta.key      the private key (0600; never leaves this machine)
    mta.csr      the certificate request sent to the authority
    join.json    authority URL, request id and poll secret (0600)
    mta.pem, mta-chain.pem   the SERV certificate and its chain, once approved
"""

from __future__ import annotations

import json
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mssante.trust.errors import TrustError
from mssante.trust.refresh import client_ssl
from pki.files import atomic_write
from pki.keys import KeyKind, generate_key, load_private_key, private_key_pem

TICKET = "join.json"


class JoinError(TrustError):
    """The authority refused, or could not be reached; `code` is the authority's reason or UNREACHABLE."""


@dataclass(frozen=True)
class JoinTicketFile:
    authority_url: str
    request_id: str
    poll_secret: str
    domain: str
    fqdn: str


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


def prepare_csr(join_dir: Path, *, fqdn: str, domain: str, key_kind: KeyKind | str = "ec-p256") -> bytes:
    """Generate the MTA key and a CSR (CN = host name, SAN = host name + mail domain). Reuses an existing key."""
    key_path = join_dir / "mta.key"
    if key_path.exists():
        key = load_private_key(key_path)
    else:
        key = generate_key(key_kind)
        _write_private(key_path, private_key_pem(key))
    names = list(dict.fromkeys([fqdn, domain]))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(Encoding.PEM)
    (join_dir / "mta.csr").write_bytes(pem)
    return pem


async def _call(
    method: str,
    url: str,
    *,
    ca_file: Path | None,
    tls_server_name: str | None,
    json_body: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(ca_file)), timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            async with session.request(
                method,
                url,
                json=json_body,
                headers=headers,
                server_hostname=tls_server_name,
                allow_redirects=False,
            ) as resp:
                try:
                    data: dict[str, Any] = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    raise JoinError("BAD_RESPONSE", f"HTTP {resp.status}, not JSON") from None
                if resp.status >= 400:
                    raise JoinError(str(data.get("error", resp.status)), str(data.get("detail", "")))
                return data
    except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as exc:
        raise JoinError("UNREACHABLE", type(exc).__name__) from None


async def submit_join(
    join_dir: Path,
    *,
    authority_url: str,
    token: str,
    domain: str,
    fqdn: str,
    org: str,
    structure_id: str,
    department: str,
    contact: str,
    ca_file: Path | None = None,
    tls_server_name: str | None = None,
) -> JoinTicketFile:
    """Create key + CSR, send the join request, save the ticket. Returns the ticket."""
    csr_pem = prepare_csr(join_dir, fqdn=fqdn, domain=domain)
    base = authority_url.rstrip("/")
    body = {
        "token": token,
        "domain": domain,
        "fqdn": fqdn,
        "org": org,
        "structure_id": structure_id,
        "department": department,
        "contact": contact,
        "csr_pem": csr_pem.decode("ascii"),
    }
    data = await _call(
        "POST", base + "/trust/join", ca_file=ca_file, tls_server_name=tls_server_name, json_body=body
    )
    ticket = JoinTicketFile(base, str(data["request_id"]), str(data["poll_secret"]), domain, fqdn)
    _write_private(join_dir / TICKET, json.dumps(asdict(ticket), indent=1).encode())
    return ticket


def load_ticket(join_dir: Path) -> JoinTicketFile:
    try:
        data = json.loads((join_dir / TICKET).read_text())
        return JoinTicketFile(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise JoinError("NO_TICKET", f"no join request recorded in {join_dir}") from exc


async def poll_join(
    join_dir: Path, *, ca_file: Path | None = None, tls_server_name: str | None = None
) -> dict[str, Any]:
    """Ask the authority for the request's status; once approved, write mta.pem and mta-chain.pem."""
    ticket = load_ticket(join_dir)
    data = await _call(
        "GET",
        f"{ticket.authority_url}/trust/join/{ticket.request_id}",
        ca_file=ca_file,
        tls_server_name=tls_server_name,
        bearer=ticket.poll_secret,
    )
    if data.get("cert_pem"):
        (join_dir / "mta.pem").write_text(str(data["cert_pem"]))
        (join_dir / "mta-chain.pem").write_text(str(data.get("chain_pem") or data["cert_pem"]))
    return data
