"""Which hosts and ports the port proxy may reach: the allowlist, as data.

Entries are exact host names (`gpu-box.lan`), globs (`*.example.org`: any
name below example.org), addresses or CIDR ranges (`10.0.0.0/8`, `::1`), or
the keyword `loopback` (`localhost`, `127.0.0.0/8`, `::1`), which is also
the default.

A name is resolved (by `core`, at most once per request; a checked answer
is reused briefly), and only the addresses it resolved to that are allowed
get dialled. An address is allowed when a range holds it,
or when the name matched a name entry and the address is an ordinary one:
a listed name that resolves to a loopback, link-local, unspecified,
multicast or reserved address (DNS rebinding, a cloud metadata address) is
refused unless a range lists that address too.

Some addresses are refused even inside a wide listed range (`0.0.0.0/0`,
`100.0.0.0/8`, `fd00::/8`): the shared (carrier-grade NAT) space
`100.64.0.0/10`, link-local `169.254.0.0/16` and `fe80::/10`, and the cloud
metadata services (`169.254.169.254`, `fd00:ec2::254`, `100.100.100.200`),
whose answers carry the machine's credentials. A guarded block is allowed
only by an entry inside it (`--proxy-allow 100.64.0.0/10`); a metadata
address only by itself (`--proxy-allow 169.254.169.254`). Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass

from .paths import valid_host_name

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("localhost", "127.0.0.0/8", "::1")
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
METADATA_WHY = "a cloud metadata address (its answers hold this machine's credentials)"
# Addresses a wide range does not allow, each with why, for the refusal; metadata first
# (each address is a block of its own, inside the link-local and shared blocks).
GUARDS: tuple[tuple[Network, str], ...] = (
    *((ipaddress.ip_network(a), METADATA_WHY) for a in METADATA_ADDRESSES),
    (ipaddress.ip_network("100.64.0.0/10"), "in the shared address space 100.64.0.0/10"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (ipaddress.ip_network("fe80::/10"), "link-local (fe80::/10)"),
)


@dataclass(frozen=True)
class Allowlist:
    names: tuple[str, ...]  # lower case; exact or `*.` globs
    ranges: tuple[Network, ...]
    entries: tuple[str, ...]  # as given, for the status page

    @classmethod
    def parse(cls, entries: tuple[str, ...] | list[str]) -> Allowlist:
        """Read entries; a bad one raises ValueError naming it and what is allowed."""
        names: list[str] = []
        ranges: list[Network] = []
        for raw in entries:
            entry = raw.strip()
            if entry.lower() == "loopback":
                names.append("localhost")
                ranges.extend(ipaddress.ip_network(r) for r in LOOPBACK[1:])
                continue
            try:
                ranges.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower()
            pattern = name[2:] if name.startswith("*.") else name
            if not valid_host_name(pattern) or "*" in pattern:
                raise ValueError(
                    f"{raw!r} is not a host name, *.domain glob, address, CIDR range or 'loopback'"
                )
            names.append(name)
        return cls(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(ranges)), tuple(entries))

    def name_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for name in self.names:
            if name.startswith("*."):
                if fnmatch.fnmatchcase(host, name) and host.endswith(name[1:]):
                    return True
            elif host == name:
                return True
        return False

    def in_ranges(self, address: Address) -> bool:
        """Does a listed range hold `address`, and, if it is guarded, a narrow enough one?"""
        address = unmapped(address)
        guard = guard_of(address)
        return any(
            address in network and (guard is None or _narrow(network, guard[0]))
            for network in self.ranges
        )

    def address_allowed(self, address: Address, *, name_listed: bool) -> bool:
        """May the relay dial `address`, got by resolving a name (listed or not)?"""
        if self.in_ranges(address):
            return True
        return name_listed and ordinary(address)


def unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def guard_of(address: Address) -> tuple[Network, str] | None:
    """The block guarding `address` (metadata: the address itself) and why, or None."""
    address = unmapped(address)
    for network, why in GUARDS:
        if address in network:
            return network, why
    return None


def _narrow(network: Network, guard: Network) -> bool:
    return network.version == guard.version and network.subnet_of(guard)  # type: ignore[arg-type]


def ordinary(address: Address) -> bool:
    """An address a name may stand for without being listed by range."""
    address = unmapped(address)
    if guard_of(address) is not None:
        return False
    return not (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


def parse_port_ranges(entries: tuple[str, ...] | list[str]) -> tuple[tuple[int, int], ...]:
    """`22`, `6000-6010` -> ((22, 22), (6000, 6010)); ValueError naming a bad one."""
    out = []
    for raw in entries:
        low, _, high = str(raw).strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"{raw!r} is not a port or a range like 6000-6010") from None
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{raw!r} is not a port or a range within 1-65535")
        out.append((first, last))
    return tuple(out)


def port_denied(port: int, denied: tuple[tuple[int, int], ...]) -> bool:
    return any(first <= port <= last for first, last in denied)
