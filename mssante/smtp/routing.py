"""Where to deliver a domain's mail: static routes, then DNS MX (RFC 5321 §5.1), with dnspython.

- config.relay.static_routes: {"domain": "host:port"} wins over DNS (tests, private interconnects).
- MX records sorted by preference (RFC 5321 §5.1); no MX but an A/AAAA = implicit MX; a null MX
  (RFC 7505, "0 .") or NXDOMAIN is a permanent failure; a timeout or SERVFAIL is temporary.
- Each MX name is resolved to addresses with the same resolver (we never ask the system resolver
  behind the configured one), so one resolver decides the whole route.
- config.relay.dns_server "host:port" selects the resolver (a loopback DNS server in tests).
- config.relay.routes_file: the same {"domain": "host:port"} map in a JSON file, re-read when its mtime
  changes. `mssante init --authority` keeps one for a dev trust space on loopback, where operators have
  no MX records; a route that is unreadable keeps the last good map.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.resolver
import dns.rdatatype


log = logging.getLogger("mssante.smtp.routing")


class RouteError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    host: str  # the MX name (for logs, Remote-MTA)
    address: str  # IP address to connect to
    port: int


class Router:
    def __init__(self, *, static_routes: dict[str, str] | None = None, dns_server: str = "", port: int = 25,
                 timeout: float = 10.0, routes_file: str = "") -> None:
        self.static = {k.lower().rstrip("."): v for k, v in (static_routes or {}).items()}
        self.routes_file = routes_file
        self._file_routes: dict[str, str] = {}
        self._file_mtime: float | None = None
        self.port = port
        if dns_server:
            host, _, p = dns_server.rpartition(":")
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [host.strip("[]")]
            r.port = int(p)
        else:
            r = dns.asyncresolver.Resolver()
        r.lifetime = timeout
        r.timeout = timeout
        self.resolver = r

    async def route(self, domain: str) -> list[Target]:
        d = domain.lower().rstrip(".")
        static = self.static.get(d)
        if static is None and self.routes_file:
            static = self._routes_from_file().get(d)
        if static is not None:
            host, _, p = static.rpartition(":")
            host = host.strip("[]")
            if _is_ip(host):
                return [Target(host, host, int(p))]
            return [Target(host, a, int(p)) for a in await self._addresses(host)]
        mx_hosts = await self._mx(d)
        out: list[Target] = []
        last: RouteError | None = None
        for host in mx_hosts:
            try:
                for addr in await self._addresses(host):
                    out.append(Target(host, addr, self.port))
            except RouteError as e:
                last = e
        if not out:
            raise last or RouteError(f"no address for the MX hosts of {d}", permanent=False)
        return out

    def _routes_from_file(self) -> dict[str, str]:
        """The routes file's map, re-read only when its mtime changes (one stat per lookup)."""
        try:
            mtime = os.stat(self.routes_file).st_mtime
        except OSError:
            return self._file_routes
        if mtime != self._file_mtime:
            try:
                data = json.loads(Path(self.routes_file).read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                    raise ValueError("expected an object of domain -> \"host:port\"")
                self._file_routes = {str(k).lower().rstrip("."): v for k, v in data.items()}
            except (OSError, ValueError) as e:
                log.warning("relay.routes_file %s unreadable, keeping the last good routes: %s", self.routes_file, e)
            self._file_mtime = mtime
        return self._file_routes

    async def _mx(self, domain: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(domain, "MX", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise RouteError(f"domain {domain} does not exist (NXDOMAIN)", permanent=True) from None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as e:
            raise RouteError(f"DNS lookup of {domain} MX failed: {type(e).__name__}", permanent=False) from None
        if answer.rrset is None:  # RFC 5321 §5.1: no MX, the domain itself is the implicit MX
            return [domain]
        records = sorted(((r.preference, str(r.exchange).rstrip(".").lower()) for r in answer.rrset), key=lambda x: x[0])
        if len(records) == 1 and records[0][1] in ("", "."):
            raise RouteError(f"{domain} accepts no mail (null MX, RFC 7505)", permanent=True)
        return [h for _, h in records if h]

    async def _addresses(self, host: str) -> list[str]:
        addrs: list[str] = []
        temporary = False
        for rtype in ("A", "AAAA"):
            try:
                ans = await self.resolver.resolve(host, rtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout):
                temporary = True
                continue
            if ans.rrset is not None:
                addrs += [r.address for r in ans.rrset]
        if not addrs:
            raise RouteError(f"no address for {host}", permanent=not temporary)
        return addrs


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
