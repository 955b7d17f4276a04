"""Hardened XML parsing for everything the DMP leg reads (CDA, SOAP, ebRIM, VIHF).

CONTRACTS.md / ARCHITECTURE.md ("XML"): entity resolution off, no network, no DTD, no huge
trees, and any DOCTYPE is refused outright (no internal subset, no entity expansion games).
"""

from __future__ import annotations

from lxml import etree


class UnsafeXmlError(ValueError):
    """The input is not well-formed XML, or it carries a DOCTYPE (refused by policy)."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )


def parse_xml(data: bytes) -> etree._Element:
    """Parse bytes into an element, refusing DOCTYPE and any entity declaration."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafeXmlError("XML input must be bytes")
    try:
        tree = etree.ElementTree(etree.fromstring(bytes(data), parser=_parser()))
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"not well-formed XML: {exc.msg}") from None
    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXmlError("DOCTYPE is not allowed")
    root = tree.getroot()
    # Belt and braces: an unexpanded entity reference survives as an _Entity node.
    for node in root.iter(etree.Entity):
        raise UnsafeXmlError(f"entity reference &{node.name}; is not allowed")
    return root
