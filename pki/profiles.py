"""Certificate profiles of the trust space: names and extensions.

Modelled on the IGC Santé products (SPECS.md §6):
- SERV: an MTA / server, TLS server *and* client auth (operator-to-operator mutual TLS, SPECS.md §1),
  S/MIME; FQDN and mail domain(s) in subjectAltName.
- ORG: a structure or an application (APP mailbox), client auth (AUTH_CLI), S/MIME.
- PS: a health professional, the way a CPS carries the identity: IDNPS (RPPS prefixed by 8) in
  serialNumber, UID and CN; surname / givenName attributes.
Subject DN pattern: ``C=FR, ST=<Département> (<NN>), O=<raison sociale>, OU=<structure id>, CN=<…>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.departements import state_attribute
from pki.errors import PkiError

# SPECS.md §6: products are valid 3 years.
LEAF_VALIDITY = timedelta(days=3 * 365)
INTERMEDIATE_VALIDITY = timedelta(days=10 * 365)
ROOT_VALIDITY = timedelta(days=20 * 365)
# Clock-skew allowance between operators: notBefore is set this much before the issuance time.
BACKDATE = timedelta(hours=1)

CA_ORGANISATION = "MSSANTE OSS"

# RFC 1123 host names in A-label form; a single label ("localhost") is allowed for development.
_FQDN = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_IDNPS = re.compile(r"^[0-9A-Za-z]{9,14}$")


class InvalidRequest(PkiError):
    """Issuance arguments that do not fit the profile (bad FQDN, empty organisation, …)."""


class Profile(str, Enum):
    SERV = "SERV"
    ORG = "ORG"
    PS = "PS"


def root_name(label: str) -> str:
    return f"AC RACINE {label} IGC-SANTE"


def intermediate_name(label: str, kind: str) -> str:
    return f"AC {label} IGC-SANTE {kind}"


def ca_subject(common_name: str, label: str) -> x509.Name:
    # Mirrors "CN=AC IGC-SANTE ELEMENTAIRE ORGANISATIONS, OU=IGC-SANTE ELEMENTAIRE, O=ASIP-SANTE, C=FR".
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANISATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"IGC-SANTE {label}"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def check_fqdn(value: str, what: str = "FQDN") -> str:
    name = value.strip().rstrip(".").lower()
    if not _FQDN.match(name):
        raise InvalidRequest(f"{what} {value!r} is not a valid DNS name (ASCII / A-label form)")
    return name


def _required(value: str, what: str) -> str:
    v = value.strip()
    if not v:
        raise InvalidRequest(f"{what} must not be empty")
    if len(v) > 64:
        raise InvalidRequest(f"{what} is longer than 64 characters (X.520 upper bound)")
    return v


def _state(department: str) -> str:
    try:
        return state_attribute(department)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def organisation_subject(common_name: str, *, org: str, structure_id: str, department: str) -> x509.Name:
    """SPECS.md §6 subject DN pattern for SERV and ORG products."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, _state(department)),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _required(org, "organisation (raison sociale)")),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _required(structure_id, "structure id")),
        x509.NameAttribute(NameOID.COMMON_NAME, _required(common_name, "common name")),
    ])


def person_subject(idnps: str, family: str, given: str, *, org: str | None = None,
                   structure_id: str | None = None, department: str | None = None,
                   profession: str | None = None) -> x509.Name:
    """A PS subject carrying the IDNPS like a CPS: serialNumber=IDNPS, UID=IDNPS, CN=IDNPS."""
    if not _IDNPS.match(idnps):
        raise InvalidRequest(f"IDNPS {idnps!r} must be 9 to 14 letters or digits (e.g. 8 + RPPS)")
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
    if department:
        attrs.append(x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, _state(department)))
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, _required(org, "organisation")))
    if structure_id:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _required(structure_id, "structure id")))
    if profession:
        attrs.append(x509.NameAttribute(NameOID.TITLE, _required(profession, "profession")))
    attrs += [
        x509.NameAttribute(NameOID.SURNAME, _required(family, "family name").upper()),
        x509.NameAttribute(NameOID.GIVEN_NAME, _required(given, "given name")),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, idnps),
        x509.NameAttribute(NameOID.USER_ID, idnps),
        x509.NameAttribute(NameOID.COMMON_NAME, idnps),
    ]
    return x509.Name(attrs)


def idnps_of(cert: x509.Certificate) -> str | None:
    """The IDNPS of a PS certificate (serialNumber, else UID), or None."""
    for oid in (NameOID.SERIAL_NUMBER, NameOID.USER_ID):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            v = values[0].value
            return v if isinstance(v, str) else v.decode("ascii", "replace")
    return None


@dataclass(frozen=True)
class LeafExtensions:
    key_usage: x509.KeyUsage
    extended_key_usage: x509.ExtendedKeyUsage
    san: x509.SubjectAlternativeName | None


def _leaf_key_usage(public_key: object, *, encipherment: bool) -> x509.KeyUsage:
    # RFC 5280 §4.2.1.3. RSA keys encrypt with keyEncipherment; EC keys use keyAgreement.
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False,
        key_encipherment=encipherment and is_rsa, data_encipherment=False,
        key_agreement=encipherment and is_ec, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)


def split_names(values: list[str], what: str) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """DNS names and IP literals for subjectAltName (IPs: loopback test servers)."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for v in values:
        try:
            ips.append(ipaddress.ip_address(v.strip()))
        except ValueError:
            dns.append(check_fqdn(v, what))
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def leaf_extensions(profile: Profile, public_key: object, *, dns_names: list[str] | None = None,
                    emails: list[str] | None = None,
                    ip_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None
                    ) -> LeafExtensions:
    """Key usage / EKU / SAN for a product (SPECS.md §6 'Products')."""
    if profile is Profile.SERV:
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
               ExtendedKeyUsageOID.EMAIL_PROTECTION]
    elif profile is Profile.ORG:
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    else:
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names or []]
    general += [x509.IPAddress(ip) for ip in ip_addresses or []]
    general += [x509.RFC822Name(e) for e in emails or []]
    return LeafExtensions(
        key_usage=_leaf_key_usage(public_key, encipherment=True),
        extended_key_usage=x509.ExtendedKeyUsage(eku),
        san=x509.SubjectAlternativeName(general) if general else None,
    )
