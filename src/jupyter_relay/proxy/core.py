"""The port proxy: from a `/proxy/...` path to a checked target, or a refusal.

Every refusal happens before anything is dialled: a path that is not one of
the forms is 404, a host or port the allowlist does not permit is 403. What
needs no DNS (a port on this machine, an IP literal, an ssh backend's
machine) is decided synchronously, so the fast path can take it; a name is
resolved on the aiohttp path, and only its checked addresses are dialled.
A checked resolution is reused for `RESOLVE_TTL` seconds (by the fast path
too): what is dialled is still only what was checked, so a DNS answer that
changes meanwhile (rebinding) reaches nothing it was not allowed to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping

from ..backends.base import Backend, RawOpener
from ..backends.ssh import SshBackend
from ..errors import BackendUnreachable, Forbidden, NotFound
from .allow import Allowlist, guard_of, port_denied, unmapped
from .home import Leads, port_home
from .passed import OwnProxy, PortOfBackend
from .paths import ProxyPath, ip_literal, parse_proxy
from .target import ProxyTarget, ssh_opener, tcp_opener

log = logging.getLogger("jupyter_relay.proxy")

LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
MAX_TARGETS = 256
FORMS = (
    "/proxy/<port>/..., /proxy/<host>:<port>/..., /proxy/absolute/<port>/... or "
    "/proxy/absolute/<host>:<port>/... (host: letters, digits, '.' and '-', or [IPv6]; "
    "port: 1-65535; what follows the port starts with '/')"
)


RESOLVE_TTL = 2.0  # seconds a name's checked addresses are reused


class _Pin:
    """The checked addresses a name-addressed target dials, until `expires`."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.expires = 0.0

    def fresh(self) -> bool:
        return time.monotonic() < self.expires

    def renew(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.expires = time.monotonic() + RESOLVE_TTL


class PortProxy:
    def __init__(
        self,
        allow: Allowlist,
        deny_ports: tuple[tuple[int, int], ...],
        backends: Mapping[str, Backend],
        connect_timeout: float,
        primary: Backend | None = None,
    ) -> None:
        self.allow = allow
        self.deny_ports = deny_ports
        self.backends = backends
        self.backend_names = frozenset(backends)
        self.connect_timeout = connect_timeout
        self.targets: dict[str, ProxyTarget] = {}
        self.pins: dict[str, _Pin] = {}
        # Requests refused, by why: "form" (no /proxy/ form), "port" (denied), "host".
        self.denials: dict[str, int] = {}
        loopback = [a for a in LOOPBACK_ADDRESSES if allow.in_ranges(ipaddress.ip_address(a))]
        self.loopback = tuple(loopback)
        # Where `/proxy/<port>/` leads: the machine of the primary's kernels (`home`).
        self.primary = primary
        url = primary.spec.url if primary is not None else None
        self.home = port_home(
            primary.spec.kind if primary is not None else None,
            primary.name if primary is not None else None,
            url.host if url is not None else None,
        )
        self.own_proxy = (
            OwnProxy(primary) if primary is not None and self.home.leads is Leads.BACKEND else None
        )

    def on_primary(self, raw_path: str) -> PortOfBackend | None:
        """`/proxy/<port>/` for a primary whose own port proxy answers it; else None."""
        if self.own_proxy is None:
            return None
        parsed = parse_proxy(raw_path, self.backend_names)
        if parsed is None or parsed.host is not None or port_denied(parsed.port, self.deny_ports):
            return None  # another form, or a refusal the aiohttp path explains
        return PortOfBackend(self.own_proxy.backend, self.own_proxy, parsed.port)

    # --- the fast path's question -----------------------------------------------------

    def fast_target(self, raw_path: str) -> ProxyTarget | None:
        """The target when it is allowed without a DNS lookup now; None leaves it to `target`."""
        parsed = parse_proxy(raw_path, self.backend_names)
        if parsed is None or port_denied(parsed.port, self.deny_ports):
            return None  # refusals go the aiohttp path, which explains them
        pin = self.pins.get(parsed.prefix)
        if pin is not None:  # a name: taken while its checked addresses are fresh
            return self.targets.get(parsed.prefix) if pin.fresh() else None
        try:
            return self._static(parsed)
        except (Forbidden, BackendUnreachable):
            return None

    # --- every request the fast path did not take -----------------------------------

    async def target(self, raw_path: str) -> ProxyTarget:
        parsed = parse_proxy(raw_path, self.backend_names)
        if parsed is None:
            self._denied("form")
            raise NotFound(f"{raw_path} is not a port-proxy address; use {FORMS}")
        if port_denied(parsed.port, self.deny_ports):
            self._denied("port")
            raise Forbidden(
                f"the port proxy does not reach port {parsed.port}: it is in --proxy-deny-port"
            )
        try:
            return await self._checked(parsed)
        except Forbidden:
            self._denied("host")
            raise

    def _denied(self, reason: str) -> None:
        self.denials[reason] = self.denials.get(reason, 0) + 1

    async def _checked(self, parsed: ProxyPath) -> ProxyTarget:
        """The target for a well-formed path whose port is allowed: its host checked."""
        static = self._static(parsed)
        if static is not None:
            return static
        assert parsed.host is not None
        host = parsed.host
        backend = self.backends.get(host)
        name = backend.spec.url.host if backend is not None and backend.spec.url else host
        assert name is not None
        pin = self.pins.get(parsed.prefix)
        if pin is None or not pin.fresh():
            addresses = await self._resolve(name, parsed.port)
            pin = self.pins.setdefault(parsed.prefix, _Pin())
            pin.renew(addresses)
        label = f"{name}:{parsed.port}"
        if backend is not None:
            label = f"port {parsed.port} of backend '{host}' ({name})"
        return self._make(parsed, label, f"{name}:{parsed.port}", pin=pin)

    def _static(self, parsed: ProxyPath) -> ProxyTarget | None:
        """A target decided without DNS, or None when the host is a name to resolve."""
        target = self.targets.get(parsed.prefix)
        if target is not None and parsed.prefix not in self.pins:
            return target
        host, port = parsed.host, parsed.port
        backend = self.backends.get(host) if host is not None else None
        if host is None and self.home.leads is Leads.SSH:
            backend = self.primary  # the port of the machine where the kernels run
        if backend is not None and isinstance(backend, SshBackend):
            return self._make(
                parsed,
                f"port {port} of backend '{backend.name}' (its localhost, over SSH)",
                f"localhost:{port}",
                opener=ssh_opener(backend.open_channel, port),
                via=backend,
            )
        if host is None and self.home.leads is Leads.BACKEND:
            raise NotFound(f"{parsed.prefix}/ goes to {self.home.describe()}")  # on_primary's
        if host is None or (backend is not None and backend.spec.kind == "local"):
            if not self.loopback:
                raise Forbidden(
                    f"the port proxy may not reach this machine's ports: the allowlist "
                    f"({self._shown()}) holds no loopback range; add --proxy-allow loopback"
                )
            where = f"localhost:{port}" if host is None else f"port {port} of backend '{host}'"
            return self._make(parsed, where, f"localhost:{port}", addresses=self.loopback)
        literal = host if backend is None else (backend.spec.url.host if backend.spec.url else "")
        address = ip_literal(literal or "")
        if address is None:
            return None
        if not self.allow.in_ranges(address):
            guarded = self._guarded(literal or str(address), address)
            if guarded is not None:
                raise guarded
            raise Forbidden(
                f"the port proxy may not reach {literal}: it is not in the allowlist "
                f"({self._shown()}). To allow it, start jupyter-relay with "
                f"--proxy-allow {address} (or a range holding it)"
            )
        shown = f"[{address}]" if address.version == 6 else str(address)
        label = f"{shown}:{port}"
        if backend is not None:
            label = f"port {port} of backend '{host}' ({shown})"
        return self._make(parsed, label, f"{shown}:{port}", addresses=(str(address),))

    async def _resolve(self, name: str, port: int) -> list[str]:
        """Resolve once; keep the addresses the allowlist permits, or refuse."""
        listed = self.allow.name_listed(name)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if not listed and not self._ranges_beyond_loopback():
                raise self._not_listed(name) from exc
            raise BackendUnreachable(
                name, f"cannot resolve host {name!r} ({exc.strerror}); check its name", "DNS"
            ) from exc
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [
            a
            for a in found
            if self.allow.address_allowed(ipaddress.ip_address(a), name_listed=listed)
        ]
        if allowed:
            return allowed
        for address in found:
            guarded = self._guarded(f"{name} ({address})", ipaddress.ip_address(address))
            if guarded is not None:
                raise guarded
        if not listed:
            raise self._not_listed(name)
        raise Forbidden(
            f"the port proxy may not reach {name}: it resolves to {', '.join(found)}, which the "
            f"allowlist ({self._shown()}) does not hold. A listed name may not stand for a "
            "loopback, link-local or other special address (DNS rebinding); if that is "
            f"intended, add the address too: --proxy-allow {found[0]}"
        )

    def _guarded(
        self, shown: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> Forbidden | None:
        """The refusal of a guarded address (metadata, link-local, shared), or None."""
        guard = guard_of(address)
        if guard is None:
            return None
        block, why = guard
        plain = unmapped(address)
        alone = block.num_addresses == 1
        how = (
            f"--proxy-allow {plain}"
            if alone
            else f"--proxy-allow {plain} (or --proxy-allow {block}, or a range inside it)"
        )
        return Forbidden(
            f"the port proxy may not reach {shown}: it is {why}, refused unless the "
            f"allowlist ({self._shown()}) lists it by its own entry (a wider range such as "
            f"0.0.0.0/0 is not enough). If that is intended, start jupyter-relay with {how}"
        )

    def _not_listed(self, name: str) -> Forbidden:
        return Forbidden(
            f"the port proxy may not reach {name}: it is not in the allowlist ({self._shown()}). "
            f"To allow it, start jupyter-relay with --proxy-allow {name} "
            "(or a glob like *.example.org, or a range like 10.0.0.0/8)"
        )

    def _ranges_beyond_loopback(self) -> bool:
        return any(not network.is_loopback for network in self.allow.ranges)

    def _shown(self) -> str:
        return " ".join(self.allow.entries) or "empty"

    def _make(
        self,
        parsed: ProxyPath,
        label: str,
        host_header: str,
        *,
        addresses: tuple[str, ...] = (),
        pin: _Pin | None = None,
        opener: RawOpener | None = None,
        via: Backend | None = None,
    ) -> ProxyTarget:
        target = self.targets.get(parsed.prefix)
        if target is not None:
            return target
        if len(self.targets) >= MAX_TARGETS:
            # Bounded: each target has a connection pool. The oldest go first.
            for old in list(self.targets)[: MAX_TARGETS // 4]:
                del self.targets[old]
                self.pins.pop(old, None)
        if opener is None:
            fixed = list(addresses)
            source = (lambda: pin.addresses) if pin is not None else (lambda: fixed)
            opener = tcp_opener(source, parsed.port, self.connect_timeout)
        origins = {f"http://{a}:{parsed.port}" for a in ("localhost", "127.0.0.1", "[::1]")}
        target = ProxyTarget(
            parsed.prefix,
            label,
            opener=opener,
            host_header=host_header,
            prefix=parsed.prefix,
            relative=not parsed.absolute,
            origins=sorted(origins) if host_header.startswith("localhost:") else (),
            via=via,
        )
        self.targets[parsed.prefix] = target
        return target

    async def close(self) -> None:
        self.targets.clear()
        self.pins.clear()

    def describe(self) -> dict[str, object]:
        return {
            "port_home": self.home.describe(),
            "allow": list(self.allow.entries),
            "deny_ports": [f"{a}-{b}" if a != b else str(a) for a, b in self.deny_ports],
        }
