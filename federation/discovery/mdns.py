"""mDNS: announce this hub as a `_democratic-ai._tcp.local.` service and turn others into `PeerHint`s.

python-zeroconf's AsyncZeroconf runs on the hub's own asyncio loop (no zeroconf thread). It binds
only the interfaces named by IP: never every interface by default. The browser's callbacks run on
the loop; each new or changed service is resolved in a task held here, parsed by the pure
`hint_from_service`, and handed to `on_hint` unless it is this node or another fleet.

Removal is only logged: the peer table expires peers on its own clock. Everything held is bounded:
at most `max_tracked` services at once, TXT records over `MAX_TXT_BYTES` are ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType

from zeroconf import Error as ZeroconfError
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from federation.discovery.hints import MAX_TXT_BYTES, SERVICE_TYPE, PeerHint, hint_from_service, interface_ips, txt_for

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_MS = 3000


class DiscoveryError(Exception):
    """mDNS could not start: no usable socket on the named interfaces, or the name is taken."""


class MdnsDiscovery:
    """Announces this node on the local network and reports other nodes of its fleet as hints.

    `interfaces` are IP addresses of this host; [] means the hosts of `addrs` (the p2p listen
    multiaddrs) that are neither loopback nor unspecified. With none left, start() only logs
    that mDNS is off. `on_hint` runs on the loop, for every new peer and every change of a peer's hint.
    A hint of another fleet id is ignored here, but a hint is still no proof: the caller dials and
    checks the certificate.
    """

    def __init__(
        self,
        *,
        node_id: str,
        fleet_id: str,
        addrs: list[str],
        version: str,
        port: int,
        interfaces: list[str],
        on_hint: Callable[[PeerHint], None],
        max_tracked: int = 256,
        resolve_timeout_ms: int = RESOLVE_TIMEOUT_MS,
    ) -> None:
        self._node_id = node_id
        self._fleet_id = fleet_id
        self._version = version
        self._port = port
        self._on_hint = on_hint
        self._max_tracked = max_tracked
        self._resolve_timeout_ms = resolve_timeout_ms
        self._txt = txt_for(node_id, fleet_id, addrs, version)  # refuses bad values before any socket opens
        self._ips = list(interfaces) or interface_ips(addrs)
        self._name = f"{node_id}.{SERVICE_TYPE}"
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False  # only a name we hold gets a goodbye: never one another host won
        self._hints: dict[str, PeerHint] = {}  # by lower-cased service name
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # names that changed while being resolved
        self._cancelled: set[asyncio.Task[None]] = set()  # resolves of services that left, until they end

    @property
    def interfaces(self) -> list[str]:
        """The IPs mDNS binds to and announces (empty: mDNS is off)."""
        return list(self._ips)

    def hints(self) -> list[PeerHint]:
        """The hints currently held, one per service still announced."""
        return list(self._hints.values())

    async def start(self) -> None:
        """Open the sockets on the loop, browse, then register and wait until announced.

        Raises DiscoveryError when the sockets cannot be opened or another host holds this node's name.
        """
        if self._aiozc is not None:
            raise RuntimeError("MdnsDiscovery.start() called twice")
        if not self._ips:
            log.warning("mDNS off: no interface to announce on (name them in [mdns] interfaces)")
            return
        try:
            zc = Zeroconf(interfaces=self._ips, use_asyncio=True)
        except OSError as exc:
            raise DiscoveryError(f"mDNS could not open sockets on {', '.join(self._ips)}: {exc}") from exc
        self._aiozc = AsyncZeroconf(zc=zc)
        # browse first: nothing announced while we probe our own name is missed
        self._browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_change])
        self._info = self._service_info()
        try:
            announced = await self._aiozc.async_register_service(self._info)
            self._registered = True  # in zeroconf's registry from here on, answering queries
            await announced
        except ZeroconfError as exc:
            await self.close()
            raise DiscoveryError(f"mDNS could not register {self._name}: {exc!r}") from exc
        log.info("mDNS: announced %s on %s", self._node_id, ", ".join(self._ips))

    async def update_addrs(self, addrs: list[str]) -> None:
        """Announce new multiaddrs for this node (after the p2p side's addresses changed)."""
        self._txt = txt_for(self._node_id, self._fleet_id, addrs, self._version)
        if self._aiozc is None or not self._registered:
            return
        self._info = self._service_info()
        announced = await self._aiozc.async_update_service(self._info)
        await announced

    async def close(self) -> None:
        """Stop browsing, say goodbye (awaited), close the sockets.

        Safe to call twice, and after a start() that failed or was cancelled.
        """
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = [*self._resolving.values(), *self._cancelled]
        for task in tasks:
            task.cancel()
        # the tasks end in CancelledError; gather keeps that from ending close() itself
        await asyncio.gather(*tasks, return_exceptions=True)
        self._resolving.clear()
        self._again.clear()
        if self._aiozc is None:
            return
        if self._registered and self._info is not None:
            self._registered = False
            goodbye = await self._aiozc.async_unregister_service(self._info)
            await goodbye
        self._info = None
        await self._aiozc.async_close()
        self._aiozc = None

    def _service_info(self) -> AsyncServiceInfo:
        """This node's service: SRV to the p2p port, A/AAAA for the interface IPs, the TXT records."""
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self._name,
            port=self._port,
            properties=self._txt,
            server=f"{self._node_id}.local.",
            parsed_addresses=self._ips,
        )

    async def __aenter__(self) -> MdnsDiscovery:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        """The browser's handler (on the loop; zeroconf passes these four by keyword)."""
        key = name.lower()
        if key == self._name.lower():
            return
        if state_change is ServiceStateChange.Removed:
            hint = self._hints.pop(key, None)
            self._again.discard(key)
            task = self._resolving.pop(key, None)
            if task is not None:
                task.cancel()
                self._cancelled.add(task)  # held until done, so close() can wait for it too
                task.add_done_callback(self._cancelled.discard)
            if hint is not None:
                log.info("mDNS: %s left", hint.node_id)
            else:
                log.debug("mDNS: %s left", name)
            return
        if key in self._resolving:
            self._again.add(key)
            return
        if key not in self._hints and len(self._hints) + len(self._resolving) >= self._max_tracked:
            log.debug("mDNS: ignoring %s: already tracking %d services", name, self._max_tracked)
            return
        self._resolving[key] = asyncio.get_running_loop().create_task(self._resolve(key, name))

    async def _resolve(self, key: str, name: str) -> None:
        """Resolve one service until it stops changing under us, then offer its hint."""
        try:
            while True:
                self._again.discard(key)
                if self._aiozc is None:
                    return
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if await info.async_request(self._aiozc.zeroconf, self._resolve_timeout_ms):
                    self._accept(key, name, info)
                else:
                    log.debug("mDNS: %s did not resolve", name)
                if key not in self._again:
                    return
        except (ZeroconfError, OSError, ValueError) as exc:
            # a malformed name or a send failure concerns this one service only
            log.debug("mDNS: resolving %s failed: %r", name, exc)
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]

    def _accept(self, key: str, name: str, info: AsyncServiceInfo) -> None:
        """Keep and report the hint of a resolved service if it is another node of this fleet."""
        if len(info.text) > MAX_TXT_BYTES:
            self._hints.pop(key, None)
            log.debug("mDNS: ignoring %s: TXT record of %d bytes", name, len(info.text))
            return
        hint = hint_from_service(name, info.properties, addresses=info.parsed_addresses(), port=info.port)
        if hint is None:
            self._hints.pop(key, None)
            log.debug("mDNS: ignoring %s: not a democratic-ai record", name)
            return
        if hint.node_id == self._node_id:
            self._hints.pop(key, None)
            return
        if hint.fleet_id != self._fleet_id:
            self._hints.pop(key, None)
            log.debug("mDNS: ignoring %s: fleet %s is not ours", hint.node_id, hint.fleet_id)
            return
        if self._hints.get(key) == hint:
            return
        if key not in self._hints and len(self._hints) >= self._max_tracked:
            return
        self._hints[key] = hint
        log.info("mDNS: found %s at %s", hint.node_id, " ".join(hint.addrs))
        try:
            self._on_hint(hint)
        except Exception:
            # the callback is the caller's code; one bad hint must not stop discovery of the rest
            log.exception("mDNS: on_hint failed for %s", hint.node_id)
